"""``analyze`` at scale: the streamed class statistics against the old dense route.

Writes a synthetic trained last layer (``k`` classes, ``d`` dimensions, ``--per-class``
examples each, features = class means + noise, long-tailed or equal counts) as an ``.npz`` and
as an ``.npy`` triplet, then runs, each in a fresh process timed by ``/usr/bin/time``:

- ``stream``: ``ucfm-svm analyze FILE --json OUT`` (the default route: streamed statistics,
  compact JSON);
- ``dense``: the route analyze took before (every array loaded and copied, ``n x d`` centred
  copy for NC1, ``k x k`` cosines, dense closed form up to k = 2000, full JSON), reproduced here
  with the same library functions (``geometry.nc1``, ``geometry.class_means``, ...).

Both print NC1 and the classifier distance to the prediction, which must agree. Seconds are
inflated by the load of a shared machine: read the ratio. Run from the repository root::

    python benchmarks/bench_analyze.py --k 1000 --d 512 --per-class 50
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_files(folder: Path, k: int, d: int, per_class: int, seed: int = 0) -> Path:
    """Write ``model.npz`` (and ``W.npy``, ``F.npy``, ``y.npy``) into ``folder``."""
    rng = np.random.default_rng(seed)
    counts = np.full(k, per_class)
    labels = rng.permutation(np.repeat(np.arange(k), counts))
    W = rng.normal(size=(k, d))
    means = rng.normal(size=(k, d))
    features = means[labels] + 0.1 * rng.normal(size=(labels.size, d))
    np.savez(folder / "model.npz", W=W, features=features, labels=labels)
    np.save(folder / "W.npy", W)
    np.save(folder / "F.npy", features)
    np.save(folder / "y.npy", labels)
    return folder / "model.npz"


def dense_route(path: Path, out: Path) -> tuple[float, float]:
    """The route ``analyze`` took before streaming (whole arrays, full JSON)."""
    from ucfm_svm import api, geometry
    from ucfm_svm.analysis.analyze import etf_gram
    from ucfm_svm.spec import Spec

    with np.load(path) as z:
        W, F, y = z["W"].astype(float), z["features"].astype(float), z["labels"]
    k = W.shape[0]
    H = np.ascontiguousarray(F.T)
    H = H / 2.0 ** np.round(np.log2(np.abs(H).max()))
    means = geometry.class_means(H, y, k)
    nc1 = geometry.nc1(H, y, k)
    spec = Spec.from_loss(np.bincount(y, minlength=k), "ce")
    pred = api.solve(spec, "theory") if k <= 2000 else api.solve(spec, "structured", full=True)
    cg, eg = W @ W.T, means.T @ means
    data = {
        "nc1": nc1,
        "classifier_distance_to_prediction": geometry.gram_distance(cg, pred.classifier_gram),
        "embedding_distance_to_prediction": geometry.gram_distance(eg, pred.embedding_gram),
        "classifier_distance_to_etf": geometry.gram_distance(cg, etf_gram(k)),
    }
    for name, G in (("classifier", cg), ("embedding", eg)):
        data[f"{name}_gram"] = G.tolist()
        data[f"{name}_cosines"] = geometry.cosines_from_gram(G).tolist()
    data["predicted_classifier_gram"] = pred.classifier_gram.tolist()
    data["predicted_embedding_gram"] = pred.embedding_gram.tolist()
    out.write_text(json.dumps(data, indent=1))
    return nc1, data["classifier_distance_to_prediction"]


def timed(argv: list[str]) -> tuple[float, float, str]:
    """``(seconds, peak RSS in MB, stdout)`` of a fresh process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "%e s %M KB", *argv],
        capture_output=True, text=True, env=env, check=True, cwd=ROOT,
    )  # fmt: skip
    seconds, _, kb, _ = proc.stderr.strip().splitlines()[-1].split()
    return float(seconds), float(kb) / 1024, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--skip-dense", action="store_true", help="run only the streamed route")
    parser.add_argument("--dense-only", metavar="NPZ", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dense_only:
        nc1, dist = dense_route(Path(args.dense_only), Path(args.dense_only).with_suffix(".json"))
        print(f"{nc1!r} {dist!r}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        path = make_files(folder, args.k, args.d, args.per_class)
        print(
            f"k={args.k} d={args.d} n={args.k * args.per_class}: files written in "
            f"{time.perf_counter() - start:.1f} s ({path.stat().st_size / 2**20:.0f} MB npz); "
            f"load average {os.getloadavg()[0]:.2f}"
        )
        rows = {}
        for name, argv in (
            ("stream npz", ["analyze", str(path), "--json", str(folder / "s.json")]),
            ("stream npy", ["analyze", str(folder / "W.npy"), "--features", str(folder / "F.npy"),
                            "--labels", str(folder / "y.npy"), "--json", str(folder / "t.json")]),
        ):  # fmt: skip
            seconds, mb, _ = timed([sys.executable, "-m", "ucfm_svm", *argv])
            data = json.loads((folder / argv[-1]).read_text())
            size = (folder / argv[-1]).stat().st_size / 1024
            rows[name] = (seconds, mb, size)
            print(
                f"{name:<11} {seconds:7.2f} s  {mb:7.0f} MB peak  JSON {size:8.0f} KB  NC1 "
                f"{data['nc1']:.12g}  dist(W) {data['classifier_distance_to_prediction']:.12g}"
            )
        if not args.skip_dense:
            seconds, mb, out = timed([sys.executable, __file__, "--dense-only", str(path)])
            size = path.with_suffix(".json").stat().st_size / 1024
            nc1, dist = (float(x) for x in out.split())
            print(
                f"{'dense':<11} {seconds:7.2f} s  {mb:7.0f} MB peak  JSON {size:8.0f} KB  NC1 "
                f"{nc1:.12g}  dist(W) {dist:.12g}"
            )
            s = rows["stream npz"]
            print(f"ratio dense / stream (npz): time {seconds / s[0]:.1f}x, memory "
                  f"{mb / s[1]:.1f}x, JSON {size / s[2]:.0f}x")  # fmt: skip


if __name__ == "__main__":
    main()
