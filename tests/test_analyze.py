"""`ucfm-svm analyze`: measures of a trained last layer against the predicted geometry."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ucfm_svm import Spec, SpecError, solve_convex, step_counts
from ucfm_svm.analysis.analyze import analyze, check_trained, load_trained, predict
from ucfm_svm.geometry import balanced_factors
from ucfm_svm.solvers.theory import scaled_logit_matrix

# The convex prediction's Grams are accurate to ~1e-8 relative (Clarabel's gap ~1e-9,
# docs/theory.md §2); the criterion for "the same geometry" is a distance below 1e-6.
SAME = 1e-6

COUNTS = step_counts(4, 5, 0.5, n_min=2)  # 10, 10, 2, 2
CASES = [("ce", None), ("ldt", 0.5), ("cdt", 0.5), ("vs", 0.3)]


def collapsed_file(path, W, H_mean, counts, *, layout="nd", shuffle_seed=0):
    """Write W and features = class means repeated per counts (shuffled) as an .npz."""
    labels = np.repeat(np.arange(len(counts)), counts)
    order = np.random.default_rng(shuffle_seed).permutation(labels.size)
    labels = labels[order]
    H = H_mean[:, labels]
    np.savez(path, W=W, features=H.T if layout == "nd" else H, labels=labels)
    return path


def closed_form_point(spec: Spec, d: int) -> tuple[np.ndarray, np.ndarray]:
    """(W, Hbar) from docs/theory.md §4 (independent of the convex solver): A = X Y,
    Hbar = Y N^{-1/2}."""
    X, Y = balanced_factors(scaled_logit_matrix(spec), d)
    return X, Y / np.sqrt(spec.n_vec)[None, :]


@pytest.mark.parametrize(("loss", "gamma"), CASES)
def test_own_solve_output_matches_prediction(tmp_path, loss, gamma):
    spec = Spec.from_loss(COUNTS, loss, gamma=gamma)
    result = solve_convex(spec)
    path = collapsed_file(tmp_path / "own.npz", result.W, result.H_mean, spec.counts)
    a = analyze(load_trained(path), loss, gamma=gamma)
    assert a.classifier_distance_to_prediction < SAME
    assert a.embedding_distance_to_prediction < SAME
    assert a.nc1 < 1e-20  # exact collapse: every feature equals its class mean


@pytest.mark.parametrize(("loss", "gamma"), CASES)
def test_closed_form_point_in_more_dimensions_matches_convex_prediction(tmp_path, loss, gamma):
    # Independent routes: F5' closed form (file, d = 7 > k) against the convex solve (d = k).
    spec = Spec.from_loss(COUNTS, loss, gamma=gamma)
    W, H_mean = closed_form_point(spec, d=7)
    rotation = np.linalg.qr(np.random.default_rng(1).normal(size=(7, 7)))[0]
    path = collapsed_file(tmp_path / "cf.npz", W @ rotation, rotation.T @ H_mean, spec.counts)
    a = analyze(load_trained(path), loss, gamma=gamma)
    assert a.prediction_method in ("theory", "convex")
    assert a.classifier_distance_to_prediction < SAME
    assert a.embedding_distance_to_prediction < SAME
    assert a.classifier_norm_ratio == pytest.approx(a.predicted_classifier_norm_ratio, rel=SAME)
    assert a.embedding_norm_ratio == pytest.approx(a.predicted_embedding_norm_ratio, rel=SAME)


def test_wrong_loss_and_random_arrays_are_far(tmp_path):
    spec = Spec.from_loss(COUNTS, "ldt", gamma=0.5)
    result = solve_convex(spec)
    path = collapsed_file(tmp_path / "ldt.npz", result.W, result.H_mean, spec.counts)
    # The LDT (gamma 1/2) geometry measured against the CE prediction: classifiers an ETF
    # versus CE's unequal norms (docs/theory.md §4, §6).
    wrong = analyze(load_trained(path), "ce")
    assert wrong.classifier_distance_to_prediction > 0.1
    assert wrong.classifier_distance_to_etf < SAME
    rng = np.random.default_rng(0)
    labels = spec.labels
    W = rng.normal(size=(spec.k, 16))
    features = rng.normal(size=(labels.size, 16))
    a = analyze(check_trained(W, features, labels), "ldt", gamma=0.5)
    # A random Gram is near a multiple of I; its distance to a Gram with zero row sums is about
    # sqrt(2 - 2 sqrt((k-1)/k)) = 0.52 for k = 4.
    assert a.classifier_distance_to_prediction > 0.3
    assert a.embedding_distance_to_prediction > 0.3
    assert a.nc1 > 1.0


def test_layouts_and_npy_triplet_agree(tmp_path):
    spec = Spec.from_loss(COUNTS, "cdt", gamma=0.5)
    rng = np.random.default_rng(2)
    W = rng.normal(size=(spec.k, 5))
    H = rng.normal(size=(5, spec.n))
    labels = spec.labels
    nd = analyze(check_trained(W, H.T, labels, "nd"), "cdt", gamma=0.5)
    dn = analyze(check_trained(W, H, labels, "dn"), "cdt", gamma=0.5, prediction=nd_pred(spec))
    np.save(tmp_path / "W.npy", W)
    np.save(tmp_path / "F.npy", H.T)
    np.save(tmp_path / "y.npy", labels)
    trip = load_trained(tmp_path / "W.npy", features=tmp_path / "F.npy", labels=tmp_path / "y.npy")
    tr = analyze(trip, "cdt", gamma=0.5)
    for other in (dn, tr):
        assert other.nc1 == pytest.approx(nd.nc1, rel=1e-12)
        assert other.classifier_distance_to_prediction == nd.classifier_distance_to_prediction
        assert other.embedding_distance_to_prediction == pytest.approx(
            nd.embedding_distance_to_prediction, rel=1e-12
        )


def nd_pred(spec):
    return predict(spec.counts, spec.loss, gamma=spec.gamma)


def test_self_duality_of_balanced_ce_and_global_centering_invariance():
    # Balanced CE: W^T and Hbar are proportional (simplex ETF, docs/theory.md §4, S = sqrt(n) I).
    spec = Spec.from_loss([3, 3, 3], "ce")
    W, H_mean = closed_form_point(spec, d=3)
    labels = spec.labels
    trained = check_trained(W, H_mean[:, labels].T, labels)
    a = analyze(trained, "ce")
    assert a.self_duality < SAME
    np.testing.assert_allclose(a.duality_cosines, 1.0, atol=SAME)
    assert a.classifier_distance_to_etf < SAME
    # global centering removes any common shift of the features
    shift = np.array([5.0, -2.0, 1.0])
    shifted = check_trained(W, (H_mean[:, labels] + shift[:, None]).T, labels)
    b = analyze(shifted, "ce", preprocess="center")
    c = analyze(trained, "ce", preprocess="center")
    assert b.embedding_distance_to_prediction == pytest.approx(c.embedding_distance_to_prediction)
    assert analyze(shifted, "ce").embedding_distance_to_prediction > 0.1


def test_projection_on_classifier_span():
    # A feature part orthogonal to the rows of W leaves the logits unchanged; "project" removes
    # it, and is a no-op on the minimizer itself (W and Hbar share their span, docs/theory.md §2).
    spec = Spec.from_loss(COUNTS, "cdt", gamma=0.5)
    W, H_mean = closed_form_point(spec, d=6)
    labels = spec.labels
    noise = np.zeros((6, labels.size))
    noise[5] = np.random.default_rng(4).normal(size=labels.size)  # W has rank <= 4 < 6
    assert np.abs(W @ noise).max() == 0.0
    clean = check_trained(W, H_mean[:, labels].T, labels)
    noisy = check_trained(W, (H_mean[:, labels] + noise).T, labels)
    pred = predict(spec.counts, "cdt", gamma=0.5)
    a = analyze(noisy, prediction=pred, preprocess="project")
    assert a.embedding_distance_to_prediction < SAME
    assert a.nc1 < 1e-20
    assert analyze(noisy, prediction=pred).embedding_distance_to_prediction > 0.01
    assert (
        analyze(clean, prediction=pred, preprocess="project").embedding_distance_to_prediction
        < SAME
    )


def test_prediction_counts_must_match():
    spec = Spec.from_loss([3, 3, 1], "ce")
    trained = check_trained(np.eye(3), np.eye(3)[spec.labels], spec.labels)
    with pytest.raises(SpecError, match="'prediction' parameter must be a result for the counts"):
        analyze(trained, prediction=predict([3, 3, 2]))


# --- bad input --------------------------------------------------------------------------------
GOOD_W = np.eye(3)
GOOD_F = np.eye(3)[[0, 0, 1, 2]]
GOOD_Y = np.array([0, 0, 1, 2])


@pytest.mark.parametrize(
    ("W", "features", "labels", "match"),
    [
        (np.ones(3), GOOD_F, GOOD_Y, r"'W' parameter must be a 2-D array of shape \(k, d\)"),
        (np.ones((1, 3)), GOOD_F, GOOD_Y, r"'W' parameter .* k >= 2"),
        (GOOD_W, np.ones((4, 2)), GOOD_Y, r"'features' parameter must be of shape \(n, 3\)"),
        (GOOD_W, np.ones(12), GOOD_Y, r"'features' parameter must be a 2-D array"),
        (GOOD_W, GOOD_F, GOOD_Y[:3], r"'labels' parameter must be a 1-D array of length n = 4"),
        (GOOD_W, GOOD_F, np.array([0, 5, 1, 3]), r"integers in 0\.\.2 .* Got 5 at position 1"),
        (GOOD_W, GOOD_F, np.array([0, -1, 1, 2]), r"integers in 0\.\.2 .* Got -1 at position 1"),
        (GOOD_W, GOOD_F, np.array([0, 0, 1, 1]), r"each of the k = 3 classes .* class 2"),
        (GOOD_W, GOOD_F, np.array([0, 0.5, 1, 2]), r"'labels' parameter must be integers"),
        (GOOD_W, GOOD_F, np.array(["a", "b", "c", "d"]), r"'labels' parameter must be integers"),
        (GOOD_W, GOOD_F, np.array([0, np.nan, 1, 2]), r"'labels' parameter must be integers"),
        (np.full((3, 3), np.nan), GOOD_F, GOOD_Y, r"'W' parameter must be finite .* 9 non-finite"),
        (GOOD_W, np.where(GOOD_F > 0, np.inf, 0.0), GOOD_Y, r"'features' parameter must be finite"),
        (np.array([["a"] * 3] * 3), GOOD_F, GOOD_Y, r"'W' parameter must be an array of real"),
    ],
)
def test_bad_arrays(W, features, labels, match):
    with pytest.raises(SpecError, match=match):
        check_trained(W, features, labels)


def test_whole_float_labels_are_accepted():
    trained = check_trained(GOOD_W, GOOD_F, GOOD_Y.astype(float))
    assert trained.labels.dtype == np.int64
    np.testing.assert_array_equal(trained.counts, [2, 1, 1])


def test_bad_files_fail_with_one_line(tmp_path, cli):
    np.savez(tmp_path / "missing.npz", W=GOOD_W, features=GOOD_F)
    (tmp_path / "garbage.npz").write_bytes(b"not a zip archive")
    np.savez(tmp_path / "nan.npz", W=GOOD_W * np.nan, features=GOOD_F, labels=GOOD_Y)
    np.savez(tmp_path / "shape.npz", W=GOOD_W, features=GOOD_F.T[:2], labels=GOOD_Y)
    np.savez(tmp_path / "empty.npz", W=np.eye(4, 3), features=GOOD_F, labels=GOOD_Y)
    np.savez(tmp_path / "obj.npz", W=np.array([{}], dtype=object), features=GOOD_F, labels=GOOD_Y)
    np.save(tmp_path / "W.npy", GOOD_W)
    (tmp_path / "W.txt").write_text("1 2 3")
    cases = [
        (["missing.npz"], "missing labels; keys found: W, features"),
        (["garbage.npz"], "readable .npz archive"),
        (["nope.npz"], "no such file"),
        (["nan.npz"], "'W' parameter must be finite"),
        (["shape.npz"], "--features must be of shape (n, 3)"),
        (["shape.npz", "--features-layout", "dn"], "--features must be of shape (3, n)"),
        (["empty.npz"], "no example of class 3"),
        (["obj.npz"], "readable .npz archive"),
        (["W.npy"], "--features must be an .npy file"),
        (["W.npy", "--features", "x.npy", "--labels", "y.npy"], "no such .npy file"),
        (["W.txt"], "an .npz archive or an .npy file"),
        (["missing.npz", "--labels", "y.npy"], "--labels must be left unset"),
        (["nan.npz", "--loss", "cdt"], None),  # file checked first: NaN reported
    ]
    for argv, message in cases:
        argv = [str(tmp_path / argv[0]), *argv[1:]]
        code, out, err = cli("analyze", *argv)
        assert code == 2, (argv, err)
        assert out == ""
        assert err.count("\n") == 1 and err.startswith("ucfm-svm analyze: error: ")
        assert message is None or message in err, (message, err)
    code, _, err = cli("analyze", str(tmp_path / "W.npy"), "--features-layout", "xy")
    assert code == 2 and "invalid choice" in err


def test_cli_report_and_json(tmp_path, cli):
    spec = Spec.from_loss(COUNTS, "ldt", gamma=0.5)
    result = solve_convex(spec)
    path = collapsed_file(tmp_path / "f.npz", result.W, result.H_mean, spec.counts, layout="dn")
    out_json = tmp_path / "a.json"
    code, out, err = cli(
        "analyze", str(path), "--loss", "ldt", "--gamma", "0.5", "--features-layout", "dn",
        "--json", str(out_json),
    )  # fmt: skip
    assert code == 0, err
    assert "distance to prediction" in out and "squared norm ratio" in out
    data = json.loads(out_json.read_text())
    for key in ("nc1", "classifier_distance_to_prediction", "embedding_distance_to_prediction"):
        assert key in data
    assert data["classifier_distance_to_prediction"] < SAME
    assert data["spec"]["counts"] == list(spec.counts)
    code, out, _ = cli("analyze", str(path), "--features-layout", "dn", "--json", "-")
    assert code == 0
    assert json.loads(out)["classifier_distance_to_prediction"] > 0.1  # measured against CE
    code, _, err = cli("analyze", str(path), "--features-layout", "dn", "--loss", "ldt")
    assert code == 2 and "--gamma" in err
