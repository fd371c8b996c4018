"""The digits study code path (seconds): data, hand-written backprop, measures, figure, script."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.figure import Figure

from ucfm_svm import SpecError
from ucfm_svm.plots.study import study_figure
from ucfm_svm.regularized.losses import loss_params
from ucfm_svm.runs.study import (
    K,
    StudyConfig,
    checkpoint_epochs,
    digits_step,
    features,
    init_mlp,
    loss_and_gradients,
    run_study,
)

TINY = StudyConfig(ratios=(10.0,), hidden=(8,), dim=10, epochs=6, checkpoints=3, n_maj=20, lr=0.01)


def test_digits_step_refuses_more_than_the_rarest_digit():
    with pytest.raises(SpecError, match="'n_maj' parameter must be at most 174"):
        digits_step(175, 5, np.random.default_rng(0))


def test_digits_step_counts_and_split():
    data = digits_step(40, 10, np.random.default_rng(0))
    counts = np.bincount(data["y_train"], minlength=K)
    np.testing.assert_array_equal(counts, [40] * 5 + [4] * 5)
    assert data["x_train"].shape == (64, 220)
    assert data["x_train"].shape[1] + data["x_test"].shape[1] == 1797  # disjoint, all images
    assert data["x_train"].min() >= 0.0 and data["x_train"].max() <= 1.0


@pytest.mark.parametrize(("loss", "gamma"), [("ce", None), ("ldt", 0.5), ("vs", 0.5)])
def test_backprop_matches_finite_differences(loss, gamma):
    rng = np.random.default_rng(3)
    counts = np.array([6, 6, 2, 2])
    y = np.repeat(np.arange(4), counts)
    x = rng.normal(size=(5, y.size))
    params = init_mlp(5, (7, 6), 4, 4, rng)
    lp = loss_params(loss, counts, gamma=gamma, tau=1.0 if loss == "vs" else None)
    _, grads, _ = loss_and_gradients(params, x, y, lp, weight_decay=0.01)
    eps = 1e-6
    for key, p in params.items():
        for idx in [(0,) * p.ndim, tuple(s - 1 for s in p.shape)]:
            old = p[idx]
            p[idx] = old + eps
            up = loss_and_gradients(params, x, y, lp, 0.01)[0]
            p[idx] = old - eps
            down = loss_and_gradients(params, x, y, lp, 0.01)[0]
            p[idx] = old
            # central differences: error O(eps^2) plus rounding ~1e-16/eps = 1e-10
            assert grads[key][idx] == pytest.approx((up - down) / (2 * eps), abs=1e-7), key


def test_init_centres_classifier_rows_and_features_are_linear():
    params = init_mlp(64, (8,), 12, K, np.random.default_rng(0))
    np.testing.assert_allclose(params["W"].sum(axis=0), 0.0, atol=1e-12)
    h, acts = features(params, np.ones((64, 3)))
    assert h.shape == (12, 3) and len(acts) == 3
    assert (acts[1] >= 0).all() and (h < 0).any()  # ReLU hidden layer, linear features


def test_smoke_run_json_and_figure(tmp_path):
    data = run_study(TINY)
    assert [run["loss"] for run in data["runs"]] == ["ce", "cdt", "ldt", "vs"]
    for run in data["runs"]:
        assert [h["epoch"] for h in run["history"]] == checkpoint_epochs(6, 3).tolist()
        assert run["counts"] == [20] * 5 + [2] * 5
        assert 0.0 <= run["history"][-1]["classifier_distance_to_prediction"] <= 2.0
    # the prediction's exact facts (THEORY F4): LDT gamma 1/2 gives an ETF of classifiers
    ldt = next(run for run in data["runs"] if run["loss"] == "ldt")
    assert ldt["predicted_classifier_norm_ratio"] == pytest.approx(1.0, rel=1e-6)
    assert ldt["classifier_distance_etf_to_prediction"] < 1e-6
    json.dumps(data, allow_nan=False)
    fig = study_figure(data)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    fig.savefig(tmp_path / "study.png")


def test_script_smoke(tmp_path):
    from scripts.digits_study import main

    assert (
        main(["--epochs", "3", "--ratios", "5", "--checkpoints", "2", "--out", str(tmp_path)]) == 0
    )
    data = json.loads((tmp_path / "study.json").read_text())
    assert len(data["runs"]) == 4 and (tmp_path / "study.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 5}, "'dim' parameter must be an integer >= 9"),
        ({"optimizer": "lbfgs"}, "'optimizer' parameter must be one of sgd, adam"),
        ({"ratios": (7.0,)}, "'ratios' parameter must be numbers R >= 1 that divide n_maj = 150"),
        ({"ratios": (0.5,)}, "'ratios' parameter must be a finite number >= 1"),
        ({"lr": 0}, "'lr' parameter"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(SpecError, match=match):
        StudyConfig(**kwargs)
