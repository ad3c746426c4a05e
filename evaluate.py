"""Evaluate trained runs: ``python evaluate.py runs/quickstart`` (see README.md)."""

from xai_lightning.evaluate import main

if __name__ == "__main__":
    main()
