"""Save-path timing: matplotlib savefig twice (baseline) vs one draw + PNG from buffer + PDF with layout frozen."""
import time, tempfile, copy, pickle
from pathlib import Path
import numpy as np
from ucfm_svm.runs import reproduce as rp
cfg = rp.ReproduceConfig()
tun = rp.tuned_hyperparameters(rp.step_counts(cfg.figure_k, cfg.figure_r, cfg.figure_rho))
figs = rp._figures(cfg, tun)
blobs = {n: pickle.dumps(f) for n, f in figs.items()}
def base(out):
    for n, b in blobs.items():
        f = pickle.loads(b)
        for suf in (".png", ".pdf"):
            f.savefig(out / (n + suf), dpi=130)
def new(out):
    for n, b in blobs.items():
        f = pickle.loads(b)
        rp._save_figure(f, out / n)
tb = tn = 0.0
with tempfile.TemporaryDirectory() as d:
    out = Path(d)
    for rep in range(3):
        t = time.perf_counter(); base(out); tb += time.perf_counter() - t
        t = time.perf_counter(); new(out); tn += time.perf_counter() - t
print(f"baseline {tb/3:.2f} s per 10 files, new {tn/3:.2f} s, ratio new/baseline {tn/tb:.2f}")
