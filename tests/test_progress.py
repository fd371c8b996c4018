"""The progress helper: a bar only on a terminal, and tqdm imported only for a bar."""

from __future__ import annotations

import subprocess
import sys


def test_no_bar_means_no_tqdm_import_and_the_same_iteration():
    code = (
        "import sys\n"
        "from ucfm_svm.progress import progress\n"
        "bar = progress(range(3), desc='x')\n"
        "assert list(bar) == [0, 1, 2]\n"
        "manual = progress(total=5, enabled=True)\n"
        "manual.update(); manual.set_postfix_str('y'); manual.close()\n"
        "assert 'tqdm' not in sys.modules, 'tqdm imported without a bar'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )  # stderr is a pipe: no terminal, no bar
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
