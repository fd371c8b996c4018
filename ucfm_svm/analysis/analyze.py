"""Measure a trained network's last layer against the predicted UF-CS-SVM geometry.

A trained classifier gives last-layer weights ``W`` (k x d), penultimate features of its
training examples and their integer labels. Neural-collapse tools compare them with the simplex
ETF; under imbalance the right target is the UF-CS-SVM minimizer for the file's class counts and
the loss the network was trained with (docs/theory.md §1: cross-entropy and its variants
converge in direction to it). This module computes, one small pure function each:

- within-class variability ``NC1`` (:func:`ucfm_svm.geometry.nc1`);
- classifier and class-mean norms and cosines;
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
  on
  the prediction; in a trained network the other part is invisible to the loss (its gradient
  ``W^T G`` lies in that row space) and is kept only by what the earlier layers do.
- ``"center"`` subtracts the mean of all training features (the convention of Papyan et al.,
  2020, for features with a last-layer bias), which changes what is compared.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import api, geometry
from ..errors import SpecError
from ..result import Result, jsonable
from ..solvers.theory import DENSE_MAX_K
from ..spec import Spec
from ..validation import Shown, fail

#: Layouts of the features array: examples as rows (n x d) or as columns (d x n).
LAYOUTS = ("nd", "dn")
#: What is done to the features before class means are taken (see the module notes).
PREPROCESS = ("none", "project", "center")
#: Keys of an ``.npz`` input.
KEYS = ("W", "features", "labels")


@dataclass(frozen=True)
class Trained:
    """Validated last layer of a trained network.

    Attributes
    ----------
    W : (k, d) array
        Classifier rows ``w_c``.
    H : (d, n) array
        Features of the training examples as columns.
    labels : (n,) int64 array
        Labels in ``0..k-1``; every class has at least one example.
    b : (k,) array or None
        Last-layer bias, when the file has one (key ``b``).
    """

    W: np.ndarray
    H: np.ndarray
    labels: np.ndarray
    b: np.ndarray | None = None

    @property
    def k(self) -> int:
        """Number of classes (rows of ``W``)."""
        return self.W.shape[0]

    @property
    def counts(self) -> np.ndarray:
        """Examples per class, shape (k,)."""
        return np.bincount(self.labels, minlength=self.k).astype(np.int64)


def check_trained(
    W: object, features: object, labels: object, layout: str = "nd", b: object | None = None
) -> Trained:
    """Validate arrays of a trained last layer and return them as a :class:`Trained`.

    Parameters
    ----------
    W : array of shape (k, d), ``k >= 2``
    features : array of shape (n, d) (``layout="nd"``) or (d, n) (``layout="dn"``)
    labels : array of shape (n,)
        Integers (or whole-valued floats) in ``0..k-1``, each class present at least once.
    b : array of shape (k,) or None
        Last-layer bias (optional).

    Raises
    ------
    SpecError
        One line naming the offending array: wrong dimensions, shapes that do not fit, NaN or
        infinite entries, non-integer labels, labels outside ``0..k-1``, empty classes.
    """
    if layout not in LAYOUTS:
        raise fail("features_layout", "one of " + ", ".join(LAYOUTS), layout)
    W = _numeric("W", W)
    features = _numeric("features", features)
    labels = np.asarray(labels)
    if W.ndim != 2 or W.shape[0] < 2 or W.shape[1] < 1:
        raise fail("W", "a 2-D array of shape (k, d) with k >= 2 classes", _shape(W))
    k, d = W.shape
    if features.ndim != 2:
        raise fail("features", f"a 2-D array ({layout})", _shape(features))
    H = features.T if layout == "nd" else features
    if H.shape[0] != d:
        want = f"(n, {d})" if layout == "nd" else f"({d}, n)"
        raise fail(
            "features",
            f"of shape {want} to match W of shape ({k}, {d}) (layout {layout})",
            _shape(features),
        )
    if labels.ndim != 1 or labels.size != H.shape[1]:
        raise fail("labels", f"a 1-D array of length n = {H.shape[1]}", _shape(labels))
    labels = _integer_labels(labels)
    out = (labels < 0) | (labels >= k)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise fail(
            "labels",
            f"integers in 0..{k - 1} (k = {k} rows of W)",
            Shown(f"{labels[i]} at position {i}"),
        )
    counts = np.bincount(labels, minlength=k)
    if (counts == 0).any():
        empty = np.flatnonzero(counts == 0).tolist()
        raise fail(
            "labels",
            f"such that each of the k = {k} classes has an example",
            Shown(f"no example of class {', '.join(map(str, empty))}"),
        )
    for name, arr in (("W", W), ("features", H)):
        bad = ~np.isfinite(arr)
        if bad.any():
            count = Shown(f"{int(bad.sum())} non-finite entries")
            raise fail(name, "finite (no NaN or inf)", count)
    if b is not None:
        b = _numeric("b", b)
        if b.shape != (k,) or not np.all(np.isfinite(b)):
            raise fail("b", f"a finite 1-D array of length k = {k} (one bias per class)", _shape(b))
    return Trained(W=W, H=np.ascontiguousarray(H), labels=labels, b=b)


def _numeric(name: str, value: object) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "iuf":
        raise fail(name, "an array of real numbers", Shown(f"an array of dtype {arr.dtype}"))
    return arr.astype(float)


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


def load_trained(
    path: str | Path,
    *,
    features: str | Path | None = None,
    labels: str | Path | None = None,
    layout: str = "nd",
) -> Trained:
    """Read a trained last layer from disk and validate it (:func:`check_trained`).

    Either ``path`` is an ``.npz`` archive with the keys ``W``, ``features`` and ``labels``, or
    ``path`` is an ``.npy`` file holding ``W`` and ``features`` and ``labels`` name the other two
    ``.npy`` files. Pickled objects are refused.
    """
    path = Path(path)
    if path.suffix.lower() == ".npz":
        for name, value in (("features", features), ("labels", labels)):
            if value is not None:
                raise fail(name, "left unset when FILE is an .npz archive", str(value))
        arrays = _read_npz(path)
        return check_trained(
            arrays["W"], arrays["features"], arrays["labels"], layout, arrays.get("b")
        )
    if path.suffix.lower() == ".npy":
        if features is None or labels is None:
            missing = "features" if features is None else "labels"
            raise fail(missing, "an .npy file when FILE is an .npy file of W", None)
        return check_trained(
            _read_npy("W", path),
            _read_npy("features", features),
            _read_npy("labels", labels),
            layout,
        )
    raise fail("file", "an .npz archive or an .npy file", str(path))


def _read_npz(path: Path) -> dict[str, np.ndarray]:
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
            return {key: archive[key] for key in (*KEYS, "b") if key in archive.files}
    except SpecError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise fail(
            "file", allowed, Shown(f"{path.name} ({exc.__class__.__name__}: {exc})")
        ) from None


def _read_npy(name: str, path: str | Path) -> np.ndarray:
    path = Path(path)
    allowed = "a readable .npy file"
    if path.suffix.lower() != ".npy" or not path.is_file():
        raise fail(name, allowed, Shown(f"{path.name} (no such .npy file)"))
    try:
        return np.load(path, allow_pickle=False)
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
    ``theory.DENSE_MAX_K`` classes, the structured one with its Grams (``full=True``) above.
    ``bias`` / ``features`` choose a model variant (docs/theory.md §11, §12), solved by its
    ``"theory"`` route (closed form with its certificate, convex fallback for the bias).
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


def _unit_scale(name: str, X: np.ndarray) -> tuple[np.ndarray, float]:
    """``(X / s, s)`` with ``s`` the power of two nearest ``max |X|`` (so the division is exact)."""
    top = float(np.abs(X).max())
    if not 2.0**-480 <= top <= 2.0**480:  # squares and sums of squares stay normal floats
        raise fail(
            name,
            "an array whose largest entry is between 1e-144 and 1e144 in magnitude (its Gram "
            "must stay finite and nonzero in float64)",
            Shown("all zeros" if top == 0 else f"largest entry {top:.3g}"),
        )
    scale = 2.0 ** np.round(np.log2(top))
    return X / scale, scale


def _require_nonzero(name: str, what: str, sizes: np.ndarray) -> None:
    """Refuse zero ``what`` (their cosines are undefined), naming the first one."""
    zero = np.flatnonzero(sizes == 0)
    if zero.size:
        raise fail(name, f"an array with nonzero {what}", Shown(f"zero at class {int(zero[0])}"))


def preprocess_features(W: np.ndarray, H: np.ndarray, how: str) -> np.ndarray:
    """Features (d x n) as they are, projected ``W^+ W H``, or centred ``H - mean``."""
    if how == "project":
        return np.linalg.pinv(W) @ (W @ H)
    if how == "center":
        return H - H.mean(axis=1, keepdims=True)
    return H


def self_duality(W: np.ndarray, H_mean: np.ndarray) -> float:
    """``|| W^T/||W||_F - Hbar/||Hbar||_F ||_F`` (NC3 of Papyan et al., 2020), in ``[0, 2]``."""
    return float(np.linalg.norm(W.T / np.linalg.norm(W) - H_mean / np.linalg.norm(H_mean)))


def duality_cosines(W: np.ndarray, H_mean: np.ndarray) -> np.ndarray:
    """``cos(w_c, hbar_c)`` for each class, shape (k,)."""
    num = np.sum(W.T * H_mean, axis=0)
    return num / (np.linalg.norm(W, axis=1) * np.linalg.norm(H_mean, axis=0))


def squared_norm_ratio(G: np.ndarray, majority: np.ndarray, minority: np.ndarray) -> float:
    """Mean squared norm of the majority over that of the minority, ``G`` a Gram (docs/theory.md
    §5)."""
    diag = np.diag(G)
    return float(diag[majority].mean() / diag[minority].mean())


@dataclass(frozen=True)
class Analysis:
    """Measures of a trained last layer and of its predicted geometry.

    Grams are at the trained scale; distances are scale-free (:func:`geometry.gram_distance`).
    ``*_norm_ratio`` are mean squared norms, majority over minority, when the counts are STEP-like
    (two groups of classes, :meth:`Spec.step_groups`), else ``None``.
    """

    spec: Spec
    prediction_method: str
    preprocess: str
    nc1: float
    classifier_gram: np.ndarray
    embedding_gram: np.ndarray
    classifier_norms: np.ndarray
    embedding_norms: np.ndarray
    classifier_cosines: np.ndarray
    embedding_cosines: np.ndarray
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
    model_note: str = ""
    bias_cosine: float | None = None

    def to_dict(self) -> dict:
        """JSON-ready dictionary (arrays as nested lists, the spec as :meth:`Spec.to_dict`)."""
        out: dict = {}
        for key, value in self.__dict__.items():
            if key == "spec":
                value = value.to_dict()
            out[key] = jsonable(value)
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
    """
    if preprocess not in PREPROCESS:
        raise fail("preprocess", "one of " + ", ".join(PREPROCESS), preprocess)
    counts = trained.counts
    bias, features, note = detect_model(trained, bias, features)
    if prediction is None:
        prediction = predict(counts, loss, gamma=gamma, tau=tau, bias=bias, features=features)
    elif tuple(prediction.spec.counts) != tuple(counts.tolist()):
        raise fail(
            "prediction",
            f"a result for the counts of the trained file ({_short(counts)})",
            Shown(_short(np.asarray(prediction.spec.counts))),
        )
    spec = prediction.spec
    k = trained.k
    # Scale-free quantities are computed on copies divided by a power of two near their largest
    # entry (exact), so that trained scales of 1e-150 or 1e150 neither underflow nor overflow.
    W, s_w = _unit_scale("W", trained.W)
    H, s_h = _unit_scale("features", preprocess_features(trained.W, trained.H, preprocess))
    H_mean = geometry.class_means(H, trained.labels, k)
    _require_nonzero("W", "rows (classifiers)", np.abs(W).max(axis=1))
    _require_nonzero("features", "class means", np.abs(H_mean).max(axis=0))
    cos = (
        geometry.cosines_from_gram(geometry.gram(W)),
        geometry.cosines_from_gram(H_mean.T @ H_mean),
    )
    dual = duality_cosines(W, H_mean)
    cg = geometry.gram(W * s_w)
    eg = (H_mean * s_h).T @ (H_mean * s_h)
    pcg, peg = prediction.classifier_gram, prediction.embedding_gram
    etf = etf_gram(k)
    groups = spec.step_groups()
    ratios = (None, None, None, None)
    if groups is not None:
        ratios = tuple(squared_norm_ratio(G, *groups) for G in (cg, eg, pcg, peg))
    return Analysis(
        spec=spec,
        prediction_method=prediction.method,
        preprocess=preprocess,
        nc1=geometry.nc1(H, trained.labels, k),
        classifier_gram=cg,
        embedding_gram=eg,
        classifier_norms=geometry.norms_from_gram(cg),
        embedding_norms=geometry.norms_from_gram(eg),
        classifier_cosines=cos[0],
        embedding_cosines=cos[1],
        self_duality=self_duality(W, H_mean),
        duality_cosines=dual,
        classifier_distance_to_etf=geometry.gram_distance(cg, etf),
        embedding_distance_to_etf=geometry.gram_distance(eg, etf),
        classifier_distance_to_prediction=geometry.gram_distance(cg, pcg),
        embedding_distance_to_prediction=geometry.gram_distance(eg, peg),
        classifier_norm_ratio=ratios[0],
        embedding_norm_ratio=ratios[1],
        predicted_classifier_norm_ratio=ratios[2],
        predicted_embedding_norm_ratio=ratios[3],
        predicted_classifier_gram=pcg,
        predicted_embedding_gram=peg,
        model_note=note,
        bias_cosine=_bias_cosine(spec, trained.b, prediction.b),
    )


def detect_model(
    trained: Trained, bias: str | None = None, features: str | None = None
) -> tuple[str, str, str]:
    """The model a trained layer calls for, and a note saying how it was chosen.

    ``bias=None``: ``"free"`` iff the file has a bias ``b``. ``features=None``:
    ``"nonnegative"`` iff every feature is ``>= 0`` (post-ReLU). A free bias with non-negative
    features is not a supported model (docs/theory.md §12): when both are detected the
    non-negative model is used and the note says so (give ``bias``/``features`` to choose).
    """
    note = []
    if bias is None:
        bias = "free" if trained.b is not None else "none"
        if trained.b is not None:
            note.append("the file has a bias b")
    if features is None:
        features = "nonnegative" if float(trained.H.min()) >= 0.0 else "free"
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
