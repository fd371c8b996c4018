"""Fuzz suite of the command line: hostile flags and files give one line and a documented exit.

The grammar is in ``tests/fuzz_grammar.py``. CI runs a bounded, derandomized profile in-process
(a fixed number of examples per subcommand); ``scripts/fuzz_cli.py`` runs a longer profile with
each probe in a fresh process and a time limit.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz_grammar import (
    EXIT_CODES,
    HOSTILE_VALUES,
    base_commands,
    hostile_files,
    mutate,
    prints_nan,
)
from ucfm_svm.cli import main

#: A probe that runs longer than this is a hang (the base commands take well under a second).
HANG_SECONDS = 120


class HangError(Exception):
    """A probe ran past :data:`HANG_SECONDS`."""


def run_probe(argv: list[str], where: Path) -> tuple[int, str, str]:
    """Run the CLI in-process inside ``where``; returns ``(exit code, stdout, stderr)``."""

    def alarm(signum: int, frame: object) -> None:
        raise HangError(" ".join(argv))

    out, err = io.StringIO(), io.StringIO()
    previous_dir = Path.cwd()
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(HANG_SECONDS)
    try:
        os.chdir(where)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        os.chdir(previous_dir)
    return code, out.getvalue(), err.getvalue()


def check_contract(argv: list[str], code: int, out: str, err: str) -> None:
    """The promise every probe is held to (see the grammar's module docstring)."""
    shown = " ".join(argv)
    assert code in EXIT_CODES, f"exit {code}: {shown}\n{err}"
    assert "Traceback" not in err and "Traceback" not in out, f"traceback: {shown}\n{err}"
    assert "internal error" not in err, f"defect: {shown}\n{err}"
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, f"{len(lines)} lines on exit 2: {shown}\n{err}"
    if code == 0:
        assert not prints_nan(out, argv), f"nan printed: {shown}\n{out}"


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.parametrize(
    "name",
    ["solve", "solve-nonconvex", "verify", "tune", "path", "train", "plot", "sweep", "analyze"],
)
@settings(
    max_examples=12,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_cli_probes_keep_the_contract(name: str, fuzz_dir: Path, data: st.DataObject) -> None:
    work = fuzz_dir / name
    work.mkdir(exist_ok=True)
    base = base_commands(work)[name]
    argv = mutate(
        base,
        lambda n: data.draw(st.integers(0, n - 1)),
        lambda: data.draw(st.sampled_from(HOSTILE_VALUES)),
    )
    code, out, err = run_probe(argv, work)
    check_contract(argv, code, out, err)


def test_base_commands_succeed(fuzz_dir: Path) -> None:
    # The probes mutate these; they must themselves succeed, or the fuzz tests only the error path.
    work = fuzz_dir / "bases"
    work.mkdir(exist_ok=True)
    for name, argv in base_commands(work).items():
        code, out, err = run_probe(argv, work)
        assert code == 0, f"{name}: exit {code}\n{err}"
        check_contract(argv, code, out, err)


HOSTILE_LABEL_FILES = [
    "empty.npy",
    "empty.txt",
    "truncated.npy",
    "header-only.npy",
    "binary.npy",
    "binary.txt",
    "huge-header.npy",
    "float.npy",
    "nan.npy",
    "complex.npy",
    "bool.npy",
    "strings.npy",
    "negative.npy",
    "matrix.npy",
    "one-class.npy",
    "objects.npy",
    "pickle.npy",
    "pickle.txt",
    "beyond-int64.txt",
    "words.txt",
    "nan.txt",
]


@pytest.mark.parametrize("name", HOSTILE_LABEL_FILES)
def test_hostile_label_files_are_refused_in_one_line(name: str, fuzz_dir: Path) -> None:
    path = hostile_files(fuzz_dir)[name]
    argv = ["solve", "--labels", str(path), "--method", "structured"]
    code, out, err = run_probe(argv, fuzz_dir)
    check_contract(argv, code, out, err)
    assert code == 2, f"{name}: exit {code}\n{out}{err}"
    assert "--labels" in err or "'labels'" in err, err


@pytest.mark.parametrize(
    "name", ["ok-bom.csv", "ok-bom-lines.txt", "ok-crlf.txt", "ok-blank-lines.txt"]
)
def test_label_files_with_bom_crlf_and_blank_lines_give_the_right_counts(
    name: str, fuzz_dir: Path
) -> None:
    from ucfm_svm.spec import counts_from_labels

    path = hostile_files(fuzz_dir)[name]
    assert counts_from_labels(path).tolist() == [2, 2, 1]


@pytest.mark.parametrize(
    "name",
    [
        "empty.npz",
        "binary.npz",
        "model-missing-keys.npz",
        "model-nan.npz",
        "model-zero.npz",
        "model-tiny.npz",
        "model-huge.npz",
        "model-mismatch.npz",
        "model-float-labels.npz",
        "model-objects.npz",
        "pickle.npy",
    ],
)
def test_hostile_model_files_are_refused_or_measured_right(name: str, fuzz_dir: Path) -> None:
    path = hostile_files(fuzz_dir)[name]
    argv = ["analyze", str(path)]
    code, out, err = run_probe(argv, fuzz_dir)
    check_contract(argv, code, out, err)
    if name in ("model-tiny.npz", "model-huge.npz"):
        # distances are scale-free: W and features scaled by 1e+-300 measure as the unscaled ones
        assert code in (0, 2), err
    else:
        assert code == 2, f"{name}: exit {code}\n{out}{err}"


def test_analyze_distances_do_not_depend_on_a_common_scale(fuzz_dir: Path) -> None:
    # 1e100-scaled W and features once printed distances of exactly 1.0000 (true 0.89, 0.75)
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(3), [6, 4, 2])
    feats = rng.normal(size=(labels.size, 5)) + 2 * np.eye(5)[labels]
    w = rng.normal(size=(3, 5))
    keys = (
        "classifier_distance_to_prediction",
        "embedding_distance_to_prediction",
        "classifier_distance_to_etf",
        "embedding_distance_to_etf",
        "self_duality",
        "nc1",
    )
    found = []
    for scale in (1.0, 1e100, 1e-100):
        path = fuzz_dir / f"scaled-{scale:g}.npz"
        out_json = fuzz_dir / f"scaled-{scale:g}.json"
        np.savez(path, W=scale * w, features=scale * feats, labels=labels)
        code, _, err = run_probe(["analyze", str(path), "--json", str(out_json)], fuzz_dir)
        assert code == 0, err
        data = json.loads(out_json.read_text())
        found.append([data[key] for key in keys])
    assert 0.5 < found[0][0] < 2  # random weights: far from the prediction
    np.testing.assert_allclose(found[1], found[0], rtol=1e-12)
    np.testing.assert_allclose(found[2], found[0], rtol=1e-12)


def test_example_level_nonconvex_beyond_its_time_estimate_is_refused_naming_the_routes(
    cli, monkeypatch
) -> None:
    # 2000 and 3000 examples per class ran for minutes (the hang); the refusal comes
    # before any solve, and the route it names answers
    def never(*args, **kwargs):
        raise AssertionError("the solve started")

    monkeypatch.setattr("ucfm_svm.cli.solve.solve", never)
    for per_class in ("2000", "3000"):
        counts = ",".join([per_class] * 3)
        code, out, err = cli("solve", "--counts", counts, "--method", "nonconvex", "--level",
                             "example")  # fmt: skip
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
        assert "--level must be class" in err and "--method structured --level example" in err
    monkeypatch.undo()
    code, out, err = cli("solve", "--counts", "3000,3000,3000", "--method", "structured",
                         "--level", "example")  # fmt: skip
    assert code == 0 and "optimal" in out, err
    code, out, err = cli("solve", "--counts", "5,3,2", "--method", "nonconvex", "--level",
                         "example")  # fmt: skip
    assert code in (0, 3), err  # a small example-level run still runs


def test_plot_range_must_be_finite_and_is_named_as_typed(cli) -> None:
    # `plot ratio --range 1,inf` was refused as "The 'ratios' parameter ...", a library name
    for kind, value in (("ratio", "1,inf"), ("gamma", "-inf,1"), ("gamma", "0,nan")):
        code, out, err = cli("plot", kind, "--step", "10,10,0.5", f"--range={value}")
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
        assert "--range must be two increasing finite numbers" in err, err
