"""Atomic writes: the destination holds the old content or the complete new one, never half."""

from __future__ import annotations

import os

import pytest

from ucfm_svm.files import atomic_write, atomic_writer


def test_atomic_write_replaces_and_keeps_permissions(tmp_path):
    path = tmp_path / "report.md"
    atomic_write(path, "first\n")
    assert path.read_text() == "first\n"
    os.chmod(path, 0o640)
    atomic_write(path, b"second\n")
    assert path.read_bytes() == b"second\n"
    assert (os.stat(path).st_mode & 0o777) == 0o640
    assert os.listdir(tmp_path) == ["report.md"]


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_writer(path) as fh:
        fh.write("half of the new content")
        raise RuntimeError("disk full")
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["out.json"]


def test_missing_folder_is_an_oserror_and_creates_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "missing" / "x.txt", "x")
    assert os.listdir(tmp_path) == []
