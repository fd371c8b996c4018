"""A small deep-net study: does a trained MLP reach the predicted UF-CS-SVM geometry?

Data: scikit-learn's ``digits`` (1797 8x8 images, 10 classes; shipped with the package, no
download). For each imbalance ratio ``R`` a STEP-imbalanced training set is drawn (docs/theory.md
§5,
majority first): digits 0-4 keep ``n_maj`` examples each, digits 5-9 keep ``n_maj / R``; the
remaining images are the test set.

Model: an MLP ``x -> ReLU(A1 x + b1) -> ReLU(A2 . + b2) -> h = A3 . + b3 -> z = W h``. The
features ``h`` (dimension ``d``) are linear in the last hidden layer and the classifier has no
bias, so logits are ``W h`` as in the unconstrained features model (docs/theory.md §1) and the class
means are compared uncentred. Every loss goes through
:func:`ucfm_svm.regularized.losses.loss_and_grad`
(mean over the training set); the gradients are back-propagated by hand and the parameters follow
full-batch gradient descent with heavy-ball momentum 0.9 (or Adam) and L2 weight decay on all
parameters (the usual recipe of neural-collapse experiments, SGD with momentum 0.9 and weight
decay 5e-4, here with full batches), run well past zero training error. The classifier starts
with rows summing to zero: for ``Delta = I`` the logit gradient of every column sums to zero, so
the mean row of ``W`` never receives a gradient and a random initial mean row would persist
(decaying only through weight decay).

Along training (log-spaced epochs) ``W`` and the training features are measured
with :func:`ucfm_svm.analysis.analyze.analyze` against the UF-CS-SVM prediction for the
subset's counts and the loss: NC1, distances of the normalized classifier and class-mean Grams
to the prediction and to the simplex ETF, and the majority/minority squared-norm ratios.
Features are measured projected on
the row space of ``W`` (``preprocess="project"``: the part the logits see); the distance of the
raw class means is recorded too.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .. import geometry
from ..analysis.analyze import analyze, check_trained, etf_gram, predict
from ..errors import UcfmError
from ..regularized.losses import LossParams, loss_and_grad, loss_params
from ..spec import step_counts
from ..validation import check_float, check_int, fail

#: Number of classes (digits 0-9); the first five are the majority (STEP order).
K = 10
#: Full-batch optimizers.
OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class StudyConfig:
    """Settings of one study run (defaults: the slow run reported in the README).

    ``losses`` holds ``(name, gamma)`` pairs; VS uses ``tau`` from :attr:`vs_tau`.
    """

    ratios: tuple[float, ...] = (5.0, 10.0, 25.0)
    losses: tuple[tuple[str, float | None], ...] = (
        ("ce", None),
        ("cdt", 0.5),
        ("ldt", 0.5),
        ("vs", 0.5),
    )
    vs_tau: float = 1.0
    n_maj: int = 150
    hidden: tuple[int, ...] = (128, 128)
    dim: int = 32
    epochs: int = 3000
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    checkpoints: int = 25
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("n_maj", self.n_maj, low=2)
        check_int("dim", self.dim, low=K - 1)
        check_int("epochs", self.epochs, low=1)
        check_int("checkpoints", self.checkpoints, low=1)
        check_float("lr", self.lr, low=0.0, low_open=True)
        check_float("weight_decay", self.weight_decay, low=0.0)
        check_float("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        if self.optimizer not in OPTIMIZERS:
            raise fail("optimizer", "one of " + ", ".join(OPTIMIZERS), self.optimizer)
        for R in self.ratios:
            n_min = self.n_maj / check_float("ratios", R, low=1.0)
            if n_min < 1 or abs(n_min - round(n_min)) > 1e-9:
                raise fail(
                    "ratios",
                    f"numbers R >= 1 that divide n_maj = {self.n_maj} into a whole number",
                    R,
                )
        for width in self.hidden:
            check_int("hidden", width, low=1)


def digits_step(n_maj: int, R: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """STEP subset of scikit-learn's digits: ``n_maj`` images of 0-4, ``n_maj / R`` of 5-9.

    Returns ``x_train`` (64 x n, pixels / 16), ``y_train`` (n,), ``x_test``, ``y_test`` (the
    images not drawn). Requires scikit-learn (``pip install 'ucfm-svm[study]'``).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UcfmError(
            "The digits study needs scikit-learn: pip install 'ucfm-svm[study]'."
        ) from None
    data = load_digits()
    X, y = data.data / 16.0, data.target
    available = int(np.bincount(y).min())
    if n_maj > available:
        raise fail("n_maj", f"at most {available} (the rarest digit's count)", n_maj)
    counts = step_counts(K, R, 0.5, n_min=round(n_maj / R))
    train = np.concatenate(
        [rng.choice(np.flatnonzero(y == c), size=counts[c], replace=False) for c in range(K)]
    )
    test = np.setdiff1d(np.arange(y.size), train)
    return {"x_train": X[train].T, "y_train": y[train], "x_test": X[test].T, "y_test": y[test]}


# --- a hand-written MLP -------------------------------------------------------------------------
def init_mlp(n_in: int, hidden: Sequence[int], dim: int, k: int, rng: np.random.Generator) -> dict:
    """He-initialized weights ``A_l`` (out x in), zero biases ``b_l``, classifier ``W`` (k x d).

    The rows of ``W`` are centred (sum to zero); see the module notes.
    """
    sizes = [n_in, *hidden, dim]
    params = {}
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        params[f"A{i}"] = rng.normal(scale=np.sqrt(2.0 / a), size=(b, a))
        params[f"b{i}"] = np.zeros(b)
    W = rng.normal(scale=np.sqrt(1.0 / dim), size=(k, dim))
    params["W"] = W - W.mean(axis=0)
    return params


def features(params: dict, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Features ``h`` (d x m) of inputs ``x`` (n_in x m) and the layer inputs kept for backprop."""
    n_layers = sum(1 for key in params if key.startswith("A"))
    acts = [x]
    a = x
    for i in range(n_layers):
        a = params[f"A{i}"] @ a + params[f"b{i}"][:, None]
        if i < n_layers - 1:
            a = np.maximum(a, 0.0)
        acts.append(a)
    return a, acts


def loss_and_gradients(
    params: dict, x: np.ndarray, y: np.ndarray, lp: LossParams, weight_decay: float
) -> tuple[float, dict, np.ndarray]:
    """Mean loss over the batch plus ``weight_decay/2 * sum ||params||^2``, its gradients,
    logits.

    The logit gradient comes from :func:`ucfm_svm.regularized.losses.loss_and_grad`; the chain
    rule through ``z = W h``, ``h = A_L a_{L-1} + b_L`` and the ReLU layers is written out.
    """
    m = y.size
    h, acts = features(params, x)
    z = params["W"] @ h
    value, G = loss_and_grad(lp, z, y)
    value /= m
    G /= m
    grads = {"W": G @ h.T}
    delta = params["W"].T @ G
    n_layers = len(acts) - 1
    for i in reversed(range(n_layers)):
        grads[f"A{i}"] = delta @ acts[i].T
        grads[f"b{i}"] = delta.sum(axis=1)
        if i > 0:
            delta = (params[f"A{i}"].T @ delta) * (acts[i] > 0)
    if weight_decay:
        for key, p in params.items():
            grads[key] = grads[key] + weight_decay * p
            value += 0.5 * weight_decay * float(np.sum(p**2))
    return value, grads, z


class Momentum:
    """Heavy-ball gradient descent ``v = mu v + g``, ``p -= lr v`` on a dict of arrays."""

    def __init__(self, params: dict, lr: float, momentum: float):
        self.lr, self.mu = lr, momentum
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, params: dict, grads: dict) -> None:
        """One update, in place."""
        for key, g in grads.items():
            self.v[key] = self.mu * self.v[key] + g
            params[key] -= self.lr * self.v[key]


class Adam:
    """Adam (Kingma & Ba, 2015) on a dict of arrays, updated in place."""

    def __init__(self, params: dict, lr: float, betas: tuple[float, float] = (0.9, 0.999)):
        self.lr, (self.b1, self.b2) = lr, betas
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, params: dict, grads: dict) -> None:
        """One update ``p -= lr * mhat / (sqrt(vhat) + 1e-8)``."""
        self.t += 1
        c1, c2 = 1 - self.b1**self.t, 1 - self.b2**self.t
        for key, g in grads.items():
            self.m[key] = self.b1 * self.m[key] + (1 - self.b1) * g
            self.v[key] = self.b2 * self.v[key] + (1 - self.b2) * g * g
            params[key] -= self.lr * (self.m[key] / c1) / (np.sqrt(self.v[key] / c2) + 1e-8)


def training_error(lp: LossParams, logits: np.ndarray, y: np.ndarray) -> float:
    """Fraction of examples with ``argmax_c (Delta_c z_c + iota_c) != y``: the rule the loss trains.

    (For CDT and VS the scales and offsets act in training only; test predictions use ``z``.)
    """
    adjusted = lp.scales[:, None] * logits + lp.offsets[:, None]
    return float(np.mean(np.argmax(adjusted, axis=0) != y))


def balanced_error(params: dict, x: np.ndarray, y: np.ndarray) -> float:
    """Mean over classes of the per-class error rate of ``argmax W h``."""
    pred = np.argmax(params["W"] @ features(params, x)[0], axis=0)
    return float(np.mean([np.mean(pred[y == c] != c) for c in np.unique(y)]))


def checkpoint_epochs(epochs: int, count: int) -> np.ndarray:
    """About ``count`` log-spaced epochs in ``1..epochs`` (always including ``epochs``)."""
    return np.unique(np.geomspace(1, epochs, count).round().astype(int))


def train_and_measure(
    data: dict[str, np.ndarray],
    loss: str,
    gamma: float | None,
    config: StudyConfig,
    rng: np.random.Generator,
) -> dict:
    """Train one MLP with ``loss`` and measure it at the checkpoint epochs.

    Returns a JSON-ready dict: ``loss``, ``gamma``, ``tau``, ``counts``, the predicted squared
    norm ratios and ``history`` (one entry per checkpoint: epoch, loss value, training error,
    balanced test error, NC1, distances to the prediction and to the ETF, norm ratios,
    self-duality).
    """
    x, y = data["x_train"], data["y_train"]
    counts = np.bincount(y, minlength=K)
    tau = config.vs_tau if loss in ("la", "vs") else None
    lp = loss_params(loss, counts, gamma=gamma, tau=tau)
    prediction = predict(counts, loss, gamma=gamma, tau=tau)
    params = init_mlp(x.shape[0], config.hidden, config.dim, K, rng)
    if config.optimizer == "adam":
        opt: Adam | Momentum = Adam(params, config.lr)
    else:
        opt = Momentum(params, config.lr, config.momentum)
    marks = set(checkpoint_epochs(config.epochs, config.checkpoints).tolist())
    history = []
    for epoch in range(1, config.epochs + 1):
        value, grads, _ = loss_and_gradients(params, x, y, lp, config.weight_decay)
        opt.step(params, grads)
        if epoch in marks:
            h, _ = features(params, x)
            trained = check_trained(params["W"], h, y, "dn")
            a = analyze(trained, loss, prediction=prediction, preprocess="project")
            raw = analyze(trained, loss, prediction=prediction)
            history.append(
                {
                    "epoch": epoch,
                    "loss": value,
                    "train_error": training_error(lp, params["W"] @ h, y),
                    "balanced_test_error": balanced_error(params, data["x_test"], data["y_test"]),
                    "nc1": a.nc1,
                    "classifier_distance_to_prediction": a.classifier_distance_to_prediction,
                    "embedding_distance_to_prediction": a.embedding_distance_to_prediction,
                    "raw_embedding_distance_to_prediction": raw.embedding_distance_to_prediction,
                    "classifier_distance_to_etf": a.classifier_distance_to_etf,
                    "embedding_distance_to_etf": a.embedding_distance_to_etf,
                    "classifier_norm_ratio": a.classifier_norm_ratio,
                    "embedding_norm_ratio": a.embedding_norm_ratio,
                    "self_duality": a.self_duality,
                    "classifier_norm": float(np.linalg.norm(params["W"])),
                }
            )
    groups = prediction.spec.step_groups()
    return {
        "loss": loss,
        "gamma": gamma,
        "tau": tau,
        "counts": counts.tolist(),
        "prediction_method": prediction.method,
        "predicted_classifier_norm_ratio": a.predicted_classifier_norm_ratio,
        "predicted_embedding_norm_ratio": a.predicted_embedding_norm_ratio,
        "classifier_distance_etf_to_prediction": _etf_distance(prediction.classifier_gram),
        "final_cosines": {
            "classifiers": geometry.grouped_cosines(a.classifier_gram, *groups),
            "embeddings": geometry.grouped_cosines(a.embedding_gram, *groups),
        },
        "predicted_cosines": {
            "classifiers": geometry.grouped_cosines(prediction.classifier_gram, *groups),
            "embeddings": geometry.grouped_cosines(prediction.embedding_gram, *groups),
        },
        "history": history,
    }


def _etf_distance(G: np.ndarray) -> float:
    return geometry.gram_distance(etf_gram(G.shape[0]), G)


def run_study(config: StudyConfig, progress: Callable[[str], None] | None = None) -> dict:
    """Run every (ratio, loss) pair of ``config``; returns ``{"config": ..., "runs": [...]}``.

    Each run is :func:`train_and_measure` plus its ``R``. The data subset of a ratio and each
    network's initialization are seeded from ``config.seed`` (the same initialization for every
    loss at a given ratio, so the losses differ only in the loss).
    """
    runs = []
    for i, R in enumerate(config.ratios):
        data = digits_step(config.n_maj, R, np.random.default_rng([config.seed, i, 0]))
        for loss, gamma in config.losses:
            run = train_and_measure(
                data, loss, gamma, config, np.random.default_rng([config.seed, i, 1])
            )
            run["R"] = R
            runs.append(run)
            if progress is not None:
                last = run["history"][-1]
                progress(
                    f"R={R:g} {loss}: train error {last['train_error']:.3f}, "
                    f"classifier distance {last['classifier_distance_to_prediction']:.3f}, "
                    f"norm ratio {last['classifier_norm_ratio']:.3f} "
                    f"(predicted {run['predicted_classifier_norm_ratio']:.3f})"
                )
    return {"config": asdict(config), "runs": runs}
