"""Vocabulary scale (§14): the resolvent quadrature against the exact routes, its error bounds,
and the count sources ``--counts-file`` and a chunked ``--labels``.

The exact references are the dense SVD (``theory.scaled_logit_matrix``, small k) and the secular
route (``route="secular"``, exact to rounding, O(m^2)). The quadrature's stated bound on every
squared norm is ``eta_low + eta_high + 2 * rounding`` (about 1e-11 at k = 3000); the measured
error is ~1e-14, so the 1e-10 tolerance of the issue is checked with room and the stated bound
itself is checked too.
"""

from __future__ import annotations

import numpy as np
import pytest

from ucfm_svm import SolverError, Spec, SpecError
from ucfm_svm import spec as spec_module
from ucfm_svm.result import OPTIMAL
from ucfm_svm.solvers.structured import (
    logit_factors,
    quadrature_nodes,
    resolvent_diagonals,
    structured_solution,
)
from ucfm_svm.solvers.theory import scaled_logit_matrix
from ucfm_svm.spec import counts_from_file, counts_from_labels

NORM_TOL = 1e-10


def _zipf_spec(m: int, loss: str = "ce", gamma: float | None = None) -> Spec:
    """``m`` distinct counts with a Zipf-like profile (the head ~ m^1.1, the tail 1, 2, ...)."""
    ranks = np.arange(1, m + 1)
    counts = np.floor(10.0 * m**1.1 / ranks**1.1).astype(np.int64) + (m - ranks)
    return Spec.from_loss(counts, loss, gamma=gamma)


@pytest.mark.parametrize(("loss", "gamma"), [("ce", None), ("cdt", 0.3), ("ldt", 0.5)])
def test_resolvent_matches_secular_route_at_moderate_m(loss, gamma):
    spec = _zipf_spec(3000, loss, gamma)
    assert len(set(spec.counts)) == 3000
    fast = structured_solution(spec)
    exact = structured_solution(spec, route="secular")
    assert fast.status == OPTIMAL and exact.status == OPTIMAL
    np.testing.assert_allclose(fast.classifier_norms, exact.classifier_norms, rtol=NORM_TOL)
    np.testing.assert_allclose(fast.embedding_norms, exact.embedding_norms, rtol=NORM_TOL)
    assert fast.objective == pytest.approx(exact.objective, rel=NORM_TOL)
    # the rigorous bracket holds the exact optimum
    assert fast.lower_bound <= exact.objective * (1 + 1e-15)
    assert fast.rel_gap < 1e-9


def _dense_diagonals(spec: Spec) -> tuple[np.ndarray, np.ndarray, float]:
    A = scaled_logit_matrix(spec)
    U, s, Vt = np.linalg.svd(A)
    keep = s > 1e-13 * s[0]
    U, s, Vt = U[:, keep], s[keep], Vt[keep]
    return (U * U) @ s, (Vt * Vt).T @ s, float(s.sum())


@pytest.mark.parametrize("seed", range(6))
def test_resolvent_bounds_hold_against_dense(seed):
    """Scales over 6 decades make one class dominate ``F`` or ``E`` at some nodes (the
    complement sums of ``_complement``); the stated bounds must still hold."""
    rng = np.random.default_rng(seed)
    k = 40
    spec = Spec.custom(
        rng.integers(1, 500, size=k),
        scales=10 ** rng.uniform(-3, 3, size=k),
        margins=10 ** rng.uniform(-1, 1, size=k),
    )
    u, g = logit_factors(spec)
    res = resolvent_diagonals(g * g, u * u)
    classifier, embedding, nuclear = _dense_diagonals(spec)
    # dense SVD accuracy ~ k eps relative to the largest entry: compare within it
    assert np.max(np.abs(res.classifier - classifier) / classifier) < 1e-9
    assert np.max(np.abs(res.embedding - embedding) / embedding) < 1e-9
    assert res.lower <= nuclear * (1 + 1e-13) and nuclear <= res.upper * (1 + 1e-13)
    assert res.norm_error < 1e-10


def test_quadrature_error_within_its_bound():
    """``sqrt(lambda) h(lambda)`` evaluated in extended precision on a fine grid stays in
    ``[1 - eta_low, 1 + eta_high]`` (the Poisson-summation and tail bounds of §14)."""
    d_min, d_max = 1e-3, 1e5
    t, omega, eta_low, eta_high = quadrature_nodes(d_min, d_max)
    lam = np.geomspace(d_min, d_max, 4001).astype(np.longdouble)
    value = np.sqrt(lam) * np.sum(
        omega.astype(np.longdouble)[None, :] / (lam[:, None] + t.astype(np.longdouble)[None, :]),
        axis=1,
    )
    error = value - 1
    assert error.max() <= eta_high and -error.min() <= eta_low
    assert eta_low < 1e-14 and eta_high < 1e-14


def test_identical_classes_share_one_entry():
    """STEP: two distinct (d, w) pairs; the result equals the per-class computation."""
    spec = Spec.from_loss(np.repeat([50, 5], 2000), "cdt", gamma=0.25)
    result = structured_solution(spec)
    u, g = logit_factors(spec)
    per_class = resolvent_diagonals(g * g, u * u)
    np.testing.assert_allclose(result.classifier_norms**2, per_class.classifier, rtol=1e-13)
    assert result.objective == pytest.approx(per_class.trace, rel=1e-12)
    exact = structured_solution(spec, route="secular")
    np.testing.assert_allclose(result.embedding_norms, exact.embedding_norms, rtol=NORM_TOL)


def test_route_is_validated():
    with pytest.raises(SpecError, match="'route' parameter must be one of resolvent, secular"):
        structured_solution(Spec.from_loss([3, 2, 1]), route="fmm")


def test_full_refuses_beyond_memory(monkeypatch):
    monkeypatch.setattr("ucfm_svm.solvers.structured.FULL_MAX_BYTES", 1000)
    with pytest.raises(SpecError, match="'full' parameter must be left unset at k = 30"):
        structured_solution(Spec.from_loss(list(range(1, 31))), full=True)


# --- count sources -------------------------------------------------------------------------------
def test_counts_file_text_and_npy(tmp_path):
    text = tmp_path / "counts.txt"
    text.write_bytes(b"\xef\xbb\xbf100\r\n50\r\n\r\n 7 \r\n")
    assert list(counts_from_file(text)) == [100, 50, 7]
    npy = tmp_path / "counts.npy"
    np.save(npy, np.array([5, 3, 1], dtype=np.int32))
    assert list(counts_from_file(npy)) == [5, 3, 1]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.txt", b"10\nabc\n", "line 2: 'abc'"),
        ("zero.txt", b"10\n0\n", "count 0 at entry 2"),
        ("half.txt", b"10\n2.5\n", "count 2.5 at entry 2"),
        ("one.txt", b"10\n", "at least 2 class counts"),
        ("latin.txt", b"10\n\xff\n", "UnicodeDecodeError"),
    ],
)
def test_counts_file_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SpecError, match="'counts_file' parameter") as info:
        counts_from_file(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_counts_file_never_unpickles(tmp_path):
    path = tmp_path / "object.npy"
    np.save(path, np.array([1, "a"], dtype=object), allow_pickle=True)
    with pytest.raises(SpecError, match="Object arrays cannot be loaded"):
        counts_from_file(path)


def test_cli_counts_file(cli, tmp_path):
    path = tmp_path / "counts.txt"
    path.write_text("\n".join(str(c) for c in range(200, 0, -1)) + "\n")
    code, out, _ = cli("solve", "--counts-file", str(path), "--method", "structured")
    assert code == 0 and f"counts file {path} (k=200)" in out and "certified" in out
    code, _, err = cli("solve", "--counts-file", str(tmp_path / "missing.txt"))
    assert code == 2 and "--counts-file must" in err and "\n" not in err.strip()
    code, _, err = cli("solve", "--counts-file", str(path), "--counts", "3,2")
    assert code == 2 and "not allowed with argument" in err


@pytest.mark.parametrize("shift", [0, 10**12])
def test_labels_counted_in_chunks(tmp_path, monkeypatch, shift):
    """Several chunks, dense ids (bincount), huge labels (the np.unique merge, switched to
    after a first dense chunk when the large labels come late). Negative labels (PyTorch's
    ignore_index -100, say) are refused, not counted as a class: tests/test_fuzz.py."""
    monkeypatch.setattr(spec_module, "LABEL_CHUNK", 1000)
    rng = np.random.default_rng(3)
    labels = rng.zipf(1.5, 25_000) % 700
    labels[-10:] += shift
    path = tmp_path / "tokens.npy"
    np.save(path, labels.astype(np.int64))
    _, expected = np.unique(labels, return_counts=True)
    np.testing.assert_array_equal(counts_from_labels(path), expected)
    np.save(path, labels[:, None].astype(np.int64))  # a column vector is a vector too
    np.testing.assert_array_equal(counts_from_labels(path), expected)


def test_blocked_and_per_node_routes_agree(monkeypatch):
    """The blocked route (differences after the node sums, a few entries beside it) and the
    per-node route (every difference per node) on weights where some entries may cancel."""
    rng = np.random.default_rng(9)
    k = 300
    spec = Spec.custom(
        rng.integers(1, 500, size=k), scales=10 ** rng.uniform(-3, 1, size=k), margins=np.ones(k)
    )
    u, g = logit_factors(spec)
    d, w = g * g, u * u
    blocked = resolvent_diagonals(d, w)
    monkeypatch.setattr("ucfm_svm.solvers.structured.BLOCKED_MAX_UNSAFE", -1)
    per_node = resolvent_diagonals(d, w)
    np.testing.assert_allclose(blocked.embedding, per_node.embedding, rtol=1e-13)
    np.testing.assert_allclose(blocked.classifier, per_node.classifier, rtol=1e-13)
    classifier, embedding, _ = _dense_diagonals(spec)
    np.testing.assert_allclose(blocked.classifier, classifier, rtol=1e-9)
    np.testing.assert_allclose(blocked.embedding, embedding, rtol=1e-9)


@pytest.mark.parametrize("shuffle", [False, True])
def test_full_grams_on_sorted_and_shuffled_long_tail(shuffle):
    """Sorted counts make every cluster a run of consecutive classes (slices and np.repeat in
    ``_full_geometry``); shuffled ones take the gather path. Both against the dense SVD."""
    from ucfm_svm.solvers.theory import solve_theory
    from ucfm_svm.spec import longtail_counts

    counts = longtail_counts(300, 50, 120)
    if shuffle:
        counts = np.random.default_rng(2).permutation(counts)
    spec = Spec.from_loss(counts, "cdt", gamma=0.3)
    full = structured_solution(spec, full=True)
    dense = solve_theory(spec, fallback=False)
    assert full.status == OPTIMAL
    for ours, ref in ((full.classifier_gram, dense.classifier_gram),
                      (full.embedding_gram, dense.embedding_gram)):
        assert np.linalg.norm(ours - ref) <= 1e-9 * np.linalg.norm(ref)
    product = spec.Delta[:, None] * (full.W @ full.H_mean)
    assert np.linalg.norm(product - dense.logits) <= 1e-9 * np.linalg.norm(dense.logits)


# --- review of issue 18: wide and off-centre spectra -------------------------------------------


@pytest.mark.parametrize(("d_min", "d_max"), [(1e-120, 1e120), (1e60, 1e130)])
def test_quadrature_error_within_its_bound_far_from_one(d_min, d_max):
    """Far from ``lambda = 1``: with a step ``h = 0.28`` the nodes ``x_n = n h`` were rounded by
    ``u |x_n|`` (not one ulp), which moved ``sqrt(lambda) h(lambda)`` by up to 7e-15, twice
    ``eta_high``; a dyadic step makes every node exact."""
    t, omega, eta_low, eta_high = quadrature_nodes(d_min, d_max)
    lam = np.exp(np.linspace(np.log(d_min), np.log(d_max), 4001).astype(np.longdouble))
    value = np.sqrt(lam) * np.sum(
        omega.astype(np.longdouble)[None, :] / (lam[:, None] + t.astype(np.longdouble)[None, :]),
        axis=1,
    )
    error = value - 1
    assert error.max() <= eta_high and -error.min() <= eta_low


def test_off_centre_spectrum_is_scaled_not_overflowed():
    """``d_c`` near 1e213 (a spread of only 1e10): the nodes ``t_n`` reach ``d_max e^72`` and
    overflowed (nan norms). ``A`` is homogeneous: scaling every margin by 1e-100 scales every
    squared norm and the objective by 1e-100 exactly, so the large spec must agree with the
    small one, which the secular route also solves."""
    counts = [1, 10, 100, 1000]
    scales = [1e-30, 1e-35, 1e-32, 1e-31]
    margins = np.array([1e60, 1e70, 1e65, 1e68])
    big = structured_solution(Spec.custom(counts, scales=scales, margins=margins))
    small_spec = Spec.custom(counts, scales=scales, margins=margins * 1e-100)
    small = structured_solution(small_spec)
    exact = structured_solution(small_spec, route="secular")
    assert big.status == OPTIMAL and small.status == OPTIMAL
    np.testing.assert_allclose(big.classifier_norms * 1e-50, exact.classifier_norms, rtol=NORM_TOL)
    np.testing.assert_allclose(big.embedding_norms * 1e-50, exact.embedding_norms, rtol=NORM_TOL)
    np.testing.assert_allclose(small.embedding_norms, exact.embedding_norms, rtol=NORM_TOL)
    assert big.objective * 1e-100 == pytest.approx(exact.objective, rel=NORM_TOL)
    assert big.lower_bound * 1e-100 <= exact.objective * (1 + 1e-15)


def test_spread_beyond_the_safe_range_refuses_cleanly():
    """At the range edges (``d_c`` from 1e-280 to 9e295) the intermediate sums of the quadrature
    cannot be held in double precision: a clear ``SolverError``, not nan norms."""
    spec = Spec.custom([1, 2**53, 5], scales=[1e70, 1e-70, 1.0], margins=[1e-70, 1e70, 1.0])
    with pytest.raises(SolverError, match="decades"):
        structured_solution(spec)


@pytest.mark.parametrize(
    ("d1", "d2"), [(1e-280, 1e-43), (1e-280, 1e-100), (1e60, 1e295), (1e-119, 1e119), (1e-3, 1e5)]
)
def test_two_classes_anywhere_in_range(d1, d2):
    """k = 2 has one nonzero eigenvalue ``mu = d_1 w_2 + d_2 w_1`` (a sum of positive terms), so
    ``[B^{1/2}]_cc = d_c w_c' / sqrt(mu)`` and ``[(A A^T)^{1/2}]_cc = sqrt(mu) w_c'`` (``c' != c``)
    exactly. Spreads up to 237 decades, centred anywhere the spec allows (nan before the
    centring when ``d`` lay far from 1)."""
    d = np.array([d1, d2])
    w = np.array([0.3, 0.7])
    mu = d[0] * w[1] + d[1] * w[0]
    res = resolvent_diagonals(d, w)
    np.testing.assert_allclose(res.embedding, d * w[::-1] / np.sqrt(mu), rtol=1e-12)
    np.testing.assert_allclose(res.classifier, np.sqrt(mu) * w[::-1], rtol=1e-12)
    assert res.lower <= np.sqrt(mu) <= res.upper
