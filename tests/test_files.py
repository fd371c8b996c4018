"""Atomic writes: the destination holds the old content or the complete new one, never half."""

from __future__ import annotations

import errno
import os

import numpy as np
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


# --- the output rule: new, empty or ours; folders created; one line naming the flag and file ---
def test_refusal_admits_new_empty_and_ours_only(tmp_path):
    from ucfm_svm.files import json_text, refusal, write_output

    user = tmp_path / "notes.txt"
    user.write_text("a user's notes\n")
    (tmp_path / "empty.json").write_text("")
    write_output(tmp_path / "ours.json", json_text({"x": 1}))
    assert refusal(tmp_path / "new" / "deeper" / "r.json") is None
    assert refusal(tmp_path / "empty.json") is None
    assert refusal(tmp_path / "ours.json") is None
    assert "did not write" in refusal(user)
    assert refusal(tmp_path) == "a directory"
    assert "is not a folder" in refusal(user / "r.json")
    with pytest.raises(OSError, match="did not write") as info:
        write_output(user, "x")
    assert info.value.filename == str(user)
    assert user.read_text() == "a user's notes\n"
    (tmp_path / "user.json").write_text('{"written_by": "someone else"}\n')
    assert refusal(tmp_path / "user.json") is not None


@pytest.mark.parametrize("fmt", ["png", "pdf", "svg", "eps", "ps"])
def test_every_figure_format_carries_the_mark(tmp_path, fmt):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from ucfm_svm.files import written_by_us
    from ucfm_svm.plots.style import save_figure, save_one

    fig = Figure()
    fig.add_subplot().plot([0, 1], [1, 0])
    path = save_one(fig, tmp_path / f"f.{fmt}")
    assert path == tmp_path / f"f.{fmt}" and written_by_us(path)
    assert save_one(fig, tmp_path / "plain") == tmp_path / "plain.png"
    assert all(written_by_us(p) for p in save_figure(fig, tmp_path / "both"))


def test_json_output_replaces_ours_refuses_a_users_and_creates_folders(cli, tmp_path):
    out = tmp_path / "a" / "b" / "r.json"
    code, stdout, err = cli("solve", "--counts", "5,1", "--json", str(out))
    assert code == 0 and f"wrote {out}" in stdout, err
    code, _, err = cli("verify", "--counts", "5,1", "--methods", "theory", "--json", str(out))
    assert code == 0, err  # an output of ours may be replaced by another of ours
    user = tmp_path / "data.json"
    user.write_text('{"mine": true}\n')
    code, stdout, err = cli("solve", "--counts", "5,1", "--json", str(user))
    assert code == 2 and stdout == "" and len(err.strip().splitlines()) == 1
    assert "--json" in err and str(user) in err and "did not write" in err
    assert user.read_text() == '{"mine": true}\n'


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("flag", ["--json", "--plot"])
def test_a_full_disk_is_one_line_naming_the_file_and_keeps_the_old_one(
    cli, tmp_path, monkeypatch, flag
):
    out = tmp_path / ("r.json" if flag == "--json" else "fig.png")
    argv = ["path", "--counts", "5,1", "--lambdas", "1e-1", "--maxiter", "50", flag, str(out)]
    code, _, err = cli(*argv)
    assert code == 0 and out.is_file(), err
    before = out.read_bytes()
    monkeypatch.setattr("ucfm_svm.files.os.replace", _full_disk)
    code, _, err = cli(*argv)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert flag in err and str(out) in err and "No space left" in err
    assert out.read_bytes() == before and os.listdir(tmp_path) == [out.name]


def test_plot_without_suffix_names_the_file_it_writes(cli, tmp_path):
    code, out, err = cli(
        "path", "--counts", "5,1", "--lambdas", "1e-1", "--maxiter", "50",
        "--plot", str(tmp_path / "myplot"),
    )  # fmt: skip
    assert code == 0, err
    assert f"wrote {tmp_path / 'myplot.png'}" in out and os.listdir(tmp_path) == ["myplot.png"]


def test_plot_out_is_checked_before_the_work_and_replaces_its_own_figures(cli, tmp_path):
    stem = tmp_path / "sub" / "run1.5"
    for _ in range(2):  # the second run replaces the first one's PNG and PDF
        code, out, err = cli("plot", "grams", "--counts", "3,1", "--out", str(stem))
        assert code == 0, err
        assert f"wrote {stem}.png" in out and f"wrote {stem}.pdf" in out
    (tmp_path / "user.pdf").write_bytes(b"%PDF-1.4 a user's paper\n")
    code, out, err = cli("plot", "grams", "--counts", "3,1", "--out", str(tmp_path / "user"))
    assert code == 2 and out == "" and "--out" in err and "user.pdf" in err, err
    assert (tmp_path / "user.pdf").read_bytes() == b"%PDF-1.4 a user's paper\n"
    assert not (tmp_path / "user.png").exists()


def test_font_tools_warnings_do_not_reach_stderr(cli, tmp_path, monkeypatch):
    # fontTools logged "'modified' timestamp seems very low; regarding as unix timestamp"
    # twice on stderr under `plot grams`, when subsetting a font into the PDF; while a figure
    # is saved its logger keeps only errors (pytest's own log capture hides the stderr line
    # here, so the level is what is checked)
    import logging

    from matplotlib.figure import Figure

    original = Figure.savefig
    levels = []

    def recording(self, *args, **kwargs):
        levels.append(logging.getLogger("fontTools.ttLib").getEffectiveLevel())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording)
    code, _, err = cli("plot", "grams", "--counts", "3,1", "--out", str(tmp_path / "g"))
    assert code == 0, err
    assert levels and min(levels) >= logging.ERROR
    assert logging.getLogger("fontTools").level < logging.ERROR  # restored afterwards


def test_json_text_writes_arrays_compactly_with_the_same_value():
    """Large numeric lists go through the C encoder one row a line (docs: files.json_text);
    the parsed value is exactly what an indented dump gives, non-finite values stay refused."""
    import json
    import math

    from ucfm_svm.files import COMPACT_FROM, json_text
    from ucfm_svm.result import jsonable

    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((30, 40))
    matrix[3, 4] = math.inf  # jsonable: None
    data = {"a": jsonable(matrix), "b": {"c": jsonable(rng.standard_normal(200)),
            "d": [1, 2, 3], "e": [{"f": 1.5}] * (COMPACT_FROM + 1)}, "g": "text",
            "h": jsonable(np.arange(100))}
    text = json_text(data)
    assert text.startswith('{\n "written_by"')
    assert json.loads(text) == json.loads(json.dumps({"written_by": "ucfm-svm", **data}))
    assert json.loads(text)["a"][3][4] is None
    assert text.count("\n") < 400  # rows (and the dicts of "e"), not 1500 lines of numbers
    with pytest.raises(ValueError):
        json_text({"x": [math.nan] * (COMPACT_FROM + 1)})
