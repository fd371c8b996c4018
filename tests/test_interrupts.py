"""Ctrl-C and SIGTERM: every subcommand stops with one line and exit 130 / 143, no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ucfm_svm import cli

ROOT = Path(__file__).resolve().parents[1]


def _sleeper(signum: int):
    """A run that stands in for any long computation: it signals itself once it is running
    (as a terminal's Ctrl-C or a batch system's SIGTERM would), then loops in Python."""

    def run(args: object) -> int:
        threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()
        while True:
            time.sleep(0.01)

    return run


#: The smallest command line each subcommand parses (its run is replaced, nothing is solved).
MINIMAL = {
    "solve": ["--counts", "2,1"],
    "verify": ["--counts", "2,1"],
    "tune": ["--counts", "2,1", "--loss", "ldt", "--target", "etf-classifiers"],
    "path": ["--counts", "2,1"],
    "train": ["--counts", "2,1"],
    "plot": ["grams", "--counts", "2,1"],
    "sweep": ["grid.toml"],
    "reproduce": [],
    "analyze": ["model.npz"],
    "study": [],
    "collapse": ["--counts", "2,1"],
}


@pytest.mark.parametrize("module", cli.SUBCOMMANDS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_every_subcommand_stops_on_a_signal_with_one_line(
    module, signum, code, monkeypatch, capsys
):
    # Each subcommand's run goes through the CLI's handler: replace it by an endless loop.
    name = module.__name__.rsplit(".", 1)[-1]
    monkeypatch.setattr(module, "run", _sleeper(signum))
    before = signal.getsignal(signal.SIGTERM)  # another library (ray.init) may have set one
    result = cli.main([name, *MINIMAL[name]])
    err = capsys.readouterr().err
    assert result == code
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert ("interrupted" if signum == signal.SIGINT else "terminated") in err
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is restored


def test_ctrl_c_in_a_real_run_exits_130_with_one_line():
    # A real long run (10^7 gradient steps) in a fresh process, interrupted once it has started:
    # the child says "ready" when its imports are done (a Ctrl-C during Python's own start-up is
    # the interpreter's business, not the CLI's), then runs the CLI's main.
    code = (
        "import sys; from ucfm_svm.cli import main; print('ready', flush=True); "
        "sys.exit(main(['train', '--counts', '3,2,1', '--steps', '10000000']))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
