"""Which method solves which model variant (docs/theory.md §11, §12).

:func:`solve_variant` is what :func:`ucfm_svm.api.solve` calls for a :class:`~ucfm_svm.spec.Spec`
with ``bias="free"`` or ``features="nonnegative"``. Every variant has three routes:

============  ==========================================  =====================================
method        free bias (§11)                             non-negative features (§12)
============  ==========================================  =====================================
``theory``    closed form + dual certificate, convex      closed form + DNN dual certificate
              fallback where a margin is slack
``convex``    nuclear norm + free vector (cvxpy)          DNN relaxation (cvxpy, a bound)
``nonconvex`` augmented Lagrangian on ``(W, b, Hbar)``    the same with ``Hbar >= 0``
============  ==========================================  =====================================

``auto`` (when a default method of that name is used) means ``theory``. The geometry of an
``optimal`` numerical solve is checked against the unique optimum
(:func:`ucfm_svm.variants.coverage.cover`; the free-bias convex route proves uniqueness from
its own polished dual, :func:`ucfm_svm.variants.bias.unique_optimum`). Everything else is a
one-line error naming the flags: the class level only (``--level example`` is refused), no
``structured`` or ``convex_grouped`` method, and not both variants at once.
"""

from __future__ import annotations

from ..result import Result
from ..spec import Spec
from ..validation import fail
from .bias import solve_bias_convex, solve_bias_theory
from .coverage import cover
from .nonconvex import solve_variant_nonconvex
from .nonnegative import solve_nonnegative_convex, solve_nonnegative_theory

#: Methods that solve the variants, and the options each takes.
VARIANT_METHODS: dict[str, tuple[str, ...]] = {
    "theory": ("fallback",),
    "convex": ("level", "solver"),
    "nonconvex": ("level", "restarts", "seed"),
    "auto": (),
}


def model_flags(spec: Spec) -> str:
    """The command-line flags that select ``spec``'s model (``--bias free``, ...)."""
    flags = []
    if spec.bias != "none":
        flags.append(f"--bias {spec.bias}")
    if spec.features != "free":
        flags.append(f"--features {spec.features}")
    return " ".join(flags)


def check_variant(spec: Spec, method: str, options: dict[str, object]) -> None:
    """Raise a one-line ``SpecError`` for a combination the variants do not support."""
    if spec.bias != "none" and spec.features != "free":
        raise fail(
            "features",
            "'free' with --bias free (a free bias with non-negative features is not supported: "
            "the bias lowers the doubly non-negative bound, e.g. 7.2093 -> 6.7731 at counts "
            "10,10,1,1, and no closed form or tight bound is known, docs/theory.md §12)",
            spec.features,
        )
    flags = model_flags(spec)
    if method not in VARIANT_METHODS:
        raise fail(
            "method",
            f"theory, convex or nonconvex with {flags} (the {method} method solves the "
            "paper's model only)",
            method,
        )
    for name, value in options.items():
        if name == "level" and value == "class":
            continue
        if name == "level":
            raise fail(
                "level",
                f"'class' with {flags} (the variants are solved at the class "
                "level: collapse is proved, docs/theory.md §11, §12)",
                value,
            )
        if name not in VARIANT_METHODS[method] or (name == "fallback" and spec.bias == "none"):
            raise fail(name, f"left unset with --method {method} and {flags}", value)


def solve_variant(spec: Spec, method: str = "theory", **options: object) -> Result:
    """Solve a variant's model by ``method`` (see the module table).

    Raises
    ------
    SpecError
        An unsupported combination of model, method and options (:func:`check_variant`).
    """
    check_variant(spec, method, options)
    options.pop("level", None)
    if method == "auto":
        method = "theory"
    if spec.bias == "free":
        if method == "theory":
            return solve_bias_theory(spec, **options)  # type: ignore[arg-type]
        if method == "convex":  # certifies its own geometry (unique_optimum)
            return solve_bias_convex(spec, **options)  # type: ignore[arg-type]
    else:
        if method == "theory":
            return solve_nonnegative_theory(spec)
        if method == "convex":
            return cover(solve_nonnegative_convex(spec, **options))  # type: ignore[arg-type]
    return cover(solve_variant_nonconvex(spec, **options))  # type: ignore[arg-type]
