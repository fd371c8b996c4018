"""Measure a trained network's last layer against the predicted UF-CS-SVM geometry.

A trained classifier gives last-layer weights ``W`` (k x d), penultimate features of its
training examples and their integer labels. Neural-collapse tools compare them with the simplex
ETF; under imbalance the right target is the UF-CS-SVM minimizer for the file's class counts and
the loss the network was trained with (docs/theory.md §1: cross-entropy and its variants
converge in direction to it). This module computes, one small pure function each:

- within-class variability ``NC1`` (docs/theory.md §16.4, as :func:`ucfm_svm.geometry.nc1`);
- classifier and class-mean norms and cosines, per class and by groups of classes
  (docs/theory.md §17);
- self-duality: distance between ``W^T`` and the class means ``Hbar``, both Frobenius-normalized,
  and the per-class cosines ``cos(w_c, hbar_c)``;
- distance of the classifier and class-mean Grams to the simplex ETF (Gram ``I - 11^T/k``);
- distance of the same Grams to the UF-CS-SVM prediction (:func:`ucfm_svm.geometry.gram_distance`,
  scale-free, in ``[0, 2]``).

Convention: logits are ``W h`` (no bias), as in the unconstrained features model, so the class
means are taken as they are (``preprocess="none"``). Two alternatives:

- ``"project"`` keeps only the part of each feature in the row space of ``W``,
  ``h -> W^+ W h``. The logits do not change, and the UF-CS-SVM minimizer has no other part
  (docs/theory.md §2: ``W = U S^{1/2} Q``, ``H = Q^T S^{1/2} V^T`` share ``Q``), so this is a no-op
  on the prediction; in a trained network the other part is invisible to the loss (its gradient
  ``W^T G`` lies in that row space) and is kept only by what the earlier layers do.
- ``"center"`` subtracts the mean of all training features (the convention of Papyan et al.,
  2020, for features with a last-layer bias), which changes what is compared.

Streaming (docs/theory.md §16.6). The features are never held as a whole: they are read in
blocks of rows (memory-mapped from an ``.npy``; streamed out of the zip member of an ``.npz``,
for which numpy ignores ``mmap_mode``) in two passes: a check (finite, range) with the class
sums, then the centred second moments projected on the range of the between-class covariance,
so that beyond the input itself memory is ``O(k d + k^2)`` (the ``k x k`` Grams) and no
``n x d`` copy is made.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import api, geometry
from .. import groups as _groups
from ..errors import SpecError
from ..progress import progress
from ..result import Result, jsonable
from ..spec import Spec
from ..validation import Shown, fail

#: Layouts of the features array: examples as rows (n x d) or as columns (d x n).
LAYOUTS = ("nd", "dn")
#: What is done to the features before class means are taken (see the module notes).
PREPROCESS = ("none", "project", "center")
#: Keys of an ``.npz`` input.
KEYS = ("W", "features", "labels")
#: Largest ``k`` predicted by the dense closed form; above it the structured closed form (with its
#: Grams) is used: measured 3.1 s dense against 0.2 s structured at k = 1000, same Grams to 1e-14.
DENSE_MAX_K = 500
#: Numbers per block of features (4M: 32 MB in float64).
BLOCK_NUMBERS = 1 << 22
#: Feature entries (n d) from which a progress bar is shown (about 2 s of work on one core).
PROGRESS_ENTRIES = 10_000_000
#: Relative cutoff on the eigenvalues of ``Sigma_B`` in NC1 (``np.linalg.pinv``'s ``rcond``).
NC1_RCOND = 1e-10


@dataclass(frozen=True)
class FeatureReader:
    """The features of ``n`` examples in ``d`` dimensions, read block by block.

    Attributes
    ----------
    n, d : int
    blocks : callable
        ``blocks(rows)`` returns a fresh iterator over consecutive ``(<= rows, d)`` float64
        arrays, examples in file order; each call reads the source again.
    """

    n: int
    d: int
    blocks: Callable[[int], Iterator[np.ndarray]]

    def rows(self) -> int:
        """Examples per block (:data:`BLOCK_NUMBERS` numbers, at least one example)."""
        return max(1, BLOCK_NUMBERS // max(self.d, 1))


def array_reader(arr: np.ndarray, layout: str) -> FeatureReader:
    """Blocks of an array (in memory or memory-mapped) whose examples are rows (``"nd"``) or
    columns (``"dn"``); only one block is converted to float64 at a time."""
    n, d = arr.shape if layout == "nd" else arr.shape[::-1]

    def blocks(rows: int) -> Iterator[np.ndarray]:
        for start in range(0, n, rows):
            part = arr[start : start + rows] if layout == "nd" else arr[:, start : start + rows].T
            yield np.asarray(part, dtype=np.float64)

    return FeatureReader(n, d, blocks)


@dataclass(frozen=True)
class Trained:
    """Validated last layer of a trained network.

    Attributes
    ----------
    W : (k, d) array
        Classifier rows ``w_c``.
    features : FeatureReader
        Features of the training examples (finite, checked).
    labels : (n,) int64 array
        Row of ``W`` of each example, in ``0..k-1``; every class has at least one example.
    label_of_row : (k,) int64 array
        The label as given in the input of each row (``arange(k)`` unless the input's labels
        were ``k`` distinct values other than ``0..k-1``, which are taken in increasing order).
    b : (k,) array or None
        Last-layer bias, when the file has one (key ``b``).
    """

    W: np.ndarray
    features: FeatureReader
    labels: np.ndarray
    label_of_row: np.ndarray
    b: np.ndarray | None = None

    @property
    def k(self) -> int:
        """Number of classes (rows of ``W``)."""
        return self.W.shape[0]

    @property
    def d(self) -> int:
        """Feature dimension (columns of ``W``)."""
        return self.W.shape[1]

    @property
    def counts(self) -> np.ndarray:
        """Examples per class, shape (k,)."""
        return np.bincount(self.labels, minlength=self.k).astype(np.int64)

    @property
    def relabelled(self) -> bool:
        """Whether the input's labels were not ``0..k-1`` (see ``label_of_row``)."""
        return not np.array_equal(self.label_of_row, np.arange(self.k))

    def labels_note(self) -> str:
        """One line saying which input label each row of ``W`` is, when it is not the identity."""
        if not self.relabelled:
            return ""
        shown = _listing(self.label_of_row)
        return (
            f"the labels are {self.k} distinct values but not 0..{self.k - 1}: row c of W is "
            f"taken as the c-th smallest label (label_of_row {shown}); relabel the file 0..k-1 "
            "to choose another order"
        )


def check_trained(
    W: object, features: object, labels: object, layout: str = "nd", b: object | None = None
) -> Trained:
    """Validate arrays of a trained last layer and return them as a :class:`Trained`.

    Parameters
    ----------
    W : array of shape (k, d), ``k >= 2``
    features : array of shape (n, d) (``layout="nd"``) or (d, n) (``layout="dn"``), or a
        :class:`FeatureReader` (then ``layout`` is ignored)
        Kept as it is (never copied whole); read block by block. An array in memory is checked
        for NaN and infinities here; a memory-mapped or streamed one in the first pass of
        :func:`class_statistics` (same error).
    labels : array of shape (n,)
        Integers (or whole-valued floats): either in ``0..k-1`` with each class present, or any
        ``k`` distinct values, taken in increasing order as the rows of ``W`` (recorded in
        :attr:`Trained.label_of_row` and reported).
    b : array of shape (k,) or None
        Last-layer bias (optional).

    Raises
    ------
    SpecError
        One line naming the offending array: wrong dimensions, shapes that do not fit, NaN or
        infinite entries, non-integer labels, labels outside ``0..k-1`` (when they are not ``k``
        distinct values), empty classes.
    """
    if layout not in LAYOUTS:
        raise fail("features_layout", "one of " + ", ".join(LAYOUTS), layout)
    W = _numeric("W", W).astype(float)
    labels = np.asarray(labels)
    if W.ndim != 2 or W.shape[0] < 2 or W.shape[1] < 1:
        raise fail("W", "a 2-D array of shape (k, d) with k >= 2 classes", _shape(W))
    k, d = W.shape
    if isinstance(features, FeatureReader):
        reader = features
        if reader.d != d:
            raise fail("features", f"of dimension d = {d} to match W", Shown(f"d = {reader.d}"))
    else:
        if isinstance(features, NpzMember):
            arr = features
            if arr.dtype.kind not in "iuf":
                raise fail("features", "an array of real numbers", Shown(f"dtype {arr.dtype}"))
        else:
            arr = _numeric("features", features)
        if arr.ndim != 2:
            raise fail("features", f"a 2-D array ({layout})", _shape(arr))
        if (arr.shape[1] if layout == "nd" else arr.shape[0]) != d:
            want = f"(n, {d})" if layout == "nd" else f"({d}, n)"
            raise fail(
                "features",
                f"of shape {want} to match W of shape ({k}, {d}) (layout {layout})",
                _shape(arr),
            )
        member = isinstance(arr, NpzMember)
        reader = arr.reader(layout) if member else array_reader(arr, layout)
    if labels.ndim != 1 or labels.size != reader.n:
        raise fail("labels", f"a 1-D array of length n = {reader.n}", _shape(labels))
    labels, label_of_row = _rows_of_labels(_integer_labels(labels), k)
    bad = ~np.isfinite(W)
    if bad.any():
        raise fail("W", "finite (no NaN or inf)", Shown(f"{int(bad.sum())} non-finite entries"))
    if isinstance(features, np.ndarray) and not isinstance(features, np.memmap):
        _finite_block(features)
    if b is not None:
        b = _numeric("b", b).astype(float)
        if b.shape != (k,) or not np.all(np.isfinite(b)):
            raise fail("b", f"a finite 1-D array of length k = {k} (one bias per class)", _shape(b))
    return Trained(W, reader, labels, label_of_row, b)


def _rows_of_labels(labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, label_of_row)``: labels in ``0..k-1`` as they are; ``k`` distinct other values
    mapped in increasing order; anything else refused (one line)."""
    values, rows = np.unique(labels, return_inverse=True)
    if values.size == k:
        return rows.astype(np.int64).reshape(-1), values.astype(np.int64)
    out = (labels < 0) | (labels >= k)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise fail(
            "labels",
            f"integers in 0..{k - 1} (k = {k} rows of W), or k = {k} distinct values (taken in "
            "increasing order as the rows of W)",
            Shown(f"{labels[i]} at position {i} ({values.size} distinct values)"),
        )
    empty = np.setdiff1d(np.arange(k), values).tolist()
    raise fail(
        "labels",
        f"such that each of the k = {k} classes has an example",
        Shown(f"no example of class {_listing(np.asarray(empty))}"),
    )


def _finite_block(block: np.ndarray) -> None:
    """Refuse NaN and infinite features, with their number."""
    if block.dtype.kind == "f":
        bad = block.size - int(np.count_nonzero(np.isfinite(block)))
        if bad:
            raise fail("features", "finite (no NaN or inf)", Shown(f"{bad} non-finite entries"))


def _numeric(name: str, value: object) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "iuf":
        raise fail(name, "an array of real numbers", Shown(f"an array of dtype {arr.dtype}"))
    return arr


def _integer_labels(labels: np.ndarray) -> np.ndarray:
    if labels.dtype.kind in "iu":
        return labels.astype(np.int64)
    if labels.dtype.kind == "f":
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise fail("labels", "integers", Shown(f"{labels[i]} at position {i}"))
        return labels.astype(np.int64)
    raise fail("labels", "integers", Shown(f"an array of dtype {labels.dtype}"))


def _shape(arr: np.ndarray) -> Shown:
    return Shown(f"an array of shape {arr.shape}")


def _listing(values: np.ndarray, most: int = 12) -> str:
    """``0,1,3`` or, for long lists, the first and last few."""
    v = [str(int(x)) for x in values]
    if len(v) <= most:
        return ",".join(v)
    return ",".join(v[: most // 2]) + ",...," + ",".join(v[-3:]) + f" ({len(v)} values)"


def load_trained(
    path: str | Path,
    *,
    features: str | Path | None = None,
    labels: str | Path | None = None,
    layout: str = "nd",
) -> Trained:
    """Read a trained last layer from disk and validate it (:func:`check_trained`).

    Either ``path`` is an ``.npz`` archive with the keys ``W``, ``features`` and ``labels``
    (``b`` optional), or ``path`` is an ``.npy`` file holding ``W`` and ``features`` and
    ``labels`` name the other two ``.npy`` files. Pickled objects are refused. The features are
    not loaded: an ``.npy`` is memory-mapped (``np.load(mmap_mode="r")``); an ``.npz`` member is
    streamed out of the archive (numpy cannot memory-map a zip member) when its examples are
    contiguous (``nd`` in C order or ``dn`` in Fortran order), else loaded once.
    """
    path = Path(path)
    if path.suffix.lower() == ".npz":
        for name, value in (("features", features), ("labels", labels)):
            if value is not None:
                raise fail(name, "left unset when FILE is an .npz archive", str(value))
        arrays, reader = _read_npz(path, layout)
        return check_trained(
            arrays["W"], reader, arrays["labels"], layout, arrays.get("b")
        )
    if path.suffix.lower() == ".npy":
        if features is None or labels is None:
            missing = "features" if features is None else "labels"
            raise fail(missing, "an .npy file when FILE is an .npy file of W", None)
        return check_trained(
            _read_npy("W", path),
            _read_npy("features", features, mmap=True),
            _read_npy("labels", labels),
            layout,
        )
    raise fail("file", "an .npz archive or an .npy file", str(path))


@dataclass(frozen=True)
class NpzMember:
    """A 2-D numeric array inside an ``.npz`` archive, read from its header only.

    Its examples are streamed out of the archive when they are contiguous (``"nd"`` in C order
    or ``"dn"`` in Fortran order: each example is ``d`` consecutive numbers), else the member is
    loaded once (numpy's ``mmap_mode`` does not apply to zip members).
    """

    path: Path
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    version: tuple[int, int]

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    def reader(self, layout: str) -> FeatureReader:
        """Blocks of examples (see the class notes)."""
        n, d = self.shape if layout == "nd" else self.shape[::-1]
        if self.fortran != (layout == "dn") or self.version not in ((1, 0), (2, 0)):
            with np.load(self.path, allow_pickle=False) as archive:
                return array_reader(archive[self.name], layout)
        item = self.dtype.itemsize

        def blocks(rows: int) -> Iterator[np.ndarray]:
            with zipfile.ZipFile(self.path) as zf, zf.open(self.name + ".npy") as fh:
                _member_header(fh)
                for start in range(0, n, rows):
                    m = min(rows, n - start)
                    raw = fh.read(m * d * item)
                    if len(raw) != m * d * item:
                        raise fail(
                            "file",
                            "a readable .npz archive with the keys W, features and labels",
                            Shown(f"{self.path.name} (features truncated)"),
                        )
                    block = np.frombuffer(raw, dtype=self.dtype).reshape(m, d)
                    yield block if block.dtype == np.float64 else block.astype(np.float64)

        return FeatureReader(n, d, blocks)


def _member_header(fh) -> tuple[tuple[int, int], tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fh)
    fmt = np.lib.format
    read = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
    if version not in read:
        return version, (), False, np.dtype(float)
    shape, fortran, dtype = read[version](fh)
    return version, shape, fortran, dtype


def _read_npz(path: Path, layout: str) -> tuple[dict[str, np.ndarray], object]:
    """The small arrays of an archive (``W``, ``labels``, ``b``) and its features: an
    :class:`NpzMember` (streamed) or, for header versions numpy reads only whole, the array."""
    allowed = "a readable .npz archive with the keys W, features and labels"
    if not path.is_file():
        raise fail("file", allowed, Shown(f"{path.name} (no such file)"))
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in KEYS if key not in archive.files]
            if missing:
                found = ", ".join(archive.files) or "none"
                raise fail(
                    "file",
                    allowed,
                    Shown(f"{path.name} (missing {', '.join(missing)}; keys found: {found})"),
                )
            arrays = {key: archive[key] for key in ("W", "labels", "b") if key in archive.files}
            if "features.npy" not in archive.zip.namelist():  # a member without the suffix
                return arrays, archive["features"]
            with archive.zip.open("features.npy") as fh:
                version, shape, fortran, dtype = _member_header(fh)
            if version not in ((1, 0), (2, 0)):
                return arrays, archive["features"]
            if dtype.hasobject:
                raise ValueError("features holds Python objects (pickles are refused)")
            return arrays, NpzMember(path, "features", shape, dtype, fortran, version)
    except SpecError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise fail(
            "file", allowed, Shown(f"{path.name} ({exc.__class__.__name__}: {exc})")
        ) from None


def _read_npy(name: str, path: str | Path, mmap: bool = False) -> np.ndarray:
    path = Path(path)
    allowed = "a readable .npy file"
    if path.suffix.lower() != ".npy" or not path.is_file():
        raise fail(name, allowed, Shown(f"{path.name} (no such .npy file)"))
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (OSError, ValueError, EOFError) as exc:
        raise fail(name, allowed, Shown(f"{path.name} ({exc.__class__.__name__}: {exc})")) from None


# --- the prediction -------------------------------------------------------------------------------
def predict(
    counts: object,
    loss: str = "ce",
    *,
    gamma: float | None = None,
    tau: float | None = None,
    bias: str = "none",
    features: str = "free",
) -> Result:
    """The UF-CS-SVM minimizer for ``counts`` and the SVM limit of ``loss`` (docs/theory.md §1).

    Solved with ``d = k`` (the geometry does not depend on ``d >= k - 1``, docs/theory.md §2) by the
    closed form (docs/theory.md §4) certified by its own dual: the dense ``"theory"`` method up to
    :data:`DENSE_MAX_K` classes, the structured one with its Grams (``full=True``, docs/theory.md
    §7) above. ``bias`` / ``features`` choose a model variant (docs/theory.md §11, §12), solved by
    its ``"theory"`` route (closed form with its certificate, convex fallback for the bias).
    """
    spec = Spec.from_loss(counts, loss, gamma=gamma, tau=tau).with_model(bias, features)
    if spec.variant:
        return api.solve(spec, "theory")
    if spec.k > DENSE_MAX_K:
        return api.solve(spec, "structured", full=True)
    return api.solve(spec, "theory")


# --- measures -------------------------------------------------------------------------------------
def etf_gram(k: int) -> np.ndarray:
    """Gram ``I - 11^T/k`` of the simplex ETF (equal norms, cosines ``-1/(k-1)``)."""
    return np.eye(k) - np.full((k, k), 1.0 / k)


def _unit_scale(name: str, top: float) -> float:
    """The power of two nearest ``top = max |X|`` (so that dividing by it is exact); refuses
    magnitudes whose squares would leave the normal float64 range."""
    if not 2.0**-480 <= top <= 2.0**480:  # squares and sums of squares stay normal floats
        raise fail(
            name,
            "an array whose largest entry is between 1e-144 and 1e144 in magnitude (its Gram "
            "must stay finite and nonzero in float64)",
            Shown("all zeros" if top == 0 else f"largest entry {top:.3g}"),
        )
    return float(2.0 ** np.round(np.log2(top)))


def _require_nonzero(name: str, what: str, sizes: np.ndarray) -> None:
    """Refuse zero ``what`` (their cosines are undefined), naming the first one."""
    zero = np.flatnonzero(sizes == 0)
    if zero.size:
        raise fail(name, f"an array with nonzero {what}", Shown(f"zero at class {int(zero[0])}"))


def self_duality(W: np.ndarray, H_mean: np.ndarray) -> float:
    """``|| W^T/||W||_F - Hbar/||Hbar||_F ||_F`` (NC3 of Papyan et al., 2020), in ``[0, 2]``."""
    return float(np.linalg.norm(W.T / np.linalg.norm(W) - H_mean / np.linalg.norm(H_mean)))


def duality_cosines(W: np.ndarray, H_mean: np.ndarray) -> np.ndarray:
    """``cos(w_c, hbar_c)`` for each class, shape (k,)."""
    num = np.sum(W.T * H_mean, axis=0)
    return num / (np.linalg.norm(W, axis=1) * np.linalg.norm(H_mean, axis=0))


def squared_norm_ratio(norms: np.ndarray, majority: np.ndarray, minority: np.ndarray) -> float:
    """Mean squared norm of the majority over that of the minority (docs/theory.md §5)."""
    sq = norms**2
    return float(sq[majority].mean() / sq[minority].mean())


@dataclass(frozen=True)
class ClassStatistics:
    """Streamed class statistics of the (preprocessed) features, at the scale ``1 / scale``.

    Attributes
    ----------
    means : (d, k) array
        Class means ``hbar_c`` of the (preprocessed) features divided by ``scale``.
    scale : float
        A power of two near the largest feature magnitude (so every division is exact).
    variances : (k,) array
        ``tr Sigma_c``: mean squared distance of the class's (scaled) features to their mean.
    nc1 : float
        ``tr(Sigma_W Sigma_B^+) / k`` (docs/theory.md §16.4), scale-free.
    feature_min : float
        Smallest entry of the raw features (non-negative features are detected from it).
    """

    means: np.ndarray
    scale: float
    variances: np.ndarray
    nc1: float
    feature_min: float


def class_statistics(
    trained: Trained, preprocess: str = "none", *, rows: int | None = None
) -> ClassStatistics:
    """Class means, per-class variances and NC1 of ``trained``'s features, in two passes over
    them and without an ``n x d`` copy (docs/theory.md §16.6).

    Pass 1 checks the features (finite), finds their range and sums each class's features
    (sorted blocks, ``np.add.reduceat``; raw sums cannot overflow, the entries being at most
    ``2^480`` in magnitude). With the means ``M`` divided by ``scale``,
    ``Sigma_B = B^T B / k`` for ``B`` the means minus the count-weighted global mean; its
    eigenvectors ``u_j`` and eigenvalues ``lambda_j = s_j^2 / k`` come from the SVD of ``B``
    (``k x d``), those with ``lambda_j > NC1_RCOND lambda_max`` kept, as ``np.linalg.pinv`` does.
    Pass 2 accumulates the centred features ``x_i - mu_{y_i}`` as ``sum_i ((x_i - mu)^T u_j)^2``
    (or, when ``d < 2 r``, the ``d x d`` scatter, then ``u_j^T C u_j``), so ``NC1 = 1/(k n)
    sum_j (.)/lambda_j``. ``preprocess`` is linear, so it acts on the means and the centred
    blocks only: ``"project"`` maps them to coordinates in a basis of the row space of ``W``
    (:func:`row_basis`; ``W^+ W = Q^T Q``), ``"center"`` shifts the means (NC1 does not
    change). ``rows`` is the block size (default :meth:`FeatureReader.rows`).
    """
    if preprocess not in PREPROCESS:
        raise fail("preprocess", "one of " + ", ".join(PREPROCESS), preprocess)
    reader, labels, k = trained.features, trained.labels, trained.k
    rows = reader.rows() if rows is None else rows
    counts = trained.counts.astype(float)
    n, d = reader.n, reader.d
    steps = 2 * (-(-n // rows))
    bar = progress(
        total=steps, desc="analyze", unit="block", enabled=n * d >= PROGRESS_ENTRIES
    )
    with bar:
        sums = np.zeros((k, d))
        low, top = np.inf, 0.0
        for start, block in _numbered(reader.blocks(rows), rows):
            _finite_block(block)
            if block.size:
                low, high = min(low, float(block.min())), float(block.max())
                top = max(top, high, -low)
            y = labels[start : start + block.shape[0]]
            order = np.argsort(y, kind="stable")
            ys = y[order]
            heads = np.flatnonzero(np.r_[True, ys[1:] != ys[:-1]])
            with np.errstate(over="ignore"):  # only beyond 2^480, refused below
                sums[ys[heads]] += np.add.reduceat(block[order], heads, axis=0)
            bar.update()
        scale = _unit_scale("features", top)
        inv = 1.0 / scale
        raw = sums / counts[:, None] * inv  # (k, d) class means of the scaled raw features
        # "project": work in the coordinates z = Q h of an orthonormal basis Q (r x d) of the
        # row space of W (the range of W^+ W = Q^T Q, with np.linalg.pinv's cutoff); Q^T is an
        # isometry, so NC1 and the traces are those of the projected features W^+ W h.
        basis = row_basis(trained.W) if preprocess == "project" else None
        if basis is not None and basis.shape[0] == d:  # rank d: W^+ W = I, nothing to project
            basis = None
        means = raw if basis is None else raw @ basis.T
        centre = counts @ means / n
        if preprocess == "center":
            means = means - centre
            centre = np.zeros(means.shape[1])
        _, s, Vt = np.linalg.svd(means - centre, full_matrices=False)
        keep = s**2 > NC1_RCOND * (s[0] ** 2) if s.size and s[0] > 0 else np.zeros(s.size, bool)
        U = Vt[keep].T  # (d or r, q): eigenvectors of Sigma_B with a nonzero eigenvalue
        lam = s[keep] ** 2 / k
        width = means.shape[1]
        scatter = np.zeros((width, width)) if width < 2 * U.shape[1] else None
        along = np.zeros(U.shape[1])
        traces = np.zeros(k)
        for start, block in _numbered(reader.blocks(rows), rows):
            y = labels[start : start + block.shape[0]]
            centred = block * inv - raw[y]
            if basis is not None:
                centred = centred @ basis.T
            traces += np.bincount(y, weights=np.einsum("ij,ij->i", centred, centred), minlength=k)
            if scatter is not None:
                scatter += centred.T @ centred
            else:
                along += np.sum((centred @ U) ** 2, axis=0)
            bar.update()
    if scatter is not None:
        along = np.einsum("ij,ij->j", U, scatter @ U)
    nc1 = float(np.sum(along / lam) / (n * k)) if lam.size else 0.0
    if basis is not None:
        means = means @ basis
    return ClassStatistics(
        means=means.T, scale=scale, variances=traces / counts, nc1=nc1, feature_min=low
    )


def row_basis(W: np.ndarray) -> np.ndarray:
    """Orthonormal basis (r x d) of the row space of ``W``: the right singular vectors whose
    singular values pass ``np.linalg.pinv``'s default cutoff ``max(k, d) eps s_max``, so that
    ``Q^T Q = W^+ W``."""
    _, sv, Vt = np.linalg.svd(W, full_matrices=False)
    cutoff = max(W.shape) * np.finfo(float).eps * (sv[0] if sv.size else 0.0)
    return Vt[sv > cutoff]


def _numbered(blocks: Iterator[np.ndarray], rows: int) -> Iterator[tuple[int, np.ndarray]]:
    for j, block in enumerate(blocks):
        yield j * rows, block


@dataclass(frozen=True)
class Analysis:
    """Measures of a trained last layer and of its predicted geometry.

    Grams are at the trained scale; distances are scale-free (:func:`geometry.gram_distance`).
    ``*_norm_ratio`` are mean squared norms, majority over minority, when the counts are STEP-like
    (two groups of classes, :meth:`Spec.step_groups`), else ``None``. ``groups`` and
    ``predicted_groups`` are the group statistics (docs/theory.md §17) of the trained and the
    predicted geometry, in the shape ``solve --json`` writes. ``label_of_row[c]`` is the label,
    as in the input, of row ``c`` of ``W``. ``warnings`` are one line each.
    """

    spec: Spec
    prediction_method: str
    preprocess: str
    d: int
    n: int
    label_of_row: np.ndarray
    nc1: float
    classifier_gram: np.ndarray
    embedding_gram: np.ndarray
    classifier_norms: np.ndarray
    embedding_norms: np.ndarray
    class_variances: np.ndarray
    self_duality: float
    duality_cosines: np.ndarray
    classifier_distance_to_etf: float
    embedding_distance_to_etf: float
    classifier_distance_to_prediction: float
    embedding_distance_to_prediction: float
    classifier_norm_ratio: float | None
    embedding_norm_ratio: float | None
    predicted_classifier_norm_ratio: float | None
    predicted_embedding_norm_ratio: float | None
    predicted_classifier_gram: np.ndarray
    predicted_embedding_gram: np.ndarray
    groups: _groups.GroupStatistics
    predicted_groups: _groups.GroupStatistics
    model_note: str = ""
    labels_note: str = ""
    warnings: tuple[str, ...] = ()
    bias_cosine: float | None = None

    #: The ``k x k`` fields, written only by ``to_dict(full=True)``.
    MATRICES = (
        "classifier_gram",
        "embedding_gram",
        "predicted_classifier_gram",
        "predicted_embedding_gram",
    )

    @property
    def classifier_cosines(self) -> np.ndarray:
        """``k x k`` cosines of the classifiers (computed on request)."""
        return geometry.cosines_from_gram(self.classifier_gram)

    @property
    def embedding_cosines(self) -> np.ndarray:
        """``k x k`` cosines of the class means (computed on request)."""
        return geometry.cosines_from_gram(self.embedding_gram)

    def to_dict(self, full: bool = False) -> dict:
        """JSON-ready dictionary: the scalars, per-class vectors (length ``k``: norms, trained and
        predicted, variances, duality cosines), the label of each row, the group statistics,
        the warnings and the spec; the ``k x k`` Grams and cosines only when ``full``."""
        out: dict = {}
        for key, value in self.__dict__.items():
            if key in ("spec", "groups", "predicted_groups"):
                value = value.to_dict()
            elif key in self.MATRICES and not full:
                continue
            out[key] = jsonable(value)
        out["predicted_classifier_norms"] = jsonable(
            geometry.norms_from_gram(self.predicted_classifier_gram)
        )
        out["predicted_embedding_norms"] = jsonable(
            geometry.norms_from_gram(self.predicted_embedding_gram)
        )
        if full:
            out["classifier_cosines"] = jsonable(self.classifier_cosines)
            out["embedding_cosines"] = jsonable(self.embedding_cosines)
        return out


def analyze(
    trained: Trained,
    loss: str = "ce",
    *,
    gamma: float | None = None,
    tau: float | None = None,
    preprocess: str = "none",
    prediction: Result | None = None,
    bias: str | None = None,
    features: str | None = None,
    many_above: float = _groups.MANY_ABOVE,
    few_below: float = _groups.FEW_BELOW,
) -> Analysis:
    """Measure ``trained`` against the UF-CS-SVM prediction for its counts and ``loss``.

    Parameters
    ----------
    trained : Trained
        From :func:`check_trained` or :func:`load_trained`.
    loss, gamma, tau
        Loss preset the network was trained with (``Spec.from_loss``).
    preprocess : {"none", "project", "center"}
        Keep the features as they are, project them on the row space of ``W``, or subtract
        their mean, before NC1 and class means are computed (see the module notes).
    prediction : Result, optional
        A precomputed :func:`predict` for the same counts and loss (saves the solve when the same
        problem is measured many times, e.g. along training); its counts must match.
    bias, features : str or None
        The model to predict with (docs/variants.md); ``None`` detects it
        (:func:`detect_model`): ``bias="free"`` when the file has a bias ``b``,
        ``features="nonnegative"`` when every feature is ``>= 0``.
    many_above, few_below : float
        Thresholds of the many/medium/few groups (:func:`ucfm_svm.groups.class_groups`).

    The features are read in two streamed passes (:func:`class_statistics`); the ``k x k``
    Grams are the only arrays beyond ``O(k d)``.
    """
    if preprocess not in PREPROCESS:
        raise fail("preprocess", "one of " + ", ".join(PREPROCESS), preprocess)
    counts = trained.counts
    grp = _groups.class_groups(counts, many_above, few_below)
    stats = class_statistics(trained, preprocess)
    bias, features, note = detect_model(trained, bias, features, stats.feature_min)
    if prediction is None:
        prediction = predict(counts, loss, gamma=gamma, tau=tau, bias=bias, features=features)
    elif tuple(prediction.spec.counts) != tuple(counts.tolist()):
        raise fail(
            "prediction",
            f"a result for the counts of the trained file ({_short(counts)})",
            Shown(_short(np.asarray(prediction.spec.counts))),
        )
    spec = prediction.spec
    k, d = trained.k, trained.d
    # Scale-free quantities are computed on copies divided by a power of two near their largest
    # entry (exact), so that trained scales of 1e-150 or 1e150 neither underflow nor overflow.
    s_w = _unit_scale("W", float(np.abs(trained.W).max()))
    W = trained.W / s_w
    _require_nonzero("W", "rows (classifiers)", np.abs(W).max(axis=1))
    H_mean, s_h = stats.means, stats.scale
    _require_nonzero("features", "class means", np.abs(H_mean).max(axis=0))
    unit_c, unit_e = geometry.gram(W), H_mean.T @ H_mean
    norms_c, norms_e = geometry.norms_from_gram(unit_c), geometry.norms_from_gram(unit_e)
    pcg, peg = prediction.classifier_gram, prediction.embedding_gram
    etf = etf_gram(k)
    step = spec.step_groups()
    ratios = (None, None, None, None)
    if step is not None:
        pnorms = (geometry.norms_from_gram(pcg), geometry.norms_from_gram(peg))
        ratios = tuple(squared_norm_ratio(v, *step) for v in (norms_c, norms_e, *pnorms))
    trained_groups = _groups.group_statistics(
        grp,
        counts,
        norms_c * s_w,
        norms_e * s_h,
        _groups.factor_pair_sums(W, grp),
        _groups.factor_pair_sums(H_mean.T, grp),
    )
    return Analysis(
        spec=spec,
        prediction_method=prediction.method,
        preprocess=preprocess,
        d=d,
        n=trained.features.n,
        label_of_row=trained.label_of_row,
        nc1=stats.nc1,
        classifier_gram=unit_c * s_w**2,
        embedding_gram=unit_e * s_h**2,
        classifier_norms=norms_c * s_w,
        embedding_norms=norms_e * s_h,
        class_variances=stats.variances * s_h**2,
        self_duality=self_duality(W, H_mean),
        duality_cosines=duality_cosines(W, H_mean),
        classifier_distance_to_etf=geometry.gram_distance(unit_c, etf),
        embedding_distance_to_etf=geometry.gram_distance(unit_e, etf),
        classifier_distance_to_prediction=geometry.gram_distance(unit_c, pcg),
        embedding_distance_to_prediction=geometry.gram_distance(unit_e, peg),
        classifier_norm_ratio=ratios[0],
        embedding_norm_ratio=ratios[1],
        predicted_classifier_norm_ratio=ratios[2],
        predicted_embedding_norm_ratio=ratios[3],
        predicted_classifier_gram=pcg,
        predicted_embedding_gram=peg,
        groups=trained_groups,
        predicted_groups=api.group_statistics(prediction, many_above, few_below),
        model_note=note,
        labels_note=trained.labels_note(),
        warnings=dimension_warnings(k, d),
        bias_cosine=_bias_cosine(spec, trained.b, prediction.b),
    )


def dimension_warnings(k: int, d: int) -> tuple[str, ...]:
    """One line when ``d < k - 1``: the predicted geometry (rank up to ``k - 1``) cannot be
    realized by the trained features, and the prediction shown is the ``d >= k - 1`` one
    (docs/theory.md §2); the optimum under the rank constraint ``d < k - 1`` is not computed
    (the non-convex method searches it without a certificate)."""
    if d >= k - 1:
        return ()
    return (
        f"d = {d} < k - 1 = {k - 1}: the prediction is the UF-CS-SVM geometry for d >= k - 1 "
        f"(rank up to k - 1, which these features cannot reach); analyze does not compute the "
        f"optimum under d < k - 1 (solve --method nonconvex --dim {d} searches it, without a "
        "certificate), so the distances include that rank gap",
    )


def detect_model(
    trained: Trained, bias: str | None, features: str | None, feature_min: float
) -> tuple[str, str, str]:
    """The model a trained layer calls for, and a note saying how it was chosen.

    ``bias=None``: ``"free"`` iff the file has a bias ``b``. ``features=None``:
    ``"nonnegative"`` iff every feature is ``>= 0`` (post-ReLU). A free bias with non-negative
    features is not a supported model (docs/theory.md §12): when both are detected the
    non-negative model is used and the note says so (give ``bias``/``features`` to choose).
    ``feature_min`` is the smallest feature (:attr:`ClassStatistics.feature_min`).
    """
    note = []
    if bias is None:
        bias = "free" if trained.b is not None else "none"
        if trained.b is not None:
            note.append("the file has a bias b")
    if features is None:
        features = "nonnegative" if feature_min >= 0.0 else "free"
        if features == "nonnegative":
            note.append("every feature is >= 0")
    if bias == "free" and features == "nonnegative":
        detected = " and ".join(note)
        bias = "none"
        note = [
            f"{detected}: a free bias with non-negative features is not supported, so the "
            "prediction is the non-negative-feature model without bias (--bias free "
            "--features free for the other)"
        ]
    return bias, features, "; ".join(note)


def _bias_cosine(spec: Spec, b: np.ndarray | None, predicted: np.ndarray | None) -> float | None:
    """Cosine between the trained and predicted bias, both in the gauge orthogonal to
    ``Delta^{-1} 1`` (docs/theory.md §11); ``None`` unless both exist and are nonzero."""
    if b is None or predicted is None:
        return None
    v = 1.0 / spec.Delta
    b = b - (b @ v) / (v @ v) * v
    nb, npred = float(np.linalg.norm(b)), float(np.linalg.norm(predicted))
    if nb == 0.0 or npred <= 1e-12 * max(1.0, float(np.abs(predicted).max())):
        return None
    return float(b @ predicted / (nb * npred))


def _short(counts: np.ndarray) -> str:
    if counts.size <= 12:
        return "counts " + ",".join(str(int(c)) for c in counts)
    return f"k={counts.size}, n={int(counts.sum())}"
