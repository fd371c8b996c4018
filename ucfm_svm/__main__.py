"""``python -m ucfm_svm`` runs the command-line interface."""

from .cli import entry

entry()
