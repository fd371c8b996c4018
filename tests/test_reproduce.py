"""The main job: a seconds-long smoke run, resume, and a route comparison that can fail."""

from __future__ import annotations

import json

from ucfm_svm.runs.reproduce import (
    ReproduceConfig,
    f9_finding,
    grid_rows,
    report_markdown,
    verification_sweep,
)
from ucfm_svm.runs.sweep import CHECKS_FAILED, PASSED, point_key, run_point


def test_quick_reproduce_writes_report_figures_and_resumes(cli, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = cli("reproduce", "--out", str(out), "--quick", "--quiet")
    assert code == 0, err
    report = (out / "report.md").read_text()
    for heading in (
        "## Settings",
        "## Verification",
        "## Tuned hyperparameters",
        "## The published LDT formulas (docs/theory.md §9)",
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
    assert len(steps) == 18 and len(sweep.points) == 72
    assert {p["loss"] for p in sweep.points} == {"ce", "ldt", "cdt", "vs"}
    assert all(p["method"] == "verify" for p in sweep.points)
    assert all(p["options"]["methods"] == ["theory", "convex", "nonconvex"] for p in sweep.points)
    small = ReproduceConfig(ks=(4, 6), rhos=(0.5,), nonconvex_max_k=4)
    routes = {
        p["counts"]["step"]["k"]: p["options"]["methods"] for p in verification_sweep(small).points
    }
    assert routes == {4: ["theory", "convex", "nonconvex"], 6: ["theory", "convex"]}


def test_rows_and_report_show_a_failed_check():
    sweep = verification_sweep(ReproduceConfig.quick())
    point = sweep.points[0]
    record = run_point(point)
    assert record["status"] == PASSED and record["worst_check"]["passed"]
    # The same record with one check failed (as verify reports a disagreement) must show.
    bad_check = {**record["checks"][8], "value": 1.0, "passed": False, "note": "injected"}
    bad = {
        **record,
        "status": CHECKS_FAILED,
        "checks": [*record["checks"][:8], bad_check, *record["checks"][9:]],
        "worst_check": bad_check,
    }
    rows = grid_rows(sweep, {record["key"]: bad})
    assert len(rows) == 1 and not rows[0].passed
    text = report_markdown(ReproduceConfig.quick(), rows, [], f9_finding(lambdas=()), [], "", 0.0)
    assert "0 of 1 specifications pass" in text
    assert "Failed checks:" in text and "injected" in text
    assert "| NO |" in text


def test_f9_finding_ldt_classifiers_form_an_etf():
    f9 = f9_finding(lambdas=(1e-2, 1e-4))
    assert f9["status"] == "optimal"
    # certified to a relative gap <= 1e-6, so the squared ratio is 1 to ~1e-6; CE's is 2.67
    assert abs(f9["svm_ratio_sq"] - 1) < 1e-5
    assert f9["ce_ratio_sq"] > 2.6
    for value in f9["cosines"].values():
        assert abs(value + 1 / 9) < 1e-6
    # the regularized path moves from the formula's value towards the SVM's
    a, b = f9["path_ratio_sq"]
    assert f9["ce_ratio_sq"] > a > b > f9["svm_ratio_sq"]


def test_bad_jobs(cli, tmp_path):
    code, _, err = cli("reproduce", "--out", str(tmp_path), "--quick", "--jobs", "0")
    assert code == 2 and "--jobs" in err
    assert not (tmp_path / "report.md").exists()
