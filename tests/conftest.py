"""Shared test helpers."""

from __future__ import annotations

import pytest

from ucfm_svm.cli import main


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process; returns ``(exit code, stdout, stderr)``."""

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
