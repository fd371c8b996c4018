"""The one result type every method returns, and its JSON form.

A :class:`Result` holds a feasible point of the UF-CS-SVM at the class level (classifiers ``W``,
class-mean embeddings ``H_mean``), the quantities derived from it, and, where one exists, the
certified lower bound that makes a claim of global optimality checkable: ``gap = objective -
lower_bound``. Its status is :data:`OPTIMAL` only when the relative gap is within
:data:`CERTIFY_RTOL`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from . import geometry
from .errors import SpecError
from .spec import Spec

#: Certified global optimum: a lower bound exists and the relative gap is within tolerance.
OPTIMAL = "optimal"
#: A feasible point whose global optimality could not be certified.
NOT_CERTIFIED = "not certified"
#: The numerical solver reported reduced accuracy; the numbers are best effort.
INACCURATE = "inaccurate"
#: The objective is certified (gap within tolerance) but the reported norms, cosines or Grams
#: are not known to be within :data:`GEOMETRY_RTOL` of the exact optimum (docs/theory.md §10):
#: small classes weigh little in the objective, so a small gap need not pin their geometry.
GEOMETRY_NOT_CERTIFIED = "objective certified, geometry not"
STATUSES = (OPTIMAL, NOT_CERTIFIED, INACCURATE, GEOMETRY_NOT_CERTIFIED)

#: Relative gap ``(objective - lower_bound) / objective`` below which optimality is certified.
CERTIFY_RTOL = 1e-6
#: Largest error, relative for norms and absolute for cosines, that a result whose status is
#: :data:`OPTIMAL` may carry in its geometry (docs/theory.md §10).
GEOMETRY_RTOL = 1e-6

_ARRAYS = (
    "W",
    "H_mean",
    "logits",
    "classifier_gram",
    "embedding_gram",
    "classifier_norms",
    "embedding_norms",
    "b",
)


@dataclass(frozen=True)
class Result:
    """Outcome of one solve (any method, any level).

    Attributes
    ----------
    spec : Spec
    method : str
        ``"convex"``, ``"nonconvex"``, ``"theory"``, ...
    level : str
        ``"class"`` or ``"example"``.
    status : str
        One of :data:`STATUSES`.
    message : str
        Human-readable account of how the solve ended.
    objective : float
        ``1/2 ||W||_F^2 + 1/2 sum_c n_c ||hbar_c||^2`` of the returned (feasible) point.
    lower_bound : float or None
        Certified lower bound on the global optimum.
    W : (k, d) array or None
    H_mean : (d, k) array or None
    logits : (k, k) array or None
        ``Delta W Hbar``; column ``c`` holds the logits of class ``c``.
    classifier_gram, embedding_gram : (k, k) arrays or None
        ``W W^T`` and ``Hbar^T Hbar``.
    classifier_norms, embedding_norms : (k,) arrays or None
    seconds : float
        Wall-clock time of the solve.
    solver : str or None
        Backend used (e.g. ``"CLARABEL"``).
    min_margin_ratio : float or None
        Smallest ``margin / delta`` of the returned point (``>= 1`` means feasible).
    iterations, nc1, restarts, restart_objectives
        Filled by iterative and multi-start methods.
    b : (k,) array or None
        Classifier bias of the free-bias model (docs/theory.md §11), in the gauge orthogonal to
        ``Delta^{-1} 1``; ``None`` in models without a bias.
    regularization : dict or None
        Method ``regularized`` only (docs/theory.md §13): ``lambda_w``, ``lambda_h``,
        ``lambda``, ``bias``, the bias vector ``b`` and the dual certificate's details; then
        ``objective`` is the regularized objective and ``lower_bound`` its Fenchel dual bound.
    """

    spec: Spec
    method: str
    level: str
    status: str
    message: str
    objective: float
    lower_bound: float | None
    W: np.ndarray | None
    H_mean: np.ndarray | None
    logits: np.ndarray | None
    classifier_gram: np.ndarray | None
    embedding_gram: np.ndarray | None
    classifier_norms: np.ndarray | None
    embedding_norms: np.ndarray | None
    seconds: float
    solver: str | None = None
    min_margin_ratio: float | None = None
    iterations: int | None = None
    nc1: float | None = None
    restarts: int | None = None
    restart_objectives: tuple[float, ...] | None = field(default=None)
    b: np.ndarray | None = None
    regularization: dict | None = None

    @property
    def gap(self) -> float | None:
        """``objective - lower_bound`` (``None`` without a bound)."""
        if self.lower_bound is None:
            return None
        return self.objective - self.lower_bound

    @property
    def rel_gap(self) -> float | None:
        """``gap / |objective|`` (``None`` without a bound)."""
        if self.lower_bound is None:
            return None
        return self.gap / max(abs(self.objective), np.finfo(float).tiny)

    @property
    def certified(self) -> bool:
        """Whether global optimality is certified (:data:`OPTIMAL`)."""
        return self.status == OPTIMAL

    @property
    def objective_certified(self) -> bool:
        """Whether the objective is certified (:data:`OPTIMAL` or
        :data:`GEOMETRY_NOT_CERTIFIED`), whatever is known of the geometry."""
        return self.status in (OPTIMAL, GEOMETRY_NOT_CERTIFIED)

    @classmethod
    def from_point(
        cls,
        spec: Spec,
        W: np.ndarray,
        H_mean: np.ndarray,
        *,
        method: str,
        level: str,
        lower_bound: float | None,
        seconds: float,
        message: str = "",
        solver: str | None = None,
        inaccurate: bool = False,
        rtol: float = CERTIFY_RTOL,
        b: np.ndarray | None = None,
        geometry_certified: bool = True,
        **extra: object,
    ) -> Result:
        """Build a result from a class-level point ``(W, H_mean)``, deriving everything else.

        The status is :data:`OPTIMAL` iff a lower bound is given, the point is feasible (up to
        ``rtol`` in the margins) and the relative gap is ``<= rtol``, downgraded to
        :data:`GEOMETRY_NOT_CERTIFIED` when ``geometry_certified`` is false; :data:`INACCURATE`
        if ``inaccurate``; otherwise :data:`NOT_CERTIFIED`. With a bias ``b`` the logits are
        ``Delta (W Hbar + b 1^T)`` (docs/theory.md §11).
        """
        logits = geometry.class_logits(spec, W, H_mean)
        if b is not None:
            logits = logits + (spec.Delta * b)[:, None]
        ratio = geometry.min_margin_ratio(spec, logits)
        objective = geometry.class_objective(spec, W, H_mean)
        cg = geometry.gram(W)
        eg = H_mean.T @ H_mean
        if inaccurate:
            status = INACCURATE
        elif (
            lower_bound is not None
            and ratio >= 1 - rtol
            and objective - lower_bound <= rtol * abs(objective)
        ):
            status = OPTIMAL if geometry_certified else GEOMETRY_NOT_CERTIFIED
        else:
            status = NOT_CERTIFIED
        if not message:
            message = _default_message(status, objective, lower_bound, ratio)
        return cls(
            spec=spec,
            method=method,
            level=level,
            status=status,
            message=message,
            objective=objective,
            lower_bound=lower_bound,
            W=W,
            H_mean=H_mean,
            logits=logits,
            classifier_gram=cg,
            embedding_gram=eg,
            classifier_norms=geometry.norms_from_gram(cg),
            embedding_norms=geometry.norms_from_gram(eg),
            seconds=seconds,
            solver=solver,
            min_margin_ratio=ratio,
            b=b,
            **extra,
        )

    # --- serialization ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-ready dictionary; arrays become nested lists, ``gap`` and ``rel_gap`` are added."""
        out: dict = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "spec":
                value = value.to_dict()
            out[f.name] = jsonable(value)
        out["gap"] = jsonable(self.gap)
        out["rel_gap"] = jsonable(self.rel_gap)
        return out

    def to_json(self, path: str | Path) -> None:
        """Write :meth:`to_dict` to ``path`` by :func:`ucfm_svm.files.write_output` (refused
        over a file ucfm-svm did not write; atomic)."""
        from .files import json_text, write_output

        write_output(path, json_text(self.to_dict()))

    @classmethod
    def from_dict(cls, data: dict) -> Result:
        """Inverse of :meth:`to_dict` (derived keys ``gap``, ``rel_gap`` are ignored)."""
        if not isinstance(data, dict) or "spec" not in data:
            raise SpecError(
                "The 'result' parameter must be a JSON object written by ucfm-svm. "
                "Got an object without 'spec' instead."
            )
        kwargs = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            if f.name == "spec":
                value = Spec.from_dict(value)
            elif f.name in _ARRAYS and value is not None:
                value = np.asarray(value, dtype=float)
            elif f.name == "restart_objectives" and value is not None:
                value = tuple(value)
            kwargs[f.name] = value
        return cls(**kwargs)

    @classmethod
    def from_json(cls, path: str | Path) -> Result:
        """Read a result written by :meth:`to_json`."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise SpecError(
                f"The 'result' parameter must be a readable ucfm-svm JSON file. "
                f"Got {path} ({exc}) instead."
            ) from None
        return cls.from_dict(data)


def jsonable(value: object) -> object:
    """``value`` made strict-JSON ready: arrays and tuples become lists, numpy scalars Python
    scalars, and non-finite floats ``None`` (JSON has no NaN or infinity); dicts and lists are
    converted recursively."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biu":
            return value.tolist()
        if value.dtype.kind == "f":  # whole arrays at once (k = 1000: 5e6 entries)
            finite = np.isfinite(value)
            if finite.all():
                return value.tolist()
            out = value.astype(object)
            out[~finite] = None
            return out.tolist()
        value = value.tolist()
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {key: jsonable(v) for key, v in value.items()}
    return value


def _default_message(status: str, objective: float, lower_bound: float | None, ratio: float) -> str:
    if lower_bound is None:
        return f"feasible point with objective {objective:.10g}; no lower bound to certify it"
    gap = objective - lower_bound
    text = f"objective {objective:.10g}, lower bound {lower_bound:.10g}, gap {gap:.2e}"
    if status == OPTIMAL:
        return "certified global optimum: " + text
    if ratio < 1 - CERTIFY_RTOL:
        return f"infeasible point (smallest margin ratio {ratio:.3g} < 1): " + text
    return "not certified: " + text
