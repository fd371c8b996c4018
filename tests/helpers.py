"""Helpers shared by the tests."""

from __future__ import annotations

import numpy as np


def rel_fro(a: np.ndarray, b: np.ndarray) -> float:
    """Relative Frobenius distance ``||a - b|| / ||b||``."""
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def psd_sqrt(M: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semidefinite matrix (eigenvalues clipped at 0)."""
    vals, vecs = np.linalg.eigh((M + M.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
