"""Solvers of the UF-CS-SVM: the convex program, the non-convex solver, the closed forms and their
certificates."""
