"""Sweeps: grid expansion, one record per point after interruptions, failures recorded."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ucfm_svm import SpecError
from ucfm_svm.runs.sweep import (
    DONE,
    FAILED,
    load_results,
    load_sweep,
    point_key,
    read_records,
    run_point,
    run_sweep,
    sweep_from_dict,
)

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_example_file_expands_to_unique_points():
    sweep = load_sweep(ROOT / "examples" / "step_sweep.toml")
    assert len(sweep.points) == 60
    assert len({point_key(p) for p in sweep.points}) == 60
    losses = [p["loss"] for p in sweep.points]
    assert losses.count("ce") == 6 and losses.count("vs") == 18
    assert all(p["tau"] == 1.0 for p in sweep.points if p["loss"] == "vs")
    assert all(
        p["tau"] is None and p["gamma"] is not None
        for p in sweep.points
        if p["loss"] in ("cdt", "ldt")
    )


@pytest.mark.parametrize(
    ("text", "name"),
    [
        (
            'methods = ["convex"]\nlosses = ["ce"]\nbogus = 1\n[counts]\nexplicit = [[2, 1]]',
            "bogus",
        ),
        ('methods = ["magic"]\nlosses = ["ce"]\n[counts]\nexplicit = [[2, 1]]', "method"),
        ('methods = ["convex"]\nlosses = ["xe"]\n[counts]\nexplicit = [[2, 1]]', "losses"),
        ('methods = ["convex"]\nlosses = ["ce"]', "counts"),
        ('methods = ["convex"]\nlosses = ["ce"]\n[counts.step]\nk = 4', "counts.step.R"),
        (
            'methods = ["convex"]\nlosses = ["ce"]\n[counts.step]\nk = 4\nR = 2\nrho = 0.5\n'
            "[options.convex]\nlevel2 = 1",
            "options.convex.level2",
        ),
        ('methods = ["convex"\n', "sweep"),
        # inf is valid TOML; it was accepted and crashed the JSONL writer with a traceback
        (
            'methods = ["convex"]\nlosses = ["cdt"]\ngamma = [inf]\n[counts]\nexplicit = [[2, 1]]',
            "gamma",
        ),
        (
            'methods = ["convex"]\nlosses = ["ce"]\n[counts.step]\nk = 4\nR = nan\nrho = 0.5',
            "counts.step.R",
        ),
    ],
)
def test_bad_sweep_files(tmp_path, text, name):
    with pytest.raises(SpecError, match=re.escape(f"'{name}' parameter")):
        load_sweep(_write(tmp_path, text))


def test_binary_file_is_a_clear_error(tmp_path):
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xb1\xff\x00methods")
    with pytest.raises(SpecError, match=r"'sweep' parameter .*UTF-8"):
        load_sweep(path)


def test_missing_file():
    with pytest.raises(SpecError, match="'sweep' parameter"):
        load_sweep("/nonexistent/sweep.toml")


def test_failed_point_recorded_and_sweep_goes_on(tmp_path):
    sweep = sweep_from_dict(
        {
            "methods": ["convex"],
            "losses": ["ce"],
            "counts": {"step": {"k": [4, 10], "R": [10], "rho": [0.25]}},
        }
    )
    out = tmp_path / "f.jsonl"
    summary = run_sweep(sweep, out, progress=False)
    assert (summary.total, summary.done, summary.failed) == (2, 1, 1)
    records = {r["point"]["counts"]["step"]["k"]: r for r in _lines(out)}
    assert records[4]["state"] == DONE and records[4]["status"] == "optimal"
    assert records[10]["state"] == FAILED and "'rho' parameter" in records[10]["error"]
    assert summary.worst_rel_gap is not None and summary.worst_rel_gap <= 1e-6
    # a rerun skips both; --retry-failed runs the failed one again, still one record per point
    assert run_sweep(sweep, out, progress=False).ran == 0
    again = run_sweep(sweep, out, progress=False, retry_failed=True)
    assert again.ran == 1 and len(_lines(out)) == 2


def test_interrupted_sweep_resumes_with_one_record_per_point(tmp_path):
    # 2 k x 2 R x 2 n_min x (CE + 2 gammas x 3 losses) = 56 class-level points
    sweep = sweep_from_dict(
        {
            "methods": ["convex"],
            "losses": ["ce", "ldt", "cdt", "vs"],
            "gamma": [0.5, 1.0],
            "tau": 1.0,
            "counts": {"step": {"k": [4, 6], "R": [10, 100], "rho": [0.5], "n_min": [1, 2]}},
        }
    )
    assert len(sweep.points) == 56
    out = tmp_path / "r.jsonl"
    seen = []

    def interrupt(record):
        seen.append(record["key"])
        if len(seen) == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, out, progress=False, on_record=interrupt)
    first = out.read_text().splitlines()
    assert len(first) == 7
    summary = run_sweep(sweep, out, progress=False)
    assert summary.ran == 56 - 7 and summary.done == 56 and summary.failed == 0
    lines = out.read_text().splitlines()
    assert lines[:7] == first  # finished points were not run again
    keys = [json.loads(line)["key"] for line in lines]
    assert sorted(keys) == sorted(point_key(p) for p in sweep.points)


def test_partial_last_line_is_repaired(tmp_path):
    sweep = sweep_from_dict(
        {
            "methods": ["convex"],
            "losses": ["ce"],
            "counts": {"explicit": [[3, 1], [3, 3, 1], [5, 1, 1]]},
        }
    )
    out = tmp_path / "p.jsonl"
    run_sweep(sweep, out, progress=False)
    lines = out.read_text().splitlines()
    out.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][: len(lines[2]) // 2])
    assert len(read_records(out)) == 2
    summary = run_sweep(sweep, out, progress=False)
    assert summary.ran == 1 and summary.done == 3
    assert len(_lines(out)) == 3


def test_corrupt_file_is_rejected(tmp_path):
    out = tmp_path / "c.jsonl"
    out.write_text('{"no key": 1}\n')
    with pytest.raises(SpecError, match="'out' parameter"):
        read_records(out)


def test_parallel_jobs_match_sequential(tmp_path):
    sweep = sweep_from_dict(
        {
            "methods": ["convex"],
            "losses": ["ce", "cdt"],
            "gamma": 0.5,
            "counts": {"step": {"k": [4, 6], "R": [10, 100], "rho": 0.5}},
        }
    )
    seq = run_sweep(sweep, tmp_path / "a.jsonl", progress=False)
    par = run_sweep(sweep, tmp_path / "b.jsonl", jobs=2, progress=False)
    assert seq.done == par.done == 8
    a, b = read_records(tmp_path / "a.jsonl"), read_records(tmp_path / "b.jsonl")
    assert a.keys() == b.keys()
    for key in a:
        assert abs(a[key]["objective"] - b[key]["objective"]) <= 1e-9 * a[key]["objective"]


def test_killed_cli_sweep_resumes(tmp_path):
    # A real interruption: the CLI process is SIGKILLed after a few points, then rerun.
    # k = 12 class-level solves take ~0.1 s each: long enough to kill part-way.
    text = (
        'methods = ["convex"]\nlosses = ["ce", "ldt", "cdt", "vs"]\ngamma = [0.25, 0.5, 1.0]\n'
        "[counts.step]\nk = [12]\nR = [10, 20, 30, 40]\nrho = 0.5\n"
    )
    path = _write(tmp_path, text)
    out = tmp_path / "k.jsonl"
    total = len(load_sweep(path).points)
    assert total == 40
    cmd = [sys.executable, "-m", "ucfm_svm", "sweep", str(path), "--out", str(out), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_text().count("\n") >= 3:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = out.read_text().count("\n")
    assert 3 <= written < total, "the sweep was not interrupted part-way"
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"{total} points, {total} done, 0 failed" in proc.stdout
    keys = [r["key"] for r in _lines(out)]
    assert len(keys) == total == len(set(keys))


def test_verify_points_record_checks_and_worst_error(tmp_path):
    sweep = sweep_from_dict(
        {
            "methods": ["verify"],
            "losses": ["ce", "cdt"],
            "gamma": 0.5,
            "counts": {"explicit": [[10, 10, 1, 1]]},
            "options": {"verify": {"methods": ["theory", "convex"]}},
        }
    )
    summary = run_sweep(sweep, tmp_path / "v.jsonl", progress=False)
    assert summary.done == 2 and summary.checks_failed == 0 and summary.not_certified == 0
    records = load_results(tmp_path / "v.jsonl")
    for record in records:
        assert record["status"] == "passed" and set(record["routes"]) == {"theory", "convex"}
        ratios = [c["value"] / c["tolerance"] for c in record["checks"]]
        worst = record["worst_check"]
        assert worst["value"] / worst["tolerance"] == max(ratios) <= 1
    assert summary.worst_check in [r["worst_check"] for r in records]
    assert "worst verification error" in summary.to_text()
    with pytest.raises(SpecError, match=re.escape("'options.verify.level' parameter")):
        sweep_from_dict(
            {
                "methods": ["verify"],
                "losses": ["ce"],
                "counts": {"explicit": [[2, 1]]},
                "options": {"verify": {"level": "class"}},
            }
        )


def test_routes_without_grams_are_recorded(tmp_path):
    # A lean structured point crashed the sweep (grouped cosines of a missing Gram).
    path = _write(
        tmp_path,
        'methods = ["structured", "convex_grouped"]\nlosses = ["ce"]\n'
        "[counts.step]\nk = 4\nR = 10\nrho = 0.5",
    )
    sweep = load_sweep(path)
    records = [run_point(p) for p in sweep.points]
    assert [r["state"] for r in records] == ["done", "done"]
    assert all(r["status"] == "optimal" and r["cosines"] is None for r in records)
    assert records[0]["objective"] == pytest.approx(records[1]["objective"], rel=1e-8)


# --- output files (never cut a file that is not ours), lock, duplicates, signals ---
GRID = 'methods = ["convex"]\nlosses = ["ce"]\n[counts]\nexplicit = [[3, 1], [3, 3, 1]]\n'


@pytest.mark.parametrize(
    "content",
    [
        b"my notes: line one\nline two\nno newline at the end",  # a user's text file
        b"my notes without any newline",
        b"\xb1\xff\x00\x89PNG\r\n\x1a\n\x00\x00binary",  # a binary file
        b'{"key": "x", "point": {}, "state": "done"}\n{"not": "a record"}\n',
    ],
    ids=["text", "one-line", "binary", "other-json"],
)
def test_out_that_is_not_a_sweep_file_is_left_untouched(cli, tmp_path, content):
    grid = _write(tmp_path, GRID)
    notes = tmp_path / "notes.txt"
    notes.write_bytes(content)
    code, _, err = cli("sweep", str(grid), "--out", str(notes), "--quiet")
    assert code == 2 and err.count("\n") == 1 and "--out must" in err
    assert "Traceback" not in err
    assert notes.read_bytes() == content
    assert not (tmp_path / "notes.txt.lock").exists()


def test_grid_named_jsonl_does_not_cut_its_own_input(cli, tmp_path):
    grid = _write(tmp_path, GRID, name="grid.jsonl")
    code, _, err = cli("sweep", str(grid), "--quiet")
    assert code == 2 and err.count("\n") == 1 and "--out must" in err
    assert grid.read_text() == GRID


def test_second_sweep_on_a_locked_output_refuses(cli, tmp_path):
    from ucfm_svm.runs.sweep import output_lock

    grid = _write(tmp_path, GRID)
    out = tmp_path / "s.jsonl"
    with output_lock(out):
        code, _, err = cli("sweep", str(grid), "--out", str(out), "--quiet")
        assert code == 2 and err.count("\n") == 1
        assert f"locked by the running process {os.getpid()}" in err
    assert not out.exists()
    code, text, _ = cli("sweep", str(grid), "--out", str(out), "--quiet")  # free again
    assert code == 0 and "2 points, 2 done" in text
    assert not (tmp_path / "s.jsonl.lock").exists()


def test_duplicate_records_are_reported_and_removed(tmp_path):
    sweep = load_sweep(_write(tmp_path, GRID))
    out = tmp_path / "d.jsonl"
    run_sweep(sweep, out, progress=False)
    lines = out.read_text().splitlines()
    failed = {**json.loads(lines[0]), "state": FAILED, "error": "an older failed run"}
    out.write_text("\n".join([lines[0], lines[1], lines[0], json.dumps(failed)]) + "\n")
    summary = run_sweep(sweep, out, progress=False)
    assert (summary.duplicates, summary.ran, summary.done) == (2, 0, 2)
    assert "removed 2 duplicate record(s)" in summary.to_text()
    assert out.read_text().splitlines() == lines  # the done records, once each
    assert run_sweep(sweep, out, progress=False).duplicates == 0


def test_toml_datetime_option_is_a_one_line_error(cli, tmp_path):
    grid = _write(
        tmp_path,
        GRID + "[options.convex]\nlevel = 1979-05-27T07:32:00Z\n",
    )
    code, _, err = cli("sweep", str(grid), "--quiet")
    assert code == 2 and err.count("\n") == 1
    assert "'options.convex.level' parameter" in err and "TOML datetime" in err


def _run_args(tmp_path: Path, command: str, grid: str) -> tuple[Path, list[str]]:
    """The records file and the arguments of a ``sweep`` of ``grid`` or of ``reproduce
    --quick`` (whose grid records go to ``verification.jsonl``)."""
    if command == "sweep":
        out = tmp_path / "t.jsonl"
        return out, ["sweep", str(_write(tmp_path, grid)), "--out", str(out)]
    return tmp_path / "verification.jsonl", ["reproduce", "--quick", "--out", str(tmp_path)]


@pytest.mark.parametrize("command", ["sweep", "reproduce"])
def test_sigterm_exits_130_and_keeps_records(tmp_path, command):
    out, args = _run_args(tmp_path, command, (
        'methods = ["convex"]\nlosses = ["ce", "ldt", "cdt", "vs"]\ngamma = [0.25, 0.5, 1.0]\n'
        "[counts.step]\nk = [12]\nR = [10, 20, 30, 40]\nrho = 0.5\n"
    ))
    cmd = [sys.executable, "-m", "ucfm_svm", *args, "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_text().count("\n") >= 1:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert stdout.startswith("interrupted: ") and stdout.count("\n") == 1 and not stderr
    keys = [r["key"] for r in _lines(out)]
    assert keys and len(keys) == len(set(keys))


@pytest.mark.parametrize("command", ["sweep", "reproduce"])
def test_sigterm_lost_in_library_code_still_stops_the_run(cli, tmp_path, monkeypatch, command):
    """A SIGTERM whose KeyboardInterrupt is swallowed where it is raised (a finalizer, whose
    errors Python only prints, while a convex solve redirects stderr) stops the sweep (or
    ``reproduce``'s grid) at the next record: exit 130, the finished points kept. Before, such
    a sweep ran to its end and exited 0 (seen once in CI)."""
    import ucfm_svm.runs.backends as backends

    out, args = _run_args(tmp_path, command, (
        'methods = ["theory"]\nlosses = ["ce"]\n'
        "[counts.step]\nk = [4]\nR = [2, 3, 4, 5]\nrho = 0.5\n"
    ))
    real = backends.run_point
    calls = []

    def swallowing(point):
        calls.append(point)
        if len(calls) == 1:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.1)  # the handler runs here and raises KeyboardInterrupt
            except KeyboardInterrupt:
                pass  # what a finalizer's context does with it
        return real(point)

    monkeypatch.setattr(backends, "run_point", swallowing)
    code, stdout, _ = cli(*args, "--quiet")
    assert code == 130 and stdout.startswith("interrupted: ")
    assert len(calls) == 1 and len(_lines(out)) == 1
