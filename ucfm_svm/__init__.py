"""ucfm-svm: certified geometry of the unconstrained features model on label-imbalanced data.

The library computes the global minimizers of the cost-sensitive SVM that cross-entropy and its
logit-adjusted variants converge to on the unconstrained features model (UF-CS-SVM), certifies
them with a convex lower bound, and reports the geometry (norms and angles) of classifiers and
embeddings.
"""

from .api import METHODS, solve
from .errors import SolverError, SpecError, UcfmError
from .result import Result
from .solvers.convex import solve_convex
from .spec import Spec, counts_from_labels, longtail_counts, step_counts

__all__ = [
    "METHODS",
    "Result",
    "SolverError",
    "Spec",
    "SpecError",
    "UcfmError",
    "counts_from_labels",
    "longtail_counts",
    "solve",
    "solve_convex",
    "step_counts",
]
__version__ = "0.1.0"
