"""Every docstring example of the xai_lightning package runs as a doctest: one test per module that has examples.

A collection that attempts too few examples fails, so a change that silently stops examples from running cannot pass.
"""

from __future__ import annotations

import doctest
import functools
import importlib
import io
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest
import torch

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "xai_lightning"

#: Examples the package attempted when this floor was set (117), rounded down to leave room for moves.
#: Raise it when examples are added; a drop below it means examples stopped being collected or run.
MIN_EXAMPLES = 100

OPTIONFLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules_with_examples() -> list[str]:
    """Modules whose source holds a ``>>>`` prompt, found from the files alone.

    Reading files instead of importing every module (as ``pkgutil.walk_packages`` does with packages)
    keeps modules without examples, such as the Lightning callbacks, out of the import time.
    """
    names = {_module_name(path) for path in PACKAGE_DIR.rglob("*.py") if ">>>" in path.read_text(encoding="utf-8")}
    return sorted(names)


MODULES = _modules_with_examples()


class ModuleRun(NamedTuple):
    """What running one module's examples gave: examples found, attempted (not skipped), failed, and the report."""

    found: int
    attempted: int
    failed: int
    report: str


@functools.cache
def run_examples(module_name: str) -> ModuleRun:
    """Run the examples of one module under fixed print settings, once per session."""
    module = importlib.import_module(module_name)
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
    report = io.StringIO()
    tests = doctest.DocTestFinder().find(module, module_name)
    # Outputs are written for the libraries' default print settings; pin them so that neither another test
    # nor the terminal (pandas sizes frames to it when run interactively) can change what an example prints.
    torch.set_printoptions(profile="default")
    with np.printoptions(precision=8, linewidth=75, threshold=1000, suppress=False, legacy=False):
        with pd.option_context("display.width", 80, "display.max_columns", 20, "display.max_rows", 60):
            for test in tests:
                runner.run(test, out=report.write)
    found = sum(len(test.examples) for test in tests)
    return ModuleRun(found, runner.tries, runner.failures, report.getvalue())


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name: str) -> None:
    run = run_examples(module_name)
    # The source shows a prompt: an example the finder cannot see (in a comment, or on an object whose
    # __module__ is another module) would otherwise pass without ever running.
    assert run.found > 0, f"{module_name} shows '>>>' but no docstring example was collected"
    assert run.failed == 0, f"{run.failed} of {run.attempted} examples failed in {module_name}:\n{run.report}"


def test_the_collection_attempts_examples() -> None:
    assert any(name.startswith("xai_lightning.metrics.") for name in MODULES), MODULES
    attempted = sum(run_examples(name).attempted for name in MODULES)
    assert attempted >= MIN_EXAMPLES, f"only {attempted} docstring examples ran (floor {MIN_EXAMPLES})"
