"""The main job: a seconds-long smoke run, resume, and a route comparison that can fail."""

from __future__ import annotations

import json

import pytest

from ucfm_svm.reproduce import (
    REFERENCE,
    ReproduceConfig,
    f9_finding,
    grid_rows,
    verification_sweep,
)
from ucfm_svm.sweep import Sweep, make_point, point_key, run_point


def test_quick_reproduce_writes_report_figures_and_resumes(cli, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = cli("reproduce", "--out", str(out), "--quick", "--quiet")
    assert code == 0, err
    report = (out / "report.md").read_text()
    for heading in (
        "## Settings",
        "## Verification",
        "## Tuned hyperparameters",
        "## The published LDT formulas (THEORY F9)",
        "## Figures",
    ):
        assert heading in report
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) >= 4 and all(p.stat().st_size > 10_000 for p in pngs)
    assert len(list(out.glob("*.pdf"))) == len(pngs)
    for p in pngs:
        assert f"]({p.name})" in report
    records = [json.loads(line) for line in (out / "verification.jsonl").read_text().splitlines()]
    points = verification_sweep(ReproduceConfig.quick()).points
    assert len(records) == len(points) and {r["key"] for r in records} == {
        point_key(p) for p in points
    }
    assert "4 of 4 specifications pass" in stdout
    # a rerun skips the finished grid points and still writes the report
    code, stdout, err = cli("reproduce", "--out", str(out), "--quick", "--quiet")
    assert code == 0, err
    assert f"(0 run now, {len(points)} recorded before)" in stdout
    assert len((out / "verification.jsonl").read_text().splitlines()) == len(points)


def test_grid_covers_losses_and_valid_step_settings():
    config = ReproduceConfig()
    sweep = verification_sweep(config)
    steps = {json.dumps(p["counts"]["step"], sort_keys=True) for p in sweep.points}
    # (4, 8, 12) x (0.25, 0.5, 0.75) all have rho*k whole; 2 ratios
    assert len(steps) == 18
    assert {p["loss"] for p in sweep.points} == {"ce", "ldt", "cdt", "vs"}
    assert all(
        p["method"] != "nonconvex"
        or (p["counts"]["step"]["k"], p["counts"]["step"]["R"], p["counts"]["step"]["rho"])
        in config.nonconvex_points
        for p in sweep.points
    )


def test_route_comparison_flags_a_disagreeing_route():
    point = make_point({"step": {"k": 4, "R": 10, "rho": 0.5, "n_min": 1}}, "ce", REFERENCE)
    ref = run_point(point)
    other_point = {**point, "method": "other"}
    good = {**ref, "key": point_key(other_point), "point": other_point}
    sweep = Sweep("t", (point, other_point))
    rows = grid_rows(sweep, {ref["key"]: ref, good["key"]: good})
    assert len(rows) == 1 and rows[0].passed
    bad_gram = [[v * (1 + 1e-4) for v in row] for row in ref["embedding_gram"]]
    bad = {**good, "embedding_gram": bad_gram}
    row = grid_rows(sweep, {ref["key"]: ref, bad["key"]: bad})[0]
    check = next(c for c in row.checks if c.route == "other")
    assert not row.passed and not check.passed
    assert check.embedding_error == pytest.approx(1e-4, rel=1e-6)
    assert check.classifier_error == 0.0


def test_f9_finding_ldt_classifiers_form_an_etf():
    f9 = f9_finding()
    assert f9["status"] == "optimal"
    # certified to a relative gap <= 1e-6, so the squared ratio is 1 to ~1e-6, not 2.67
    assert abs(f9["norm_ratio_sq"] - 1) < 1e-5
    for value in f9["cosines"].values():
        assert abs(value + 1 / 9) < 1e-6


def test_bad_jobs(cli, tmp_path):
    code, _, err = cli("reproduce", "--out", str(tmp_path), "--quick", "--jobs", "0")
    assert code == 2 and "'jobs' parameter" in err
    assert not (tmp_path / "report.md").exists()
