"""Model metrics of a run's checkpoint per split, computed again with the model's own torchmetrics."""

from __future__ import annotations

import pandas as pd
import torch

from xai_lightning.data.splits import SPLITS
from xai_lightning.runs import LoadedRun, Run, as_loaded


@torch.no_grad()
def evaluate_run(run: Run | LoadedRun, splits: tuple[str, ...] = SPLITS, checkpoint: str = "best") -> pd.DataFrame:
    """One row per (split, metric) of the run's checkpoint, with the deterministic transform on every split."""
    loaded = as_loaded(run, checkpoint)
    model, data, run = loaded.model, loaded.data, loaded.run
    rows = []
    for split in splits:
        if data.frame(split).empty:
            continue
        metrics = model.make_metrics()
        for batch in torch.utils.data.DataLoader(data.dataset(split), batch_size=data.eval_batch_size):
            model.update_metrics(metrics, batch)
        values = metrics.compute()
        per_class = values.pop("class_acc")
        values.update({f"acc/{name}": value for name, value in zip(model.class_names, per_class)})
        rows += [
            {"run": run.name, "seed": run.seed, "split": split, "metric": name, "value": float(value)}
            for name, value in values.items()
        ]
    return pd.DataFrame(rows)
