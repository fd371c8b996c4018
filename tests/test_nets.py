"""The PyTorch subpackage (seconds, CPU): losses equal losses.py, collect equals a manual pass,
the monitor is ~0 on the certified last layer and positive elsewhere, the study writes its files
and resumes, and ``ucfm-svm study`` without torch exits 2 with an install hint."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ucfm_svm import Spec, geometry, solve
from ucfm_svm.regularized.losses import loss_and_grad, loss_params

torch = pytest.importorskip("torch")

from ucfm_svm.nets.collect import collect  # noqa: E402
from ucfm_svm.nets.data import load_dataset  # noqa: E402
from ucfm_svm.nets.losses import family_loss  # noqa: E402
from ucfm_svm.nets.models import MLP, resnet18  # noqa: E402
from ucfm_svm.nets.monitor import GeometryMonitor, visible_classifiers  # noqa: E402
from ucfm_svm.nets.study import StudyConfig, run_study, write_outputs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOSSES = [
    ("ce", None, None),
    ("wce", None, None),
    ("la", None, 0.7),
    ("ldam", None, None),
    ("cdt", 0.5, None),
    ("ldt", -0.75, None),
    ("vs", 0.3, 1.2),
]


@pytest.mark.parametrize(("name", "gamma", "tau"), LOSSES)
def test_loss_modules_equal_numpy_losses(name, gamma, tau):
    counts = [40, 40, 7, 3]
    rng = np.random.default_rng(1)
    Z = 4.0 * rng.normal(size=(4, 25))
    y = rng.integers(0, 4, 25)
    value, grad = loss_and_grad(loss_params(name, counts, gamma=gamma, tau=tau), Z, y)
    z = torch.tensor(Z.T.copy(), dtype=torch.float64, requires_grad=True)
    total = family_loss(name, counts, gamma=gamma, tau=tau, reduction="sum")(z, torch.tensor(y))
    total.backward()
    # both are float64 evaluations of the same formula: agreement to rounding
    assert abs(total.item() - value) <= 1e-12 * max(1.0, abs(value))
    np.testing.assert_allclose(z.grad.numpy(), grad.T, rtol=1e-10, atol=1e-13)
    mean = family_loss(name, counts, gamma=gamma, tau=tau)(z.detach(), torch.tensor(y))
    assert abs(mean.item() - value / 25) <= 1e-12 * max(1.0, abs(value))


def _loader(x, y, sizes):
    out, i = [], 0
    for s in sizes:
        out.append((x[i : i + s], y[i : i + s]))
        i += s
    return out


def test_collect_equals_manual_forward_pass():
    torch.manual_seed(0)
    k, n = 4, 53
    model = MLP(6, k, width=16, depth=2).double()
    x = torch.randn(n, 6, dtype=torch.float64)
    y = torch.tensor(np.r_[np.arange(k), np.random.default_rng(0).integers(0, k, n - k)])
    model.train()
    model(x)  # move the BatchNorm running statistics away from their start
    got = collect(model, _loader(x, y, [7, 20, 1, 25]), model.classifier)
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        H = model.features(x).numpy()
        logits = model(x).numpy()
    labels = y.numpy()
    means = np.stack([H[labels == c].mean(axis=0) for c in range(k)])
    centred = H - means[labels]
    np.testing.assert_allclose(got.means, means, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.within, centred.T @ centred / n, rtol=1e-10, atol=1e-12)
    variances = [np.sum(centred[labels == c] ** 2) / np.sum(labels == c) for c in range(k)]
    np.testing.assert_allclose(got.class_variances, variances, rtol=1e-10)
    np.testing.assert_array_equal(got.counts, np.bincount(labels, minlength=k))
    np.testing.assert_array_equal(got.W, model.classifier.weight.detach().numpy())
    assert got.accuracy == np.mean(logits.argmax(1) == labels)
    dist = ((H[:, None, :] - means[None, :, :]) ** 2).sum(-1)
    assert got.ncc_agreement == np.mean(dist.argmin(1) == logits.argmax(1))
    Q = got.basis
    np.testing.assert_allclose(Q @ Q.T, np.eye(Q.shape[0]), atol=1e-12)
    np.testing.assert_allclose(got.row_means, means @ Q.T, atol=1e-12)
    # NC1 from the streamed statistics equals geometry.nc1 on the full feature matrix
    from ucfm_svm.nets.monitor import nc1_and_cdnv

    nc1, _ = nc1_and_cdnv(got.means, got.within, got.class_variances, got.counts.astype(float))
    assert abs(nc1 - geometry.nc1(H.T, labels, k)) <= 1e-9 * nc1


class LastLayer(torch.nn.Module):
    """Input: one-hot labels (plus noise); features = ``F x + b``; classifier ``W``."""

    def __init__(self, F, W, b=None):
        super().__init__()
        self.features = torch.nn.Linear(F.shape[1], F.shape[0], bias=b is not None).double()
        self.classifier = torch.nn.Linear(W.shape[1], W.shape[0], bias=False).double()
        with torch.no_grad():
            self.features.weight.copy_(torch.as_tensor(F))
            if b is not None:
                self.features.bias.copy_(torch.as_tensor(b))
            self.classifier.weight.copy_(torch.as_tensor(W))

    def forward(self, x):
        return self.classifier(self.features(x))


def _one_hot_loader(counts):
    y = torch.as_tensor(np.repeat(np.arange(len(counts)), counts))
    x = torch.nn.functional.one_hot(y, len(counts)).double()
    return _loader(x, y, [50] * (len(y) // 50) + [len(y) % 50])


CASES = [
    ([30, 30, 30, 3, 3, 3], "ce", None),
    ([30, 30, 30, 3, 3, 3], "ldt", 0.5),
    ([30, 30, 30, 3, 3, 3], "cdt", 0.5),
    ([200, 120, 60, 30, 12, 5], "vs", 0.4),  # many / medium / few groups
]


@pytest.mark.parametrize(("counts", "loss", "gamma"), CASES)
def test_monitor_zero_on_certified_last_layer_positive_on_random(counts, loss, gamma):
    k, d = len(counts), 9
    spec = Spec.from_loss(counts, loss, gamma=gamma, dim=d)
    svm = solve(spec, "theory")
    assert svm.certified
    loader = _one_hot_loader(counts)
    for centring in ("rowspace", "none"):
        monitor = GeometryMonitor(counts, loss, gamma=gamma, centring=centring)
        model = LastLayer(svm.H_mean, svm.W)
        rec = monitor(model, loader, model.classifier)
        # the closed form is exact to ~1e-12 relative (its certified gap): distances ~0
        assert rec["classifier_distance_to_prediction"] < 1e-8
        assert rec["embedding_distance_to_prediction"] < 1e-8
        assert rec["nc1"] < 1e-12 and rec["accuracy"] == 1.0 and rec["ncc_agreement"] == 1.0
        for side in ("classifier", "embedding"):
            got, want = rec[f"{side}_groups"], rec[f"predicted_{side}_groups"]
            assert got.keys() == want.keys()
            for key in got:
                if want[key] is not None:
                    assert abs(got[key] - want[key]) < 1e-8
    rng = np.random.default_rng(3)
    model = LastLayer(rng.normal(size=(d, k)), rng.normal(size=(k, d)))
    rec = GeometryMonitor(counts, loss, gamma=gamma)(model, loader, model.classifier)
    assert rec["classifier_distance_to_prediction"] > 0.2
    assert rec["embedding_distance_to_prediction"] > 0.2


def test_rowspace_centring_ignores_what_the_loss_cannot_see():
    """Adding ``Delta^{-1} 1 v^T`` to W and a component outside the row space to every feature
    changes no logit difference; the rowspace measures stay ~0, the raw ones do not."""
    counts = [30, 30, 30, 3, 3, 3]
    k, d = 6, 9
    spec = Spec.from_loss(counts, "cdt", gamma=0.5, dim=d)
    svm = solve(spec, "theory")
    Vt = np.linalg.svd(svm.W)[2]
    rng = np.random.default_rng(4)
    outside = Vt[k - 1 :].T @ rng.normal(size=d - k + 1)  # orthogonal to the rows of W
    shift = 3.0 * np.abs(rng.normal(size=d))
    W = svm.W + np.outer(1.0 / spec.Delta, shift)
    np.testing.assert_allclose(visible_classifiers(W, spec.Delta), svm.W, atol=1e-12)
    model = LastLayer(svm.H_mean, W, b=5.0 * outside)
    loader = _one_hot_loader(counts)
    visible = GeometryMonitor(counts, "cdt", gamma=0.5)(model, loader, model.classifier)
    raw = GeometryMonitor(counts, "cdt", gamma=0.5, centring="none")(
        model, loader, model.classifier
    )
    assert visible["classifier_distance_to_prediction"] < 1e-8
    assert visible["embedding_distance_to_prediction"] < 1e-8
    assert raw["classifier_distance_to_prediction"] > 0.1
    assert raw["embedding_distance_to_prediction"] > 0.1


def test_weighted_centring_moves_the_exact_solution():
    """docs/theory.md §16: under imbalance the count-weighted mean of the optimal class means
    is not zero, so subtracting it (Papyan's global mean) moves even the exact solution."""
    counts = [30, 30, 30, 3, 3, 3]
    svm = solve(Spec.from_loss(counts, "ce", dim=6), "theory")
    model = LastLayer(svm.H_mean, svm.W)
    loader = _one_hot_loader(counts)
    rec = GeometryMonitor(counts, "ce", centring="weighted")(model, loader, model.classifier)
    assert rec["embedding_distance_to_prediction"] > 0.05
    rec = GeometryMonitor(counts, "ce", centring="global")(model, loader, model.classifier)
    assert rec["embedding_distance_to_prediction"] < 1e-8  # CE: the class means sum to zero
    svm = solve(Spec.from_loss(counts, "ldt", gamma=0.5, dim=6), "theory")
    model = LastLayer(svm.H_mean, svm.W)
    monitor = GeometryMonitor(counts, "ldt", gamma=0.5, centring="global")
    assert monitor(model, loader, model.classifier)["embedding_distance_to_prediction"] > 0.01


def test_monitor_writes_jsonl(tmp_path):
    counts = [20, 20, 4, 4]
    svm = solve(Spec.from_loss(counts, "ce", dim=4), "theory")
    model = LastLayer(svm.H_mean, svm.W)
    path = tmp_path / "m.jsonl"
    monitor = GeometryMonitor(counts, "ce", path=path)
    for epoch in (1, 2):
        monitor(model, _one_hot_loader(counts), model.classifier, epoch=epoch)
    lines = [json.loads(t) for t in path.read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and lines == monitor.records
    from ucfm_svm.plots.nets import monitor_figure

    monitor_figure(monitor.records).savefig(tmp_path / "m.png")


def test_models_end_in_a_bias_free_classifier():
    mlp = MLP(64, 10, width=32, depth=3)
    assert mlp.classifier.bias is None and mlp(torch.randn(5, 64)).shape == (5, 10)
    net = resnet18(10, 3)
    assert net.classifier.bias is None and net.classifier.in_features == 512
    net.eval()
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_idx_and_cifar_readers(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("t10k", 5)):
        images = rng.integers(0, 256, size=(n, 4, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        head = b"\x00\x00\x08\x03" + np.array([n, 4, 3], ">i4").tobytes()
        (tmp_path / f"{split}-images-idx3-ubyte").write_bytes(head + images.tobytes())
        head = b"\x00\x00\x08\x01" + np.array([n], ">i4").tobytes()
        with gzip.open(tmp_path / f"{split}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(head + labels.tobytes())
        if split == "train":
            first = (images, labels)
    data = load_dataset("mnist", tmp_path)
    assert data.x_train.shape == (12, 1, 4, 3) and data.x_test.shape == (5, 1, 4, 3)
    np.testing.assert_allclose(data.x_train[:, 0], first[0] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.y_train, first[1])
    cifar = tmp_path / "cifar" / "cifar-10-batches-bin"
    cifar.mkdir(parents=True)
    records = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        rec = rng.integers(0, 256, size=(3, 3073), dtype=np.uint8)
        rec[:, 0] %= 10
        rec.tofile(cifar / name)
        records[name] = rec
    data = load_dataset("cifar10", tmp_path / "cifar")
    assert data.x_train.shape == (15, 3, 32, 32) and data.y_test.shape == (3,)
    np.testing.assert_array_equal(data.y_test, records["test_batch.bin"][:, 0])
    np.testing.assert_allclose(
        data.x_train[0].ravel(), records["data_batch_1.bin"][0, 1:] / 255.0, rtol=1e-6
    )


def test_study_smoke_writes_files_and_resumes(tmp_path):
    pytest.importorskip("sklearn")
    config = StudyConfig(
        width=16, depth=1, epochs=2, losses=("ce", "ldt"), gammas=(0.5,), measure_every=1,
        device="cpu",
    )
    seen = []
    study = run_study(config, tmp_path, progress=False, on_run=lambda n, s, r: seen.append(r))
    assert seen == [False, False]
    written = write_outputs(study, tmp_path)
    for name in ("panels", "distances", "accuracy"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0
        assert (tmp_path / f"{name}.pdf").stat().st_size > 0
    assert (tmp_path / "report.md") in written and "| LDT | +0.50 |" in (
        tmp_path / "report.md"
    ).read_text()
    records = (tmp_path / "runs" / "ce.jsonl").read_text().splitlines()
    assert [json.loads(t)["epoch"] for t in records] == [1, 2]
    seen.clear()
    again = run_study(config, tmp_path, progress=False, on_run=lambda n, s, r: seen.append(r))
    assert seen == [True, True]
    assert [r["final"] for r in again["runs"]] == [r["final"] for r in study["runs"]]


# One subprocess (importing the package takes seconds) with torch made unimportable by a
# meta-path finder (a ``sys.modules['torch'] = None`` shim would also break scipy, which probes
# ``sys.modules['torch']`` for array-API support).
NO_TORCH = """
import contextlib, io, json, sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, NoTorch())
import ucfm_svm
from ucfm_svm.cli import build_parser, main
build_parser()
out = {"imported": "torch" in sys.modules}
for key, argv in (("help", ["study", "--help"]), ("run", ["study", "--out", sys.argv[1]])):
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    out[key] = [code, stdout.getvalue(), stderr.getvalue()]
print(json.dumps(out))
"""


def test_without_torch_core_imports_help_works_and_study_exits_2(tmp_path):
    target = tmp_path / "s"
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(target)], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert not out["imported"]
    code, stdout, _ = out["help"]
    assert code == 0
    for flag in (
        "--data", "--data-dir", "--R", "--rho", "--n-maj", "--model", "--width", "--depth",
        "--epochs", "--lr", "--momentum", "--weight-decay", "--batch-size", "--losses",
        "--gammas", "--constant-lr", "--seed", "--measure-every", "--centring", "--device",
        "--out", "--quiet",
    ):
        assert flag in stdout
    code, stdout, stderr = out["run"]
    assert code == 2 and stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install "ucfm-svm[torch]"' in lines[0], stderr
    assert not target.exists()


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (("--epochs", "0"), "--epochs"),
        (("--losses", "ce,foo"), "--losses"),
        (("--gammas", "a"), "--gammas"),
        (("--rho", "1.5"), "--rho"),
        (("--centring", "mean"), "--centring"),
        (("--data", "mnist"), "--data-dir"),
    ],
)
def test_study_bad_input_is_one_line_exit_2(cli, tmp_path, argv, flag):
    code, _, err = cli("study", "--out", str(tmp_path), "--quiet", *argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and flag in err
