"""Image data for the deep-net study, read from disk (no download, no pickle), and STEP subsets.

- ``digits``: scikit-learn's bundled 8x8 digits (1797 images, 10 classes; needs scikit-learn).
  No test split is shipped: the images not drawn into the training subset are the test set.
- ``mnist``, ``fashion-mnist``: the four IDX files (``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, optionally
  gzipped) in a local folder.
- ``cifar10``: the *binary* version (``data_batch_1.bin`` .. ``data_batch_5.bin``,
  ``test_batch.bin``, each record one label byte and 3072 pixel bytes), in the folder or in its
  ``cifar-10-batches-bin`` subfolder. The Python (pickle) version is not read.

Images are returned as float32 arrays of shape (n, channels, height, width) scaled to [0, 1],
labels as int64. :func:`step_subset` draws the STEP-imbalanced training set of docs/theory.md §5:
the first ``(1 - rho) k`` classes keep ``n_maj`` examples each, the others ``n_maj / R``.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SpecError, UcfmError
from ..spec import step_counts
from ..validation import fail

#: Data sets by name.
DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10")

_IDX = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class ImageData:
    """Train and test images (n, c, h, w) in [0, 1] and integer labels in ``0..k-1``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def k(self) -> int:
        """Number of classes."""
        return int(self.y_train.max()) + 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one image, (channels, height, width)."""
        return tuple(self.x_train.shape[1:])


def load_dataset(name: str, folder: str | Path | None = None) -> ImageData:
    """Read the data set ``name`` (see the module notes); ``folder`` for all but ``digits``."""
    if name not in DATASETS:
        raise fail("--data", "one of " + ", ".join(DATASETS), name)
    if name == "digits":
        return _digits()
    if folder is None:
        raise fail("--data-dir", f"the folder holding the {name} files (no download)", None)
    folder = Path(folder)
    if not folder.is_dir():
        raise fail("--data-dir", "an existing folder", str(folder))
    if name == "cifar10":
        return _cifar10(folder)
    xs, ys = [], []
    for split in ("train", "test"):
        images, labels = _IDX[split]
        xs.append(_read_idx(_find(folder, images), 3)[:, None, :, :].astype(np.float32) / 255.0)
        ys.append(_read_idx(_find(folder, labels), 1).astype(np.int64))
    return ImageData(xs[0], ys[0], xs[1], ys[1])


def step_subset(
    data: ImageData, R: float, rho: float, n_maj: int, rng: np.random.Generator
) -> tuple[ImageData, np.ndarray]:
    """STEP training subset: ``n_maj`` examples of each majority class, ``n_maj / R`` of the rest.

    Majority classes are the first ``(1 - rho) k`` labels. For ``digits`` (no shipped test set)
    the images not drawn become the test set; otherwise the test set is kept whole.

    Returns
    -------
    subset : ImageData
    counts : (k,) int array, the class counts of the training subset
    """
    k = data.k
    n_min = n_maj / R
    if n_min < 1 or abs(n_min - round(n_min)) > 1e-9:
        raise fail("--R", f"a ratio dividing n_maj = {n_maj} into a whole number >= 1", R)
    counts = step_counts(k, R, rho, n_min=round(n_min))
    available = np.bincount(data.y_train, minlength=k)
    if np.any(counts > available):
        raise fail("--n-maj", f"at most {int(available.min())} (the rarest class's count)", n_maj)
    chosen = np.concatenate(
        [
            rng.choice(np.flatnonzero(data.y_train == c), size=int(counts[c]), replace=False)
            for c in range(k)
        ]
    )
    x, y = data.x_train[chosen], data.y_train[chosen]
    if data.x_test.shape[0] == 0:
        rest = np.setdiff1d(np.arange(data.y_train.size), chosen)
        return ImageData(x, y, data.x_train[rest], data.y_train[rest]), counts
    return ImageData(x, y, data.x_test, data.y_test), counts


def _digits() -> ImageData:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UcfmError(
            'the digits data set needs scikit-learn: pip install "ucfm-svm[torch]"'
        ) from None
    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    empty = np.zeros((0, *x.shape[1:]), dtype=np.float32)
    return ImageData(x, bunch.target.astype(np.int64), empty, np.zeros(0, dtype=np.int64))


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / (stem + ".gz")):
        if candidate.is_file():
            return candidate
    raise SpecError(f"--data-dir: {folder} has no {stem} (or {stem}.gz); no download is made")


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes (magic ``0x0000 08 ndim``, big-endian int32 sizes)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 + 4 * ndim or raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
        raise SpecError(f"--data-dir: {path} is not an IDX file of {ndim}-d unsigned bytes")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    body = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise SpecError(f"--data-dir: {path} is truncated ({body.size} bytes for shape {shape})")
    return body.reshape(shape)


def _cifar10(folder: Path) -> ImageData:
    if (folder / "cifar-10-batches-bin").is_dir():
        folder = folder / "cifar-10-batches-bin"
    names = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
    parts = {}
    for split, files in names.items():
        records = []
        for file in files:
            path = folder / file
            if not path.is_file():
                raise SpecError(
                    f"--data-dir: {folder} has no {file} (the CIFAR-10 binary version); "
                    "no download is made"
                )
            raw = np.fromfile(path, np.uint8)
            if raw.size % 3073:
                raise SpecError(f"--data-dir: {path} is not a CIFAR-10 binary batch")
            records.append(raw.reshape(-1, 3073))
        rec = np.concatenate(records)
        x = rec[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
        parts[split] = (x, rec[:, 0].astype(np.int64))
    return ImageData(*parts["train"], *parts["test"])
