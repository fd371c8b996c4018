"""Flags of the regularized UFM (``solve --lambda``; docs/regularized.md, docs/theory.md §13)."""

from __future__ import annotations

import argparse

from ..regularized.solver import LEVELS, Regularization
from ..validation import check_float, fail

#: The method flags of ``solve`` that the regularized solve does not take.
NOT_REGULARIZED = ("solver", "full", "restarts", "alternations")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--lambda``, ``--lambda-w``, ``--lambda-h``, ``--gtol``, ``--maxiter``; ``--bias``
    (none, free, ridge) comes from :func:`~ucfm_svm.cli._common.add_model_arguments`."""
    group = parser.add_argument_group(
        "finite weight decay (solve the regularized UFM instead of the SVM limit)"
    )
    group.add_argument(
        "--lambda", dest="lam", default=None, metavar="L",
        help="lambda_W = lambda_H = L > 0: (1/N) sum_i loss + L/2 (||W||^2 + ||H||^2)",
    )
    group.add_argument("--lambda-w", dest="lambda_w", default=None, metavar="L",
                       help="lambda_W alone (with --lambda-h)")
    group.add_argument("--lambda-h", dest="lambda_h", default=None, metavar="L",
                       help="lambda_H alone (with --lambda-w)")
    group.add_argument("--gtol", dest="reg_gtol", default=None, metavar="G",
                       help="with --lambda: L-BFGS tolerance on objective/lambda (default 1e-9)")
    group.add_argument("--maxiter", dest="reg_maxiter", default=None, metavar="N",
                       help="with --lambda: L-BFGS iterations at most (default 20000)")


def _positive(flag: str, text: object) -> float:
    return check_float(flag, text, low=0.0, low_open=True)


def regularization_from_args(args: argparse.Namespace) -> Regularization | None:
    """The :class:`Regularization` the flags ask for, or ``None`` for the SVM limit.

    Errors name the flag as typed (``--lambda``, ``--lambda-w``).
    """
    lam, lw, lh = args.lam, args.lambda_w, args.lambda_h
    bias = getattr(args, "bias", None)
    if lam is None and lw is None and lh is None:
        if bias == "ridge":
            raise fail("--bias", "none or free in the SVM limit (ridge, a penalized bias, needs "
                       "--lambda or --lambda-w and --lambda-h)", bias)
        for flag, value in (("--gtol", args.reg_gtol), ("--maxiter", args.reg_maxiter)):
            if value is not None:
                raise fail(flag, "given only with --lambda (or --lambda-w and --lambda-h)", value)
        return None
    if lam is not None and (lw is not None or lh is not None):
        flag = "--lambda-w" if lw is not None else "--lambda-h"
        raise fail(flag, "left unset with --lambda (which sets both)", lw if lw is not None else lh)
    if lam is not None:
        value = _positive("--lambda", lam)
        return Regularization(value, value, bias or "none")
    if lw is None or lh is None:
        missing = "--lambda-h" if lh is None else "--lambda-w"
        raise fail(missing, "given together with " + ("--lambda-w" if lh is None else
                                                      "--lambda-h"), None)
    return Regularization(_positive("--lambda-w", lw), _positive("--lambda-h", lh), bias or "none")


def solve_options(args: argparse.Namespace) -> dict[str, object]:
    """Keyword options of :func:`ucfm_svm.regularized.solver.solve_regularized` from the flags."""
    if args.method != "auto":  # the default: not chosen by the user
        raise fail("--method", "left unset with --lambda (the regularized UFM has its own "
                   "solver)", args.method)
    for name in NOT_REGULARIZED:
        if getattr(args, name, None) is not None:
            raise fail("--" + name, "left unset with --lambda", getattr(args, name))
    options: dict[str, object] = {}
    if args.level is not None:
        if args.level not in LEVELS:
            raise fail("--level", "one of " + ", ".join(LEVELS), args.level)
        options["level"] = args.level
    if args.seed is not None:
        options["seed"] = args.seed
    if args.reg_gtol is not None:
        options["gtol"] = _positive("--gtol", args.reg_gtol)
    if args.reg_maxiter is not None:
        value = check_float("--maxiter", args.reg_maxiter, low=1)
        if value != int(value):
            raise fail("--maxiter", "a whole number >= 1", args.reg_maxiter)
        options["maxiter"] = int(value)
    return options


def describe(args_reg: Regularization) -> str:
    """One line: the decays and the bias."""
    return (
        f"regularized UFM: lambda_W {args_reg.lambda_w:g}, lambda_H {args_reg.lambda_h:g} "
        f"(lambda {args_reg.lam:g}), bias {args_reg.bias}"
    )
