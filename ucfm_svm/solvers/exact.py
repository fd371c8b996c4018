"""The closed form and its dual certificate in extended precision (docs/theory.md §4, §10).

With ``g_c = delta_c sqrt(n_c) / Delta_c``, ``u = Delta^{-1} 1 / ||Delta^{-1} 1||`` and
``P_u = I - u u^T``, the class-level optimum is ``A = P_u diag(g)`` (docs/theory.md §4). This
module evaluates, in ``mpmath`` arithmetic with ``dps`` decimal digits:

- the eigendecomposition ``A^T A = V diag(mu) V^T`` (``mu_k = 0``, eigenvector
  ``diag(g)^{-1} u``), ``s = sqrt(mu)`` over the ``k - 1`` nonzero values, ``U = A V S^{-1}``;
- the polar factor ``Q = U V^T`` and the KKT multipliers ``lam_{c'c} = -Q_{c'c} sqrt(n_c) /
  Delta_c'`` (``c' != c``);
- the balanced factors ``W = U S^{1/2}``, ``Hbar = S^{1/2} V^T N^{-1/2}``, the optimum
  ``||A||_* = sum s`` and the dual value ``sum_c delta_c L_cc = tr(diag(g) Q)``.

It decides what float64 cannot: the sign of multipliers within rounding of zero, and the
geometry of classes whose norms float64 resolves only to ``eps ||A|| / ||w_c||^2``. An
entry is trusted only when it exceeds the a-posteriori error level
``10^(-dps) * cond(A) * max|entry|`` (with a safety factor of ``10^5``); otherwise the
evaluation is repeated with twice the digits, once. Cost: ``O(k^3)`` operations at ``dps``
digits (about 0.2 s at k = 20 and 5 s at k = 50 for 60 digits, on one core), hence
:data:`MAX_K`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..spec import Spec

#: Largest k evaluated in extended precision (``O(k^3)`` multiprecision operations).
MAX_K = 50
#: Decimal digits of the first evaluation (doubled once if the signs stay undecided).
DPS = 40
#: Safety factor on the a-posteriori error level ``10^(-dps) cond(A)``.
SAFETY = 1e5


@dataclass(frozen=True)
class ExactClosedForm:
    """The closed form evaluated in extended precision, rounded to float64 at the end.

    Attributes
    ----------
    W : (k, k-1) array
        ``U S^{1/2}`` (each entry correctly rounded from the ``dps``-digit value).
    H_mean : (k-1, k) array
        ``S^{1/2} V^T N^{-1/2}``.
    multipliers : (k, k) array
        ``lam_{c'c}`` (zero diagonal).
    min_multiplier : float
        Smallest off-diagonal multiplier over the largest entry of ``|L|``.
    signs_decided : bool
        Whether every off-diagonal multiplier exceeds the error level in absolute value.
    value : float
        ``||A||_*``.
    lower_bound : float
        The dual value ``tr(diag(g) Q)`` reduced by the error level (a valid weak-duality
        bound when every multiplier is positive: ``||Q||_2 = 1`` up to that level).
    dps : int
        Digits of the evaluation that decided (or failed to decide) the signs.
    """

    W: np.ndarray
    H_mean: np.ndarray
    multipliers: np.ndarray
    min_multiplier: float
    signs_decided: bool
    value: float
    lower_bound: float
    dps: int

    @property
    def certified(self) -> bool:
        """Every multiplier is positive beyond the error level of the evaluation."""
        return self.signs_decided and self.min_multiplier > 0


def exact_closed_form(spec: Spec, dps: int = DPS) -> ExactClosedForm | None:
    """Evaluate the closed form and its multipliers with ``dps`` digits (see the module text).

    If some multiplier is within the error level of zero, or the smallest of the ``k - 1``
    singular values is not resolved (``A^T A``'s eigenvalue at or below zero: the condition
    number of ``A`` squared beyond ``10^dps``), the evaluation is repeated once with
    ``2 * dps`` digits. ``None`` when even that does not resolve the singular values.
    """
    result = _evaluate(spec, dps)
    if result is None or not result.signs_decided:
        result = _evaluate(spec, 2 * dps)
    return result


def _evaluate(spec: Spec, dps: int) -> ExactClosedForm | None:
    import mpmath

    ctx = mpmath.MPContext()
    ctx.dps = dps
    k = spec.k
    mpf = ctx.mpf
    n = [mpf(float(x)) for x in spec.n_vec]
    Delta = [mpf(float(x)) for x in spec.Delta]
    delta = [mpf(float(x)) for x in spec.delta]
    root_n = [ctx.sqrt(x) for x in n]
    g = [delta[c] * root_n[c] / Delta[c] for c in range(k)]
    a = [1 / x for x in Delta]
    norm_a = ctx.sqrt(ctx.fsum(x * x for x in a))
    u = [x / norm_a for x in a]
    A = ctx.matrix(k, k)
    for i in range(k):
        for j in range(k):
            A[i, j] = ((1 if i == j else 0) - u[i] * u[j]) * g[j]
    M = A.T * A
    mu, V = ctx.eigsy(M)
    order = sorted(range(k), key=lambda j: mu[j], reverse=True)[: k - 1]
    if not mu[order[-1]] > 0:  # unresolved at this precision (CDT gamma = 17, STEP 10,10,0.5)
        return None
    s = [ctx.sqrt(mu[j]) for j in order]
    Vk = ctx.matrix(k, k - 1)
    for col, j in enumerate(order):
        for i in range(k):
            Vk[i, col] = V[i, j]
    U = A * Vk
    for col in range(k - 1):
        for i in range(k):
            U[i, col] /= s[col]
    Q = U * Vk.T
    level = mpf(10) ** (-dps) * SAFETY * (s[0] / s[-1])
    lam = np.zeros((k, k))
    scale = max(abs(Q[i, j]) * root_n[j] / Delta[i] for i in range(k) for j in range(k))
    decided = True
    smallest = None
    for i in range(k):
        for j in range(k):
            if i == j:
                continue
            value = -Q[i, j] * root_n[j] / Delta[i]
            lam[i, j] = float(value)
            if abs(value) <= level * scale:
                decided = False
            smallest = value if smallest is None or value < smallest else smallest
    dual = ctx.fsum(g[c] * Q[c, c] for c in range(k))
    objective = ctx.fsum(s)
    root_s = [ctx.sqrt(x) for x in s]
    W = np.array([[float(U[i, col] * root_s[col]) for col in range(k - 1)] for i in range(k)])
    H_mean = np.array(
        [[float(root_s[col] * Vk[j, col] / root_n[j]) for j in range(k)] for col in range(k - 1)]
    )
    return ExactClosedForm(
        W=W,
        H_mean=H_mean,
        multipliers=lam,
        min_multiplier=float(smallest / scale),
        signs_decided=decided,
        value=float(objective),
        lower_bound=float(dual * (1 - level)),
        dps=dps,
    )
