"""Streaming last-layer statistics of a trained network: ``collect(model, loader, classifier)``.

A forward hook on the classifier layer (a ``torch.nn.Linear``) records its input ``h`` (the
penultimate features) batch by batch; ``W`` and the bias (if any) are read from the layer. The
class means ``mu_c``, the pooled within-class scatter ``sum_c sum_{i in c} (h_i - mu_c)(h_i -
mu_c)^T`` and the per-class variances ``tr Sigma_c`` are accumulated in float64 by Chan et al.'s
pairwise update (a batch with ``m`` examples of class ``c``, mean ``b`` and scatter ``S_b``
merges into the running ``(n, mu, S)`` as ``mu += (b - mu) m / (n + m)``, ``S += S_b + (b - mu)
(b - mu)^T n m / (n + m)``), which is exact and stable; no ``n x d`` array is kept, so memory is
``O(d^2 + k d)`` whatever ``n``. The same statistics are accumulated for the coordinates ``Q h``
of the features in an orthonormal basis ``Q`` (r x d) of the row space of ``W`` (the part of
``h`` the logits see; docs/theory.md §16), and the nearest-class-centre predictions against the
final means need a second pass, so :func:`collect` makes two passes over ``loader``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..validation import fail


@dataclass(frozen=True)
class Collected:
    """Last-layer statistics of a network on a data set.

    Attributes
    ----------
    W : (k, d) classifier weights
    bias : (k,) classifier bias or ``None``
    counts : (k,) examples per class
    means : (k, d) class means of the features ``mu_c``
    within : (d, d) pooled within-class covariance ``Sigma_W = 1/n sum_i (h_i - mu_{y_i})(.)^T``
    class_variances : (k,) ``tr Sigma_c`` (mean squared distance to the class mean)
    basis : (r, d) orthonormal basis ``Q`` of the projection (default: the row space of ``W``)
    row_means : (k, r) class means of ``Q h``
    row_within : (r, r) pooled within-class covariance of ``Q h``
    row_class_variances : (k,) ``tr Sigma_c`` of ``Q h``
    accuracy : fraction of examples whose logit argmax is their label
    ncc_agreement : fraction whose nearest class mean (Euclidean, raw features) is the logit argmax
    """

    W: np.ndarray
    bias: np.ndarray | None
    counts: np.ndarray
    means: np.ndarray
    within: np.ndarray
    class_variances: np.ndarray
    basis: np.ndarray
    row_means: np.ndarray
    row_within: np.ndarray
    row_class_variances: np.ndarray
    accuracy: float
    ncc_agreement: float

    @property
    def k(self) -> int:
        """Number of classes."""
        return self.W.shape[0]

    @property
    def n(self) -> int:
        """Number of examples."""
        return int(self.counts.sum())


class _Moments:
    """Running per-class counts, means, pooled scatter and per-class scatter traces (float64)."""

    def __init__(self, k: int, d: int):
        self.n = np.zeros(k)
        self.mean = np.zeros((k, d))
        self.scatter = np.zeros((d, d))
        self.traces = np.zeros(k)

    def update(self, H: np.ndarray, y: np.ndarray) -> None:
        for c in np.unique(y):
            Hc = H[y == c]
            m = Hc.shape[0]
            b = Hc.mean(axis=0)
            centred = Hc - b
            delta = b - self.mean[c]
            n = self.n[c]
            w = n * m / (n + m)
            self.scatter += centred.T @ centred + w * np.outer(delta, delta)
            self.traces[c] += float(np.sum(centred * centred)) + w * float(delta @ delta)
            self.mean[c] += delta * m / (n + m)
            self.n[c] = n + m


def row_space_basis(W: np.ndarray, rtol: float = 1e-10) -> np.ndarray:
    """Orthonormal basis (r x d) of the row space of ``W`` (singular values > ``rtol s_max``)."""
    _, s, Vt = np.linalg.svd(W, full_matrices=False)
    return Vt[s > rtol * s.max()] if s.size and s.max() > 0 else Vt[:0]


def collect(
    model: nn.Module,
    loader: Iterable,
    classifier: nn.Linear,
    *,
    device: torch.device | str | None = None,
    basis: np.ndarray | None = None,
) -> Collected:
    """Run ``model`` over ``loader`` (batches ``(x, y)``) in eval mode and collect statistics.

    Parameters
    ----------
    model : torch.nn.Module
        Its forward pass must call ``classifier`` once per batch on the features.
    loader : iterable of (inputs, labels)
        E.g. a ``torch.utils.data.DataLoader``; iterated twice (see the module notes).
    classifier : torch.nn.Linear
        The last layer, ``logits = W h (+ b)``.
    device : optional
        Where the inputs are moved (default: the device of ``classifier.weight``).
    basis : (r, d) array, optional
        Orthonormal rows ``Q`` for the projected statistics; default the row space of ``W``
        (:func:`row_space_basis`). The monitor passes the row space of the loss-visible part of
        ``W`` (docs/theory.md §16).

    Returns
    -------
    Collected
    """
    if not isinstance(classifier, nn.Linear):
        raise fail("classifier", "a torch.nn.Linear layer of the model", type(classifier).__name__)
    W = classifier.weight.detach().to("cpu", torch.float64).numpy().copy()
    bias = None
    if classifier.bias is not None:
        bias = classifier.bias.detach().to("cpu", torch.float64).numpy().copy()
    k, d = W.shape
    Q = row_space_basis(W) if basis is None else np.asarray(basis, dtype=float)
    device = classifier.weight.device if device is None else torch.device(device)
    raw, row = _Moments(k, d), _Moments(k, Q.shape[0])
    seen: list[torch.Tensor] = []

    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        seen.append(inputs[0].detach())

    correct = 0
    handle = classifier.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x, y in loader:
                seen.clear()
                logits = model(x.to(device))
                if len(seen) != 1:
                    raise fail(
                        "classifier", "a layer the model calls once per forward pass", len(seen)
                    )
                H = seen[0].to("cpu", torch.float64).reshape(len(y), -1).numpy()
                labels = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y, dtype=np.int64)
                raw.update(H, labels)
                row.update(H @ Q.T, labels)
                correct += int((logits.argmax(dim=1).cpu().numpy() == labels).sum())
            agree = 0
            for x, y in loader:
                seen.clear()
                logits = model(x.to(device))
                H = seen[0].to("cpu", torch.float64).reshape(len(y), -1).numpy()
                dist = (
                    np.sum(H * H, axis=1)[:, None]
                    - 2.0 * H @ raw.mean.T
                    + np.sum(raw.mean**2, axis=1)[None, :]
                )
                agree += int((dist.argmin(axis=1) == logits.argmax(dim=1).cpu().numpy()).sum())
    finally:
        handle.remove()
        model.train(was_training)
    counts = raw.n.astype(np.int64)
    n = max(int(counts.sum()), 1)
    return Collected(
        W=W,
        bias=bias,
        counts=counts,
        means=raw.mean,
        within=raw.scatter / n,
        class_variances=raw.traces / np.maximum(raw.n, 1),
        basis=Q,
        row_means=row.mean,
        row_within=row.scatter / n,
        row_class_variances=row.traces / np.maximum(row.n, 1),
        accuracy=correct / n,
        ncc_agreement=agree / n,
    )
