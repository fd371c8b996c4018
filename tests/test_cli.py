"""The command line: JSON contract, summary, and one-line errors for bad input (exit 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ucfm_svm.cli import build_parser

REQUIRED_KEYS = {
    "spec",
    "method",
    "status",
    "message",
    "objective",
    "lower_bound",
    "W",
    "H_mean",
    "logits",
    "classifier_gram",
    "embedding_gram",
    "classifier_norms",
    "embedding_norms",
    "seconds",
}


def test_solve_writes_contract(cli, tmp_path):
    path = tmp_path / "r.json"
    code, out, err = cli(
        "solve", "--counts", "10,10,1,1", "--method", "convex", "--json", str(path)
    )
    assert code == 0, err
    data = json.loads(path.read_text())
    assert set(data) >= REQUIRED_KEYS
    assert {"counts", "scales", "margins", "loss", "dim"} <= set(data["spec"])
    assert abs(data["objective"] - 6.5074855) / 6.5074855 < 1e-6
    assert data["lower_bound"] <= data["objective"] + 1e-9
    assert np.shape(data["W"]) == (4, 4) and np.shape(data["H_mean"]) == (4, 4)
    assert "maj-maj" in out and "lower bound" in out


def test_example_level_matches_class_level(cli, tmp_path):
    grams = {}
    for level in ("class", "example"):
        path = tmp_path / f"{level}.json"
        code, _, err = cli("solve", "--counts", "3,3,1", "--level", level, "--json", str(path))
        assert code == 0, err
        data = json.loads(path.read_text())
        grams[level] = np.array(data["classifier_gram"]), np.array(data["embedding_gram"])
    for a, b in zip(grams["class"], grams["example"], strict=True):
        assert np.linalg.norm(a - b) / np.linalg.norm(a) < 1e-6


def test_step_longtail_and_labels_sources(cli, tmp_path):
    np.save(tmp_path / "y.npy", np.array([0, 0, 0, 1, 2]))
    for args in (
        ["--step", "6,10,0.5", "--loss", "cdt", "--gamma", "0.5"],
        ["--longtail", "5,10", "--n-max", "100", "--loss", "ldt", "--gamma", "1"],
        ["--labels", str(tmp_path / "y.npy")],
        ["--counts", "5,3,1", "--scales", "1,2,3", "--margins", "1,1,2"],
    ):
        code, out, err = cli("solve", *args)
        assert code == 0, (args, err)
        assert "optimal" in out


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--counts", "10,0,1"], "--counts "),
        (["--counts", "a,b"], "--counts "),
        (["--counts", "5,-2"], "--counts "),
        (["--counts", "5,2.5"], "--counts "),
        (["--counts", "5"], "at least 2"),
        (["--counts", "5,5,1,1", "--dim", "1", "--method", "convex"], "--dim "),
        (["--step", "5,10,0.5"], "the RHO of --step"),
        (["--step", "4,0.5,0.5"], "the R of --step"),
        (["--step", "4,10"], "--step "),
        (["--counts", "5,5", "--scales", "1,1,1"], "--scales "),
        (["--counts", "5,5", "--margins", "1,0"], "--margins "),
        (["--counts", "5,5", "--margins", "1,inf"], "--margins "),
        (["--counts", "5,5", "--scales", "nan,1"], "--scales "),
        (["--counts", "50,1", "--loss", "cdt", "--gamma", "1e6"], "--gamma "),
        (["--counts", "50,1", "--loss", "cdt", "--gamma", "x"], "--gamma "),
        (["--counts", "5,5", "--loss", "hinge"], "--loss "),
        (["--counts", "5,5", "--loss", "ldt", "--margins", "1,2"], "--loss "),
        (["--counts", "5,5", "--method", "magic"], "--method"),
        (["--labels", "/nonexistent/labels.npy"], "--labels "),
        (["--counts", "5,1", "--n-min", "3"], "--n-min "),  # was silently ignored
        (["--step", "4,10,0.5", "--n-max", "9"], "--n-max "),
    ],
)
def test_bad_input_one_line_exit_2(cli, args, match):
    code, _out, err = cli("solve", *args)
    assert code == 2
    assert match.strip("'") in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_bad_label_files(cli, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "float.csv").write_text("0,1,2.5\n")
    for name in ("empty.txt", "float.csv"):
        code, _, err = cli("solve", "--labels", str(tmp_path / name))
        assert code == 2 and "--labels" in err


def test_no_subcommand_prints_help(cli):
    code, out, _ = cli()
    assert code == 2 and "solve" in out


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["--method", "convex", "--restarts", "3"], "restarts"),
        (["--method", "convex", "--seed", "1"], "seed"),
        (["--method", "convex", "--alternations", "2"], "alternations"),
        (["--method", "theory", "--level", "example"], "level"),
        (["--method", "theory", "--solver", "scs"], "solver"),
        (["--method", "nonconvex", "--solver", "scs"], "solver"),
        (["--restarts", "2"], "restarts"),  # the default method, convex
    ],
)
def test_solve_rejects_flags_the_method_does_not_take(cli, args, name):
    code, _out, err = cli("solve", "--counts", "5,1", *args)
    assert code == 2, err
    assert f"--{name}" in err and len(err.strip().splitlines()) == 1


def test_solve_method_flags_still_reach_their_method(cli):
    code, out, err = cli("solve", "--counts", "5,1", "--method", "theory")
    assert code == 0 and "closed form" in out, err
    code, out, err = cli(
        "solve", "--counts", "5,1", "--method", "nonconvex", "--restarts", "2", "--level", "class"
    )
    assert code == 0 and "optimal" in out, err


@pytest.mark.parametrize(
    "argv",
    [
        ["solve", "--counts", "5,1"],
        ["verify", "--counts", "5,1", "--methods", "theory"],
        ["path", "--counts", "5,1", "--lambdas", "1e-1"],
        ["train", "--counts", "5,1", "--steps", "2"],
    ],
)
def test_unwritable_json_is_a_usage_error(cli, tmp_path, argv):
    (tmp_path / "notes.txt").write_text("a user's file\n")
    targets = (tmp_path, tmp_path / "notes.txt", tmp_path / "notes.txt" / "r.json")
    for target in targets:
        code, out, err = cli(*argv, "--json", str(target))
        assert code == 2, err
        assert "--json" in err and len(err.strip().splitlines()) == 1
        assert out == ""  # rejected before any work is done
    assert (tmp_path / "notes.txt").read_text() == "a user's file\n"
    code, out, err = cli(*argv, "--json", str(tmp_path / "new" / "folder" / "r.json"))
    assert code in (0, 3) and (tmp_path / "new" / "folder" / "r.json").is_file(), err


def test_negative_numbers_in_any_notation_are_values(cli):
    # argparse alone reads "-1e-3" and "-2,2" as unknown options ("expected one argument")
    code, out, err = cli("solve", "--counts", "5,1", "--loss", "cdt", "--gamma", "-1e-3")
    assert code == 0 and "gamma=-0.001" in out, err
    code, out, err = cli(
        "tune", "--step", "4,10,0.5", "--loss", "ldt", "--target", "etf-classifiers",
        "--range", "-2,2",
    )  # fmt: skip
    assert code == 0 and "gamma = 0.5" in out, err
    code, _out, err = cli("solve", "--counts", "5,1", "--gamma", "-x")
    assert code == 2 and "--gamma" in err
    # the README's `plot gamma ... --range -1,1.5` failed the same way on main
    args = build_parser().parse_args(["plot", "gamma", "--step", "10,10,0.5", "--range", "-1,1.5"])
    assert args.range == "-1,1.5"


def test_out_of_memory_is_one_line(cli, monkeypatch):
    import ucfm_svm.cli.solve as solve_cli

    def too_big(*args, **kwargs):
        raise MemoryError("Unable to allocate 298. GiB")

    monkeypatch.setattr(solve_cli, "solve", too_big)
    code, _out, err = cli("solve", "--counts", "5,1")
    assert code == 2 and "does not fit in memory" in err and len(err.strip().splitlines()) == 1


def test_huge_dim_is_a_usage_error(cli):
    code, _out, err = cli("solve", "--counts", "5,1", "--dim", "1e20")
    assert code == 2 and "--dim must be an integer >= 1 and <= 100000" in err


def test_solver_failure_is_one_line_with_status_and_advice(cli):
    # margins 60 orders of magnitude apart: Clarabel reports "infeasible", SCS fails
    argv = ["solve", "--counts", "5,5", "--margins", "1e30,1e-30", "--method", "convex"]
    code, out, err = cli(*argv)
    assert code == 3 and len(err.strip().splitlines()) == 1 and out == ""
    assert "CLARABEL: status" in err and "Try another backend" in err
    assert "always feasible" in err and "--method structured" in err
    assert ".." not in err and "verbose=True" not in err  # cvxpy's advice is for Python users
    assert "--level class" not in err  # already the class level


def test_unusable_output_folder_is_one_line_error(cli):
    code, _, err = cli("reproduce", "--quick", "--out", "/proc/ucfm-svm-test/out")
    assert code == 2
    assert "cannot use the path /proc/ucfm-svm-test" in err
    assert len(err.strip().splitlines()) == 1
