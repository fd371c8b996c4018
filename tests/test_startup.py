"""Start-up cost: the package and the CLI parser import no heavy dependency (docs/theory.md §10).

cvxpy (about 1.5 s) and matplotlib (about 0.5 s) are imported by the functions that build a
convex program or draw a figure, scipy.optimize (about 1 s) and tqdm by the solvers and bars
that use them; ``import ucfm_svm`` and building the parser (what ``ucfm-svm --help`` does)
must not pull them in, nor the optional extras.
"""

import json
import subprocess
import sys

HEAVY = ("cvxpy", "matplotlib", "torch", "dask", "ray", "scipy.optimize", "tqdm")


def _loaded_after(code: str) -> list[str]:
    """The modules of :data:`HEAVY` in ``sys.modules`` after running ``code`` in a fresh
    interpreter."""
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    modules = set(json.loads(out.splitlines()[-1]))
    return [name for name in HEAVY if name in modules]


def test_import_ucfm_svm_is_light():
    assert _loaded_after("import ucfm_svm") == []


def test_cli_parser_is_light():
    code = "from ucfm_svm.cli import build_parser\nbuild_parser().format_help()"
    assert _loaded_after(code) == []


def test_structured_solve_does_not_import_cvxpy():
    code = (
        "from ucfm_svm import Spec, solve, longtail_counts\n"
        "assert solve(Spec.from_loss(longtail_counts(20, 10, 100), 'ce'), 'structured').certified"
    )
    assert [name for name in _loaded_after(code) if name in ("cvxpy", "matplotlib", "tqdm")] == []
