"""Group statistics (docs/theory.md §17): groups, and group means by three routes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ucfm_svm import Spec, SpecError, longtail_counts, step_counts
from ucfm_svm.api import group_statistics, solve
from ucfm_svm.geometry import cosines_from_gram
from ucfm_svm.groups import class_groups

#: The closed form (dense SVD, structured roots) is exact to rounding: measured ~1e-15.
EXACT = 1e-10
#: Clarabel's Grams agree with the closed form to ~1e-8 at k <= 20 (test_theory.py).
CONVEX = 1e-6


def explicit_means(C: np.ndarray, members: tuple[np.ndarray, ...]) -> list[float]:
    """Mean cosine over class pairs for every pair of groups, from the k x k cosine matrix."""
    out = []
    for a in range(len(members)):
        for b in range(a, len(members)):
            block = C[np.ix_(members[a], members[b])]
            if a == b:
                n = members[a].size
                out.append((block.sum() - np.trace(block)) / (n * (n - 1)) if n > 1 else np.nan)
            else:
                out.append(block.mean())
    return out


def test_groups_follow_the_conventions():
    g = class_groups(step_counts(10, 10, 0.5, 3))
    assert g.names == ("majority", "minority") and g.members[0].tolist() == [0, 1, 2, 3, 4]
    g = class_groups(np.array([500, 101, 100, 20, 19, 1]))
    assert g.names == ("many", "medium", "few")
    assert [m.tolist() for m in g.members] == [[0, 1], [2, 3], [4, 5]]
    g = class_groups(np.array([500, 101, 100, 20, 19, 1]), many_above=400, few_below=2)
    assert [m.tolist() for m in g.members] == [[0], [1, 2, 3, 4], [5]]
    assert class_groups(np.array([30, 50, 70])).names == ("medium",)  # empty groups left out
    assert class_groups(np.array([4, 4, 4])).convention == "balanced"
    with pytest.raises(SpecError, match="'few_below' parameter"):
        class_groups(np.array([1, 2, 3]), many_above=10, few_below=20)


@pytest.mark.parametrize(
    ("loss", "gamma"), [("ce", None), ("cdt", 0.5), ("ldt", 0.3), ("cdt", -0.7)]
)
def test_structured_sums_match_the_dense_cosine_matrix(loss, gamma):
    """Structured root sums (no k x k array) against the explicit cosines of the dense closed
    form, on long-tailed counts with all three groups and ties (clusters)."""
    spec = Spec.from_loss(longtail_counts(60, 100, 500), loss, gamma=gamma)
    dense = solve(spec, "theory")
    structured = solve(spec, "structured")
    assert structured.classifier_gram is None
    s = group_statistics(structured)
    assert s.groups.names == ("many", "medium", "few")
    members = s.groups.members
    for side, G in (("classifier", dense.classifier_gram), ("embedding", dense.embedding_gram)):
        got = list(getattr(s, f"{side}_cos").values())
        np.testing.assert_allclose(got, explicit_means(cosines_from_gram(G), members), atol=EXACT)


def test_factors_match_convex_solve():
    """Group means from W of the closed form against the convex solve's Grams."""
    spec = Spec.from_loss(np.array([300, 120, 60, 40, 15, 5, 2]), "ldt", gamma=0.25)
    theory = group_statistics(solve(spec, "theory"))
    convex = solve(spec, "convex")
    members = theory.groups.members
    for side, G in (("classifier", convex.classifier_gram), ("embedding", convex.embedding_gram)):
        got = list(getattr(theory, f"{side}_cos").values())
        np.testing.assert_allclose(got, explicit_means(cosines_from_gram(G), members), atol=CONVEX)
    head = convex.classifier_norms[0] ** 2
    few = theory.groups.members[-1]
    assert theory.classifier_norms["few"]["sq_ratio_to_head"] == pytest.approx(
        np.mean(convex.classifier_norms[few] ** 2) / head, rel=CONVEX
    )


def test_step_group_means_are_the_step_cosines():
    spec = Spec.from_loss(step_counts(10, 10, 0.5), "cdt", gamma=0.25)
    s = group_statistics(solve(spec, "structured"))
    from ucfm_svm.solvers.step_theory import step_geometry_for_loss

    step = step_geometry_for_loss(10, 10, 0.5, "cdt", 0.25)
    assert s.classifier_cos == pytest.approx(step.classifier_cosines, abs=EXACT)
    assert s.embedding_cos == pytest.approx(step.embedding_cosines, abs=EXACT)


@pytest.mark.parametrize("method", ["theory", "structured", "convex"])
def test_cli_solve_prints_and_writes_groups(cli, tmp_path, method):
    out_json = tmp_path / "r.json"
    argv = ["solve", "--longtail", "12,100", "--n-max", "500", "--method", method]
    code, out, _ = cli(*argv, "--json", str(out_json))
    assert code == 0
    assert "groups       many/medium/few" in out and "cosines by group" in out
    assert "many-few" in out and "few-few" in out
    data = json.loads(out_json.read_text())
    assert set(data["groups"]["classifier_cos"]) >= {"many-many", "many-few", "few-few"}
    n = longtail_counts(12, 100, 500)
    sizes = {"many": int((n > 100).sum()), "medium": int(((n >= 20) & (n <= 100)).sum()),
             "few": int((n < 20).sum())}  # fmt: skip
    assert data["groups"]["sizes"] == sizes and min(sizes.values()) > 0
    code, out, _ = cli(*argv, "--json", "-")  # stdout is the JSON alone
    assert code == 0 and json.loads(out)["groups"]["embedding_cos"]["many-few"] is not None


def test_cli_group_thresholds(cli):
    code, out, _ = cli("solve", "--longtail", "12,100", "--n-max", "500", "--many-above", "200",
                       "--few-below", "50", "--method", "theory")  # fmt: skip
    assert code == 0 and "n > 200, 50-200, < 50" in out
    code, _, err = cli("solve", "--longtail", "12,100", "--few-below", "300", "--method", "theory")
    assert code == 2 and "--few-below must be" in err and "\n" not in err.strip()


@pytest.mark.parametrize("command", ["path", "train"])
def test_path_and_train_json_carry_group_statistics(cli, tmp_path, command):
    # One record per lambda / logged step: the group statistics of its Grams equal the explicit
    # cosine matrices' block means; "groups" (last record) and "svm.groups" have solve's shape.
    counts = longtail_counts(6, 20, n_max=150)  # 150 ... 7: many / medium / few
    out = tmp_path / f"{command}.json"
    argv = {
        "path": ["--lambdas", "1e-2,1e-3"],
        "train": ["--steps", "200", "--records", "3"],
    }[command]
    code, _, err = cli(
        command, "--counts", ",".join(map(str, counts)), *argv, "--json", str(out),
        "--many-above", "120", "--few-below", "30",
    )  # fmt: skip
    assert code in (0, 3), err
    data = json.loads(out.read_text())
    groups = class_groups(np.array(counts), 120, 30)
    assert data["groups"]["convention"] == "many/medium/few"
    assert data["groups"]["many_above"] == 120 and data["groups"]["few_below"] == 30
    solve_json = tmp_path / "s.json"
    cli("solve", "--counts", ",".join(map(str, counts)), "--json", str(solve_json),
        "--many-above", "120", "--few-below", "30")  # fmt: skip
    solved = json.loads(solve_json.read_text())["groups"]
    assert set(data["groups"]) == set(solved) == set(data["svm"]["groups"])
    for pair, value in solved["classifier_cos"].items():
        assert data["svm"]["groups"]["classifier_cos"][pair] == pytest.approx(value, abs=CONVEX)
    records = data["record_groups"]
    assert len(records) == len(data["classifier_grams"]) >= 2
    assert records[-1] == {key: data["groups"][key] for key in records[-1]}
    for record, cg, eg in zip(records, data["classifier_grams"], data["embedding_grams"],
                              strict=True):  # fmt: skip
        for side, G in (("classifier", np.array(cg)), ("embedding", np.array(eg))):
            want = explicit_means(cosines_from_gram(G), groups.members)
            got = [record[f"{side}_cos"][groups.pair_name(a, b)] for a, b in groups.pairs]
            got = [np.nan if v is None else v for v in got]  # JSON null: a group of one class
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
            norms = np.sqrt(np.diag(G))
            for name, idx in zip(groups.names, groups.members, strict=True):
                assert record[f"{side}_norms"][name]["mean"] == pytest.approx(
                    norms[idx].mean(), rel=1e-12
                )


@pytest.mark.parametrize("command", ["path", "train"])
def test_path_and_train_json_leave_out_the_k_by_k_arrays_above_the_limit(cli, tmp_path,
                                                                          monkeypatch, command):
    # Above JSON_MATRICES_MAX_K classes (patched to 4 here) the JSON keeps the group statistics,
    # norm ratios and distances but not the Grams or cosines (961 MB at k = 1000); --full
    # writes them.
    from ucfm_svm.cli import path as path_cli

    monkeypatch.setattr(path_cli, "JSON_MATRICES_MAX_K", 4)
    argv = {"path": ["--lambdas", "1e-2"], "train": ["--steps", "50", "--records", "2"]}[command]
    arrays = {"classifier_grams", "embedding_grams", "classifier_cosines", "embedding_cosines"}
    for extra, full in (([], False), (["--full"], True)):
        out = tmp_path / f"{command}{len(extra)}.json"
        code, _, err = cli(command, "--counts", "20,10,5,2,1", *argv, "--json", str(out), *extra)
        assert code in (0, 3), err
        data = json.loads(out.read_text())
        assert (arrays <= set(data)) == full and (not arrays & set(data)) == (not full)
        assert ("classifier_gram" in data["svm"]) == full and ("matrices" in data) != full
        assert data["record_groups"] and data["svm"]["groups"] and data["distance_to_svm"]
