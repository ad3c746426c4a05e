"""Running the poster ablation: train the arms, explain every run once, and measure each factor against the poster.

Each training arm is an experiment of its own (``<out>/<arm>/seed<N>``), trained through the seed
launcher, so it resumes and skips finished seeds like ``train.py --seeds``. Every run is explained
once on its test split (cached next to it), and every factor's table is read off those passes.
The statistics are the hierarchical bootstrap of :mod:`xai_lightning.reporting.hierarchical`: seeds
and images resampled, the poster arm and a factor paired by seed and image.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from xai_lightning.ablation.factors import POSTER, POSTER_METHODS, REFERENCES, Factor, explanation_methods
from xai_lightning.atomic import write_atomically
from xai_lightning.errors import RunError
from xai_lightning.runs import FINISHED_FILE, Run, find_runs
from xai_lightning.scoring import ScoringConfig

#: Where each run keeps its ablation pass (re-used by a later invocation).
PASS_FILE = "ablation_test.csv"
#: The one label every arm's values carry, so that the bootstrap pairs arms by seed and image.
PAIRED = "ablation"

#: How every run is explained: the predicted class, every defect image (only-correct is applied per factor),
#: K = |mask|, and the IoU of the top-K set next to TKO.
PASS_SCORING = ScoringConfig(target="prediction", only_correct=False, include_good=False, top_k_iou=True, seed=0)


def train_arms(
    train_script: Path, config_args: list[str], arms: list[Factor], seeds: list[int], out: Path, parallel: int = 1
) -> dict[str, Path]:
    """Train each training arm's seeds into ``<out>/<arm>`` (finished seeds are skipped); their folders."""
    from xai_lightning.experiment import run_experiment

    folders = {}
    for arm in arms:
        folder = out / arm.name
        args = [*config_args, *arm.train_args, "--experiment_dir", str(folder)]
        outcome = run_experiment(str(train_script), args, seeds, parallel)
        failed = {seed: state for seed, state in outcome.items() if state.startswith("failed")}
        if failed:
            raise RunError(f"Arm '{arm.name}': seeds {sorted(failed)} failed ({failed}); re-run to resume them.")
        folders[arm.name] = folder
    return folders


def explained(run: Run, arm: str, early_stage: str) -> pd.DataFrame:
    """The run's per-image scores on its test split (its best checkpoint), computed once and cached."""
    from xai_lightning.evaluation import explain_run
    from xai_lightning.evaluation.settings import configured_methods

    cache = run.xai_dir / PASS_FILE
    if cache.is_file() and cache.stat().st_mtime >= (run.path / FINISHED_FILE).stat().st_mtime:
        return pd.read_csv(cache)
    methods = explanation_methods(configured_methods(run), early_stage, variants=arm == POSTER)
    table = explain_run(run, methods, ("test",), scoring=PASS_SCORING, experiment=arm).per_image
    write_atomically(cache, lambda path: table.to_csv(path, index=False))  # a killed pass leaves no partial cache
    return table


def arm_tables(folders: dict[str, Path], early_stage: str) -> dict[str, pd.DataFrame]:
    """``{arm: per-image table of all its seeds}``."""
    return {
        arm: pd.concat([explained(run, arm, early_stage) for run in find_runs(folder)])
        for arm, folder in folders.items()
    }


def factor_rows(tables: dict[str, pd.DataFrame], factor: Factor) -> pd.DataFrame:
    """The per-image rows a factor is measured on: its arm's, stand-ins renamed, wrong predictions blanked."""
    table = tables[factor.name if factor.trains else POSTER]
    parts = [table[table["method"] == factor.replace.get(m, m)].assign(method=m) for m in POSTER_METHODS]
    parts += [table[table["method"] == reference] for reference in REFERENCES]
    rows = pd.concat(parts, ignore_index=True).assign(experiment=PAIRED)
    if factor.only_correct:
        rows.loc[rows["prediction"] != rows["class"], "value"] = math.nan
    return rows
