"""The collectives an attribution pass needs under DDP: every process ends a pass with the same failures and rows.

Each process explains its own shard of the image set; these gather what the shards found so that all
processes drop the same methods and log the same values. With one process they return their input.
"""

from __future__ import annotations

from typing import Any

import pandas as pd


def gather_failures(errors: dict[str, str], world_size: int) -> dict[str, str]:
    """Every process's failed methods with their errors (prefixed with the rank), the first error of each."""
    if world_size == 1:
        return dict(errors)
    import torch.distributed as dist

    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, errors)
    merged: dict[str, str] = {}
    for rank, rank_errors in enumerate(gathered):
        for name, error in rank_errors.items():
            merged.setdefault(name, f"rank {rank}: {error}")
    return merged


def gather_rows(rows: list[dict[str, Any]], world_size: int) -> pd.DataFrame:
    """Every process's per-image rows as one table (all processes get the full table)."""
    if world_size == 1:
        return pd.DataFrame(rows)
    import torch.distributed as dist

    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, rows)
    return pd.DataFrame([row for part in gathered for row in part])
