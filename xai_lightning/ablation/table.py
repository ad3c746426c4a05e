"""The ablation table: per factor and method, win-rate and score with 95 % CIs, and the change against the poster.

Each number is a hierarchical-bootstrap estimate (seeds, then images, resampled); the change of a factor
is the paired difference factor − poster over the same seeds and images, and it *holds* when its CI
excludes 0. The references (centre prior, edge map) take no part in the win-rate; their score is listed.
"""

from __future__ import annotations

import pandas as pd

from xai_lightning.ablation.factors import POSTER, POSTER_METHODS, REFERENCES, Factor
from xai_lightning.ablation.study import factor_rows
from xai_lightning.reporting.hierarchical import (
    HIERARCHICAL_N_BOOT,
    hierarchical_change,
    hierarchical_means,
    image_values,
)

#: Columns of the numeric table (ablation.csv), in order.
COLUMNS = [
    "factor", "change", "kind", "method", "metric", "estimate", "ci_low", "ci_high",
    "change_vs_poster", "change_ci_low", "change_ci_high", "holds", "n_seeds", "n_images",
]  # fmt: skip


def factor_values(tables: dict[str, pd.DataFrame], factor: Factor) -> dict[str, pd.DataFrame]:
    """``{"win_rate" | "score": per-image values}`` of a factor (the score is its own: IoU or TKO)."""
    rows = factor_rows(tables, factor)
    return {
        "win_rate": image_values(rows, "win_rate", methods=POSTER_METHODS, win_ties=factor.win_ties),
        "score": image_values(rows, factor.score),
    }


def _change(poster: pd.DataFrame, other: pd.DataFrame, method: str, n_boot: int) -> dict:
    """How the factor moves one method's reported mean (factor − poster), each over the images it scores."""
    a, b = f"{method}@{POSTER}", f"{method}@factor"
    both = pd.concat(
        [poster[poster["method"] == method].assign(method=a), other[other["method"] == method].assign(method=b)]
    )
    both = both.assign(metric="value").dropna(subset=["value"])
    if both.empty or both["method"].nunique() < 2:
        return {}  # one side has no scored image (e.g. no correct prediction): no change to measure
    change = hierarchical_change(both, a, b, n_boot=n_boot)
    return {
        "change_vs_poster": change["change"],
        "change_ci_low": change["ci_low"],
        "change_ci_high": change["ci_high"],
        "holds": change["holds"],
    }


def ablation_table(
    tables: dict[str, pd.DataFrame], factors: list[Factor], n_boot: int = HIERARCHICAL_N_BOOT
) -> pd.DataFrame:
    """One row per factor × method × metric (``win_rate``, ``score``) with estimates, CIs and the change."""
    baseline = factor_values(tables, next(f for f in factors if f.name == POSTER))
    rows = []
    for factor in factors:
        values = baseline if factor.name == POSTER else factor_values(tables, factor)
        for metric, frame in values.items():
            methods = [*POSTER_METHODS, *(REFERENCES if metric == "score" else ())]
            scored = frame.dropna(subset=["value"])
            present = [m for m in methods if m in set(scored["method"])]
            means = hierarchical_means(scored, methods=present, n_boot=n_boot) if present else pd.DataFrame()
            found = {row["method"]: row for row in means.to_dict("records")}
            for method in methods:
                # A method without a scored image (no correct prediction) keeps its row, empty, with 0 images.
                mean = found.get(method, {"estimate": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
                                          "n_seeds": 0, "n_images": 0})  # fmt: skip
                row = {
                    "factor": factor.name,
                    "change": factor.change,
                    "kind": "training" if factor.trains else "scoring",
                    "method": method,
                    "metric": metric if metric == "win_rate" else factor.score,
                    **{k: mean[k] for k in ("estimate", "ci_low", "ci_high", "n_seeds", "n_images")},
                }
                if factor.name != POSTER and method in POSTER_METHODS:
                    row |= _change(baseline[metric], frame, method, n_boot)
                rows.append(row)
    return pd.DataFrame(rows).reindex(columns=COLUMNS)


def readable(table: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """The table for Markdown and LaTeX: factor × method, each cell "estimate [low, high]" and the change."""

    def cell(row, prefix: str = "") -> str:
        low, high = row[f"{prefix}ci_low"], row[f"{prefix}ci_high"]
        value = row["estimate" if not prefix else "change_vs_poster"]
        if pd.isna(value):
            return "—"
        text = f"{value:+.{digits}f}" if prefix else f"{value:.{digits}f}"
        return f"{text} [{low:.{digits}f}, {high:.{digits}f}]" + (" ✓" if prefix and row["holds"] else "")

    rows = {}
    for (factor, method), group in table.groupby(["factor", "method"], sort=False):
        entry = {"factor": factor, "method": method}
        for record in group.to_dict("records"):
            label = "win-rate" if record["metric"] == "win_rate" else "score"
            entry[label] = cell(record)
            if record["factor"] != POSTER and record["method"] in POSTER_METHODS:
                entry[f"Δ {label}"] = cell(record, "change_")
        rows[(factor, method)] = entry
    return pd.DataFrame(list(rows.values())).fillna("—")


def pivot(table: pd.DataFrame, metric: str, digits: int = 2) -> pd.DataFrame:
    """Factor × method of one metric (``win_rate`` or ``score``): "estimate (Δ vs poster)", ✓ where Δ holds.

    The compact form for a README or a slide; :func:`readable` has the CIs.
    """
    rows = table[(table["metric"] == "win_rate") == (metric == "win_rate")]
    cells = {}
    for record in rows.to_dict("records"):
        if pd.isna(record["estimate"]):
            text = "—"
        else:
            text = f"{record['estimate']:.{digits}f}"
            if not pd.isna(record.get("change_vs_poster")):
                text += f" ({record['change_vs_poster']:+.{digits}f}{' ✓' if record['holds'] else ''})"
        cells.setdefault(record["factor"], {"factor": record["factor"], "change": record["change"]})[
            record["method"]
        ] = text
    return pd.DataFrame(list(cells.values())).fillna("—")
