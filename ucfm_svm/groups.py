"""Group statistics of a geometry: majority/minority or many/medium/few (docs/theory.md §17).

Long-tailed results are read by groups of classes. Two-level counts (exactly two distinct counts,
e.g. STEP) give the groups ``majority`` and ``minority``; any other counts give ``many``
(``n_c > many_above``), ``medium`` and ``few`` (``n_c < few_below``), the ImageNet-LT convention
(defaults 100 and 20); empty groups are left out, and equal counts give one group ``all``.

Mean cosines over pairs of groups need only one sum of unit vectors per group: with
``s_A = sum_{c in A} x_c / ||x_c||``, ``cos(A, B) = <s_A, s_B> / (|A| |B|)`` and, over the pairs
``c != c'`` within ``A``, ``cos(A, A) = (||s_A||^2 - |A|) / (|A| (|A| - 1))``. The inner
products ``<s_A, s_B>`` are the ``q x q`` matrix :func:`pair_sums` takes, from a Gram (``a^T G
a``), from factors (``O(k d)``), or from the structured solver (no ``k x k`` array at all).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .validation import check_float, fail

#: ImageNet-LT thresholds (Liu et al., 2019): many-shot ``n_c > 100``, few-shot ``n_c < 20``.
MANY_ABOVE = 100
FEW_BELOW = 20


@dataclass(frozen=True)
class Groups:
    """A partition of the classes into named groups.

    Attributes
    ----------
    convention : str
        ``"majority/minority"``, ``"many/medium/few"`` or ``"balanced"``.
    names : tuple of str
        Group names in reporting order (largest counts first).
    members : tuple of (n_g,) int arrays
        Class indices (rows of ``W``, columns of ``Hbar``) of each group.
    many_above, few_below : float
        The thresholds used (recorded even when the two-level rule applied).
    """

    convention: str
    names: tuple[str, ...]
    members: tuple[np.ndarray, ...]
    many_above: float
    few_below: float

    def indicator(self, k: int) -> np.ndarray:
        """``(k, q)`` 0/1 matrix whose column ``g`` marks the classes of group ``g``."""
        out = np.zeros((k, len(self.names)))
        for g, idx in enumerate(self.members):
            out[idx, g] = 1.0
        return out

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """Group index pairs ``(a, b)``, ``a <= b``, in reporting order."""
        q = len(self.names)
        return [(a, b) for a in range(q) for b in range(a, q)]

    def pair_name(self, a: int, b: int) -> str:
        """``"many-few"``, ``"maj-min"`` (STEP keeps its short names)."""
        short = {"majority": "maj", "minority": "min"}
        first, second = (short.get(self.names[i], self.names[i]) for i in (a, b))
        return f"{first}-{second}"


def class_groups(
    counts: np.ndarray, many_above: float = MANY_ABOVE, few_below: float = FEW_BELOW
) -> Groups:
    """Group the classes by their counts (module docstring).

    Parameters
    ----------
    counts : (k,) array of positive integers
    many_above, few_below : float
        ``many`` is ``n_c > many_above``, ``few`` is ``n_c < few_below``; needs
        ``0 < few_below <= many_above``. Used only when the counts take three or more values.
    """
    many_above = check_float("many_above", many_above)
    few_below = check_float("few_below", few_below)
    if not 0 < few_below <= many_above:
        raise fail(
            "few_below", f"a number in (0, many_above = {many_above:g}]", few_below
        )
    counts = np.asarray(counts)
    distinct = np.unique(counts)
    if distinct.size == 1:
        return Groups("balanced", ("all",), (np.arange(counts.size),), many_above, few_below)
    if distinct.size == 2:
        big = np.flatnonzero(counts == distinct[1])
        small = np.flatnonzero(counts == distinct[0])
        return Groups(
            "majority/minority", ("majority", "minority"), (big, small), many_above, few_below
        )
    named = (
        ("many", np.flatnonzero(counts > many_above)),
        ("medium", np.flatnonzero((counts >= few_below) & (counts <= many_above))),
        ("few", np.flatnonzero(counts < few_below)),
    )
    kept = [(name, idx) for name, idx in named if idx.size]
    return Groups(
        "many/medium/few",
        tuple(name for name, _ in kept),
        tuple(idx for _, idx in kept),
        many_above,
        few_below,
    )


def gram_pair_sums(G: np.ndarray, groups: Groups) -> np.ndarray:
    """``<s_A, s_B>`` for every pair of groups from a Gram ``G`` (k x k): ``a^T G b`` with
    ``a_c = [c in A] / sqrt(G_cc)``. Returns ``(q, q)``."""
    norms = np.sqrt(np.clip(np.diag(G), 0.0, None))
    coef = groups.indicator(G.shape[0]) / norms[:, None]
    return coef.T @ G @ coef


def factor_pair_sums(X: np.ndarray, groups: Groups) -> np.ndarray:
    """``<s_A, s_B>`` from the vectors themselves (rows of ``X``, k x d): ``O(k d)`` time and
    ``O(q d)`` memory (the ``1 / ||x_c||`` go into the q x k indicator, not into a k x d copy of
    ``X``: 530 MB at k = 8142)."""
    weights = groups.indicator(X.shape[0]) / np.sqrt(np.einsum("ij,ij->i", X, X))[:, None]
    S = weights.T @ X  # (q, d): one sum of unit vectors per group
    return S @ S.T


def mean_cosines(pair_sums: np.ndarray, groups: Groups) -> dict[str, float]:
    """Mean cosine over the class pairs of each pair of groups (module docstring); a group of
    one class has no within-group pair (``nan``)."""
    sizes = np.array([idx.size for idx in groups.members], dtype=float)
    out = {}
    for a, b in groups.pairs:
        if a == b:
            pairs = sizes[a] * (sizes[a] - 1)
            value = (pair_sums[a, a] - sizes[a]) / pairs if pairs else float("nan")
        else:
            value = pair_sums[a, b] / (sizes[a] * sizes[b])
        out[groups.pair_name(a, b)] = float(value)
    return out


def norm_statistics(norms: np.ndarray, counts: np.ndarray, groups: Groups) -> dict[str, dict]:
    """Per group: mean, min and max norm, and the mean squared norm ratio
    ``||x_c||^2 / ||x_head||^2`` to the class with the most examples (the first such class;
    ``nan`` when its vector is zero)."""
    head = norms[int(np.argmax(counts))] ** 2
    out = {}
    for name, idx in zip(groups.names, groups.members, strict=True):
        values = norms[idx]
        out[name] = {
            "mean": float(values.mean()),
            "min": float(values.min()),
            "max": float(values.max()),
            "sq_ratio_to_head": float(np.mean(values**2)) / head if head > 0 else math.nan,
        }
    return out


@dataclass(frozen=True)
class GroupStatistics:
    """Norm and cosine statistics of one geometry by groups of classes (docs/theory.md §17).

    Attributes
    ----------
    groups : Groups
    counts : (k,) array
    classifier_norms, embedding_norms : dict
        Group name -> ``{"mean", "min", "max", "sq_ratio_to_head"}``.
    classifier_cos, embedding_cos : dict or None
        Pair name (``"many-few"``) -> mean cosine; ``None`` when no Gram, factors or structured
        sums were available.
    etf_cos : float
        The simplex-ETF cosine ``-1/(k-1)``, the reference for every pair.
    """

    groups: Groups
    counts: np.ndarray
    classifier_norms: dict
    embedding_norms: dict
    classifier_cos: dict | None
    embedding_cos: dict | None
    etf_cos: float

    def values(self) -> dict:
        """The statistics alone (``classifier_norms``, ``embedding_norms``, ``classifier_cos``,
        ``embedding_cos``), in :meth:`to_dict`'s shapes: one record of a path or a run."""
        return {
            "classifier_norms": self.classifier_norms,
            "embedding_norms": self.embedding_norms,
            "classifier_cos": self.classifier_cos,
            "embedding_cos": self.embedding_cos,
        }

    def to_dict(self) -> dict:
        """JSON-ready: convention, thresholds, group sizes and count ranges, statistics."""
        g = self.groups
        return {
            "convention": g.convention,
            "many_above": g.many_above,
            "few_below": g.few_below,
            "sizes": {name: int(idx.size) for name, idx in zip(g.names, g.members, strict=True)},
            "count_range": {
                name: [int(self.counts[idx].min()), int(self.counts[idx].max())]
                for name, idx in zip(g.names, g.members, strict=True)
            },
            "classifier_norms": self.classifier_norms,
            "embedding_norms": self.embedding_norms,
            "classifier_cos": self.classifier_cos,
            "embedding_cos": self.embedding_cos,
            "etf_cos": self.etf_cos,
        }


def group_statistics(
    groups: Groups,
    counts: np.ndarray,
    classifier_norms: np.ndarray,
    embedding_norms: np.ndarray,
    classifier_pairs: np.ndarray | None,
    embedding_pairs: np.ndarray | None,
) -> GroupStatistics:
    """Assemble :class:`GroupStatistics` from per-class norms and the ``(q, q)`` pair sums."""
    counts = np.asarray(counts)
    return GroupStatistics(
        groups=groups,
        counts=counts,
        classifier_norms=norm_statistics(np.asarray(classifier_norms), counts, groups),
        embedding_norms=norm_statistics(np.asarray(embedding_norms), counts, groups),
        classifier_cos=None if classifier_pairs is None else mean_cosines(classifier_pairs, groups),
        embedding_cos=None if embedding_pairs is None else mean_cosines(embedding_pairs, groups),
        etf_cos=-1.0 / (counts.size - 1),
    )


def gram_group_statistics(
    groups: Groups, counts: np.ndarray, classifier_gram: np.ndarray, embedding_gram: np.ndarray
) -> GroupStatistics:
    """:func:`group_statistics` of the geometry whose Grams are given (norms ``sqrt(G_cc)``,
    pair sums :func:`gram_pair_sums`); the Grams may be at any common scale of each side."""
    return group_statistics(
        groups,
        counts,
        np.sqrt(np.clip(np.diag(classifier_gram), 0.0, None)),
        np.sqrt(np.clip(np.diag(embedding_gram), 0.0, None)),
        gram_pair_sums(classifier_gram, groups),
        gram_pair_sums(embedding_gram, groups),
    )
