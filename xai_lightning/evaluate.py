"""Re-score the saved checkpoints of an experiment's runs on every split; one tidy table of results.

``python evaluate.py runs/quickstart`` writes ``runs/quickstart/evaluation/metrics.csv`` with one row
per (run, seed, split, metric), the shape pandas aggregates across seeds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

from xai_lightning.data.splits import SPLITS
from xai_lightning.runs import Run, find_runs


@torch.no_grad()
def evaluate_run(run: Run, splits: tuple[str, ...] = SPLITS, checkpoint: str = "best") -> pd.DataFrame:
    """Metrics of one run's checkpoint on each split, computed with the model's own torchmetrics.

    Evaluation always uses the deterministic transform, also on the train split.
    """
    model = run.load_model(checkpoint).eval()
    data = run.load_datamodule()
    data.setup()
    rows = []
    for split in splits:
        if data.frame(split).empty:
            continue
        metrics = model.make_metrics()
        loader = torch.utils.data.DataLoader(data.dataset(split), batch_size=data.eval_batch_size)
        for batch in loader:
            model.update_metrics(metrics, batch)
        values = metrics.compute()
        per_class = values.pop("class_acc")
        values.update({f"acc/{name}": value for name, value in zip(model.class_names, per_class)})
        rows += [
            {"run": run.name, "seed": run.seed, "split": split, "metric": name, "value": float(value)}
            for name, value in values.items()
        ]
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description="Re-score the checkpoints of an experiment's runs.")
    parser.add_argument("experiment_dir", type=Path, help="experiment folder (or a single run folder)")
    parser.add_argument("--checkpoint", choices=["best", "last"], default="best")
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS))
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <experiment_dir>/evaluation)")
    args = parser.parse_args(argv)

    runs = find_runs(args.experiment_dir)
    table = pd.concat([evaluate_run(run, tuple(args.splits), args.checkpoint) for run in runs], ignore_index=True)
    out = args.out or args.experiment_dir / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "metrics.csv", index=False)
    summary = table[table["metric"].isin(["loss", "loss_ce", "loss_bce", "acc", "balanced_acc", "seg_iou"])]
    print(summary.pivot_table(index=["run", "split"], columns="metric", values="value").round(4).to_string())
    print(f"\nPer-run metrics: {out / 'metrics.csv'}")
    return table
