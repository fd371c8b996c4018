"""``ucfm-svm path``: the ridge-regularized UFM along a lambda grid, compared with its SVM limit."""

from __future__ import annotations

import argparse
import sys

from .. import groups as _groups
from ..api import group_statistics
from ..regularized.training import (
    DEFAULT_LAMBDAS,
    Trajectory,
    check_lambdas,
    norm_ratio,
    regularization_path,
    vanishing_lambda,
)
from ..result import jsonable
from ..solvers.convex import LEVELS
from ..spec import LOSSES, Spec
from ..validation import fail
from ._common import (
    EXIT_NOT_CERTIFIED,
    EXIT_OK,
    STDOUT,
    add_group_arguments,
    add_spec_arguments,
    check_output_path,
    group_options,
    save_plot,
    spec_from_args,
    write_json,
)

#: Above this many classes the JSON of ``path`` and ``train`` leaves out the ``k x k`` arrays
#: unless ``--full`` (group statistics, norm ratios and distances are always written).
JSON_MATRICES_MAX_K = 100


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by ``path`` and ``train``: level, comparison losses, seed, outputs."""
    parser.add_argument(
        "--level",
        default="class",
        choices=LEVELS,
        help="train collapsed class means (weighted by n_c) or one embedding per example",
    )
    parser.add_argument(
        "--compare",
        default=None,
        metavar="LOSS[:G],...",
        help="further losses on the same counts, one curve each (e.g. ce,cdt:0.5,ldt:0.5); "
        "G is gamma for cdt/ldt/vs (default --gamma); --tau applies to la and vs",
    )
    parser.add_argument("--seed", default=0, type=int, help="seed of the random start")
    parser.add_argument(
        "--json", default=None, metavar="PATH", help="write the run as JSON ('-': stdout)"
    )
    parser.add_argument(
        "--plot",
        default=None,
        metavar="PATH",
        help="save the figure (.png, .pdf, .svg, .eps, .ps; another or no suffix gets .png)",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help=f"with --json: the k x k Grams and cosines of every record at any k (by default "
        f"only up to k = {JSON_MATRICES_MAX_K}: at k = 1000 the default path's are 961 MB)",
    )
    add_group_arguments(parser)


def compared_specs(args: argparse.Namespace, base: Spec) -> list[Spec]:
    """The specifications named by ``--compare`` (same counts, dimension and ``--tau``)."""
    if not args.compare:
        return []
    out = []
    for item in str(args.compare).split(","):
        name, _, gamma_text = item.strip().partition(":")
        if name not in LOSSES:
            raise fail("compare", "a list of LOSS[:GAMMA] with LOSS in " + ", ".join(LOSSES), item)
        gamma = None
        if "gamma" in LOSSES[name]:
            text = gamma_text or args.gamma
            if text is None:
                raise fail(
                    "compare", f"a gamma for '{name}' (write {name}:G or give --gamma)", item
                )
            try:
                gamma = float(text)
            except ValueError:
                raise fail("compare", "a list of LOSS[:GAMMA] with numeric GAMMA", item) from None
        elif gamma_text:
            raise fail("compare", f"no gamma for '{name}' (only cdt, ldt and vs use one)", item)
        tau = float(args.tau) if args.tau is not None and "tau" in LOSSES[name] else None
        out.append(Spec.from_loss(base.counts, name, gamma=gamma, tau=tau, dim=base.dim))
    return out


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``path`` subcommand."""
    p = subparsers.add_parser(
        "path",
        help="regularization path of a loss on the UFM, against its SVM limit",
        description="Minimize the ridge-regularized UFM of the loss (L-BFGS, warm starts) "
        "along a decreasing lambda grid, and report how far the normalized classifier and "
        "embedding Grams are from the loss's certified SVM geometry.",
    )
    add_spec_arguments(p)
    p.add_argument(
        "--lambdas",
        default=",".join(f"{lam:g}" for lam in DEFAULT_LAMBDAS),
        metavar="L1,L2,...",
        help="decreasing regularization strengths (default 1e-1,...,1e-8)",
    )
    p.add_argument(
        "--gtol",
        default=1e-7,
        type=float,
        help="L-BFGS tolerance on the gradient of objective/lambda (default 1e-7)",
    )
    p.add_argument(
        "--maxiter", default=50_000, type=int, help="L-BFGS iterations per lambda (default 50000)"
    )
    add_training_arguments(p)
    p.set_defaults(run=run)


def table(traj: Trajectory) -> str:
    """Readable account of one trajectory (path or gradient descent)."""
    path = traj.kind == "path"
    svm_c = norm_ratio(traj.spec, traj.svm.classifier_gram)
    svm_e = norm_ratio(traj.spec, traj.svm.embedding_gram)
    lines = [
        f"{traj.spec.describe()}, {traj.level} level, {traj.seconds:.3g} s",
        f"  {traj.message}",
        f"  SVM reference: {traj.svm.method}, {traj.svm.status}, objective "
        f"{traj.svm.objective:.8g}; norm ratios classifiers {svm_c:.4f}, embeddings {svm_e:.4f}",
        "  "
        + ("lambda    " if path else "iteration ")
        + " dist(W)   dist(H)   ratio(W)  ratio(H)  svm-obj-ratio"
        + ("  certificate  iters" if path else "  loss"),
    ]
    xs = traj.lambdas if path else traj.iterations
    for j, x in enumerate(xs):
        head = f"{x:<9.3g}" if path else f"{int(x):<9d}"
        row = (
            f"  {head} {traj.distance_to_svm[j]:8.5f}  {traj.embedding_distance_to_svm[j]:8.5f}"
            f"  {traj.classifier_norm_ratio[j]:8.4f}  {traj.embedding_norm_ratio[j]:8.4f}"
            f"  {traj.svm_objective_ratio[j]:13.6g}"
        )
        if path:
            row += f"  {traj.certificate[j]:11.8f}  {int(traj.solver_iterations[j]):5d}"
        else:
            row += f"  {traj.loss[j]:.3e}"
        lines.append(row)
    for fit in traj.fits:
        lines.append(
            f"  fit dist(W) = {fit.intercept:.4f} + {fit.slope:.4f} * {fit.regressor}"
            f"  (R^2 {fit.r2:.4f}, {fit.points} points)"
        )
    return "\n".join(lines)


def check_outputs(args: argparse.Namespace) -> None:
    """Reject unwritable ``--json`` / ``--plot`` paths and bad group thresholds before the run."""
    check_output_path("json", args.json)
    check_output_path("plot", args.plot, figure=True)
    group_options(args)


def trajectory_dict(traj: Trajectory, many_above: float, few_below: float,
                    matrices: bool = True) -> dict:
    """:meth:`Trajectory.to_dict` with the group statistics (docs/theory.md §17) in the shape
    ``solve --json`` writes: ``groups`` for the last record, ``svm.groups`` for the SVM
    reference, and ``record_groups``, one :meth:`GroupStatistics.values` per record (norms of
    the recorded Grams, which are divided by their Frobenius norms; cosines scale-free); the
    ``k x k`` arrays only with ``matrices``."""
    grp = _groups.class_groups(traj.spec.n_vec, many_above, few_below)
    counts = traj.spec.n_vec
    records = [
        _groups.gram_group_statistics(grp, counts, cg, eg)
        for cg, eg in zip(traj.classifier_grams, traj.embedding_grams, strict=True)
    ]
    data = traj.to_dict(matrices)
    data["groups"] = jsonable(records[-1].to_dict()) if records else None
    data["svm"]["groups"] = jsonable(group_statistics(traj.svm, many_above, few_below).to_dict())
    data["record_groups"] = [jsonable(r.values()) for r in records]
    return data


def write_outputs(args: argparse.Namespace, runs: list[Trajectory]) -> None:
    """Write ``--json`` (first run at the top, the others under ``compared``) and ``--plot``."""
    if args.json:
        thresholds = group_options(args)
        matrices = args.full or runs[0].spec.k <= JSON_MATRICES_MAX_K
        data = trajectory_dict(runs[0], **thresholds, matrices=matrices)
        data["compared"] = [trajectory_dict(t, **thresholds, matrices=matrices)
                            for t in runs[1:]]
        if not matrices:
            data["matrices"] = (f"left out above k = {JSON_MATRICES_MAX_K}; --full writes "
                                "them")
        write_json("json", args.json, data)
    if args.plot:
        from ..plots.training import trajectory_figure

        save_plot("plot", args.plot, trajectory_figure(runs))


def run(args: argparse.Namespace) -> int:
    """Run the path for the loss and each ``--compare`` loss; exit 3 unless all certified."""
    spec = spec_from_args(args)
    check_outputs(args)
    specs = [spec, *compared_specs(args, spec)]
    lambdas = check_lambdas(args.lambdas)
    for s in specs:  # a zero minimizer has no geometry: refuse it before any work
        top = vanishing_lambda(s, args.level)
        if lambdas[0] >= top:
            raise fail(
                "lambdas",
                f"below {top:.6g} for {s.loss} on these counts (from there on the minimizer is "
                "W = H = 0, which has no geometry)",
                float(lambdas[0]),
            )
    runs = [
        regularization_path(
            s, lambdas, level=args.level, gtol=args.gtol, maxiter=args.maxiter, seed=args.seed
        )
        for s in specs
    ]
    if args.json != STDOUT:
        print("\n\n".join(table(t) for t in runs))
    write_outputs(args, runs)
    bad = [t.label() for t in runs if not t.ok]
    if bad:
        print(
            "not all solves converged with a global certificate (<= 1 + 1e-6) for: "
            + ", ".join(bad)
            + "; try a larger --maxiter or a smaller --gtol",
            file=sys.stderr if args.json == STDOUT else sys.stdout,
        )
        return EXIT_NOT_CERTIFIED
    return EXIT_OK
