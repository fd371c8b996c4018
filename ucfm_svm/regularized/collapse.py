"""Minority collapse at finite weight decay: closed-form thresholds and their bisection check.

For a group ``g`` of at least two classes with identical counts and loss parameters (STEP's
minorities), the optimum of the regularized UFM (:mod:`ucfm_svm.regularized.solver`) has the
classifiers of ``g`` coincide (*collapse*) iff (docs/theory.md §13)::

    lambda = sqrt(lambda_W lambda_H) >= lambda*_g = w_g Delta_g sqrt(n_g) / (delta_g N),

for every loss without a true-class margin (all presets but LDAM), whatever the other classes
and the bias. The proof: the group-centred vectors ``E_g`` reduce the permutation-invariant
optimum ``M``, on which ``M`` acts as ``alpha I`` and ``-grad_M f`` as ``lambda*_g (1 -
(p_cc - p_jc))`` with ``p_cc - p_jc`` the softmax gap of a true and a wrong class of ``g``;
``alpha = 0`` is optimal iff ``lambda*_g <= lambda``. Under STEP the same formula gives the
threshold ``R*`` of the imbalance ratio at a fixed ``lambda``.

:func:`bisect_lambda` finds the threshold from certified solves only (a geometric scan, then
bisection), each polished by proximal-gradient steps with singular-value thresholding on the
convex program so that a collapsed group is exactly collapsed: the check that the closed form
is right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import SolverError, SpecError
from ..result import Result
from ..spec import LOSSES, Spec, step_counts
from ..validation import check_float, check_int, fail
from .losses import LossParams, params_from_spec
from .solver import Regularization, polish, solve_factors

#: A group counts as collapsed when ``||P_g W Hbar||_2 <= COLLAPSE_RTOL ||W Hbar||_2`` (``P_g``
#: centres the group's rows); after the thresholding polish it is zero to rounding.
COLLAPSE_RTOL = 1e-12
#: Relative width of the final bisection bracket.
BISECT_RTOL = 1e-9


@dataclass(frozen=True)
class Threshold:
    """A collapse threshold of one group of identical classes.

    Attributes
    ----------
    group : tuple of int
        The classes of the group.
    closed_form : float or None
        ``lambda*_g`` (``None`` for a loss with true-class margins, LDAM).
    bisection : float or None
        The threshold bracketed by certified solves (``None`` if not computed).
    bracket : (float, float) or None
        ``(lo, hi)``: not collapsed at ``lo``, collapsed at ``hi``.
    solves : int
        Certified solves the bisection used.
    """

    group: tuple[int, ...]
    closed_form: float | None
    bisection: float | None = None
    bracket: tuple[float, float] | None = None
    solves: int = 0

    def to_dict(self) -> dict:
        """JSON-ready dictionary."""
        return {
            "group": list(self.group),
            "closed_form": self.closed_form,
            "bisection": self.bisection,
            "bracket": list(self.bracket) if self.bracket else None,
            "solves": self.solves,
        }


def identical_groups(spec: Spec, params: LossParams | None = None) -> list[np.ndarray]:
    """Groups of at least two classes with equal counts and equal loss parameters."""
    params = params_from_spec(spec) if params is None else params
    keys: dict[tuple, list[int]] = {}
    for c in range(spec.k):
        key = (
            spec.counts[c],
            params.weights[c],
            params.offsets[c],
            params.true_margins[c],
            params.scales[c],
            params.temperatures[c],
        )
        keys.setdefault(key, []).append(c)
    return [np.asarray(v) for v in keys.values() if len(v) >= 2]


def closed_form_lambda(spec: Spec, group: np.ndarray, params: LossParams | None = None) -> float:
    """``lambda*_g = w_g Delta_g sqrt(n_g) / (delta_g N)``; raises for a loss with margins."""
    params = params_from_spec(spec) if params is None else params
    c = int(group[0])
    if params.true_margins[c] != 0:
        raise fail(
            "loss",
            "a loss without true-class margins for the closed form (LDAM's threshold depends on "
            "the solution: use the bisection)",
            spec.loss,
        )
    n = spec.counts[c]
    return float(params.weights[c] * params.scales[c] * math.sqrt(n) / (params.temperatures[c]
                                                                       * spec.n))


def step_lambda_star(k: int, R: float, rho: float, n_min: float, loss: str,
                     gamma: float | None = None) -> float:
    """The minority threshold of STEP(k, R, rho, n_min) as a function of a real ``R``.

    With ``K_A = (1-rho) k`` majorities, ``K_B = rho k`` minorities, ``N = n_min (K_A R +
    K_B)`` and ``D = k / (K_A R^gamma + K_B)`` (the minority scale of CDT / VS, the inverse
    minority margin of LDT): ``lambda* = sqrt(n_min)/N`` (CE, LA), ``1/(k sqrt(n_min))`` (wCE),
    ``D sqrt(n_min)/N`` (CDT, LDT, VS).
    """
    K_B = rho * k
    K_A = k - K_B
    N = n_min * (K_A * R + K_B)
    if loss in ("ce", "la"):
        return math.sqrt(n_min) / N
    if loss == "wce":
        return 1.0 / (k * math.sqrt(n_min))
    if loss in ("cdt", "ldt", "vs"):
        return k / (K_A * R**gamma + K_B) * math.sqrt(n_min) / N
    raise fail("loss", "one of ce, wce, la, cdt, ldt, vs for the closed form", loss)


def step_ratio_threshold(
    k: int, rho: float, n_min: int, loss: str, lam: float, *, gamma: float | None = None,
    r_max: float = 1e8,
) -> float | None:
    """The imbalance ratio ``R*`` above which STEP's minorities collapse at ``lambda = lam``.

    The root in ``[1, r_max]`` of ``step_lambda_star(R) = lam`` (closed form ``(1/(lam
    sqrt(n_min)) - K_B) / K_A`` for CE and LA), or ``None`` when there is none (wCE: the
    threshold does not depend on ``R``).
    """
    from scipy.optimize import brentq

    lam = check_float("lambda", lam, low=0.0, low_open=True)
    if loss not in LOSSES or loss == "ldam":
        raise fail("loss", "one of ce, wce, la, cdt, ldt, vs", loss)

    def gap(R: float) -> float:
        return math.log(step_lambda_star(k, R, rho, n_min, loss, gamma)) - math.log(lam)

    lo, hi = gap(1.0), gap(r_max)
    if lo * hi > 0:
        return None
    return float(brentq(gap, 1.0, r_max, xtol=1e-14, rtol=1e-14))


def group_spread(W: np.ndarray, group: np.ndarray) -> float:
    """``||P_g W||_2 / ||W||_2`` (``P_g`` centres the group's rows; 0 when ``W = 0``).

    Applied to ``W Hbar`` (the logits without bias): its rows coincide iff the classifiers of
    the group do (same row space). ``W`` itself is ``U S^{1/2}``, whose square root turns a
    singular value at rounding level (1e-17) into a visible 3e-9.
    """
    top = float(np.linalg.norm(W, 2))
    if top == 0.0:
        return 0.0
    rows = W[group]
    return float(np.linalg.norm(rows - rows.mean(axis=0), 2)) / top


def is_collapsed(spec: Spec, lam: float, group: np.ndarray, bias: str = "none",
                 rtol: float = 1e-9) -> tuple[bool, Result]:
    """Whether the group collapses at ``lambda = lam``, from a certified, polished solve.

    An uncertified solve (relative gap above ``rtol`` after the polish) raises
    ``SolverError``, so that the bisection never rests on an uncertified point.
    """
    reg = Regularization.from_lambda(lam, bias)
    result, _ = polish(spec, reg, solve_factors(spec, reg, gtol=1e-11)[1], rtol=rtol)
    if not result.objective_certified:  # the collapse test reads the polished point's zeros
        raise SolverError(f"uncertified solve at lambda={lam:.17g}: {result.message}")
    return group_spread(result.W @ result.H_mean, group) <= COLLAPSE_RTOL, result


def bisect_lambda(spec: Spec, group: np.ndarray, *, bias: str = "none",
                  lam_max: float = 10.0, rtol: float = BISECT_RTOL) -> Threshold:
    """The collapse threshold of ``group`` from certified solves only.

    Scan ``lambda = lam_max, lam_max/2, ...`` down to the first non-collapsed solve, then
    bisect (geometric midpoints) until the bracket is ``rtol`` wide. The closed form is not
    used.
    """
    check_float("lam_max", lam_max, low=0.0, low_open=True)
    group = np.asarray(group)
    solves = 0
    hi = lam_max
    collapsed, _ = is_collapsed(spec, hi, group, bias)
    solves += 1
    if not collapsed:
        raise fail("lam_max", "a lambda at which the group is collapsed", lam_max)
    lo = hi / 2
    while True:
        collapsed, _ = is_collapsed(spec, lo, group, bias)
        solves += 1
        if not collapsed:
            break
        hi, lo = lo, lo / 2
        if lo < 1e-12:
            raise fail("group", "a group that separates at some lambda > 1e-12", group.tolist())
    while hi / lo - 1 > rtol:
        mid = math.sqrt(lo * hi)
        collapsed, _ = is_collapsed(spec, mid, group, bias)
        solves += 1
        if collapsed:
            hi = mid
        else:
            lo = mid
    try:
        closed = closed_form_lambda(spec, group)
    except SpecError:  # LDAM: no closed form
        closed = None
    return Threshold(tuple(int(c) for c in group), closed, math.sqrt(lo * hi), (lo, hi), solves)


def bisect_ratio(k: int, rho: float, n_min: int, loss: str, lam: float, *,
                 gamma: float | None = None, bias: str = "none", r_max: int = 1000) -> int | None:
    """The smallest integer ``R`` in ``[1, r_max]`` at which STEP's minorities collapse at
    ``lam``, by bisection over certified solves (``None`` if they do not collapse at
    ``r_max``). Counts are whole, so this brackets ``R*`` to one unit."""
    check_int("r_max", r_max, low=2)

    def collapsed(R: int) -> bool:
        spec = Spec.from_loss(step_counts(k, R, rho, n_min), loss, gamma=gamma)
        minority = np.arange(spec.k - round(rho * k), spec.k)
        return is_collapsed(spec, lam, minority, bias)[0]

    if not collapsed(r_max):
        return None
    if collapsed(1):
        return 1
    lo, hi = 1, r_max
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if collapsed(mid):
            hi = mid
        else:
            lo = mid
    return hi
