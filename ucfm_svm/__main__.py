"""``python -m ucfm_svm`` runs the command-line interface."""

import sys

try:
    from .cli import entry
except KeyboardInterrupt:  # Ctrl-C while the package is still importing
    print("ucfm-svm: interrupted", file=sys.stderr)
    sys.exit(130)

entry()
