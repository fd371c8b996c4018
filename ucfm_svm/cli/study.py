"""``ucfm-svm study``: the paper's deep-net study in PyTorch (needs the ``[torch]`` extra).

The parser is built without torch, so ``ucfm-svm study --help`` works everywhere; running the
study without torch prints one line saying how to install it and exits 2.
"""

from __future__ import annotations

import argparse

from ..validation import fail, parse_list
from ._common import EXIT_OK, EXIT_USAGE, print_error
from .sweep import EXIT_INTERRUPTED

#: The install hint printed when torch is missing.
INSTALL_HINT = (
    'PyTorch is not installed: pip install "ucfm-svm[torch]" '
    "(pip install torch==2.13.0 first for the CPU build)"
)
#: The paper's gamma grid, as printed in --help (numpy.linspace(-1.5, 1.5, 13)).
PAPER_GAMMAS_TEXT = "linspace(-1.5, 1.5, 13)"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``study`` subcommand."""
    p = subparsers.add_parser(
        "study",
        help="train deep nets (PyTorch) on a STEP subset and measure them against the prediction",
        description="The paper's deep-net study: train a net per loss (CE; CDT and LDT over a "
        "gamma grid) on a STEP-imbalanced subset, measure its last layer every few epochs "
        "against the certified UF-CS-SVM prediction for its counts and loss, and write "
        "DIR/panels.png (2 x 4: squared norm ratio and grouped cosines against gamma, closed "
        "form and trained), DIR/distances.png, DIR/accuracy.png (PDF too), DIR/report.md, "
        "DIR/study.json and DIR/runs/ (one JSONL per run, a JSON summary per finished run). "
        "A rerun with the same DIR and settings skips the finished runs. Needs PyTorch: "
        'pip install "ucfm-svm[torch]".',
    )
    data = p.add_argument_group("data")
    data.add_argument(
        "--data",
        default="digits",
        metavar="NAME",
        help="digits (scikit-learn's, built in), mnist, fashion-mnist (IDX files) or cifar10 "
        "(binary version), default digits",
    )
    data.add_argument(
        "--data-dir", default=None, metavar="DIR", help="folder of the local files (no download)"
    )
    data.add_argument("--R", default="10", metavar="R", help="STEP imbalance ratio (default 10)")
    data.add_argument(
        "--rho", default="0.5", metavar="RHO", help="fraction of minority classes (default 0.5)"
    )
    data.add_argument(
        "--n-maj", default="150", metavar="N", help="examples per majority class (default 150)"
    )
    model = p.add_argument_group("model")
    model.add_argument(
        "--model", default="mlp", metavar="NAME", help="mlp (default) or resnet18 (CIFAR variant)"
    )
    model.add_argument("--width", default="2048", metavar="W", help="MLP width (default 2048)")
    model.add_argument("--depth", default="6", metavar="L", help="MLP hidden blocks (default 6)")
    train = p.add_argument_group("training (SGD; lr x0.1 at 1/3 and 2/3 of the epochs)")
    train.add_argument("--epochs", default="350", metavar="E", help="epochs per run (default 350)")
    train.add_argument("--lr", default="0.1", metavar="LR", help="learning rate (default 0.1)")
    train.add_argument("--momentum", default="0.9", metavar="M", help="momentum (default 0.9)")
    train.add_argument(
        "--weight-decay", default="5e-4", metavar="WD", help="weight decay (default 5e-4)"
    )
    train.add_argument(
        "--constant-lr",
        action="store_true",
        help="keep the learning rate constant (no x0.1 drops; closer to the prediction)",
    )
    train.add_argument("--batch-size", default="128", metavar="B", help="batch size (default 128)")
    train.add_argument(
        "--losses", default="ce,cdt,ldt", metavar="L1,...", help="of ce, cdt, ldt (default all)"
    )
    train.add_argument(
        "--gammas",
        default=None,
        metavar="G1,...",
        help=f"gammas of cdt and ldt (default the paper's {PAPER_GAMMAS_TEXT})",
    )
    train.add_argument("--seed", default="0", metavar="S", help="seed of data and nets (default 0)")
    measure = p.add_argument_group("measurement")
    measure.add_argument(
        "--measure-every", default="10", metavar="E", help="epochs between measures (default 10)"
    )
    measure.add_argument(
        "--centring",
        default="rowspace",
        metavar="C",
        help="rowspace (default: what the loss sees, docs/theory.md §16), none, global "
        "(unweighted mean of the class means) or weighted (mean of all examples)",
    )
    measure.add_argument(
        "--device",
        default=None,
        metavar="DEV",
        help="torch device (default cuda if present, else cpu)",
    )
    p.add_argument(
        "--out", default="out/study", metavar="DIR", help="output folder (default out/study)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-run lines")
    p.set_defaults(run=run)


def _number(flag: str, text: str, kind: type) -> float:
    values = parse_list(flag, text, kind)
    if len(values) != 1:
        raise fail(flag, "one number", text)
    return values[0]


def run(args: argparse.Namespace) -> int:
    """Run the study; exit 0 when it finished (even if runs did not converge), 2 on bad input."""
    try:
        import torch  # the study's dependency, imported only when it runs
    except ImportError:
        print_error("ucfm-svm study", INSTALL_HINT)
        return EXIT_USAGE
    from ..nets.study import PAPER_GAMMAS, StudyConfig, run_name, run_study, write_outputs

    losses = tuple(t.strip() for t in args.losses.split(","))
    gammas = PAPER_GAMMAS if args.gammas is None else tuple(parse_list("--gammas", args.gammas))
    options = dict(
        data=args.data,
        data_dir=args.data_dir,
        model=args.model,
        width=_number("--width", args.width, int),
        depth=_number("--depth", args.depth, int),
        R=_number("--R", args.R, float),
        rho=_number("--rho", args.rho, float),
        n_maj=_number("--n-maj", args.n_maj, int),
        epochs=_number("--epochs", args.epochs, int),
        lr=_number("--lr", args.lr, float),
        momentum=_number("--momentum", args.momentum, float),
        weight_decay=_number("--weight-decay", args.weight_decay, float),
        batch_size=_number("--batch-size", args.batch_size, int),
        lr_drops=not args.constant_lr,
        losses=losses,
        gammas=gammas,
        measure_every=_number("--measure-every", args.measure_every, int),
        centring=args.centring,
        seed=_number("--seed", args.seed, int),
    )
    if args.device is not None:
        try:
            torch.device(args.device)
        except RuntimeError:
            raise fail("--device", "a torch device such as cpu or cuda", args.device) from None
        options["device"] = args.device
    config = StudyConfig(**options)

    def on_run(name: str, summary: dict, resumed: bool) -> None:
        if args.quiet:
            return
        f = summary["final"]
        print(
            f"{name:>12}: {'resumed' if resumed else 'trained'}, train acc "
            f"{summary['train_accuracy']:.4f}, NC1 {f['nc1']:.4f}, classifier dist. "
            f"{f['classifier_distance_to_prediction']:.3f} (ETF "
            f"{f['classifier_distance_to_etf']:.3f})",
            flush=True,
        )

    runs = config.runs()
    if not args.quiet:
        print(
            f"{len(runs)} runs x {config.epochs} epochs on {config.device} "
            f"({', '.join(run_name(*r) for r in runs[:4])}{', ...' if len(runs) > 4 else ''})",
            flush=True,
        )
    try:
        study = run_study(config, args.out, progress=not args.quiet, on_run=on_run)
    except KeyboardInterrupt:
        print(
            f"interrupted: finished runs are saved in {args.out}/runs; rerun the same command "
            "to resume"
        )
        return EXIT_INTERRUPTED
    written = write_outputs(study, args.out)
    converged = sum(r["converged"] for r in study["runs"])
    print(f"{converged} of {len(study['runs'])} runs converged (train accuracy >= 0.99)")
    print(f"wrote {len(written)} files in {args.out} (report {args.out}/report.md)")
    return EXIT_OK
