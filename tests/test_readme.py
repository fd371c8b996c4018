"""The README's examples run as printed (a newcomer copies them first).

Every ``ucfm-svm ...`` command quoted in README.md runs in-process in a scratch folder and exits
0, except those that need a user's file or an optional extra, or run a whole study (analyze,
study, sweep, reproduce: their own tests cover them).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from .conftest import cli  # noqa: F401

README = Path(__file__).resolve().parents[1] / "README.md"
SKIPPED = ("analyze", "study", "sweep", "reproduce")


def _examples() -> list[str]:
    commands = re.findall(r"`ucfm-svm ([^`]+)`", README.read_text(encoding="utf-8"))
    return sorted({c for c in commands if c.split()[0] not in SKIPPED and c != "--help"})


def test_the_readme_has_examples():
    assert len(_examples()) >= 8


@pytest.mark.parametrize("command", _examples())
def test_readme_example_runs(cli, command, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(*shlex.split(command))
    assert code == 0, err
