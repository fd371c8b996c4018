"""`analyze` at scale: streamed class statistics, compact JSON, label mapping, warnings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ucfm_svm import geometry, longtail_counts
from ucfm_svm.analysis.analyze import (
    analyze,
    check_trained,
    class_statistics,
    load_trained,
    predict,
)

# Streamed and dense routes sum the same numbers in other orders: rounding only (measured
# ~1e-15 relative on these well-conditioned random problems).
SAME = 1e-12


def random_layer(counts, d, seed=0, noise=0.3):
    """W (k x d), features (n x d) = random class means + noise, shuffled labels."""
    rng = np.random.default_rng(seed)
    k = len(counts)
    labels = rng.permutation(np.repeat(np.arange(k), counts))
    W = rng.normal(size=(k, d))
    means = rng.normal(size=(k, d))
    return W, means[labels] + noise * rng.normal(size=(labels.size, d)), labels


def dense_reference(W, F, labels, preprocess):
    """The dense computation analyze made before streaming (whole n x d arrays)."""
    H = F.T
    if preprocess == "project":
        H = np.linalg.pinv(W) @ (W @ H)
    elif preprocess == "center":
        H = H - H.mean(axis=1, keepdims=True)
    k = W.shape[0]
    return geometry.class_means(H, labels, k), geometry.nc1(H, labels, k)


@pytest.mark.parametrize("preprocess", ["none", "project", "center"])
@pytest.mark.parametrize(("k", "d"), [(7, 4), (5, 12)])  # d < 2r: d x d scatter; else projected
def test_streamed_statistics_equal_the_dense_computation(preprocess, k, d):
    counts = np.arange(3, 3 + k)
    W, F, labels = random_layer(counts, d)
    trained = check_trained(W, F, labels)
    means, nc1 = dense_reference(W, F, labels, preprocess)
    for rows in (5, 1000):  # many blocks (classes split across them) and one
        stats = class_statistics(trained, preprocess, rows=rows)
        np.testing.assert_allclose(stats.means * stats.scale, means, rtol=SAME, atol=0)
        assert stats.nc1 == pytest.approx(nc1, rel=SAME)
        centred = F.T - dense_reference(W, F, labels, "none")[0][:, labels]
        if preprocess == "project":
            centred = np.linalg.pinv(W) @ (W @ centred)
        want = np.bincount(labels, weights=np.sum(centred**2, axis=0)) / counts
        np.testing.assert_allclose(stats.variances * stats.scale**2, want, rtol=SAME)
    a = analyze(trained, "ce", preprocess=preprocess)
    assert a.nc1 == pytest.approx(nc1, rel=SAME)
    np.testing.assert_allclose(
        a.embedding_cosines, geometry.cosines_from_gram(means.T @ means), rtol=0, atol=SAME
    )
    np.testing.assert_allclose(
        a.classifier_cosines, geometry.cosines_from_gram(W @ W.T), rtol=0, atol=SAME
    )


def test_file_routes_agree(tmp_path):
    # npz nd (streamed from the archive), npz dn in Fortran order (streamed), npz dn in C order
    # (loaded), compressed npz, npy triplet (memory-mapped): the same numbers.
    counts = [9, 6, 4, 3]
    W, F, labels = random_layer(counts, 5, seed=3)
    np.savez(tmp_path / "nd.npz", W=W, features=F, labels=labels)
    np.savez(tmp_path / "dnf.npz", W=W, features=np.asfortranarray(F.T), labels=labels)
    np.savez(tmp_path / "dnc.npz", W=W, features=np.ascontiguousarray(F.T), labels=labels)
    np.savez_compressed(tmp_path / "z.npz", W=W, features=F.astype(np.float32), labels=labels)
    np.save(tmp_path / "W.npy", W)
    np.save(tmp_path / "F.npy", F)
    np.save(tmp_path / "y.npy", labels)
    pred = predict(counts, "ce")
    ref = analyze(check_trained(W, F, labels), prediction=pred)
    runs = [
        load_trained(tmp_path / "nd.npz"),
        load_trained(tmp_path / "dnf.npz", layout="dn"),
        load_trained(tmp_path / "dnc.npz", layout="dn"),
        load_trained(tmp_path / "W.npy", features=tmp_path / "F.npy", labels=tmp_path / "y.npy"),
    ]
    for trained in runs:
        a = analyze(trained, prediction=pred)
        assert a.nc1 == pytest.approx(ref.nc1, rel=SAME)
        np.testing.assert_allclose(a.embedding_gram, ref.embedding_gram, rtol=SAME)
        assert a.classifier_distance_to_prediction == ref.classifier_distance_to_prediction
    f32 = analyze(load_trained(tmp_path / "z.npz"), prediction=pred)
    assert f32.nc1 == pytest.approx(ref.nc1, rel=1e-5)  # float32 rounding of the features


def test_non_finite_features_in_a_file_are_refused_in_the_first_pass(tmp_path, cli):
    W, F, labels = random_layer([3, 2, 2], 3)
    F[4, 1] = np.nan
    np.savez(tmp_path / "nan.npz", W=W, features=F, labels=labels)
    code, out, err = cli("analyze", str(tmp_path / "nan.npz"))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "--features must be finite (no NaN or inf). Got 1 non-finite entries" in err


def test_gapped_labels_are_mapped_in_order_and_reported(tmp_path, cli):
    counts = [5, 4, 2]
    W, F, labels = random_layer(counts, 4, seed=5)
    gapped = np.array([3, 7, 10])[labels]
    plain = analyze(check_trained(W, F, labels))
    mapped = analyze(check_trained(W, F, gapped))
    assert mapped.label_of_row.tolist() == [3, 7, 10]
    assert plain.label_of_row.tolist() == [0, 1, 2] and plain.labels_note == ""
    assert mapped.nc1 == plain.nc1
    assert mapped.classifier_distance_to_prediction == plain.classifier_distance_to_prediction
    np.savez(tmp_path / "gap.npz", W=W, features=F, labels=gapped)
    code, out, err = cli("analyze", str(tmp_path / "gap.npz"), "--json", str(tmp_path / "g.json"))
    assert code == 0, err
    assert "labels: the labels are 3 distinct values but not 0..2" in out
    assert "label_of_row 3,7,10" in out
    data = json.loads((tmp_path / "g.json").read_text())
    assert data["label_of_row"] == [3, 7, 10] and "c-th smallest" in data["labels_note"]
    # four distinct labels for three rows, or one class without examples: refused, one line
    for bad, message in (([0, 1, 2, 5], "or k = 3 distinct values"), ([0, 0, 1, 1], "class 2")):
        np.savez(tmp_path / "bad.npz", W=W, features=F[:4], labels=np.array(bad))
        code, _, err = cli("analyze", str(tmp_path / "bad.npz"))
        assert code == 2 and message in err and err.count("\n") == 1


def test_missing_keys_are_listed(tmp_path, cli):
    W, F, labels = random_layer([3, 2], 2)
    np.savez(tmp_path / "wrong.npz", weights=W, feats=F, labels=labels)
    code, out, err = cli("analyze", str(tmp_path / "wrong.npz"))
    assert code == 2 and out == ""
    assert "missing W, features; keys found: weights, feats, labels" in err


def test_low_dimension_is_warned_in_one_line(tmp_path, cli):
    W, F, labels = random_layer([4, 3, 3, 2, 2], 2)  # d = 2 < k - 1 = 4
    np.savez(tmp_path / "low.npz", W=W, features=F, labels=labels)
    code, out, err = cli("analyze", str(tmp_path / "low.npz"))
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and "d = 2 < k - 1 = 4" in lines[0]
    assert "prediction is the UF-CS-SVM geometry for d >= k - 1" in lines[0]
    code, out, err = cli("analyze", str(tmp_path / "low.npz"), "--json", "-")
    assert code == 0 and json.loads(out)["warnings"][0].startswith("d = 2 < k - 1 = 4")
    assert err.startswith("warning: d = 2") and err.count("\n") == 1
    W, F, labels = random_layer([4, 3, 3, 2, 2], 4)  # d = k - 1: no warning
    assert analyze(check_trained(W, F, labels)).warnings == ()


def test_compact_and_full_json_and_group_statistics(tmp_path, cli):
    # Long-tailed counts (many/medium/few) and a STEP profile (majority/minority).
    for counts in (longtail_counts(12, 40, n_max=200), [30] * 3 + [4] * 5):
        k = len(counts)
        W, F, labels = random_layer(counts, k + 1, seed=k)
        np.savez(tmp_path / "m.npz", W=W, features=F, labels=labels)
        compact, full = tmp_path / "c.json", tmp_path / "f.json"
        assert cli("analyze", str(tmp_path / "m.npz"), "--json", str(compact))[0] == 0
        assert cli("analyze", str(tmp_path / "m.npz"), "--json", str(full), "--full")[0] == 0
        c, f = json.loads(compact.read_text()), json.loads(full.read_text())
        matrices = {
            "classifier_gram",
            "embedding_gram",
            "classifier_cosines",
            "embedding_cosines",
            "predicted_classifier_gram",
            "predicted_embedding_gram",
        }
        assert not matrices & set(c) and matrices <= set(f)
        assert set(f) - matrices == set(c)
        assert all(c[key] == f[key] for key in c)
        assert len(c["classifier_norms"]) == k and len(c["predicted_embedding_norms"]) == k
        # the group statistics have solve --json's shape, for the trained and predicted geometry
        solve_json = tmp_path / "s.json"
        code, _, err = cli(
            "solve", "--counts", ",".join(map(str, counts)), "--json", str(solve_json)
        )
        assert code == 0, err
        solved = json.loads(solve_json.read_text())["groups"]
        for key in ("groups", "predicted_groups"):
            assert set(c[key]) == set(solved)
            assert set(c[key]["classifier_cos"]) == set(solved["classifier_cos"])
            assert c[key]["sizes"] == solved["sizes"]
        # the predicted group statistics are solve's (same closed form)
        for pair, value in solved["classifier_cos"].items():
            assert c["predicted_groups"]["classifier_cos"][pair] == pytest.approx(value, abs=1e-9)
        # the trained group means equal the explicit cosine matrices' block means
        members = {name: [] for name in c["groups"]["sizes"]}
        for cls, name in enumerate(group_of(c["groups"], counts)):
            members[name].append(cls)
        for side in ("classifier", "embedding"):
            C = np.array(f[f"{side}_cosines"])
            for pair, value in c["groups"][f"{side}_cos"].items():
                a, b = (full_name(x) for x in pair.split("-"))
                block = C[np.ix_(members[a], members[b])]
                if a == b:
                    m = len(members[a])
                    want = (block.sum() - np.trace(block)) / (m * (m - 1))
                else:
                    want = block.mean()
                assert value == pytest.approx(want, abs=1e-12)
            norms = np.array(c[f"{side}_norms"])
            for name, stats in c["groups"][f"{side}_norms"].items():
                assert stats["mean"] == pytest.approx(norms[members[name]].mean(), rel=1e-12)
        if c["groups"]["convention"] == "majority/minority":
            cos = geometry.grouped_cosines(np.array(f["classifier_gram"]), *STEP_GROUPS)
            for pair, value in cos.items():
                assert c["groups"]["classifier_cos"][pair] == pytest.approx(value, abs=1e-12)


STEP_GROUPS = (np.arange(3), np.arange(3, 8))


def full_name(short):
    return {"maj": "majority", "min": "minority"}.get(short, short)


def group_of(groups, counts):
    """Group name of each class from the JSON's count ranges."""
    out = []
    for n in counts:
        for name, (low, high) in groups["count_range"].items():
            if low <= n <= high:
                out.append(name)
                break
    return out


def test_compact_json_is_small_at_large_k(monkeypatch):
    # Above DENSE_MAX_K (lowered here to keep the test fast) the prediction is structured; the
    # compact JSON holds O(k) numbers, the full one O(k^2).
    from ucfm_svm.analysis import analyze as module

    monkeypatch.setattr(module, "DENSE_MAX_K", 10)
    k, d = 80, 8
    W, F, labels = random_layer(np.repeat([6, 3, 2, 1], k // 4), d, seed=1)
    a = analyze(check_trained(W, F, labels))
    assert a.prediction_method == "structured"
    compact, full = len(json.dumps(a.to_dict())), len(json.dumps(a.to_dict(full=True)))
    assert compact < 500 * k < 50 * k * k < full
