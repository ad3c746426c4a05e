"""Where an attribution pass's result goes: the console table, the per-image CSV and the W&B media.

Each sink takes a :class:`~xai_lightning.scoring.PassResult` and writes one thing; the callback calls
them on rank zero after every pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_info

from xai_lightning.atomic import write_atomically
from xai_lightning.data.transforms import denormalize
from xai_lightning.metrics.names import FAITHFULNESS_METRICS, OVERALL
from xai_lightning.reporting.heatmaps import heatmap_strip, tiled_mask
from xai_lightning.scoring import BatchScores, PassResult


@dataclass
class Panel:
    """One image with every method's map, for a heatmap strip."""

    image: np.ndarray
    mask: np.ndarray
    maps: list[torch.Tensor]
    methods: list[str]
    tko: dict[str, float]
    index: int


@dataclass
class HeatmapPanels:
    """The first ``budget`` images of a pass with their maps (kept on the host, a few per pass)."""

    budget: int
    #: Whether the images are ImageNet-normalised (``data.normalize``), i.e. need undoing for display.
    normalized: bool = True
    panels: list[Panel] = field(default_factory=list)

    def add(self, batch: dict[str, Any], scored: BatchScores) -> None:
        room = self.budget - len(self.panels)
        if room <= 0:
            return
        images = denormalize(batch["image"][:room], normalized=self.normalized).permute(0, 2, 3, 1).numpy()
        shown = list(scored.maps)
        for i in range(len(images)):
            self.panels.append(
                Panel(
                    image=images[i],
                    mask=batch["mask"][i, 0].numpy(),
                    maps=[scored.maps[name][i].cpu() for name in shown],
                    methods=shown,
                    tko={name: float(scored.scores[name]["tko"][i]) for name in shown},
                    index=int(batch["index"][i]),
                )
            )


def print_pass_table(result: PassResult) -> None:
    """The pass's main numbers per method, best TKO first, and its failures."""
    ok = result.scored
    faithfulness = [metric for metric in FAITHFULNESS_METRICS if metric in result.values]
    table = pd.DataFrame(
        {
            "tko": [result.value("tko", n) for n in ok],
            "win_rate": [result.win_rate.get(OVERALL, {}).get(n) for n in ok],
            "pointing": [result.value("pointing_game", n) for n in ok],
            "auroc": [result.value("pixel_auroc", n) for n in ok],
            **{metric.removesuffix("_auc"): [result.value(metric, n) for n in ok] for metric in faithfulness},
            "s/img": [result.seconds_per_image.get(n) for n in ok],
        },
        index=pd.Index(ok, name="method"),
    ).sort_values("tko", ascending=False)
    n = int(result.counts.get("n_images", 0))
    lines = [f"[xai] {result.split} split, epoch {result.epoch}: {n} defect images", table.round(3).to_string()]
    lines += [f"[xai] FAILED {name}: {error}" for name, error in result.failed.items()]
    rank_zero_info("\n".join(lines))


def write_pass_csv(result: PassResult, folder: Path, stage: str = "") -> Path | None:
    """``<folder>/<split><stage>_epoch<NNN>.csv``: one row per image with every score and the winner."""
    if not len(result.per_image):
        return None
    table = result.table()
    return write_atomically(
        folder / f"{result.split}{stage}_epoch{result.epoch:03d}.csv", lambda p: table.to_csv(p, index=False)
    )


def log_pass_to_wandb(logger: WandbLogger, result: PassResult, panels: list[Panel]) -> None:
    """The per-image table and one heatmap strip per panel, in one W&B call."""
    import wandb

    images = []
    for panel in panels:
        strip = heatmap_strip(panel.image, panel.maps)
        caption = " | ".join(["image"] + [f"{m} {panel.tko[m]:.2f}" for m in panel.methods])
        ground_truth = {"mask_data": tiled_mask(panel.mask, len(panel.methods) + 1), "class_labels": {1: "defect"}}
        images.append(wandb.Image(strip, caption=caption, masks={"ground_truth": ground_truth}))
    payload: dict[str, Any] = {f"xai/{result.split}/table": wandb.Table(dataframe=result.table())}
    if images:
        payload[f"xai/{result.split}/heatmaps"] = images
    # One call per pass; no explicit step (mixing steps with WandbLogger's calls drops records).
    logger.experiment.log({**payload, "trainer/global_step": result.step})
