"""Two proved facts of docs/theory.md §4, each checked against an independent route."""

from __future__ import annotations

import numpy as np

from tests.helpers import rel_fro
from ucfm_svm import Spec, solve_convex
from ucfm_svm.geometry import cosines_from_gram
from ucfm_svm.solvers.theory import solve_theory

#: Clarabel's Grams agree with the closed form to ~1e-8 at these sizes (test_theory.py).
CONVEX_TOL = 1e-6


def test_ldt_is_ce_with_effective_counts():
    """§4: with Delta = I, the margins delta act as counts n_c delta_c^2. The LDT spec's
    classifier Gram equals the CE Gram at the effective counts (solved by the convex route), and
    its class means are the CE means scaled by delta_c."""
    rng = np.random.default_rng(5)
    for _ in range(3):
        counts = rng.integers(1, 200, size=5)
        margins = np.exp(rng.uniform(-1.0, 1.0, size=5))
        ldt = solve_theory(Spec.custom(counts, margins=margins))
        # Counts must be integers: scale n_eff by 1e4 and round. A common factor of all counts
        # rescales the Grams and leaves normalized Grams and cosines unchanged.
        scale = 1e4
        n_eff = np.rint(counts * margins**2 * scale).astype(int)
        ce = solve_convex(Spec.custom(n_eff))
        G_ldt = ldt.classifier_gram / np.trace(ldt.classifier_gram)
        G_ce = ce.classifier_gram / np.trace(ce.classifier_gram)
        assert rel_fro(G_ldt, G_ce) < 1e-4  # rounding n_eff to integers: ~1e-5 relative
        H_ce = ce.H_mean * margins[None, :]
        C_ldt = cosines_from_gram(ldt.embedding_gram)
        assert rel_fro(C_ldt, cosines_from_gram(H_ce.T @ H_ce)) < 1e-4


def test_cdt_half_is_self_dual_for_any_counts():
    """§4: CDT at gamma = 1/2 gives classifier and class-mean cosines that coincide, for any
    counts (closed form), and the convex solve agrees."""
    rng = np.random.default_rng(7)
    for _ in range(5):
        counts = rng.integers(1, 500, size=int(rng.integers(3, 9)))
        spec = Spec.from_loss(counts, "cdt", gamma=0.5)
        r = solve_theory(spec)
        np.testing.assert_allclose(
            cosines_from_gram(r.classifier_gram), cosines_from_gram(r.embedding_gram), atol=1e-12
        )
    c = solve_convex(spec)
    assert rel_fro(cosines_from_gram(c.classifier_gram), cosines_from_gram(c.embedding_gram)) < (
        CONVEX_TOL
    )
