"""``GeometryMonitor``: neural-collapse measures and the distance to the certified prediction.

Called once per epoch from any training loop::

    monitor = GeometryMonitor(counts, "ldt", gamma=0.5, path="geometry.jsonl")
    for epoch in range(epochs):
        train_one_epoch(...)
        monitor(model, train_loader, model.classifier, epoch=epoch)

Each call collects the last-layer statistics (:func:`ucfm_svm.nets.collect.collect`), measures
them (:meth:`GeometryMonitor.measure`), appends one JSON line to ``path`` and keeps the record in
``monitor.records``; :func:`ucfm_svm.plots.nets.monitor_figure` draws the curves.

Measures (``mu_c`` the class means after the chosen centring, ``w_c`` the classifiers):

- ``nc1``: ``tr(Sigma_W Sigma_B^+) / k`` (Papyan et al., 2020; ``Sigma_B`` around the mean of
  all examples), and ``cdnv``: the mean over pairs ``c != c'`` of ``(Var_c + Var_c') / (2
  ||mu_c - mu_c'||^2)`` (Galanti et al., 2022);
- equinorm: coefficient of variation (std / mean) of ``||w_c||`` and of ``||mu_c||``;
- equiangularity: std of the off-diagonal cosines, and the mean of ``|cos + 1/(k-1)|``;
- distance of the normalized Grams ``W W^T`` and ``M M^T`` to the simplex ETF ``I - 11^T/k``
  and to the certified UF-CS-SVM prediction for these counts and this loss (Frobenius distance
  of Grams scaled to unit norm, :func:`ucfm_svm.geometry.gram_distance`, in ``[0, 2]``);
- ``raw_classifier_distance_to_prediction``: the same with the raw ``W`` whatever the centring;
- self-duality ``|| W^T/||W|| - M/||M|| ||_F`` (NC3) and NC4, the fraction of examples whose
  nearest class mean is the network's prediction;
- group statistics: majority/minority (STEP-like counts) or many/medium/few (more than 100, 20
  to 100, fewer than 20 examples) mean squared norms over the overall mean, and the mean cosines
  within and between groups, trained and predicted; for two groups ``*_norm_ratio`` is the
  first group's mean squared norm over the second's.

Centring (docs/theory.md §16): ``"rowspace"`` (default) measures what the loss sees, which is
what the theory's variables are: the classifiers without their loss-invisible component
(:func:`visible_classifiers`) and the features projected on the row space of those (at the
UF-CS-SVM optimum both projections are the identity); ``"none"`` the raw means and raw ``W``;
``"global"`` subtracts the unweighted average of the class means; ``"weighted"`` the
count-weighted one (the mean of all examples, Papyan et al.'s global mean).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .. import api, geometry
from ..result import Result, jsonable
from ..solvers.theory import DENSE_MAX_K
from ..spec import Spec
from ..validation import fail
from .collect import Collected, collect, row_space_basis

#: Centring choices for the class means (see the module notes).
CENTRINGS = ("rowspace", "none", "global", "weighted")
#: Many/medium/few thresholds on the class counts (more than 100; 20 to 100; fewer than 20).
MANY, FEW = 100, 20


def predict(spec: Spec) -> Result:
    """The certified UF-CS-SVM optimum for ``spec`` (with ``d = k``; geometry only).

    The one place the nets subpackage solves: the dense closed form (``"theory"``) up to
    ``DENSE_MAX_K`` classes, the structured one with its Grams above.
    """
    spec = spec.with_dim(spec.k)
    if spec.k <= DENSE_MAX_K:
        return api.solve(spec, "theory")
    return api.solve(spec, "structured", full=True)


def class_groups(spec: Spec) -> dict[str, np.ndarray]:
    """``maj``/``min`` for STEP-like specs, else the non-empty of ``many``/``medium``/``few``."""
    step = spec.step_groups()
    if step is not None:
        return {"maj": step[0], "min": step[1]}
    n = spec.n_vec
    groups = {"many": n > MANY, "medium": (n >= FEW) & (n <= MANY), "few": n < FEW}
    return {name: np.flatnonzero(mask) for name, mask in groups.items() if mask.any()}


def group_statistics(G: np.ndarray, groups: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean squared norms per group (over the overall mean) and mean cosines within/between.

    Keys ``norm2:<g>`` and ``cos:<g>-<h>`` (``g`` before ``h`` in ``groups``'s order; a group of
    one class has no within-group cosine and gets ``nan``); with two groups also ``norm_ratio``,
    the first group's mean squared norm over the second's.
    """
    diag = np.diag(G)
    C = geometry.cosines_from_gram(G)
    out: dict[str, float] = {}
    names = list(groups)
    for g in names:
        out[f"norm2:{g}"] = float(diag[groups[g]].mean() / diag.mean())
    for i, g in enumerate(names):
        for h in names[i:]:
            block = C[np.ix_(groups[g], groups[h])]
            if g == h:
                m = block.shape[0]
                value = (block.sum() - np.trace(block)) / (m * (m - 1)) if m > 1 else np.nan
            else:
                value = block.mean()
            out[f"cos:{g}-{h}"] = float(value)
    if len(names) == 2:
        out["norm_ratio"] = float(diag[groups[names[0]]].mean() / diag[groups[names[1]]].mean())
    return out


def visible_classifiers(W: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """``P_u W`` with ``u = Delta^{-1} 1 / ||Delta^{-1} 1||``: ``W`` minus its loss-invisible part.

    The family's losses depend on the logits ``Delta W h`` only through their differences, so
    ``W + Delta^{-1} 1 v^T`` gives every example the same loss for any ``v``, and that direction
    receives no gradient (docs/theory.md §16). ``P_u W`` is the smallest-norm representative,
    the one weight decay converges to, and at the UF-CS-SVM optimum ``u^T W = 0``.
    """
    u = 1.0 / np.asarray(scales, dtype=float)
    u = u / np.linalg.norm(u)
    return W - np.outer(u, u @ W)


def centred_means(
    collected: Collected, centring: str, scales: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Class means (k x p) after ``centring``, and the classifiers (k x p) in the same space.

    For ``"rowspace"`` the classifiers are :func:`visible_classifiers` and both are in the
    coordinates of the orthonormal basis ``Q`` of their row space (``Q mu_c`` and ``W Q^T``;
    Grams and cosines are those of the projected vectors), which ``collected`` must have been
    collected with (:meth:`GeometryMonitor.basis`); otherwise raw ``W`` and feature space.
    """
    if centring not in CENTRINGS:
        raise fail("centring", "one of " + ", ".join(CENTRINGS), centring)
    if centring == "rowspace":
        return collected.row_means, visible_classifiers(collected.W, scales) @ collected.basis.T
    M = collected.means
    if centring == "global":
        M = M - M.mean(axis=0)
    elif centring == "weighted":
        M = M - collected.counts @ M / collected.n
    return M, collected.W


def nc1_and_cdnv(
    means: np.ndarray, within: np.ndarray, variances: np.ndarray, counts: np.ndarray
) -> tuple[float, float]:
    """``NC1 = tr(Sigma_W Sigma_B^+)/k`` and the mean class-distance normalized variance.

    ``means`` (k x p) uncentred, ``within`` (p x p) the pooled within-class covariance,
    ``variances`` (k,) ``tr Sigma_c``. ``Sigma_B`` is taken around the mean of all examples
    (``counts``-weighted), as in :func:`ucfm_svm.geometry.nc1`.
    """
    k = means.shape[0]
    between = means - counts @ means / counts.sum()
    sigma_b = between.T @ between / k
    nc1 = float(np.trace(within @ np.linalg.pinv(sigma_b, rcond=1e-10, hermitian=True)) / k)
    sq = np.sum(means * means, axis=1)
    dist2 = sq[:, None] + sq[None, :] - 2.0 * means @ means.T
    off = ~np.eye(k, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 on the diagonal, masked below
        ratio = (variances[:, None] + variances[None, :]) / (2.0 * np.maximum(dist2, 0.0))
    return nc1, float(ratio[off].mean())


def _angles(G: np.ndarray) -> tuple[float, float, float]:
    """Equinorm (CV of norms), std of off-diagonal cosines, mean ``|cos + 1/(k-1)|``."""
    k = G.shape[0]
    norms = geometry.norms_from_gram(G)
    off = ~np.eye(k, dtype=bool)
    cos = geometry.cosines_from_gram(G)[off]
    return (
        float(norms.std() / norms.mean()),
        float(cos.std()),
        float(np.abs(cos + 1.0 / (k - 1)).mean()),
    )


class GeometryMonitor:
    """Per-epoch geometry of a network's last layer against the UF-CS-SVM prediction.

    Parameters
    ----------
    counts : sequence of int
        Class counts of the training set (``n_c``, label order).
    loss : str
        The loss preset the network trains with (``ce``, ``wce``, ``la``, ``ldam``, ``cdt``,
        ``ldt``, ``vs``), with its ``gamma`` / ``tau``: the prediction is the UF-CS-SVM of its
        vanishing-regularization limit (``Spec.from_loss``).
    centring : {"rowspace", "none", "global", "weighted"}
        How class means are centred before they are compared (module notes, docs/theory.md §16).
    path : str or Path, optional
        JSONL file; each record is appended as one line as soon as it is measured.
    """

    def __init__(
        self,
        counts: object,
        loss: str = "ce",
        *,
        gamma: float | None = None,
        tau: float | None = None,
        centring: str = "rowspace",
        path: str | Path | None = None,
    ):
        if centring not in CENTRINGS:
            raise fail("centring", "one of " + ", ".join(CENTRINGS), centring)
        self.spec = Spec.from_loss(counts, loss, gamma=gamma, tau=tau)
        self.loss, self.gamma, self.tau = loss, gamma, tau
        self.centring = centring
        self.path = None if path is None else Path(path)
        self.prediction = predict(self.spec)
        self.groups = class_groups(self.spec)
        self.etf = np.eye(self.spec.k) - 1.0 / self.spec.k
        self.predicted = {
            "classifier": group_statistics(self.prediction.classifier_gram, self.groups),
            "embedding": group_statistics(self.prediction.embedding_gram, self.groups),
        }
        self.records: list[dict] = []

    def __call__(
        self, model: object, loader: Iterable, classifier: object, **extra: object
    ) -> dict:
        """Collect the statistics of ``model`` on ``loader`` and :meth:`measure` them.

        ``extra`` (e.g. ``epoch=3``, ``loss=0.01``) is stored in the record.
        """
        W = classifier.weight.detach().to("cpu").double().numpy()  # type: ignore[attr-defined]
        return self.measure(collect(model, loader, classifier, basis=self.basis(W)), **extra)

    def basis(self, W: np.ndarray) -> np.ndarray:
        """Orthonormal basis of the row space of the loss-visible classifiers (§16)."""
        return row_space_basis(visible_classifiers(W, self.spec.Delta))

    def measure(self, collected: Collected, **extra: object) -> dict:
        """One record of every measure (module notes) for ``collected``; appended to the JSONL."""
        if tuple(collected.counts.tolist()) != tuple(self.spec.counts):
            raise fail(
                "counts",
                f"the class counts the monitor was built for ({len(self.spec.counts)} classes)",
                collected.counts.tolist(),
            )
        M, W = centred_means(collected, self.centring, self.spec.Delta)
        if self.centring == "rowspace":
            stats = (collected.row_means, collected.row_within, collected.row_class_variances)
        else:
            stats = (collected.means, collected.within, collected.class_variances)
        nc1, cdnv = nc1_and_cdnv(*stats, collected.counts.astype(float))
        cg, eg = W @ W.T, M @ M.T
        pcg, peg = self.prediction.classifier_gram, self.prediction.embedding_gram
        record: dict = dict(extra)
        record.update(
            {
                "centring": self.centring,
                "accuracy": collected.accuracy,
                "nc1": nc1,
                "cdnv": cdnv,
                "ncc_agreement": collected.ncc_agreement,
                "self_duality": float(
                    np.linalg.norm(W / np.linalg.norm(W) - M / np.linalg.norm(M))
                ),
                "classifier_distance_to_prediction": geometry.gram_distance(cg, pcg),
                "embedding_distance_to_prediction": geometry.gram_distance(eg, peg),
                "classifier_distance_to_etf": geometry.gram_distance(cg, self.etf),
                "raw_classifier_distance_to_prediction": geometry.gram_distance(
                    collected.W @ collected.W.T, pcg
                ),
                "embedding_distance_to_etf": geometry.gram_distance(eg, self.etf),
            }
        )
        for side, G in (("classifier", cg), ("embedding", eg)):
            equinorm, cos_std, cos_etf = _angles(G)
            record[f"{side}_equinorm"] = equinorm
            record[f"{side}_cosine_std"] = cos_std
            record[f"{side}_cosine_etf_deviation"] = cos_etf
            record[f"{side}_groups"] = group_statistics(G, self.groups)
            record[f"predicted_{side}_groups"] = self.predicted[side]
        record = jsonable(record)
        self.records.append(record)
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(record, allow_nan=False) + "\n")
        return record
