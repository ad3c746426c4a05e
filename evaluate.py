"""Evaluate trained runs: ``python evaluate.py runs/quickstart`` (see README.md)."""

import sys

from xai_lightning.evaluate import main

if __name__ == "__main__":
    # Exit status 1 when a run failed (the others' results are written and the report names it).
    sys.exit(1 if main().attrs.get("failed") else 0)
