"""``ucfm-svm solve``: one UF-CS-SVM, solved and certified, summarized and written as JSON."""

from __future__ import annotations

import argparse

from ..api import METHODS, group_statistics, method_options, solve
from ..regularized.solver import solve_regularized
from ..result import OPTIMAL, jsonable
from ..solvers.convex import LEVELS
from ..solvers.nonconvex import REFINEMENTS
from ..validation import fail
from . import regularized
from ._common import (
    EXIT_NOT_CERTIFIED,
    EXIT_OK,
    STDOUT,
    add_group_arguments,
    add_model_arguments,
    add_spec_arguments,
    check_output_path,
    flag_error,
    group_options,
    spec_from_args,
    summary,
    write_json,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``solve`` subcommand."""
    p = subparsers.add_parser(
        "solve",
        help="solve and certify one UF-CS-SVM",
        description="Solve the UF-CS-SVM for the given class counts and loss, print its "
        "certified geometry, and optionally write it as JSON.",
    )
    add_spec_arguments(p)
    add_model_arguments(p, ridge=True)
    p.add_argument(
        "--method",
        default="auto",
        choices=sorted(METHODS),
        help="solution method (default auto: the fastest route that certifies the objective "
        "and the geometry at this size, docs/theory.md §10)",
    )
    p.add_argument(
        "--level",
        default=None,
        choices=LEVELS,
        help="class level (k x k, any n; the default) or example level (k x n); "
        "convex, nonconvex and structured (nonconvex at the example level is refused when "
        f"estimated over {NONCONVEX_EXAMPLE_MAX_SECONDS:g} s: about k n d = 1.4e4 per start)",
    )
    p.add_argument(
        "--solver",
        default=None,
        choices=["CLARABEL", "SCS"],
        type=str.upper,
        help="convex backend (default Clarabel, then SCS); convex only",
    )
    p.add_argument(
        "--full",
        action="store_true",
        default=None,
        help="with --method structured or auto: also build W, H and the k x k Grams "
        "(O(k^2 + m^3), m distinct counts; auto does it for k <= 500; above k ~ 6900 H is "
        "left out, a rescaling of W: structured.embeddings)",
    )
    nonconvex = p.add_argument_group("non-convex method (--method nonconvex)")
    nonconvex.add_argument(
        "--restarts",
        default=None,
        type=int,
        metavar="N",
        help="random starts (default 1, at most 100)",
    )
    nonconvex.add_argument(
        "--seed", default=None, type=int, metavar="S", help="seed of the starts (default 0)"
    )
    nonconvex.add_argument(
        "--alternations",
        default=None,
        type=int,
        metavar="R",
        help="rounds of exact block steps before the joint refinement "
        "(default 2 at the class level for k <= 12, else 0; 0 at the example level; at most "
        "10000)",
    )
    nonconvex.add_argument(
        "--refinement",
        default=None,
        choices=REFINEMENTS,
        help="how a random start is refined: joint (augmented Lagrangian on W and H, the way a "
        "network trains), tight (L-BFGS on W alone with every margin tight, docs/theory.md "
        "§18; d >= k - 1) or auto (the default: tight above 5,000 variables, joint below or "
        "when tight does not certify)",
    )
    add_group_arguments(p)
    regularized.add_arguments(p)
    p.add_argument(
        "--json", default=None, metavar="PATH", help="write the result as JSON ('-': stdout)"
    )
    p.set_defaults(run=run)


#: Time model of ``--method nonconvex --level example`` per start: ``c (k n d)^1.2`` seconds,
#: fitted to runs on the shared 2-core machine under a varying load (k n d = 10800 in 5.4 s,
#: 16200 in 28 s, 21600 in 13 s, 1e5 in 37 s, 3e5 in 294 s): about 1.4e4 terms in 10 s.
NONCONVEX_EXAMPLE_COEFFICIENT = 1.2e-4
#: Estimated seconds above which ``solve`` refuses the example-level non-convex solve.
NONCONVEX_EXAMPLE_MAX_SECONDS = 10.0


def check_nonconvex_example(spec: object, options: dict[str, object]) -> None:
    """Refuse ``--method nonconvex --level example`` when :data:`NONCONVEX_EXAMPLE_COEFFICIENT`
    puts it above :data:`NONCONVEX_EXAMPLE_MAX_SECONDS`, naming the routes that answer."""
    if options.get("level") != "example":
        return
    restarts = options.get("restarts") or 1
    if not isinstance(restarts, int) or restarts < 1:
        return  # the solver's own check names the flag
    terms = spec.k * spec.n * spec.dim
    seconds = restarts * NONCONVEX_EXAMPLE_COEFFICIENT * terms**1.2
    if seconds > NONCONVEX_EXAMPLE_MAX_SECONDS:
        raise flag_error(
            "--level",
            f"class with --method nonconvex at this size (the example level is estimated at "
            f"about {seconds:.3g} s for k n d = {terms:.3g}"
            + (f" and {restarts} starts" if restarts > 1 else "")
            + f", over the {NONCONVEX_EXAMPLE_MAX_SECONDS:g} s allowed); or --method structured "
            "--level example (the closed form at the example level, certified, for d >= k - 1)",
            "example",
        )


def method_flags(args: argparse.Namespace) -> dict[str, object]:
    """The options for ``args.method``: every method flag that was given.

    A flag is passed as the keyword of the same name. A flag that only other methods take
    (``--restarts`` with ``--method convex``, ``--level`` with ``--method theory``) is an error
    rather than silently ignored.
    """
    accepted = method_options(args.method)
    options = {}
    for name in sorted({name for method in METHODS for name in method_options(method)}):
        value = getattr(args, name, None)
        if value is None:
            continue
        if name not in accepted:
            takers = [method for method in METHODS if name in method_options(method)]
            raise fail(
                name,
                f"left unset with --method {args.method} (only --method "
                f"{' or '.join(takers)} takes it)",
                value,
            )
        options[name] = value
    return options


def run(args: argparse.Namespace) -> int:
    """Solve, print the summary, write JSON; exit 0 iff the result is certified optimal."""
    reg = regularized.regularization_from_args(args)
    if reg is not None:
        if getattr(args, "features", None) not in (None, "free"):
            raise fail(
                "--features", "free with --lambda (the regularized model's features)", args.features
            )
        # the regularized model carries its own bias (none, free or ridge: docs/theory.md §13)
        spec = spec_from_args(argparse.Namespace(**{**vars(args), "bias": None}))
        options = regularized.solve_options(args)
        check_output_path("json", args.json)
        result = solve_regularized(spec, reg, **options)
        if args.json != STDOUT:
            print(regularized.describe(reg))
    else:
        spec = spec_from_args(args)
        options = method_flags(args)
        check_output_path("json", args.json)
        if args.method == "nonconvex":
            check_nonconvex_example(spec, options)
        result = solve(spec, args.method, **options)
    stats = group_statistics(result, **group_options(args))
    if args.json != STDOUT:
        print(summary(result, stats))
    if args.json:
        data = result.to_dict()
        data["groups"] = jsonable(stats.to_dict())  # docs/theory.md §17
        write_json("json", args.json, data)
    return EXIT_OK if result.status == OPTIMAL else EXIT_NOT_CERTIFIED
