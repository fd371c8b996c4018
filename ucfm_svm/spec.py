"""The problem specification: class counts, SVM-limit hyperparameters and embedding dimension.

A :class:`Spec` is a frozen, validated description of one UF-CS-SVM (docs/theory.md §1)::

    min_{W, H}  1/2 ||W||_F^2 + 1/2 ||H||_F^2
    s.t.        Delta_{y_i} w_{y_i}^T h_i - Delta_c w_c^T h_i >= delta_{y_i}   (all i, c != y_i)

with ``k`` classes of ``counts`` ``n_c``, multiplicative logit ``scales`` ``Delta_c > 0`` and
``margins`` ``delta_c > 0``, classifiers ``W`` in ``R^{k x d}`` and embeddings ``H`` in
``R^{d x n}``.

The counts come from an explicit list, a STEP profile (:func:`step_counts`), the exponential
long-tail profile (:func:`longtail_counts`) or a labels file (:func:`counts_from_labels`). The
hyperparameters come from a loss preset (:func:`svm_hyperparameters`) or are given directly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import SpecError
from .validation import (
    MAX_COUNT,
    Shown,
    check_counts,
    check_float,
    check_int,
    check_positive_vector,
    fail,
)

#: Loss presets and the loss hyperparameters each one accepts.
LOSSES: dict[str, tuple[str, ...]] = {
    "ce": (),
    "wce": (),
    "la": ("tau",),
    "ldam": (),
    "cdt": ("gamma",),
    "ldt": ("gamma",),
    "vs": ("gamma", "tau"),
}
#: Losses whose Delta and delta in the SVM limit are both 1 (their weights and additive
#: offsets leave no trace at vanishing regularization, docs/theory.md §1).
CE_LIMIT_LOSSES = ("ce", "wce", "la", "ldam")
#: Largest embedding dimension. The optimum has rank <= k - 1, so any d >= k - 1 gives the same
#: geometry padded with zeros; the cap only stops W (k x d) and H (d x n) from exhausting memory.
#: It admits d = k at vocabulary scale (k = 10^6, the structured method's norms need no W).
MAX_DIM = 10_000_000
#: The name recorded for hyperparameters given directly rather than by a preset.
CUSTOM = "custom"
#: Classifier bias models: ``none`` (the paper's model) or ``free`` (an unregularized bias
#: ``b_c`` in every logit, docs/theory.md §11).
BIASES = ("none", "free")
#: Feature models: ``free`` (the paper's signed features) or ``nonnegative`` (``H >= 0``, as
#: after a ReLU, docs/theory.md §12).
FEATURES = ("free", "nonnegative")


def step_counts(k: int, R: float, rho: float, n_min: int = 1) -> np.ndarray:
    """Class counts of the STEP imbalance profile (docs/theory.md §5), majority classes first.

    ``k_min = rho * k`` minority classes have ``n_min`` examples each and the other
    ``k_maj = (1 - rho) * k`` classes have ``R * n_min``.

    Parameters
    ----------
    k : int
        Number of classes, ``k >= 2``.
    R : float
        Imbalance ratio ``n_maj / n_min >= 1``; ``R * n_min`` must be a whole number.
    rho : float
        Minority ratio in ``(0, 1)``; ``rho * k`` must be a whole number.
    n_min : int
        Examples per minority class, ``>= 1``.

    Returns
    -------
    numpy.ndarray of shape (k,)
    """
    k = check_int("k", k, low=2)
    R = check_float("R", R, low=1.0)
    rho = check_float("rho", rho, low=0.0, high=1.0, low_open=True, high_open=True)
    n_min = check_int("n_min", n_min, low=1)
    k_min = rho * k
    if abs(k_min - round(k_min)) > 1e-9 or round(k_min) < 1 or round(k_min) > k - 1:
        raise fail("rho", f"such that rho * k is a whole number between 1 and {k - 1} (k={k})", rho)
    n_maj = R * n_min
    if n_maj > MAX_COUNT:
        raise fail("R", f"such that R * n_min is at most 2^53 (n_min={n_min})", R)
    if abs(n_maj - round(n_maj)) > 1e-9 * max(1.0, n_maj):
        raise fail("R", f"such that R * n_min is a whole number (n_min={n_min})", R)
    k_min = round(k_min)
    return np.array([round(n_maj)] * (k - k_min) + [n_min] * k_min, dtype=np.int64)


def default_n_max(k: int) -> int:
    """Head-class count of ``--longtail K,IF`` when ``--n-max`` is not given: the CIFAR
    convention of 50,000 training images over ``k`` balanced classes, ``50000 // k`` (5000 at
    k = 10 as CIFAR-10-LT, 500 at k = 100 as CIFAR-100-LT), at least 1."""
    return max(1, 50_000 // int(k))


def longtail_counts(k: int, imbalance_factor: float, n_max: int | None = None) -> np.ndarray:
    """Exponential long-tail counts ``n_c = int(n_max * (1/IF)**(c/(k-1)))``, ``c = 0..k-1``.

    This is the profile of CIFAR-10-LT / CIFAR-100-LT (Cui et al., 2019), head class first,
    evaluated exactly as the public generator does (LDAM-DRW's ``get_img_num_per_cls``:
    ``int(img_max * imb_factor**(cls_idx / (cls_num - 1.0)))`` with ``imb_factor = 1/IF`` in
    Python floats, rounding included: ``k = 50, IF = 128, n_max = 128`` gives class 35 three
    examples, where ``floor(x + 1e-9)`` gave four). ``imbalance_factor`` (IF)
    ``= n_max / n_min >= 1``; every class must keep at least one example. ``n_max`` defaults to
    :func:`default_n_max`.
    """
    k = check_int("k", k, low=2)
    imbalance_factor = check_float("imbalance_factor", imbalance_factor, low=1.0)
    n_max = default_n_max(k) if n_max is None else check_int("n_max", n_max, low=1, high=MAX_COUNT)
    ratio = 1.0 / imbalance_factor
    counts = np.array([int(n_max * ratio ** (c / (k - 1.0))) for c in range(k)], dtype=np.int64)
    if counts.min() < 1:
        raise fail(
            "imbalance_factor",
            f"at most n_max={n_max} so that every class keeps an example",
            imbalance_factor,
        )
    return counts


#: Standard long-tailed benchmarks: name -> (classes, head-class count) of the public
#: generator (CIFAR-10/100 have 5000/500 training images per class).
DATASETS = {"cifar10-lt": (10, 5000), "cifar100-lt": (100, 500)}


def dataset_counts(name: str, imbalance_factor: float = 100.0) -> np.ndarray:
    """Class counts of a standard long-tailed benchmark (:data:`DATASETS`) at imbalance
    factor ``imbalance_factor``: CIFAR-10-LT at IF = 100 has 12,406 images, CIFAR-100-LT
    10,847 (:func:`longtail_counts`)."""
    if name not in DATASETS:
        raise fail("dataset", "one of " + ", ".join(DATASETS), name)
    k, n_max = DATASETS[name]
    return longtail_counts(k, imbalance_factor, n_max)


def counts_from_labels(path: str | Path) -> np.ndarray:
    """Class counts of an integer label file: ``.npy`` or ``.txt`` / ``.csv``.

    A text file (UTF-8, with or without a byte-order mark; any line ending) holds integer
    labels one per line or all on one line (separated by commas or whitespace); blank lines and
    one non-numeric header line are skipped. A ``.npy`` file is memory-mapped (its header is
    checked against the file's size before anything is read) and never unpickled. Labels are
    non-negative integers in the int64 range; classes are the distinct labels, in increasing
    order. At least two distinct labels are required.
    """
    path = Path(path)
    name = "labels"
    if not path.is_file():
        raise fail(name, "a readable .npy, .txt or .csv file of integer labels", str(path))
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            labels = np.load(path, mmap_mode="r", allow_pickle=False)
            if labels.dtype.kind in "iu" and labels.ndim >= 1:
                return _counts_of_int_stream(path, labels)
        elif suffix in (".txt", ".csv"):
            labels = _read_text_labels(path)
        else:
            raise fail(name, "a file ending in .npy, .txt or .csv", str(path))
    except SpecError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise fail(
            name,
            "a readable .npy, .txt or .csv file of integer labels",
            f"{path} ({exc.__class__.__name__}: {exc})",
        ) from None
    labels = np.asarray(labels)
    if sum(size > 1 for size in labels.shape) > 1:
        raise fail(name, "a vector of integer labels", f"{path} (an array of shape {labels.shape})")
    labels = labels.ravel()
    if labels.size == 0:
        raise fail(name, "a non-empty file of integer labels", f"{path} (no labels)")
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise fail(name, "a file of integer labels", f"{path} (non-integer values)")
        # kept as floats: a cast to int64 would merge labels beyond its range
    elif labels.dtype.kind not in "iu":
        raise fail(name, "a file of integer labels", f"{path} (values of type {labels.dtype})")
    if labels.min() < 0:
        raise fail(name, "a file of non-negative integer labels", f"{path} (label {labels.min()})")
    _, counts = np.unique(labels, return_counts=True)
    if counts.size < 2:
        raise fail(name, "a file with at least 2 distinct labels", f"{path} ({counts.size} label)")
    return counts.astype(np.int64)


#: Labels per chunk when a ``.npy`` token stream is counted (32 MB of int64 at a time).
LABEL_CHUNK = 2**22
#: A label range of at most 2^24 (and at most 64 times the number of labels) is counted with
#: ``np.bincount`` over the range (128 MB at most); sparser labels are merged chunk by chunk
#: with ``np.unique``.
BINCOUNT_MAX_RANGE = 2**24


def _counts_of_int_stream(path: Path, labels: np.ndarray) -> np.ndarray:
    """Class counts of an integer ``.npy`` (``labels``: its memory map, for the header), read
    from the file in chunks of :data:`LABEL_CHUNK` with ``np.fromfile``.

    Memory is ``O(number of classes)`` (the bincount range while the labels are dense
    non-negative ids, as token streams are; else the distinct labels, merged chunk by chunk
    with ``np.unique``), never ``O(number of labels)``, and no page of the file stays mapped.
    """
    if sum(size > 1 for size in labels.shape) > 1:
        raise fail(
            "labels", "a vector of integer labels", f"{path} (an array of shape {labels.shape})"
        )
    total, dtype, offset = labels.size, labels.dtype, labels.offset
    del labels
    if total == 0:
        raise fail("labels", "a non-empty file of integer labels", f"{path} (no labels)")
    limit = min(BINCOUNT_MAX_RANGE, 64 * total + 1024)
    dense = np.zeros(0, dtype=np.int64)
    values = counts = None  # the sparse form, once a label falls outside [0, limit)
    with open(path, "rb") as f:
        f.seek(offset)
        for _ in range(0, total, LABEL_CHUNK):
            chunk = np.fromfile(f, dtype=dtype, count=LABEL_CHUNK)
            if chunk.dtype.kind == "u" and chunk.max() > np.iinfo(np.int64).max:
                raise fail("labels", "a file of integer labels in the int64 range", str(path))
            chunk = chunk.astype(np.int64, copy=False)
            if chunk.min() < 0:
                raise fail(
                    "labels",
                    "a file of non-negative integer labels",
                    f"{path} (label {chunk.min()})",
                )
            if values is None and chunk.min() >= 0 and chunk.max() < limit:
                part = np.bincount(chunk)
                if part.size > dense.size:
                    dense = np.concatenate((dense, np.zeros(part.size - dense.size, np.int64)))
                dense[: part.size] += part
                continue
            if values is None:
                values = np.flatnonzero(dense)
                counts = dense[values]
            v, c = np.unique(chunk, return_counts=True)
            values, inverse = np.unique(np.concatenate((values, v)), return_inverse=True)
            merged = np.concatenate((counts, c))
            counts = np.bincount(inverse, weights=merged, minlength=values.size)
            counts = counts.astype(np.int64)
    if values is None:
        counts = dense[dense > 0]
    if counts.size < 2:
        raise fail(
            "labels", "a file with at least 2 distinct labels", f"{path} ({counts.size} label)"
        )
    return counts


def counts_from_file(path: str | Path) -> np.ndarray:
    """Class counts from a file: a ``.npy`` vector of counts, or text with one count per line.

    Text may start with a UTF-8 byte-order mark and use CRLF line ends; blank lines are
    skipped. Every count must be an integer ``>= 1`` and there must be at least two.
    """
    path = Path(path)
    name = "counts_file"
    allowed = "a readable .npy vector or text file of class counts (one integer >= 1 per line)"
    if not path.is_file():
        raise fail(name, allowed, str(path))
    try:
        if path.suffix.lower() == ".npy":
            counts = np.load(path, allow_pickle=False)
        else:
            counts = _read_counts_text(path, name, allowed)
    except SpecError:
        raise
    except (OSError, ValueError) as exc:  # includes UnicodeDecodeError and pickled arrays
        raise fail(name, allowed, Shown(f"{exc.__class__.__name__}: {exc} ({path})")) from None
    counts = np.asarray(counts)
    if counts.dtype.kind not in "iuf" or counts.ndim != 1:
        what = Shown(f"an array of {counts.dtype}, shape {counts.shape} in {path}")
        raise fail(name, allowed, what)
    bad = ~np.isfinite(counts.astype(float)) | (counts < 1) | (counts != np.round(counts))
    if counts.size and bad.any():
        i = int(np.flatnonzero(bad)[0])
        where = Shown(f"count {float(counts[i]):.17g} at entry {i + 1} in {path}")
        raise fail(name, allowed, where)
    if counts.size < 2:
        raise fail(name, "a file of at least 2 class counts", Shown(f"{counts.size} in {path}"))
    return counts.astype(np.int64)


def _read_counts_text(path: Path, name: str, allowed: str) -> np.ndarray:
    """One count per line (BOM, CRLF and blank lines allowed): numpy's conversion of all tokens
    at once when every non-blank line holds one token, else line by line (naming the first
    line that is not a number)."""
    lines = path.read_bytes().decode("utf-8-sig").splitlines()
    tokens = "\n".join(lines).split()
    try:
        if len(tokens) == sum(1 for line in lines if line.strip()):
            return np.array(tokens, dtype=float)
    except ValueError:
        pass
    values = []
    for number, line in enumerate(lines, start=1):
        row = line.strip()
        if not row:
            continue
        try:
            values.append(float(row))
        except ValueError:
            raise fail(name, allowed, Shown(f"line {number}: {row[:20]!r} in {path}")) from None
    return np.asarray(values)


def _read_text_labels(path: Path) -> np.ndarray:
    text = path.read_text(encoding="utf-8-sig")
    lines = text.splitlines()
    if lines and lines[0].strip() and not _looks_numeric(lines[0]):
        text = "\n".join(lines[1:])
    rows = [row for row in text.splitlines() if row.strip()]
    widths = [len(row.replace(",", " ").split()) for row in rows]
    if len(rows) > 1 and max(widths) > 1:
        raise fail(
            "labels",
            "one label per line, or all labels on one line (a table of several columns is "
            "ambiguous)",
            f"{path} (a line with {max(widths)} values)",
        )
    tokens = text.replace(",", " ").split()
    try:
        return np.array(tokens, dtype=np.int64)
    except OverflowError:
        raise fail(
            "labels", "a file of integer labels in the int64 range", f"{path} (a larger label)"
        ) from None
    except ValueError:
        try:
            return np.array(tokens, dtype=float)  # caught as non-integer by the caller
        except ValueError:
            bad = next(t for t in tokens if not _looks_numeric(t))
            raise fail("labels", "a file of integer labels", f"{path} (token {bad!r})") from None


def _looks_numeric(text: str) -> bool:
    token = text.replace(",", " ").split()
    if not token:
        return False
    try:
        float(token[0])
    except ValueError:
        return False
    return True


#: Range of the scales ``Delta_c`` and margins ``delta_c``. With counts up to 2^53 it keeps
#: ``g_c = delta_c sqrt(n_c) / Delta_c`` within 1e-148..1e148 and ``d_c = g_c^2`` (and sums of
#: 10^6 of them) within the normal float64 range, so no route overflows or underflows.
HYPER_RANGE = (1e-70, 1e70)


def svm_hyperparameters(
    counts: np.ndarray, loss: str, gamma: float | None = None, tau: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """SVM-limit scales ``Delta`` and margins ``delta`` of a loss preset (docs/theory.md §1, §9).

    - ``ce``, ``wce``, ``la``, ``ldam``: ``Delta = delta = 1`` (weights and additive offsets
      vanish in the limit; ``tau`` of LA only matters away from it).
    - ``cdt``: ``Delta_c`` proportional to ``(n_c / n_min)**gamma``, rescaled so that
      ``sum_c Delta_c = k``; ``delta = 1``.
    - ``ldt``: the same ``Delta`` multiplies all logits of an example of class ``y``, so the
      SVM keeps ``Delta = 1`` and gets margins ``delta_c = 1 / Delta_c``.
    - ``vs``: CDT's ``Delta`` with ``delta = 1`` (``tau`` only matters away from the limit).

    Returns
    -------
    scales, margins : numpy.ndarray of shape (k,)
    """
    counts = check_counts("counts", counts)
    if loss not in LOSSES:
        raise fail("loss", "one of " + ", ".join(LOSSES), loss)
    k = counts.size
    if "gamma" in LOSSES[loss]:
        if gamma is None:
            raise fail("gamma", f"given for loss '{loss}' (a finite number)", None)
        gamma = check_float("gamma", gamma)
    elif gamma is not None:
        raise fail("gamma", f"left unset for loss '{loss}' (only cdt, ldt and vs use it)", gamma)
    if "tau" in LOSSES[loss]:
        if tau is not None:
            check_float("tau", tau)
    elif tau is not None:
        raise fail("tau", f"left unset for loss '{loss}' (only la and vs use it)", tau)

    ones = np.ones(k)
    if loss in CE_LIMIT_LOSSES:
        return ones, ones.copy()
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        log_delta = gamma * np.log(counts / counts.min())
        raw = np.exp(log_delta - log_delta.max())
        delta_scale = k * raw / raw.sum()
    if not np.all((delta_scale >= HYPER_RANGE[0]) & (delta_scale <= HYPER_RANGE[1])):
        raise fail(
            "gamma",
            f"small enough in magnitude that every class scale lies in [{HYPER_RANGE[0]:g}, "
            f"{HYPER_RANGE[1]:g}] (here |gamma| <= "
            f"{np.log(HYPER_RANGE[1] / k) / max(np.log(counts.max() / counts.min()), 1e-300):.4g})",
            gamma,
        )
    if loss == "ldt":
        margins = 1.0 / delta_scale
        if not np.all(np.isfinite(margins)):
            raise fail("gamma", "small enough that every margin 1/Delta_c is finite", gamma)
        return ones, margins
    return delta_scale, ones.copy()


@dataclass(frozen=True)
class Spec:
    """A validated UF-CS-SVM specification (docs/theory.md §1).

    Parameters
    ----------
    counts : tuple of int
        ``n_c >= 1`` for each of ``k >= 2`` classes.
    scales : tuple of float
        Multiplicative logit scales ``Delta_c > 0``.
    margins : tuple of float
        Margins ``delta_c > 0``.
    dim : int
        Embedding dimension ``1 <= d <= MAX_DIM``. The convex and closed-form routes need
        ``d >= k - 1`` (docs/theory.md §2); a smaller ``d`` is a valid non-convex problem without a
        tight certificate.
    loss : str
        The preset the hyperparameters came from, or ``"custom"``.
    gamma, tau : float or None
        The preset's hyperparameters, recorded for reference.
    bias : {"none", "free"}
        ``free`` adds an unregularized classifier bias: the margins become
        ``Delta_y (w_y^T h_i + b_y) - Delta_c (w_c^T h_i + b_c) >= delta_y`` (docs/theory.md §11).
    features : {"free", "nonnegative"}
        ``nonnegative`` constrains the embeddings to ``H >= 0`` (post-ReLU features,
        docs/theory.md §12).
    source : str
        How the counts were given (for titles and reports).
    """

    counts: tuple[int, ...]
    scales: tuple[float, ...]
    margins: tuple[float, ...]
    dim: int
    loss: str = CUSTOM
    gamma: float | None = None
    tau: float | None = None
    bias: str = "none"
    features: str = "free"
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        counts = check_counts("counts", self.counts)
        k = counts.size
        scales = check_positive_vector("scales", self.scales, k)
        margins = check_positive_vector("margins", self.margins, k)
        for name, values in (("scales", scales), ("margins", margins)):
            outside = (values < HYPER_RANGE[0]) | (values > HYPER_RANGE[1])
            if outside.any():
                i = int(np.flatnonzero(outside)[0])
                raise fail(
                    name,
                    f"numbers in [{HYPER_RANGE[0]:g}, {HYPER_RANGE[1]:g}] (the range in which "
                    "every quantity of the solvers stays a normal float64)",
                    Shown(f"{values[i]:g} at position {i}"),
                )
        dim = check_int("dim", self.dim, low=1, high=MAX_DIM)
        if self.loss != CUSTOM and self.loss not in LOSSES:
            raise fail("loss", "one of " + ", ".join((*LOSSES, CUSTOM)), self.loss)
        if self.bias not in BIASES:
            raise fail("bias", "one of " + ", ".join(BIASES), self.bias)
        if self.features not in FEATURES:
            raise fail("features", "one of " + ", ".join(FEATURES), self.features)
        for name in ("gamma", "tau"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, check_float(name, value))
        # tolist() gives Python ints and floats, ~10x faster than a generator at k = 10^6
        object.__setattr__(self, "counts", tuple(np.asarray(counts, dtype=np.int64).tolist()))
        object.__setattr__(self, "scales", tuple(np.asarray(scales, dtype=float).tolist()))
        object.__setattr__(self, "margins", tuple(np.asarray(margins, dtype=float).tolist()))
        object.__setattr__(self, "dim", dim)

    @classmethod
    def from_loss(
        cls,
        counts: object,
        loss: str = "ce",
        *,
        gamma: float | None = None,
        tau: float | None = None,
        dim: int | None = None,
        source: str = "",
    ) -> Spec:
        """Build a specification from class counts and a loss preset (:func:`svm_hyperparameters`).

        ``dim`` defaults to ``k``.
        """
        counts = check_counts("counts", counts)
        scales, margins = svm_hyperparameters(counts, loss, gamma, tau)
        return cls(
            counts=tuple(counts.tolist()),
            scales=tuple(scales.tolist()),
            margins=tuple(margins.tolist()),
            dim=counts.size if dim is None else dim,
            loss=loss,
            gamma=gamma,
            tau=tau,
            source=source,
        )

    @classmethod
    def custom(
        cls,
        counts: object,
        *,
        scales: object | None = None,
        margins: object | None = None,
        dim: int | None = None,
        source: str = "",
    ) -> Spec:
        """Build a specification with hyperparameters given directly (default 1 for each)."""
        counts = check_counts("counts", counts)
        k = counts.size
        return cls(
            counts=tuple(counts.tolist()),
            scales=tuple(np.ones(k).tolist()) if scales is None else tuple(np.ravel(scales)),
            margins=tuple(np.ones(k).tolist()) if margins is None else tuple(np.ravel(margins)),
            dim=k if dim is None else dim,
            loss=CUSTOM,
            source=source,
        )

    # --- derived quantities -------------------------------------------------------------------
    @property
    def k(self) -> int:
        """Number of classes."""
        return len(self.counts)

    @property
    def n(self) -> int:
        """Total number of examples ``sum_c n_c``."""
        return int(sum(self.counts))

    @property
    def n_vec(self) -> np.ndarray:
        """Counts as a float array of shape (k,)."""
        return np.asarray(self.counts, dtype=float)

    @property
    def Delta(self) -> np.ndarray:
        """Scales ``Delta_c`` as an array of shape (k,)."""
        return np.asarray(self.scales, dtype=float)

    @property
    def delta(self) -> np.ndarray:
        """Margins ``delta_c`` as an array of shape (k,)."""
        return np.asarray(self.margins, dtype=float)

    @property
    def labels(self) -> np.ndarray:
        """Example labels ``y_i`` sorted by class, shape (n,)."""
        return np.repeat(np.arange(self.k), self.counts)

    @property
    def certifiable(self) -> bool:
        """Whether ``d >= k - 1``, so that the convex bound is tight (docs/theory.md §2)."""
        return self.dim >= self.k - 1

    def require_certifiable(self, method: str) -> None:
        """Raise :class:`SpecError` unless ``d >= k - 1`` (needed by ``method``)."""
        if not self.certifiable:
            raise fail(
                "dim",
                f"at least k - 1 = {self.k - 1} for the {method} method (the convex "
                "reformulation needs d >= k - 1, docs/theory.md §2; use --method nonconvex for "
                "fewer dimensions)",
                self.dim,
            )

    def with_dim(self, dim: int) -> Spec:
        """The same specification with another embedding dimension."""
        return dataclasses.replace(self, dim=dim)

    @property
    def loss_label(self) -> str:
        """Short name of the loss and its exponents, e.g. ``cdt (gamma=0.5)``."""
        extra = [
            f"{n}={getattr(self, n):g}" for n in ("gamma", "tau") if getattr(self, n) is not None
        ]
        return self.loss + (f" ({', '.join(extra)})" if extra else "")

    @property
    def variant(self) -> bool:
        """Whether the model differs from the paper's (a free bias or non-negative features)."""
        return self.bias != "none" or self.features != "free"

    def with_model(self, bias: str | None = None, features: str | None = None) -> Spec:
        """The same specification with another bias and/or feature model (validated)."""
        return dataclasses.replace(
            self,
            bias=self.bias if bias is None else bias,
            features=self.features if features is None else features,
        )

    def groups(self) -> list[np.ndarray]:
        """Classes with equal ``(n_c, Delta_c, delta_c)``, in order of first appearance."""
        keys: dict[tuple, list[int]] = {}
        for c, key in enumerate(zip(self.counts, self.scales, self.margins, strict=True)):
            keys.setdefault(key, []).append(c)
        return [np.asarray(v) for v in keys.values()]

    def step_groups(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(majority, minority)`` class indices if the spec is STEP-like, else ``None``.

        STEP-like means exactly two groups of identical classes (:meth:`groups`) that differ in
        their counts; the group with more examples per class is the majority.
        """
        groups = self.groups()
        if len(groups) != 2:
            return None
        a, b = groups
        na, nb = self.counts[a[0]], self.counts[b[0]]
        if na == nb:
            return None
        return (a, b) if na > nb else (b, a)

    def to_dict(self) -> dict:
        """JSON-ready dictionary: counts, scales, margins, loss, dim, gamma, tau, bias, features,
        source."""
        return {
            "counts": list(self.counts),
            "scales": list(self.scales),
            "margins": list(self.margins),
            "loss": self.loss,
            "dim": self.dim,
            "gamma": self.gamma,
            "tau": self.tau,
            "bias": self.bias,
            "features": self.features,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Spec:
        """Inverse of :meth:`to_dict`; validates like the constructor."""
        if not isinstance(data, dict):
            raise fail("spec", "a JSON object with counts, scales, margins, loss and dim", data)
        missing = [key for key in ("counts", "scales", "margins", "dim") if key not in data]
        if missing:
            raise fail(
                "spec",
                "a JSON object with counts, scales, margins, loss and dim",
                f"missing {', '.join(missing)}",
            )
        return cls(
            counts=tuple(data["counts"]),
            scales=tuple(data["scales"]),
            margins=tuple(data["margins"]),
            dim=data["dim"],
            loss=data.get("loss", CUSTOM),
            gamma=data.get("gamma"),
            tau=data.get("tau"),
            bias=data.get("bias", "none"),
            features=data.get("features", "free"),
            source=data.get("source", ""),
        )

    def describe(self) -> str:
        """One-line description: counts source, loss and hyperparameters, dimension."""
        parts = [self.source or _short_counts(self.counts), f"loss={self.loss}"]
        if self.gamma is not None:
            parts.append(f"gamma={self.gamma:g}")
        if self.tau is not None:
            parts.append(f"tau={self.tau:g}")
        if self.bias != "none":
            parts.append(f"bias={self.bias}")
        if self.features != "free":
            parts.append(f"features={self.features}")
        parts.append(f"d={self.dim}")
        return ", ".join(parts)


def _short_counts(counts: tuple[int, ...]) -> str:
    if len(counts) <= 12:
        return "counts=" + ",".join(str(c) for c in counts)
    return f"k={len(counts)}, n={sum(counts)}, counts {max(counts)}..{min(counts)}"
