"""A run's training curves (validation loss, accuracy and overall TKO per epoch), read back from its W&B files."""

from __future__ import annotations

import pandas as pd

from xai_lightning.runs import WANDB_DIR, Run
from xai_lightning.tracking import read_wandb_history

CURVE_KEYS = ("val/loss", "val/acc", "val/balanced_acc")


def training_curves(run: Run, experiment: str) -> pd.DataFrame:
    """Per-epoch validation curves of a run (model metrics and overall TKO), read from its W&B files."""
    rows = []
    for wandb_dir in sorted((run.path / WANDB_DIR).glob("*run-*")):
        history = read_wandb_history(wandb_dir, wait=0)
        if "epoch" not in history.columns:
            continue
        keys = [k for k in history.columns if k in CURVE_KEYS or (k.startswith("xai/val/tko/") and k.count("/") == 3)]
        long = history[["epoch", *keys]].melt(id_vars="epoch", var_name="key", value_name="value").dropna()
        rows.append(long)
    if not rows:
        return pd.DataFrame(columns=["experiment", "seed", "epoch", "key", "value"])
    curves = pd.concat(rows, ignore_index=True).drop_duplicates(["epoch", "key"], keep="last")
    return curves.assign(experiment=experiment, seed=run.seed)
