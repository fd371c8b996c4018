"""Training the UFM with a CE-family loss: the regularization path and gradient descent.

Both routes show how the minimizers of the *losses* approach the UF-CS-SVM of docs/theory.md
section 1 (the loss's SVM limit, ``Spec.from_loss``):

- :func:`regularization_path` minimizes the ridge-regularized UFM

      min_{W, H}  sum_i l(y_i, W h_i) + lambda/2 (||W||_F^2 + ||H||_F^2)

  with L-BFGS (:mod:`ucfm_svm.solvers.lbfgs`) over a decreasing grid of ``lambda``, each
  solve warm-started from the previous one (docs/theory.md §9: the normalized minimizers
  approach the SVM roughly like ``1 / log(1/lambda)``).
- :func:`gradient_descent` runs plain (``x <- x - lr grad``) or normalized
  (``x <- x - lr grad / ||grad||``) gradient descent on the unregularized UFM from a small
  random initialization.

At the **class level** the embeddings are collapsed, ``h_i = hbar_{y_i}``, and the optimizer
works in ``V = Hbar N^{1/2}`` (column ``c`` is ``sqrt(n_c) hbar_c``): then ``||V||_F^2 =
sum_i ||h_i||^2`` and a gradient step on ``(W, V)`` is exactly the example-level step taken from
a collapsed point, so both levels follow the same trajectory (checked in the tests). At the
**example level** ``H`` is ``d x n``.

Recorded at every point (one per ``lambda``, or at log-spaced iterations): the normalized
classifier and class-mean embedding Grams, cosines, norm ratios (:func:`norm_ratio`), the
scale-free distance to the SVM Grams (:func:`ucfm_svm.geometry.gram_distance`; the reference is
the certified closed form, :func:`reference_svm`), and the *SVM objective ratio*: the point
rescaled to satisfy the SVM margins exactly, its SVM objective divided by the certified optimum
(``>= 1``, tending to 1 iff the direction tends to an SVM solution).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar

import numpy as np

from .. import geometry
from ..api import solve
from ..progress import progress
from ..result import Result, jsonable
from ..solvers.lbfgs import minimize_lbfgs
from ..spec import Spec
from ..validation import check_float, check_int, fail, parse_list
from .losses import LossParams, loss_and_grad, params_from_spec, scaled_logit_gradient

#: Levels: collapsed class means weighted by ``n_c``, or one embedding per example.
LEVELS = ("class", "example")
#: Trajectory kinds: the regularization path, plain and normalized gradient descent.
KINDS = ("path", "gd", "ngd")
#: The default ``lambda`` grid of the path: ``1e-1, 1e-2, ..., 1e-8``.
DEFAULT_LAMBDAS = tuple(10.0**-j for j in range(1, 9))
#: Upper bounds of gradient descent: 10^7 steps is hours even at k = 10; records are kept in
#: memory and each costs a Gram comparison.
MAX_STEPS, MAX_RECORDS = 10_000_000, 10_000
#: How :func:`norm_ratio` is defined (recorded in the JSON output).
NORM_RATIO_DEFINITION = (
    "mean squared norm over the majority classes / mean squared norm over the minority "
    "classes when the specification has two groups of identical classes (Spec.step_groups), "
    "else largest / smallest squared norm"
)


def norm_ratio(spec: Spec, G: np.ndarray) -> float:
    """Squared-norm ratio of the vectors whose Gram is ``G`` (k x k).

    ``mean_{c in maj} G_cc / mean_{c in min} G_cc`` when ``spec.step_groups()`` splits the classes
    into a majority and a minority group (docs/theory.md §9 reports this ratio for classifiers),
    else
    ``max_c G_cc / min_c G_cc``.
    """
    sq = np.diag(G)
    groups = spec.step_groups()
    if groups is not None:
        maj, mnr = groups
        return float(sq[maj].mean() / sq[mnr].mean())
    return float(sq.max() / sq.min())


@dataclass(frozen=True)
class TrendFit:
    """Least-squares fit ``distance = intercept + slope * x`` with ``x = log(1/lambda)^-power``.

    With ``power = 1`` an intercept near zero says the distance vanishes like
    ``1 / log(1/lambda)`` (docs/theory.md §9).
    """

    power: float
    intercept: float
    slope: float
    r2: float
    points: int

    @property
    def regressor(self) -> str:
        """The regressor ``x`` as text."""
        return "1/log(1/lambda)" if self.power == 1 else f"log(1/lambda)^-{self.power:g}"

    def to_dict(self) -> dict:
        """JSON-ready dictionary (the regressor is named in ``x``)."""
        return {
            "x": self.regressor,
            "power": self.power,
            "intercept": self.intercept,
            "slope": self.slope,
            "r2": self.r2,
            "points": self.points,
        }


#: Powers of the trend fits recorded on a path: ``1 / log(1/lambda)`` (docs/theory.md §9) and, for
#: comparison, ``1 / sqrt(log(1/lambda))``.
FIT_POWERS = (1.0, 0.5)


def trend_fit(lambdas: np.ndarray, distances: np.ndarray, power: float = 1.0) -> TrendFit | None:
    """Fit ``distances ~ a + b * log(1/lambda)^-power`` over the points with ``lambda < 1``.

    Returns ``None`` with fewer than three such points (two always fit exactly).
    """
    power = check_float("power", power, low=0.0, low_open=True)
    lambdas = np.asarray(lambdas, dtype=float)
    distances = np.asarray(distances, dtype=float)
    keep = (lambdas < 1) & np.isfinite(distances)
    if keep.sum() < 3:
        return None
    x = np.log(1.0 / lambdas[keep]) ** -power
    y = distances[keep]
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (intercept + slope * x)
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / total if total > 0 else 1.0
    return TrendFit(power, float(intercept), float(slope), r2, int(keep.sum()))


@dataclass(frozen=True)
class Trajectory:
    """Geometry along a regularization path or a gradient-descent run (index-aligned arrays).

    Attributes
    ----------
    spec : Spec
        The loss's SVM limit (its preset, ``gamma``, ``tau`` name the loss that was trained).
    kind : str
        ``"path"``, ``"gd"`` or ``"ngd"``.
    level : str
        ``"class"`` or ``"example"``.
    params : LossParams
        The loss that was trained (:func:`ucfm_svm.regularized.losses.params_from_spec`).
    lambdas : (m,) array or None
        Regularization strengths (path).
    iterations : (m,) array or None
        Gradient steps taken at each record (gd, ngd).
    distance_to_svm, embedding_distance_to_svm : (m,) arrays
        :func:`~ucfm_svm.geometry.gram_distance` of ``W W^T`` and ``Hbar^T Hbar`` to the SVM's.
    classifier_norm_ratio, embedding_norm_ratio : (m,) arrays
        :func:`norm_ratio` of the two Grams.
    svm_objective_ratio : (m,) array
        SVM objective of the point rescaled to smallest margin ratio 1, over the certified SVM
        optimum (``inf`` while some example is misclassified).
    loss, objective : (m,) arrays
        Total loss ``sum_i l(y_i, W h_i)``; the path's regularized objective (gd: the loss).
    parameter_norm : (m,) array
        ``sqrt(||W||^2 + ||H||^2)``.
    gradient_norm : (m,) array
        Norm of the gradient of the minimized objective (path: of ``objective / lambda``).
    certificate : (m,) array or None
        Path only: ``||grad_M loss||_2 / lambda`` at ``M = W H`` (class level ``W V``). The
        regularized UFM equals ``min_M loss(M) + lambda ||M||_*`` (docs/theory.md §2), so a
        stationary
        point with ``certificate <= 1`` is a global minimizer.
    solver_iterations : (m,) array or None
        Path only: L-BFGS iterations per ``lambda``.
    converged : (m,) bool array or None
        Path only: whether L-BFGS met its tolerance.
    classifier_grams, embedding_grams : (m, k, k) arrays
        Grams divided by their Frobenius norms.
    nc1 : (m,) array or None
        Example level only: within-class variability (:func:`~ucfm_svm.geometry.nc1`).
    svm : Result
        The certified SVM reference (:func:`reference_svm`, class level).
    fits : tuple of TrendFit
        Path only: :func:`trend_fit` of ``distance_to_svm`` for each of :data:`FIT_POWERS`
        (``fits[0]`` is the ``1 / log(1/lambda)`` fit); empty otherwise.
    settings : dict
        The optimizer settings used.
    seconds : float
    message : str
    """

    spec: Spec
    kind: str
    level: str
    params: LossParams
    lambdas: np.ndarray | None
    iterations: np.ndarray | None
    distance_to_svm: np.ndarray
    embedding_distance_to_svm: np.ndarray
    classifier_norm_ratio: np.ndarray
    embedding_norm_ratio: np.ndarray
    svm_objective_ratio: np.ndarray
    loss: np.ndarray
    objective: np.ndarray
    parameter_norm: np.ndarray
    gradient_norm: np.ndarray
    certificate: np.ndarray | None
    solver_iterations: np.ndarray | None
    converged: np.ndarray | None
    classifier_grams: np.ndarray
    embedding_grams: np.ndarray
    nc1: np.ndarray | None
    svm: Result
    fits: tuple[TrendFit, ...]
    settings: dict
    seconds: float
    message: str

    #: The ``k x k`` fields (one array per record), left out by ``to_dict(matrices=False)``.
    MATRICES: ClassVar[tuple[str, ...]] = ("classifier_grams", "embedding_grams")

    @property
    def ok(self) -> bool:
        """Path: every solve converged and is certified (``certificate <= 1 + 1e-6``)."""
        if self.kind != "path":
            return True
        return bool(np.all(self.converged) and np.all(self.certificate <= 1 + CERTIFICATE_TOL))

    def label(self) -> str:
        """Short name of the loss, e.g. ``cdt (gamma=0.5)`` (:attr:`Spec.loss_label`)."""
        return self.spec.loss_label

    def distances_to(self, reference: Result) -> np.ndarray:
        """Classifier-Gram distance of every recorded point to another reference geometry."""
        return np.array(
            [geometry.gram_distance(G, reference.classifier_gram) for G in self.classifier_grams]
        )

    def _svm_dict(self, matrices: bool) -> dict:
        """The SVM reference: method, status, objective, bound, norm ratios (and Grams)."""
        svm = self.svm
        out = {
            "method": svm.method,
            "status": svm.status,
            "objective": svm.objective,
            "lower_bound": svm.lower_bound,
            "classifier_norm_ratio": norm_ratio(self.spec, svm.classifier_gram),
            "embedding_norm_ratio": norm_ratio(self.spec, svm.embedding_gram),
        }
        if matrices:
            out["classifier_gram"] = _normalized(svm.classifier_gram).tolist()
            out["embedding_gram"] = _normalized(svm.embedding_gram).tolist()
        return out

    def to_dict(self, matrices: bool = True) -> dict:
        """JSON-ready dictionary: every field, the cosines, and the SVM's reference values.

        Without ``matrices`` the ``k x k`` arrays (the recorded Grams and their cosines, the
        SVM's Grams) are left out: at k = 1000 the eight records of the default path make 961
        MB of JSON."""
        out: dict = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in self.MATRICES and not matrices:
                continue
            if f.name == "spec":
                value = value.to_dict()
            elif f.name == "params":
                value = {g.name: jsonable(getattr(value, g.name)) for g in fields(value)}
            elif f.name == "svm":
                value = self._svm_dict(matrices)
            elif f.name == "fits":
                value = [fit.to_dict() for fit in value]
            out[f.name] = jsonable(value)
        if matrices:
            out["classifier_cosines"] = [
                geometry.cosines_from_gram(G).tolist() for G in self.classifier_grams
            ]
            out["embedding_cosines"] = [
                geometry.cosines_from_gram(G).tolist() for G in self.embedding_grams
            ]
        out["norm_ratio_definition"] = NORM_RATIO_DEFINITION
        return out

    def to_json(self, path: str | Path) -> None:
        """Write :meth:`to_dict` to ``path`` by :func:`ucfm_svm.files.write_output` (refused
        over a file ucfm-svm did not write; atomic)."""
        from ..files import json_text, write_output

        write_output(path, json_text(self.to_dict()))


#: Stored (s, y) pairs of the path's L-BFGS (:func:`ucfm_svm.solvers.lbfgs.minimize_lbfgs`).
LBFGS_MEMORY = 10
#: Slack on the global-optimality certificate of the path (L-BFGS stops at ``gtol``, not 0).
CERTIFICATE_TOL = 1e-6


def _normalized(G: np.ndarray) -> np.ndarray:
    return G / np.linalg.norm(G)


class _Model:
    """The UFM of ``spec`` trained with ``params`` at one level, over a flat vector ``x = (W, V)``.

    ``V`` is ``Hbar N^{1/2}`` (class level) or ``H`` (example level); the logits of column ``j``
    are ``W v_j / root_j`` with ``root = sqrt(n_c)`` (class) or 1 (example).
    """

    def __init__(self, spec: Spec, params: LossParams, level: str) -> None:
        self.spec = spec
        self.params = params
        self.level = level
        self.k, self.d = spec.k, spec.dim
        if level == "class":
            self.labels = np.arange(self.k)
            self.weights: np.ndarray | None = spec.n_vec
            self.root = np.sqrt(spec.n_vec)
        else:
            self.labels = spec.labels
            self.weights = None
            self.root = np.ones(spec.n)
        self.m = self.labels.size
        self.size = self.k * self.d + self.d * self.m

    def unpack(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        W = x[: self.k * self.d].reshape(self.k, self.d)
        V = x[self.k * self.d :].reshape(self.d, self.m)
        return W, V

    def logits(self, W: np.ndarray, V: np.ndarray) -> np.ndarray:
        return (W @ V) / self.root[None, :]

    def loss_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """Total loss, its gradient in ``x``, and the logit gradient ``G`` (k x m)."""
        W, V = self.unpack(x)
        value, G = loss_and_grad(self.params, self.logits(W, V), self.labels, self.weights)
        return value, self._chain(W, V, G), G

    def direction(self, x: np.ndarray) -> np.ndarray:
        """A positive multiple of the loss gradient that does not underflow."""
        W, V = self.unpack(x)
        _, G = scaled_logit_gradient(self.params, self.logits(W, V), self.labels, self.weights)
        return self._chain(W, V, G)

    def _chain(self, W: np.ndarray, V: np.ndarray, G: np.ndarray) -> np.ndarray:
        Gr = G / self.root[None, :]
        return np.concatenate([(Gr @ V.T).ravel(), (W.T @ Gr).ravel()])

    def class_means(self, V: np.ndarray) -> np.ndarray:
        if self.level == "class":
            return V / self.root[None, :]
        return geometry.class_means(V, self.labels, self.k)

    def init(
        self, scale: float, seed: int, start: tuple[np.ndarray, np.ndarray] | None
    ) -> np.ndarray:
        """``scale`` times a seeded standard normal vector, or the given ``(W, H)``.

        ``H`` is the class means (d x k) at the class level, the embeddings (d x n) otherwise.
        """
        if start is None:
            return scale * np.random.default_rng(seed).standard_normal(self.size)
        try:
            W, H = (np.asarray(a, dtype=float) for a in start)
        except (TypeError, ValueError):
            raise fail("init", "a pair (W, H) of arrays", type(start).__name__) from None
        shape_h = (self.d, self.m)
        if W.shape != (self.k, self.d) or H.shape != shape_h:
            raise fail(
                "init",
                f"a pair (W, H) of shapes {(self.k, self.d)} and {shape_h} ({self.level} level)",
                f"shapes {W.shape} and {H.shape}",
            )
        if not (np.all(np.isfinite(W)) and np.all(np.isfinite(H))):
            raise fail("init", "finite arrays", "non-finite entries")
        return np.concatenate([W.ravel(), (H * self.root[None, :]).ravel()])


def _record(model: _Model, x: np.ndarray, svm: Result) -> dict:
    """Geometry of the point ``x`` against the SVM reference."""
    spec = model.spec
    W, V = model.unpack(x)
    Hbar = model.class_means(V)
    cg, eg = W @ W.T, Hbar.T @ Hbar
    logits = spec.Delta[:, None] * model.logits(W, V)
    margin = geometry.min_margin_ratio(spec, logits, model.labels)
    cost = 0.5 * float(x @ x)
    ratio = cost / margin / svm.objective if margin > 0 else math.inf
    return {
        "distance_to_svm": geometry.gram_distance(cg, svm.classifier_gram),
        "embedding_distance_to_svm": geometry.gram_distance(eg, svm.embedding_gram),
        "classifier_norm_ratio": norm_ratio(spec, cg),
        "embedding_norm_ratio": norm_ratio(spec, eg),
        "svm_objective_ratio": ratio,
        "parameter_norm": math.sqrt(2 * cost),
        "classifier_grams": _normalized(cg),
        "embedding_grams": _normalized(eg),
        "nc1": geometry.nc1(V, model.labels, model.k) if model.level == "example" else math.nan,
    }


def reference_svm(spec: Spec) -> Result:
    """The certified SVM geometry that trajectories are compared with (one call site).

    The ``auto`` route with the Grams (``full=True``), at ``d = max(d, k - 1)`` where it is exact:
    the structured closed form certified by its own dual. The generic convex solve is not used:
    it runs out of memory at k = 100.
    """
    return solve(spec.with_dim(max(spec.dim, spec.k - 1)), "auto", full=True)


def _check_common(spec: Spec, level: str, svm: Result | None) -> tuple[LossParams, Result]:
    if not isinstance(spec, Spec):
        raise fail("spec", "a Spec", type(spec).__name__)
    if level not in LEVELS:
        raise fail("level", "one of " + ", ".join(LEVELS), level)
    if svm is None:
        svm = reference_svm(spec)
    elif not isinstance(svm, Result) or (svm.spec.counts, svm.spec.scales, svm.spec.margins) != (
        spec.counts,
        spec.scales,
        spec.margins,
    ):
        raise fail(
            "svm",
            "a Result for the same counts, scales and margins (or None to solve it)",
            svm.spec.describe() if isinstance(svm, Result) else type(svm).__name__,
        )
    return params_from_spec(spec), svm


#: Escapes from saddles per ``lambda`` at most (:func:`_escape`).
MAX_ESCAPES = 5
#: A certificate ``||grad_M loss||_2 / lambda`` at most ``1 + REFINE_BELOW`` after L-BFGS has
#: converged is first taken for inaccuracy: L-BFGS goes on at ``gtol / 10``, down to ``gtol *
#: REFINE_FLOOR``, before a saddle is escaped. The certificate's excess grows with the number of
#: entries at a fixed ``gtol``: at k = 1000 (``--longtail 1000,256 --n-max 1280``) ``gtol = 1e-7``
#: left 1 + 1.8e-6 to 1 + 2.2e-6 at 3 of the 8 default lambdas.
REFINE_BELOW, REFINE_FLOOR = 1e-3, 1e-3


def _escape(model: _Model, x: np.ndarray, grad_M: np.ndarray, lam: float) -> np.ndarray | None:
    """A point off the saddle ``x`` when ``||grad_M loss||_2 > lambda (1 + CERTIFICATE_TOL)``.

    A warm start from a solution where a group had collapsed (docs/theory.md §13) is a
    stationary point of the factorization that is not a minimum below the collapse threshold
    (the certificate then equals ``lambda*_g / lambda``). The top singular pair ``(u, v)`` of
    ``-grad_M`` is a descent direction of ``loss(M) + lambda ||M||_*``: it replaces the weakest
    factor column, ``W[:, j] = s u``, ``V[j] = s v`` (``s^2 = 1e-2 (sigma - lambda) / lambda``).
    ``None`` when the certificate holds.
    """
    U, sig, Vt = np.linalg.svd(-grad_M, full_matrices=False)
    if sig[0] <= lam * (1 + CERTIFICATE_TOL):
        return None
    W, V = (a.copy() for a in model.unpack(x))
    j = int(np.argmin(np.sum(W * W, axis=0) + np.sum(V * V, axis=1)))
    step = np.sqrt(1e-2 * (sig[0] - lam) / lam)
    W[:, j] = step * U[:, 0]
    V[j] = step * Vt[0]
    return np.concatenate([W.ravel(), V.ravel()])


def check_lambdas(lambdas: object) -> np.ndarray:
    """Validate a ``lambda`` grid: positive finite numbers in strictly decreasing order.

    Accepts a sequence or a comma-separated string such as ``"1e-1,1e-2"``.
    """
    values = parse_list("lambdas", lambdas) if isinstance(lambdas, str) else lambdas
    try:
        arr = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError):
        raise fail("lambdas", "positive numbers in decreasing order", lambdas) from None
    allowed = "positive finite numbers in strictly decreasing order"
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise fail("lambdas", allowed, lambdas)
    if np.any(np.diff(arr) >= 0):
        raise fail("lambdas", allowed, lambdas)
    return arr


def vanishing_lambda(spec: Spec, level: str = "class") -> float:
    """The ``lambda`` from which the path's minimizer is ``W = H = 0``: ``||grad_M loss(0)||_2``.

    ``M = 0`` minimizes ``loss(M) + lambda ||M||_*`` iff the spectral norm of the loss gradient
    at ``M = 0`` is at most ``lambda`` (the path's certificate at the origin); the normalized
    geometry of that point is undefined.
    """
    params, _ = _check_common(spec, level, None)
    model = _Model(spec, params, level)
    _, _, G0 = model.loss_and_grad(np.zeros_like(model.init(1.0, 0, None)))
    return float(np.linalg.norm(G0 / model.root[None, :], 2))


def regularization_path(
    spec: Spec,
    lambdas: object = DEFAULT_LAMBDAS,
    *,
    level: str = "class",
    gtol: float = 1e-7,
    maxiter: int = 50_000,
    init_scale: float = 0.1,
    seed: int = 0,
    init: tuple[np.ndarray, np.ndarray] | None = None,
    svm: Result | None = None,
) -> Trajectory:
    """Minimize the ridge-regularized UFM of ``spec``'s loss along a decreasing ``lambda`` grid.

    At each ``lambda`` L-BFGS minimizes ``F(x) = loss(x) / lambda + ||x||^2 / 2`` (the
    objective divided by ``lambda``, so that its scale and ``gtol`` do not shrink with
    ``lambda``) from the previous minimizer (warm start; the first solve starts from
    ``init_scale`` times a standard normal vector). The point is certified when
    ``||grad_M loss||_2 <= lambda (1 + CERTIFICATE_TOL)`` (docs/theory.md §13); a converged run
    short of that by at most ``REFINE_BELOW`` goes on at a tenfold smaller ``gtol`` (at most
    three times), and a larger excess is a saddle, escaped by :func:`_escape`.

    Parameters
    ----------
    spec : Spec
        The loss (``spec.loss``, ``gamma``, ``tau``; a custom spec trains the plain family member
        with its ``Delta``, ``delta``) and the embedding dimension ``spec.dim``.
    lambdas : sequence of float or str
        Strictly decreasing positive values (:func:`check_lambdas`).
    level : {"class", "example"}
    gtol : float
        L-BFGS stops when the largest entry of ``grad F`` is ``<= gtol``.
    maxiter : int
        L-BFGS iterations per ``lambda``.
    init_scale, seed : initialization of the first solve.
    init : (W, H), optional
        Explicit start instead (``H``: class means ``d x k`` at the class level, ``d x n``
        embeddings at the example level).
    svm : Result, optional
        The SVM reference (same counts, scales, margins); by default :func:`reference_svm`.

    Returns
    -------
    Trajectory
        With ``lambdas``, ``certificate``, ``solver_iterations``, ``converged`` and ``fits``.
    """
    lambdas = check_lambdas(lambdas)
    gtol = check_float("gtol", gtol, low=0.0, low_open=True)
    maxiter = check_int("maxiter", maxiter, low=1)
    init_scale = check_float("init_scale", init_scale, low=0.0, low_open=True)
    seed = check_int("seed", seed, low=0)
    params, svm = _check_common(spec, level, svm)
    start = time.perf_counter()
    model = _Model(spec, params, level)
    x = model.init(init_scale, seed, init)
    rows: list[dict] = []
    for lam in progress(lambdas, desc="lambda path", unit="lambda"):

        def fun(z: np.ndarray, lam: float = lam) -> tuple[float, np.ndarray]:
            value, grad, _ = model.loss_and_grad(z)
            return value / lam + 0.5 * float(z @ z), grad / lam + z

        nit, escapes, tol = 0, 0, gtol
        while True:
            res = minimize_lbfgs(fun, x, gtol=tol, maxiter=maxiter, memory=LBFGS_MEMORY,
                                 past_rounding=True)
            x, nit = res.x, nit + res.nit
            value, grad, G = model.loss_and_grad(x)
            grad_M = G / model.root[None, :]
            excess = float(np.linalg.norm(grad_M, 2)) / lam - 1.0
            if excess <= CERTIFICATE_TOL:
                break
            if excess <= REFINE_BELOW and tol > gtol * REFINE_FLOOR and res.success:
                tol /= 10.0  # inaccurate, not a saddle (yet): refine before escaping
                continue
            escaped = _escape(model, x, grad_M, lam) if escapes < MAX_ESCAPES else None
            if escaped is None:
                break
            x, escapes, tol = escaped, escapes + 1, gtol
        row = _record(model, x, svm)
        row.update(
            loss=value,
            objective=value + 0.5 * lam * float(x @ x),
            gradient_norm=float(np.linalg.norm(grad / lam + x)),
            certificate=1.0 + excess,
            solver_iterations=nit,
            converged=bool(res.success),
        )
        rows.append(row)
    seconds = time.perf_counter() - start
    traj = _assemble(
        spec,
        "path",
        level,
        params,
        rows,
        svm,
        lambdas=lambdas,
        settings={"gtol": gtol, "maxiter": maxiter, "init_scale": init_scale, "seed": seed},
        seconds=seconds,
    )
    return traj


def _log_spaced(steps: int, records: int) -> np.ndarray:
    """About ``records`` distinct iteration counts in ``[1, steps]``, log-spaced, with ``steps``."""
    grid = np.unique(np.round(np.logspace(0, np.log10(steps), records)).astype(int))
    return grid[(grid >= 1) & (grid <= steps)]


def gradient_descent(
    spec: Spec,
    *,
    steps: int = 10_000,
    lr: float | None = None,
    normalized: bool = False,
    init_scale: float = 1e-3,
    seed: int = 0,
    init: tuple[np.ndarray, np.ndarray] | None = None,
    level: str = "class",
    records: int = 40,
    svm: Result | None = None,
) -> Trajectory:
    """Gradient descent on the unregularized UFM ``sum_i l(y_i, W h_i)`` of ``spec``'s loss.

    Plain: ``x <- x - lr grad``. Normalized: ``x <- x - lr grad / ||grad||`` (the direction is
    computed without underflow, :func:`ucfm_svm.regularized.losses.scaled_logit_gradient`, so the
    run can
    go on after the loss itself underflows). ``x = (W, H)`` starts at ``init_scale`` times a
    standard normal vector (class level: a collapsed start, see the module docstring).

    Parameters
    ----------
    steps : int
        Number of gradient steps.
    lr : float, optional
        Step size; default ``1 / n`` (plain, the loss is a sum over ``n`` examples) or ``0.05``
        (normalized).
    init_scale, seed, init
        As in :func:`regularization_path`.
    records : int
        About this many log-spaced iterations are recorded (the last step always is).

    Returns
    -------
    Trajectory
        With ``iterations``; ``objective`` is the loss.
    """
    steps = check_int("steps", steps, low=1, high=MAX_STEPS)
    if lr is None:
        lr = 0.05 if normalized else 1.0 / spec.n
    lr = check_float("lr", lr, low=0.0, low_open=True)
    init_scale = check_float("init_scale", init_scale, low=0.0, low_open=True)
    seed = check_int("seed", seed, low=0)
    records = check_int("records", records, low=1, high=MAX_RECORDS)
    params, svm = _check_common(spec, level, svm)
    start = time.perf_counter()
    model = _Model(spec, params, level)
    x = model.init(init_scale, seed, init)
    marks = set(_log_spaced(steps, records).tolist())
    recorded: np.ndarray | None = None
    rows: list[dict] = []
    iterations: list[int] = []
    message = f"{steps} steps"
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for t in progress(range(1, steps + 1), desc="gradient steps", unit="step"):
            if normalized:
                g = model.direction(x)
                size = float(np.linalg.norm(g))
                if not math.isfinite(size) or size == 0.0:
                    message = f"stopped at step {t}: zero or non-finite gradient direction"
                    if not iterations or iterations[-1] != t - 1:
                        _append_gd_record(model, x, svm, rows)
                        iterations.append(t - 1)
                    break
                x = x - (lr / size) * g
            else:
                g = recorded if recorded is not None else model.loss_and_grad(x)[1]
                x = x - lr * g
            recorded = None
            if t in marks:
                recorded = _append_gd_record(model, x, svm, rows)  # reused by the next step
                iterations.append(t)
            finite = np.all(np.isfinite(x)) and (t not in marks or _finite_row(rows[-1]))
            if not finite:
                raise fail("lr", f"small enough for a finite run (diverged at step {t})", lr)
    seconds = time.perf_counter() - start
    return _assemble(
        spec,
        "ngd" if normalized else "gd",
        level,
        params,
        rows,
        svm,
        iterations=np.asarray(iterations),
        settings={
            "steps": steps,
            "lr": lr,
            "init_scale": init_scale,
            "seed": seed,
            "records": records,
        },
        seconds=seconds,
        message=message,
    )


def _finite_row(row: dict) -> bool:
    return math.isfinite(row["parameter_norm"]) and math.isfinite(row["distance_to_svm"])


def _append_gd_record(
    model: _Model, x: np.ndarray, svm: Result, rows: list[dict]
) -> np.ndarray:
    """Record the point ``x``; returns its loss gradient (the next plain step reuses it)."""
    value, grad, _ = model.loss_and_grad(x)
    row = _record(model, x, svm)
    row.update(loss=value, objective=value, gradient_norm=float(np.linalg.norm(grad)))
    rows.append(row)
    return grad


def _assemble(
    spec: Spec,
    kind: str,
    level: str,
    params: LossParams,
    rows: list[dict],
    svm: Result,
    *,
    settings: dict,
    seconds: float,
    lambdas: np.ndarray | None = None,
    iterations: np.ndarray | None = None,
    message: str = "",
) -> Trajectory:
    def col(name: str) -> np.ndarray:
        return np.asarray([row[name] for row in rows])

    path = kind == "path"
    distance = col("distance_to_svm")
    fits = [trend_fit(lambdas, distance, p) for p in FIT_POWERS] if path else []
    if path:
        bad = int(np.sum(~col("converged")))
        worst = float(col("certificate").max())
        message = (
            f"{len(rows)} lambdas, {int(col('solver_iterations').sum())} L-BFGS iterations; "
            + (f"{bad} did not reach gtol; " if bad else "all converged; ")
            + f"largest certificate ||grad_M loss||_2 / lambda = {worst:.8f}"
        )
    return Trajectory(
        spec=spec,
        kind=kind,
        level=level,
        params=params,
        lambdas=lambdas,
        iterations=iterations,
        distance_to_svm=distance,
        embedding_distance_to_svm=col("embedding_distance_to_svm"),
        classifier_norm_ratio=col("classifier_norm_ratio"),
        embedding_norm_ratio=col("embedding_norm_ratio"),
        svm_objective_ratio=col("svm_objective_ratio"),
        loss=col("loss"),
        objective=col("objective"),
        parameter_norm=col("parameter_norm"),
        gradient_norm=col("gradient_norm"),
        certificate=col("certificate") if path else None,
        solver_iterations=col("solver_iterations") if path else None,
        converged=col("converged") if path else None,
        classifier_grams=np.stack([row["classifier_grams"] for row in rows]),
        embedding_grams=np.stack([row["embedding_grams"] for row in rows]),
        nc1=col("nc1") if level == "example" else None,
        svm=svm,
        fits=tuple(fit for fit in fits if fit is not None),
        settings=settings,
        seconds=seconds,
        message=message,
    )
