"""The certified regularized geometry along a ``lambda`` grid, against the SVM limit (§13).

:func:`lambda_curve` solves the regularized UFM (:func:`~ucfm_svm.regularized.solver.
solve_factors`) at each ``lambda`` of a decreasing grid, warm-started, and records what the
figures show: classifier and embedding norms, the grouped cosines (STEP) or the extreme
cosines, the spread of each group of identical classes (zero once it has collapsed), and the
scale-free distance of the normalized Grams to the certified SVM geometry of the loss's limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import geometry
from ..result import Result
from ..spec import Spec
from .collapse import Threshold, closed_form_lambda, group_spread, identical_groups
from .solver import Regularization, polish, solve_factors
from .training import check_lambdas, reference_svm

#: Up to this many classes each solve is polished by singular-value thresholding (exact zeros
#: for collapsed groups; dense k x k SVDs).
POLISH_MAX_K = 200


@dataclass(frozen=True)
class LambdaCurve:
    """Index-aligned records along ``lambdas`` (one certified solve each).

    Attributes
    ----------
    spec : Spec
    bias : str
    lambdas : (m,) array
    results : tuple of Result
    certified : (m,) bool array
    rel_gaps : (m,) array
    classifier_norms, embedding_norms : (m, k) arrays
    cosines : dict of str -> (m,) array
        ``classifiers maj-maj`` etc. for STEP specs (:func:`ucfm_svm.geometry.grouped_cosines`),
        else ``classifiers min`` / ``max`` off-diagonal cosines.
    spreads : (m, g) array
        :func:`ucfm_svm.regularized.collapse.group_spread` of each identical group.
    groups : tuple of tuple of int
    thresholds : tuple of Threshold
        Closed-form thresholds of the groups (``closed_form`` ``None`` for LDAM).
    distance_to_svm, embedding_distance_to_svm : (m,) arrays
        :func:`ucfm_svm.geometry.gram_distance` to the SVM Grams.
    svm : Result
        The certified SVM limit (:func:`ucfm_svm.regularized.training.reference_svm`).
    """

    spec: Spec
    bias: str
    lambdas: np.ndarray
    results: tuple[Result, ...]
    certified: np.ndarray
    rel_gaps: np.ndarray
    classifier_norms: np.ndarray
    embedding_norms: np.ndarray
    cosines: dict
    spreads: np.ndarray
    groups: tuple[tuple[int, ...], ...]
    thresholds: tuple[Threshold, ...]
    distance_to_svm: np.ndarray
    embedding_distance_to_svm: np.ndarray
    svm: Result

    def label(self) -> str:
        """Short name of the loss, e.g. ``cdt (gamma=0.5)`` (:attr:`Spec.loss_label`)."""
        return self.spec.loss_label


def cosine_summary(spec: Spec, result: Result) -> dict[str, float]:
    """Grouped cosines (STEP) or the extreme off-diagonal cosines of both Grams of ``result``."""
    groups = spec.step_groups()
    out: dict[str, float] = {}
    for name, G in (("classifiers", result.classifier_gram), ("embeddings", result.embedding_gram)):
        if groups is not None:
            for key, value in geometry.grouped_cosines(G, *groups).items():
                out[f"{name} {key}"] = float(value)
        else:
            C = geometry.cosines_from_gram(G)
            off = C[~np.eye(spec.k, dtype=bool)]
            out[f"{name} min"], out[f"{name} max"] = float(off.min()), float(off.max())
    return out


def lambda_curve(spec: Spec, lambdas: object, *, bias: str = "none") -> LambdaCurve:
    """Certified regularized solves of ``spec``'s loss along a decreasing ``lambda`` grid.

    Each solve starts from the same seeded random point (a warm start from a collapsed or zero
    solution would start at a saddle of the factorization); ``lambda_W = lambda_H = lambda``;
    up to ``POLISH_MAX_K`` classes it is polished (:func:`ucfm_svm.regularized.solver.polish`).
    """
    lambdas = check_lambdas(lambdas)
    params_groups = identical_groups(spec)
    svm = reference_svm(spec)
    results = []
    for lam in lambdas:
        reg = Regularization.from_lambda(lam, bias)
        result, factors = solve_factors(spec, reg)
        results.append(polish(spec, reg, factors)[0] if spec.k <= POLISH_MAX_K else result)
    with np.errstate(invalid="ignore", divide="ignore"):  # W = 0 above every threshold: nan
        return _assemble(spec, bias, lambdas, results, params_groups, svm)


def _assemble(spec: Spec, bias: str, lambdas: np.ndarray, results: list[Result],
              params_groups: list[np.ndarray], svm: Result) -> LambdaCurve:
    cos = [cosine_summary(spec, r) for r in results]
    thresholds = []
    for g in params_groups:
        try:
            closed = closed_form_lambda(spec, g)
        except ValueError:  # LDAM: no closed form
            closed = None
        thresholds.append(Threshold(tuple(int(c) for c in g), closed))
    return LambdaCurve(
        spec=spec,
        bias=bias,
        lambdas=lambdas,
        results=tuple(results),
        certified=np.array([r.certified for r in results]),
        rel_gaps=np.array([r.rel_gap for r in results]),
        classifier_norms=np.stack([r.classifier_norms for r in results]),
        embedding_norms=np.stack([r.embedding_norms for r in results]),
        cosines={key: np.array([c[key] for c in cos]) for key in cos[0]},
        spreads=np.array(
            [[group_spread(r.W @ r.H_mean, g) for g in params_groups] for r in results]
        ).reshape(len(results), len(params_groups)),
        groups=tuple(tuple(int(c) for c in g) for g in params_groups),
        thresholds=tuple(thresholds),
        distance_to_svm=np.array(
            [geometry.gram_distance(r.classifier_gram, svm.classifier_gram) for r in results]
        ),
        embedding_distance_to_svm=np.array(
            [geometry.gram_distance(r.embedding_gram, svm.embedding_gram) for r in results]
        ),
        svm=svm,
    )
