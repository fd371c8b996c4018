"""Specification: count profiles, loss presets, validation."""

from __future__ import annotations

import numpy as np
import pytest

from ucfm_svm import Spec, SpecError, counts_from_labels, longtail_counts, step_counts
from ucfm_svm.spec import svm_hyperparameters


def test_step_counts_majority_first():
    assert step_counts(6, 10, 1 / 3, 2).tolist() == [20, 20, 20, 20, 2, 2]


def test_longtail_matches_cifar10_lt_formula():
    counts = longtail_counts(10, 100, 5000)
    expected = [int(5000 * 100 ** (-c / 9)) for c in range(10)]
    assert counts.tolist() == expected
    assert counts[0] == 5000 and counts[-1] == 50


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 1, "R": 10, "rho": 0.5}, "'k' parameter"),
        ({"k": 5, "R": 10, "rho": 0.5}, "'rho' parameter must be such that rho \\* k"),
        ({"k": 4, "R": 0.5, "rho": 0.5}, "'R' parameter must be a finite number >= 1"),
        ({"k": 4, "R": 2.5, "rho": 0.5}, "'R' parameter must be such that R \\* n_min"),
        ({"k": 4, "R": 10, "rho": 1.0}, "'rho' parameter"),
        # R = 1e300 was an OverflowError traceback (ucfm-svm plot ratio --range 1,1e300)
        ({"k": 4, "R": 1e300, "rho": 0.5}, "'R' parameter must be such that R \\* n_min is at"),
    ],
)
def test_step_rejects(kwargs, match):
    with pytest.raises(SpecError, match=match):
        step_counts(**kwargs)


def test_longtail_rejects_empty_tail():
    with pytest.raises(SpecError, match="'imbalance_factor'"):
        longtail_counts(10, 1000, 100)


def test_cdt_scales_sum_to_k_and_grow_with_counts():
    counts = np.array([100, 100, 10, 10])
    scales, margins = svm_hyperparameters(counts, "cdt", gamma=0.5)
    assert scales.sum() == pytest.approx(4)
    assert scales[0] / scales[2] == pytest.approx(np.sqrt(10))
    assert np.all(margins == 1)


def test_ldt_margins_are_inverse_cdt_scales():
    counts = np.array([100, 100, 10, 10])
    cdt_scales, _ = svm_hyperparameters(counts, "cdt", gamma=0.5)
    scales, margins = svm_hyperparameters(counts, "ldt", gamma=0.5)
    assert np.all(scales == 1)
    np.testing.assert_allclose(margins, 1 / cdt_scales)
    # F4: LDT at gamma = 1/2 gives delta_c proportional to n_c^{-1/2}
    np.testing.assert_allclose(margins * np.sqrt(counts), margins[0] * np.sqrt(counts[0]))


@pytest.mark.parametrize("loss", ["ce", "wce", "la", "ldam"])
def test_ce_limit_losses_leave_no_trace(loss):
    scales, margins = svm_hyperparameters(np.array([5, 1]), loss)
    assert np.all(scales == 1) and np.all(margins == 1)


def test_vs_uses_cdt_scales():
    counts = np.array([50, 5, 5])
    vs = svm_hyperparameters(counts, "vs", gamma=0.3, tau=1.0)
    cdt = svm_hyperparameters(counts, "cdt", gamma=0.3)
    np.testing.assert_allclose(vs[0], cdt[0])


@pytest.mark.parametrize(
    ("loss", "kw", "match"),
    [
        ("cdt", {}, "'gamma' parameter must be given"),
        ("ce", {"gamma": 0.5}, "'gamma' parameter must be left unset"),
        ("cdt", {"gamma": 1e4}, "'gamma' parameter must be small enough"),
        ("cdt", {"gamma": float("nan")}, "'gamma' parameter must be a finite number"),
        ("ldam", {"tau": 1.0}, "'tau' parameter"),
        ("nope", {}, "'loss' parameter must be one of"),
    ],
)
def test_preset_rejects(loss, kw, match):
    with pytest.raises(SpecError, match=match):
        svm_hyperparameters(np.array([1000, 1]), loss, **kw)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"counts": (5, 0)}, "'counts' parameter"),
        ({"counts": (5, -1)}, "'counts' parameter"),
        ({"counts": (5, 1.5)}, "'counts' parameter"),
        ({"counts": (5,)}, "at least 2"),
        # 1e19 fits uint64 but not int64: it was reported as "Got -9223372036854775808"
        ({"counts": (10**19, 1)}, "up to 2\\^53 .*Got 1e\\+19 at position 0"),
        ({"counts": (5, 5), "scales": (1, 0)}, "'scales' parameter must be a list of finite pos"),
        ({"counts": (5, 5), "margins": (1, np.inf)}, "'margins' parameter"),
        ({"counts": (5, 5), "margins": (1, 1, 1)}, "of length 2"),
        ({"counts": (5, 5), "dim": 0}, "'dim' parameter"),
        ({"counts": (5, 5), "dim": 1e20}, "'dim' parameter"),  # was a numpy ValueError
    ],
)
def test_spec_rejects(kwargs, match):
    with pytest.raises(SpecError, match=match):
        Spec.custom(**kwargs)


def test_spec_is_frozen_and_round_trips():
    spec = Spec.from_loss([10, 10, 1, 1], "ldt", gamma=0.5)
    with pytest.raises(AttributeError):
        spec.dim = 3
    assert Spec.from_dict(spec.to_dict()) == spec
    assert spec.dim == 4 and spec.k == 4 and spec.n == 22


def test_step_groups():
    spec = Spec.from_loss(step_counts(6, 10, 1 / 3))
    majority, minority = spec.step_groups()
    assert majority.tolist() == [0, 1, 2, 3] and minority.tolist() == [4, 5]
    assert Spec.from_loss([3, 2, 1]).step_groups() is None


def test_labels_files(tmp_path):
    labels = np.array([0, 0, 0, 2, 2, 5])
    np.save(tmp_path / "y.npy", labels)
    (tmp_path / "y.csv").write_text("label\n" + "\n".join(map(str, labels)) + "\n")
    (tmp_path / "y.txt").write_text(" ".join(map(str, labels)))
    for name in ("y.npy", "y.csv", "y.txt"):
        assert counts_from_labels(tmp_path / name).tolist() == [3, 2, 1]


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("empty.txt", "", "non-empty"),
        ("float.txt", "0 1 1.5", "integer labels"),
        ("word.csv", "0\nx\n1", "integer labels"),
        ("one.txt", "3 3 3", "at least 2 distinct"),
        ("y.json", "[0, 1]", "ending in .npy"),
        # an (id, label) table: its ids used to be counted as labels
        ("table.csv", "id,label\n0,1\n1,1\n2,0\n", "one label per line"),
    ],
)
def test_bad_label_files(tmp_path, name, content, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(SpecError, match=match):
        counts_from_labels(tmp_path / name)


def test_label_array_must_be_a_vector(tmp_path):
    np.save(tmp_path / "table.npy", np.array([[0, 1], [1, 1], [2, 0]]))  # was flattened
    with pytest.raises(SpecError, match="a vector of integer labels"):
        counts_from_labels(tmp_path / "table.npy")
    np.save(tmp_path / "column.npy", np.array([[0], [1], [1]]))
    assert counts_from_labels(tmp_path / "column.npy").tolist() == [1, 2]


def test_huge_integer_labels_stay_distinct(tmp_path):
    # beyond int64: the cast used to map both to the same integer and merge the two classes
    (tmp_path / "big.txt").write_text("1e20\n2e20\n2e20\n0\n")
    assert counts_from_labels(tmp_path / "big.txt").tolist() == [1, 1, 2]


def test_missing_and_corrupt_label_files(tmp_path):
    with pytest.raises(SpecError, match="readable"):
        counts_from_labels(tmp_path / "missing.npy")
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(SpecError, match="readable"):
        counts_from_labels(tmp_path / "bad.npy")


def test_longtail_is_the_public_generator_rounding_included():
    """LDAM-DRW's get_img_num_per_cls: int(n_max * (1/IF)**(c/(k-1.0))) in Python floats. The
    old floor(x + 1e-9) differs at k=50, IF=128, n_max=128, class 35 (4 there, 3 here)."""
    counts = longtail_counts(50, 128, 128)
    public = [int(128 * (1 / 128) ** (c / (50 - 1.0))) for c in range(50)]
    assert counts.tolist() == public and counts[35] == 3
    assert int(np.floor(128 * 128 ** (-35 / 49) + 1e-9)) == 4  # what the old formula gave


def test_standard_long_tailed_datasets():
    from ucfm_svm.spec import dataset_counts, default_n_max

    assert dataset_counts("cifar10-lt").sum() == 12_406
    assert dataset_counts("cifar100-lt").sum() == 10_847
    assert dataset_counts("cifar100-lt")[0] == 500 and dataset_counts("cifar100-lt")[-1] == 5
    # the default head count follows the CIFAR convention, so --longtail 100,100 is CIFAR-100-LT
    assert default_n_max(100) == 500 and default_n_max(10) == 5000
    np.testing.assert_array_equal(longtail_counts(100, 100), dataset_counts("cifar100-lt"))
    with pytest.raises(SpecError, match="'dataset' parameter"):
        dataset_counts("imagenet")


def test_cli_dataset_and_default_n_max_are_stated(cli, tmp_path):
    code, out, _ = cli("solve", "--dataset", "cifar100-lt", "--json", str(tmp_path / "r.json"))
    assert code == 0 and "cifar100-lt IF=100 (n=10847)" in out
    code, out, _ = cli("solve", "--longtail", "100,100")
    assert code == 0 and "n_max=500 (default 50000 // k)" in out
    code, _, err = cli("solve", "--step", "4,2,0.5", "--imbalance", "5")
    assert code == 2 and "--imbalance must" in err
