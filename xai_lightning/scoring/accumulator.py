"""The rest of an attribution pass: per-batch scores accumulated into one structured result.

:class:`PassAccumulator` keeps the per-class sums in torchmetrics state (so DDP processes sum them)
and the per-image rows; :class:`PassResult` is what a pass found, flattened to ``xai/<split>/...``
keys only where it is logged (:meth:`PassResult.scalars`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from xai_lightning.metrics.collection import LocalizationMetric
from xai_lightning.metrics.names import DEFAULT_WIN_TIES, OVERALL
from xai_lightning.metrics.winrate import WinRate, win_credit
from xai_lightning.scoring.batch import BatchScores
from xai_lightning.scoring.config import ScoringConfig


@dataclass
class PassResult:
    """What one pass found.

    Attributes:
        values: ``{metric: {group: {method: mean}}}``, group = ``overall`` or a class name.
        win_rate: ``{group: {method: rate}}`` over the methods that did not fail.
        counts: ``n_images`` / ``n_excluded`` (of the localisation metrics), ``win_n_images`` /
            ``win_n_excluded`` (of the win-rate) and ``n_empty_mask_skipped`` (good images not explained).
        per_image: one row per image: ids, then ``<metric>/<method>`` columns (NaN: failed or excluded).
        methods: every configured method, in order; ``failed`` maps those that failed to their error.
    """

    split: str
    epoch: int
    step: int
    methods: list[str]
    values: dict[str, dict[str, dict[str, float]]]
    win_rate: dict[str, dict[str, float]]
    counts: dict[str, float]
    per_image: pd.DataFrame
    failed: dict[str, str] = field(default_factory=dict)
    seconds_per_image: dict[str, float] = field(default_factory=dict)
    #: Wall time of the deletion / insertion curves per image, per method (empty when they are off).
    faithfulness_seconds_per_image: dict[str, float] = field(default_factory=dict)
    #: The win-rate's tie rule (the scoring's ``win_ties``), which the table's ``winner`` column follows.
    win_ties: str = DEFAULT_WIN_TIES

    @property
    def scored(self) -> list[str]:
        """The methods that did not fail, in configured order."""
        return [name for name in self.methods if name not in self.failed]

    def value(self, metric: str, method: str, group: str = OVERALL) -> float | None:
        """The mean of ``metric`` for ``method`` in ``group``; None when it has none (no image, or NaN)."""
        return _none_if_nan(self.values.get(metric, {}).get(group, {}).get(method))

    def scalars(self) -> dict[str, float]:
        """Flat ``xai/<split>/<metric>[/<class>]/<method>`` keys, as logged (NaN means are left out)."""
        prefix = f"xai/{self.split}"
        out: dict[str, float] = {}
        for metric, groups in {**self.values, "win_rate": self.win_rate}.items():
            for group, per_method in groups.items():
                for method, value in per_method.items():
                    if not math.isnan(value):
                        out[f"{prefix}/{metric}/{method if group == OVERALL else f'{group}/{method}'}"] = value
        counts = {
            "n_images": "n_images",
            "n_excluded": "n_excluded",
            # Counts stay out of the method namespace (`win_rate/<method>`): a method may be called n_images.
            "win_n_images": "win_rate_n_images",
            "win_n_excluded": "win_rate_n_excluded",
            "n_empty_mask_skipped": "n_empty_mask_skipped",
        }
        out.update({f"{prefix}/{key}": self.counts[name] for name, key in counts.items() if name in self.counts})
        out.update({f"{prefix}/failed/{name}": float(name in self.failed) for name in self.methods})
        out.update({f"{prefix}/sec_per_image/{name}": value for name, value in self.seconds_per_image.items()})
        out.update(
            {f"{prefix}/faithfulness_sec_per_image/{n}": v for n, v in self.faithfulness_seconds_per_image.items()}
        )
        return out

    def summary(self, metrics: tuple[str, ...] = ()) -> dict[str, Any]:
        """The pass in a few numbers (what the callback's history keeps): TKO, win-rate and ``metrics`` per method."""
        ok = self.scored
        return {
            "epoch": self.epoch,
            "step": self.step,
            "split": self.split,
            "n_images": self.counts.get("n_images"),
            "tko": {name: self.value("tko", name) for name in ok},
            "win_rate": {name: _none_if_nan(self.win_rate.get(OVERALL, {}).get(name)) for name in ok},
            **{metric: {name: self.value(metric, name) for name in ok} for metric in metrics},
            "failed": dict(self.failed),
        }

    def table(self) -> pd.DataFrame:
        """The per-image table with a ``winner`` column (what the CSV and the W&B table hold)."""
        frame = self.per_image.copy()
        if len(frame):
            frame["winner"] = winners(frame, self.scored, self.win_ties)
        return frame


class PassAccumulator:
    """Accumulates the :class:`BatchScores` of one pass over a split.

    Args:
        methods: every configured method (display names), in order.
        class_names: the label vocabulary (index → name).
        config: the scoring configuration (which metrics there are).
        device: where the metric state lives (the model's device).
    """

    def __init__(self, methods: list[str], class_names: list[str], config: ScoringConfig, device: torch.device) -> None:
        self.methods, self.class_names, self.config = list(methods), list(class_names), config
        # Plain accumulators: the scores come from score_batch; sums and counts per class sync like TKO.
        self.metrics = {
            name: {metric: LocalizationMetric(class_names=class_names).to(device) for metric in config.metrics}
            for name in self.methods
        }
        self.rows: list[dict[str, Any]] = []
        self.errors: dict[str, str] = {}
        self.seconds = dict.fromkeys(self.methods, 0.0)
        self.faithfulness_seconds = dict.fromkeys(self.methods, 0.0)
        self.n_images = 0

    def add(self, scored: BatchScores, image_ids: list[str]) -> None:
        """Add one batch (``image_ids`` in batch order); a method in ``scored.errors`` is marked failed."""
        for name, error in scored.errors.items():
            self.errors.setdefault(name, f"{type(error).__name__}: {error}")
        columns = {
            metric: torch.full(
                (len(scored), len(self.methods)), math.nan, dtype=torch.float64, device=scored.labels.device
            )
            for metric in self.config.metrics
        }
        for name, scores in scored.scores.items():
            column = self.methods.index(name)
            for metric, values in scores.items():
                self.metrics[name][metric].update_scores(values, scored.labels)
                columns[metric][:, column] = values
            self.seconds[name] += scored.seconds[name]
            self.faithfulness_seconds[name] += scored.faithfulness_seconds.get(name, 0.0)
        self.n_images += len(scored)
        self.rows += self._rows(scored, image_ids, columns)

    def _rows(
        self, scored: BatchScores, image_ids: list[str], columns: dict[str, torch.Tensor]
    ) -> list[dict[str, Any]]:
        # One host copy per batch and metric, not one per image.
        ids = {
            key: tensor.tolist()
            for key, tensor in (
                ("class", scored.labels),
                ("target", scored.targets),
                ("prediction", scored.predictions),
            )
        }
        values = {metric: column.cpu().numpy() for metric, column in columns.items()}
        rows = []
        for i, image_id in enumerate(image_ids):
            row: dict[str, Any] = {"image_id": image_id, **{key: self.class_names[ids[key][i]] for key in ids}}
            for metric, column in values.items():
                row.update({f"{metric}/{name}": float(column[i, m]) for m, name in enumerate(self.methods)})
            rows.append(row)
        return rows

    def result(
        self,
        split: str,
        epoch: int = 0,
        step: int = 0,
        failed: dict[str, str] | None = None,
        per_image: pd.DataFrame | None = None,
        n_empty_mask_skipped: int = 0,
    ) -> PassResult:
        """Compute the pass's values. Under DDP every process calls it (``compute`` is collective) with the
        failures of all processes (``failed``) and the gathered rows (``per_image``)."""
        failed = dict(self.errors if failed is None else failed)
        per_image = pd.DataFrame(self.rows) if per_image is None else per_image
        if len(per_image):
            per_image = per_image.sort_values("image_id", kind="stable").reset_index(drop=True)
        values: dict[str, dict[str, dict[str, float]]] = {}
        counts: dict[str, float] = {"n_empty_mask_skipped": float(n_empty_mask_skipped)}
        for name, per_metric in self.metrics.items():
            for metric, accumulator in per_metric.items():
                with warnings.catch_warnings():
                    # A shard with no image (or a method that failed on its first batch) has no update.
                    warnings.filterwarnings("ignore", message=".*compute.*before.*update.*")
                    computed = accumulator.compute()  # collective under DDP: every process calls it
                if name in failed:
                    continue
                for group, value in computed.items():
                    if group in ("n_images", "n_excluded"):
                        if metric == "tko":
                            counts.setdefault(group, float(value))
                        continue
                    values.setdefault(metric, {}).setdefault(group, {})[name] = float(value)
        ok = [name for name in self.methods if name not in failed]
        win_rate, win_counts = self._win_rate(per_image, ok)
        n_local = max(self.n_images, 1)
        return PassResult(
            split=split,
            epoch=epoch,
            step=step,
            methods=self.methods,
            values=values,
            win_rate=win_rate,
            counts={**counts, **win_counts},
            per_image=per_image,
            failed=failed,
            win_ties=self.config.win_ties,
            seconds_per_image={name: self.seconds[name] / n_local for name in ok},
            faithfulness_seconds_per_image=(
                {name: self.faithfulness_seconds[name] / n_local for name in ok}
                if self.config.faithfulness_steps
                else {}
            ),
        )

    def _win_rate(self, per_image: pd.DataFrame, ok: list[str]) -> tuple[dict, dict[str, float]]:
        if not ok:
            return {}, {}
        # Every process holds the gathered table already: summing it across processes would count it twice.
        win = WinRate(ok, class_names=self.class_names, ties=self.config.win_ties, sync_on_compute=False)
        if len(per_image):
            tko = torch.tensor(per_image[[f"tko/{name}" for name in ok]].to_numpy(), dtype=torch.float64)
            win.update(tko, torch.tensor([self.class_names.index(c) for c in per_image["class"]]))
        with warnings.catch_warnings():
            # An empty pass computes before any update: NaN rates, which is the honest answer.
            warnings.filterwarnings("ignore", message=".*compute.*before.*update.*")
            computed = win.compute()
        counts = {"win_n_images": float(computed.pop("n_images")), "win_n_excluded": float(computed.pop("n_excluded"))}
        rates = {group: {m: float(r) for m, r in per_method.items()} for group, per_method in computed.items()}
        return rates, counts


def _none_if_nan(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def winners(frame: pd.DataFrame, methods: list[str], ties: str = DEFAULT_WIN_TIES) -> list[str]:
    """Per image, the method(s) with the highest TKO (ties joined with '='); '' when excluded.

    The same credit as the win-rate (:func:`~xai_lightning.metrics.winrate.win_credit`): a winner is
    a method with credit > 0.

    >>> winners(pd.DataFrame({"tko/a": [0.5, 0.2, float("nan")], "tko/b": [0.5, 0.7, 0.1]}), ["a", "b"])
    ['a=b', 'b', '']
    """
    if not methods or not len(frame):
        return [""] * len(frame)
    credit = win_credit(torch.tensor(frame[[f"tko/{m}" for m in methods]].to_numpy(), dtype=torch.float64), ties=ties)
    return ["=".join(m for m, c in zip(methods, row) if c > 0) for row in credit.tolist()]
