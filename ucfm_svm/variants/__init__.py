"""Model variants beyond the paper's UF-CS-SVM (docs/theory.md §11, §12).

- :mod:`.bias`: an unregularized classifier bias (``Spec.bias == "free"``);
- :mod:`.nonnegative`: non-negative (post-ReLU) features (``Spec.features == "nonnegative"``);
- :mod:`.nonconvex`: the factored problem on ``(W, b, H)`` (with ``H >= 0``) for both;
- :mod:`.certificate`: their weak-duality lower bounds;
- :mod:`.routes`: which method solves which model (:func:`.routes.solve_variant`);
- :mod:`.study`: the curves and tables that compare the three models.

This package sits at the level of ``solvers/`` (it imports ``spec``, ``geometry``, ``result``
and ``solvers``; ``api`` dispatches to it). cvxpy is reached only through
``ucfm_svm.solvers.convex`` (imported inside functions).
"""
