"""Pieces shared by the subcommands: the specification flags and the readable summary."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import numpy as np

from .. import geometry
from ..api import group_statistics
from ..errors import SpecError
from ..files import figure_path, json_text, refusal, write_output
from ..groups import FEW_BELOW, MANY_ABOVE, GroupStatistics
from ..result import Result
from ..spec import (
    BIASES,
    CUSTOM,
    DATASETS,
    FEATURES,
    LOSSES,
    Spec,
    counts_from_file,
    counts_from_labels,
    dataset_counts,
    default_n_max,
    longtail_counts,
    step_counts,
)
from ..validation import check_int, fail, parse_list

#: An argument that is a negative number or a list starting with one (``-1e-3``, ``-2,2``).
NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?(,.*)?$")
#: Exit codes: success, bad input (argparse's own), result not certified or solver failure.
EXIT_OK, EXIT_USAGE, EXIT_NOT_CERTIFIED = 0, 2, 3
#: Exit code of a check that ran and failed (``verify``: routes disagree; ``tune``: a target
#: that no gamma in the range reaches). docs/conventions.md lists every command's codes.
EXIT_CHECK_FAILED = 1
#: ``--json -`` writes the JSON to stdout.
STDOUT = "-"


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``ucfm-svm solve: error: ...`` (exit 2).

    Values that start with a minus sign and a number (``--gamma -1e-3``, ``--range -2,2``) are
    values, not options: argparse's own pattern only knows ``-2`` and ``-0.5``.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._negative_number_matcher = NEGATIVE_NUMBER

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


class StoreGiven(argparse.Action):
    """``store`` that also records that the flag was given (see :func:`given`), so that a
    flag with a default can still be rejected where it does not apply."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, f"_given_{self.dest}", True)


def given(args: argparse.Namespace, dest: str) -> bool:
    """Whether the :class:`StoreGiven` flag ``dest`` was on the command line."""
    return bool(getattr(args, f"_given_{dest}", False))


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags that define a :class:`~ucfm_svm.spec.Spec` (shared by every subcommand)."""
    counts = parser.add_argument_group("class counts (choose one)")
    source = counts.add_mutually_exclusive_group(required=True)
    source.add_argument("--counts", metavar="N1,N2,...", help="explicit class counts")
    source.add_argument(
        "--step",
        metavar="K,R,RHO",
        help="STEP imbalance: K classes, ratio R, minority fraction RHO",
    )
    source.add_argument(
        "--longtail", metavar="K,IF", help="exponential long tail n_c = int(n_max * IF**(-c/(K-1)))"
    )
    source.add_argument(
        "--labels", metavar="FILE", help="counts of an integer label file (.npy, .txt, .csv)"
    )
    source.add_argument(
        "--counts-file",
        metavar="FILE",
        help="class counts from a file: one count per line, or a .npy vector of counts",
    )
    source.add_argument(
        "--dataset",
        metavar="NAME",
        help="standard long-tailed counts: " + ", ".join(DATASETS) + " (with --imbalance)",
    )
    counts.add_argument(
        "--n-min",
        default=1,
        action=StoreGiven,
        metavar="M",
        help="examples per minority class with --step (default 1)",
    )
    counts.add_argument(
        "--n-max",
        default=None,
        action=StoreGiven,
        metavar="M",
        help="examples of the head class with --longtail (default 50000 // K, the CIFAR "
        "convention: 5000 at K = 10, 500 at K = 100)",
    )
    counts.add_argument(
        "--imbalance",
        default=None,
        metavar="IF",
        help="imbalance factor n_max / n_min with --dataset (default 100)",
    )
    hyper = parser.add_argument_group("loss hyperparameters")
    hyper.add_argument(
        "--loss",
        default=None,
        metavar="NAME",
        help="preset: " + ", ".join(LOSSES) + " (default ce)",
    )
    hyper.add_argument("--gamma", default=None, metavar="G", help="cdt / ldt / vs exponent")
    hyper.add_argument("--tau", default=None, metavar="T", help="la / vs offset temperature")
    hyper.add_argument(
        "--scales",
        default=None,
        metavar="D1,...",
        help="explicit logit scales Delta_c (instead of a preset)",
    )
    hyper.add_argument(
        "--margins",
        default=None,
        metavar="d1,...",
        help="explicit margins delta_c (instead of a preset)",
    )
    parser.add_argument(
        "--dim", default=None, metavar="D", help="embedding dimension d (default k)"
    )


def add_model_arguments(parser: argparse.ArgumentParser, ridge: bool = False) -> None:
    """Add ``--bias`` and ``--features``, the model choices of docs/variants.md (``ridge``: the
    bias may also be decayed, with ``--lambda``, docs/regularized.md)."""
    model = parser.add_argument_group("model (docs/variants.md)")
    model.add_argument(
        "--bias",
        default=None,
        choices=(*BIASES, "ridge") if ridge else BIASES,
        help="classifier bias: none (the paper's model, default) or free (unregularized)"
        + ("; ridge (decayed with lambda_W) with --lambda only" if ridge else ""),
    )
    model.add_argument(
        "--features",
        default=None,
        choices=FEATURES,
        help="features: free (default) or nonnegative (post-ReLU, H >= 0)",
    )


def _with_model(args: argparse.Namespace, spec: Spec) -> Spec:
    """``spec`` with the ``--bias`` / ``--features`` choices, when the command has them."""
    bias, features = getattr(args, "bias", None), getattr(args, "features", None)
    if bias is None and features is None:
        return spec
    return spec.with_model(bias=bias, features=features)


def spec_from_args(args: argparse.Namespace) -> Spec:
    """Build the specification from parsed flags; raises ``SpecError`` on bad input."""
    return _with_model(args, _base_spec_from_args(args))


def _base_spec_from_args(args: argparse.Namespace) -> Spec:
    if given(args, "n_min") and args.step is None:
        raise fail("n_min", "left unset without --step (it sets STEP's minority count)", args.n_min)
    if given(args, "n_max") and args.longtail is None:
        raise fail("n_max", "left unset without --longtail (it sets the head count)", args.n_max)
    if getattr(args, "imbalance", None) is not None and getattr(args, "dataset", None) is None:
        raise fail("imbalance", "left unset without --dataset", args.imbalance)
    if args.counts is not None:
        counts = parse_list("counts", args.counts, int)
        source = ""
    elif args.step is not None:
        parts = parse_list("step", args.step, float)
        if len(parts) != 3:
            raise fail("step", "three comma-separated numbers K,R,RHO", args.step)
        n_min = _number("n_min", args.n_min)
        counts = step_counts(parts[0], parts[1], parts[2], n_min)
        source = f"STEP k={parts[0]:g}, R={parts[1]:g}, rho={parts[2]:g}, n_min={n_min:g}"
    elif args.longtail is not None:
        parts = parse_list("longtail", args.longtail, float)
        if len(parts) != 2:
            raise fail("longtail", "two comma-separated numbers K,IF", args.longtail)
        if args.n_max is None:
            k = check_int("longtail", parts[0], low=2)
            n_max = float(default_n_max(k))
        else:
            n_max = _number("n_max", args.n_max)
        counts = longtail_counts(parts[0], parts[1], n_max)
        default = "" if args.n_max is not None else " (default 50000 // k)"
        source = f"long tail k={parts[0]:g}, IF={parts[1]:g}, n_max={n_max:g}{default}"
    elif getattr(args, "counts_file", None) is not None:
        counts = counts_from_file(args.counts_file)
        source = f"counts file {args.counts_file} (k={len(counts)})"
    elif getattr(args, "dataset", None) is not None:
        imbalance = 100.0 if args.imbalance is None else _number("imbalance", args.imbalance)
        counts = dataset_counts(args.dataset, imbalance)
        source = f"{args.dataset} IF={imbalance:g} (n={int(counts.sum())})"
    else:
        counts = counts_from_labels(args.labels)
        source = f"labels {args.labels} (k={len(counts)})"
    dim = None if args.dim is None else _number("dim", args.dim)
    gamma = None if args.gamma is None else _number("gamma", args.gamma)
    tau = None if args.tau is None else _number("tau", args.tau)
    if args.scales is not None or args.margins is not None:
        if args.loss is not None:
            raise fail("loss", "left unset when --scales or --margins are given", args.loss)
        if gamma is not None or tau is not None:
            raise fail(
                "gamma" if gamma is not None else "tau",
                "left unset when --scales or --margins are given",
                gamma if gamma is not None else tau,
            )
        scales = None if args.scales is None else parse_list("scales", args.scales)
        margins = None if args.margins is None else parse_list("margins", args.margins)
        return Spec.custom(counts, scales=scales, margins=margins, dim=dim, source=source)
    loss = "ce" if args.loss is None else args.loss
    return Spec.from_loss(counts, loss, gamma=gamma, tau=tau, dim=dim, source=source)


def _number(name: str, text: object) -> float:
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise fail(name, "a number", text) from None


def _fmt_vector(values: np.ndarray) -> str:
    if values.size <= 12:
        return " ".join(f"{v:.6g}" for v in values)
    return (
        f"min {values.min():.6g}, median {np.median(values):.6g}, max {values.max():.6g}"
        f" (over {values.size} classes)"
    )


def _cosine_lines(spec: Spec, name: str, gram: np.ndarray) -> list[str]:
    groups = spec.step_groups()
    if groups is not None:
        cos = geometry.grouped_cosines(gram, *groups)
        text = ", ".join(f"{key} {value:+.6f}" for key, value in cos.items() if np.isfinite(value))
        return [f"  {name:<12}{text}"]
    if spec.k <= 8:
        rows = [" ".join(f"{v:+.4f}" for v in row) for row in geometry.cosines_from_gram(gram)]
        return [f"  {name}:"] + [f"    {row}" for row in rows]
    low, mean, high = _off_diagonal_cosines(gram)
    return [f"  {name:<12}off-diagonal min {low:+.6f}, mean {mean:+.6f}, max {high:+.6f}"]


def _off_diagonal_cosines(gram: np.ndarray, rows: int = 256) -> tuple[float, float, float]:
    """Min, mean and max of the off-diagonal cosines of ``gram``, over blocks of rows (no
    ``k x k`` temporary: at k = 8142 each one is 530 MB)."""
    k = gram.shape[0]
    norms = geometry.norms_from_gram(gram)
    low, high, total = np.inf, -np.inf, 0.0
    for lo in range(0, k, rows):
        idx = np.arange(lo, min(lo + rows, k))
        block = gram[idx] / norms[idx, None]
        block /= norms[None, :]
        diagonal = (np.arange(idx.size), idx)
        block[diagonal] = np.inf
        low = min(low, float(block.min()))
        block[diagonal] = -np.inf
        high = max(high, float(block.max()))
        block[diagonal] = 0.0
        total += float(block.sum())
    return low, total / (k * (k - 1)), high


def summary(result: Result, stats: GroupStatistics | None = None) -> str:
    """Readable account of a result: status, objective, certificate, norms and cosines, and
    the group statistics ``stats`` (default thresholds when ``None``, docs/theory.md §17)."""
    spec = result.spec
    head = (
        f"{spec.describe()}\n"
        f"method {result.method}, {result.level} level"
        + (f", {result.solver}" if result.solver else "")
        + f", {result.seconds:.3g} s"
    )
    lines = [
        head,
        f"status       {result.status}: {result.message}",
        f"objective    {result.objective:.10g}",
    ]
    if result.lower_bound is not None:
        lines.append(
            f"lower bound  {result.lower_bound:.10g}   gap {result.gap:.3e}"
            f" (relative {result.rel_gap:.3e})"
        )
    else:
        lines.append("lower bound  none (no certificate)")
    if result.nc1 is not None:
        lines.append(f"NC1          {result.nc1:.3e}")
    vanished = (  # the regularized minimizer past its vanishing point
        result.classifier_gram is not None
        and not np.any(result.classifier_gram)
        and not np.any(result.embedding_gram)
    )
    if result.classifier_norms is not None and not vanished:
        lines.append("norms")
        lines.append(f"  {'classifiers':<12}{_fmt_vector(result.classifier_norms)}")
        lines.append(f"  {'embeddings':<12}{_fmt_vector(result.embedding_norms)}")
    if result.b is not None:
        lines.append(f"bias b       {_fmt_vector(result.b)}  (gauge: orthogonal to Delta^-1 1)")
    if vanished:
        lines.append("geometry     W = 0 and H = 0: no norms or cosines (every class vanishes)")
        return "\n".join(lines)
    if result.classifier_gram is not None:
        groups = spec.step_groups()
        label = "cosines (majority / minority groups)" if groups is not None else "cosines"
        lines.append(label)
        lines += _cosine_lines(spec, "classifiers", result.classifier_gram)
        lines += _cosine_lines(spec, "embeddings", result.embedding_gram)
    if result.classifier_norms is not None:
        if stats is None:
            stats = group_statistics(result)
        lines += group_lines(
            stats, cosines=spec.step_groups() is None or result.classifier_gram is None
        )
    return "\n".join(lines)


def group_lines(stats: GroupStatistics, cosines: bool = True) -> list[str]:
    """Norms (mean, range, mean squared ratio to the head class) and mean cosines by group
    (docs/theory.md §17); nothing for balanced counts. ``cosines=False`` leaves out the cosine
    lines (the STEP summary prints them already)."""
    g = stats.groups
    if len(g.names) < 2:
        return []
    sizes = " / ".join(f"{name} {idx.size}" for name, idx in zip(g.names, g.members, strict=True))
    rule = (
        f", n > {g.many_above:g}, {g.few_below:g}-{g.many_above:g}, < {g.few_below:g}"
        if g.convention == "many/medium/few"
        else ""
    )
    lines = [f"groups       {g.convention} ({sizes} classes{rule})"]
    lines.append("norms by group: mean [min, max], mean squared ratio to the head class")
    for side, table in (("classifiers", stats.classifier_norms),
                        ("embeddings", stats.embedding_norms)):  # fmt: skip
        text = "; ".join(
            f"{name} {v['mean']:.6g} [{v['min']:.6g}, {v['max']:.6g}] "
            f"r2 {v['sq_ratio_to_head']:.4g}"
            for name, v in table.items()
        )
        lines.append(f"  {side:<12}{text}")
    if cosines and stats.classifier_cos is not None:
        lines.append(f"cosines by group (mean over class pairs; ETF {stats.etf_cos:+.6f})")
        for side, table in (("classifiers", stats.classifier_cos),
                            ("embeddings", stats.embedding_cos)):  # fmt: skip
            text = ", ".join(f"{key} {v:+.6f}" for key, v in table.items() if np.isfinite(v))
            lines.append(f"  {side:<12}{text}")
    return lines


def add_group_arguments(parser: argparse.ArgumentParser) -> None:
    """``--many-above`` and ``--few-below``: the many/medium/few thresholds (docs/theory.md §17)."""
    g = parser.add_argument_group("class groups (counts with three or more distinct values)")
    g.add_argument(
        "--many-above", default=MANY_ABOVE, type=float, metavar="N",
        help=f"many-shot classes have more than N examples (default {MANY_ABOVE})",
    )  # fmt: skip
    g.add_argument(
        "--few-below", default=FEW_BELOW, type=float, metavar="N",
        help=f"few-shot classes have fewer than N examples (default {FEW_BELOW})",
    )  # fmt: skip


def group_options(args: argparse.Namespace) -> dict[str, float]:
    """The thresholds of :func:`add_group_arguments`, checked, as keywords of
    :func:`ucfm_svm.api.group_statistics` (errors name the flags as typed)."""
    many = args.many_above
    few = args.few_below
    if not (np.isfinite(many) and many > 0):
        raise flag_error("--many-above", "a positive number", many)
    if not (np.isfinite(few) and 0 < few <= many):
        raise flag_error("--few-below", f"a positive number <= --many-above ({many:g})", few)
    return {"many_above": many, "few_below": few}


def check_output_path(name: str, path: str | None, figure: bool = False) -> None:
    """Reject an output path before any work is done, under the rule of
    :mod:`ucfm_svm.files`: it may be new (missing folders are created), empty, or a file
    ucfm-svm wrote; raises ``SpecError`` naming the flag ``name`` (``json``, ``plot``)
    otherwise. ``-`` (stdout) is always accepted. A ``figure`` path is checked as the file
    :func:`ucfm_svm.files.figure_path` names."""
    if path is None or path == STDOUT:
        return
    target = figure_path(path) if figure else path
    reason = refusal(target)
    if reason is not None:
        raise _path_error(name, target, reason)


def _path_error(name: str, path: object, reason: str) -> SpecError:
    """``fail``'s message for the output flag ``name``, with the path and reason untruncated."""
    return SpecError(
        f"The '{name}' parameter must be a writable file path. Got {path} ({reason}) instead."
    )


@contextmanager
def writing(name: str, path: str) -> Iterator[None]:
    """Context in which an ``OSError`` writing ``path`` (a full disk, a refused output)
    becomes a one-line ``SpecError`` naming the flag ``name`` and the file."""
    try:
        yield
    except OSError as exc:
        raise _path_error(name, exc.filename or path, exc.strerror or str(exc)) from None


def write_json(flag: str, path: str, data: dict) -> None:
    """Write ``data`` as strict JSON (:func:`ucfm_svm.files.json_text`) to ``path``; ``-`` is
    stdout (and nothing else is printed there), any other path a file written by
    :func:`ucfm_svm.files.write_output` followed by a ``wrote PATH`` line. ``flag`` (``json``)
    names the option in errors."""
    text = json_text(data)
    if path == STDOUT:
        sys.stdout.write(text)
        return
    with writing(flag, path):
        write_output(path, text)
    print(f"wrote {path}")


def save_plot(flag: str, path: str, fig: object) -> None:
    """Write the figure ``fig`` to ``path`` (:func:`ucfm_svm.plots.style.save_one`: ``.png``
    appended unless the suffix names a format) and print ``wrote`` with the real file name."""
    from ..plots.style import save_one

    with writing(flag, path):
        written = save_one(fig, path)
    print(f"wrote {written}")


def flag_error(flag: str, allowed: str, got: object) -> SpecError:
    """The standard one-line error for a command-line flag as the user typed it
    (``--few-below``), rather than for a library parameter."""
    return SpecError(f"{flag} must be {allowed}. Got {got} instead.")


#: Library parameters whose command-line spelling is not ``--name-with-dashes``.
TYPED_NAMES = {
    "imbalance_factor": "the IF of --longtail K,IF",
    "k": "the number of classes (K of --step/--longtail, or the length of --counts)",
    "R": "the R of --step K,R,RHO",
    "rho": "the RHO of --step K,R,RHO",
    "file": "FILE",
    "search_range": "--range",
}
_PARAMETER = re.compile(r"^The '(-{0,2}[A-Za-z_][A-Za-z0-9_-]*)' parameter ")


def as_typed(message: str, options: set[str]) -> str:
    """A library error message (``The 'gamma' parameter must be ...``) rewritten to name what the
    user typed (``--gamma must be ...``): the flag ``--name-with-dashes`` when the command has
    it (``options``), else :data:`TYPED_NAMES`; a missing value reads "It was not given"
    instead of Python's ``None``. Messages of other shapes are returned unchanged."""
    match = _PARAMETER.match(message)
    if match:
        name = match.group(1)
        flag = name if name.startswith("--") else "--" + name.replace("_", "-")
        label = flag if flag in options else TYPED_NAMES.get(name)
        if label is not None:
            message = f"{label} " + message[match.end() :]
    return message.replace(" Got None instead.", " It was not given.")


def print_error(prog: str, exc: Exception | str) -> None:
    """One-line error to stderr (line breaks inside the message are folded)."""
    text = " ".join(str(exc).split())
    print(f"{prog}: error: {text}", file=sys.stderr)


__all__ = [
    "CUSTOM",
    "EXIT_CHECK_FAILED",
    "EXIT_NOT_CERTIFIED",
    "EXIT_OK",
    "EXIT_USAGE",
    "STDOUT",
    "Parser",
    "add_group_arguments",
    "add_model_arguments",
    "add_spec_arguments",
    "as_typed",
    "check_output_path",
    "flag_error",
    "group_lines",
    "group_options",
    "print_error",
    "save_plot",
    "spec_from_args",
    "summary",
    "write_json",
    "writing",
]
