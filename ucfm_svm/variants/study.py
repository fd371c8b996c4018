"""Certified geometry of the three models side by side: Grams, STEP tables, norm-ratio curves.

The three models (docs/variants.md): the paper's UF-CS-SVM (``bias="none"``,
``features="free"``), the free-bias model (docs/theory.md §11) and the non-negative-feature
model (§12). Every number here comes from a certified route: the closed form when its dual
certificate closes, else the convex program (the free-bias model away from STEP).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import geometry
from ..result import CERTIFY_RTOL
from ..solvers.theory import closed_form
from ..spec import Spec, step_counts
from ..validation import fail
from .bias import bias_closed_form, solve_bias_convex
from .nonnegative import nonnegative_closed_form

#: The three models as ``(name, bias, features)``.
MODELS = (
    ("paper", "none", "free"),
    ("free bias", "free", "free"),
    ("nonnegative", "none", "nonnegative"),
)


def certified_grams(spec: Spec) -> tuple[np.ndarray, np.ndarray]:
    """``W W^T`` and ``Hbar^T Hbar`` of the certified optimum of ``spec``'s model.

    Raises
    ------
    SolverError
        The closed form did not certify and the convex fallback failed (free bias only).
    """
    if spec.features == "nonnegative":
        cf = nonnegative_closed_form(spec)
        return cf.W @ cf.W.T, np.diag(cf.norms**2)
    if spec.bias == "free":
        bcf = bias_closed_form(spec)
        if bcf.certified:
            U, s, Vt = np.linalg.svd(bcf.A)
            inv = spec.n_vec**-0.5
            return (U * s) @ U.T, inv[:, None] * ((Vt.T * s) @ Vt) * inv[None, :]
        result = solve_bias_convex(spec)
        return result.classifier_gram, result.embedding_gram
    cf = closed_form(spec)
    if cf.rel_gap > CERTIFY_RTOL:
        raise ValueError("closed form not certified")  # pragma: no cover (never seen)
    return cf.classifier_gram(), cf.embedding_gram(spec)


@dataclass(frozen=True)
class StepRow:
    """Norms and grouped cosines of one model on one STEP problem."""

    model: str
    loss: str
    gamma: float | None
    R: float
    classifier_norms: tuple[float, float]
    embedding_norms: tuple[float, float]
    classifier_cosines: dict[str, float]
    embedding_cosines: dict[str, float]


def step_row(
    model: str, k: int, R: float, rho: float, loss: str, gamma: float | None = None
) -> StepRow:
    """Majority and minority norms and the grouped cosines (maj-maj, min-min, maj-min) of
    ``model`` (a name of :data:`MODELS`) on STEP ``(k, R, rho)`` with ``loss``."""
    bias, features = {name: (b, f) for name, b, f in MODELS}[model]
    spec = Spec.from_loss(step_counts(k, R, rho), loss, gamma=gamma).with_model(bias, features)
    cw, ch = certified_grams(spec)
    groups = spec.step_groups()
    if groups is None:
        raise fail("R", "above 1 (two groups of classes)", R)
    maj, mino = groups
    a, b = int(maj[0]), int(mino[0])
    nw, nh = geometry.norms_from_gram(cw), geometry.norms_from_gram(ch)
    return StepRow(
        model=model,
        loss=loss,
        gamma=gamma,
        R=R,
        classifier_norms=(float(nw[a]), float(nw[b])),
        embedding_norms=(float(nh[a]), float(nh[b])),
        classifier_cosines=geometry.grouped_cosines(cw, maj, mino),
        embedding_cosines=geometry.grouped_cosines(ch, maj, mino),
    )


def norm_ratio_curves(
    R_values: object,
    *,
    k: int = 10,
    rho: float = 0.5,
    losses: tuple[tuple[str, float | None], ...] = (("ce", None), ("ldt", 0.5), ("cdt", 0.5)),
) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Squared norm ratios majority / minority against ``R`` for the three models.

    Returns ``curves[model][loss label]`` with keys ``R``, ``classifiers`` and ``embeddings``
    (``||w_maj||^2 / ||w_min||^2`` and the same for the class means), the loss label being e.g.
    ``"ldt (gamma=0.5)"``. ``R`` values must be whole and above 1 (``n_min = 1``).
    """
    R_values = np.asarray(R_values, dtype=float)
    curves: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for model, _, _ in MODELS:
        curves[model] = {}
        for loss, gamma in losses:
            label = loss if gamma is None else f"{loss} (gamma={gamma:g})"
            rows = [step_row(model, k, float(R), rho, loss, gamma) for R in R_values]
            curves[model][label] = {
                "R": R_values,
                "classifiers": np.array(
                    [(r.classifier_norms[0] / r.classifier_norms[1]) ** 2 for r in rows]
                ),
                "embeddings": np.array(
                    [(r.embedding_norms[0] / r.embedding_norms[1]) ** 2 for r in rows]
                ),
            }
    return curves
