"""Normalised-rank radar: ranks on a constructed table, the direction of lower-is-better metrics, area, figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xai_lightning.reporting.figures.radar import radar_figure
from xai_lightning.reporting.radar import RANDOMIZATION, radar_area, radar_section, rank_table
from xai_lightning.reporting.report_sections import Report, ReportWriter

METRICS = ["tko", "win_rate", "pointing_game", "deletion_auc", "insertion_auc", "infidelity", "max_sensitivity"]
LOWER = {"deletion_auc", "infidelity", "max_sensitivity"}
#: Methods by quality, best first: each has the same "goodness" on every metric.
QUALITY = {"best": 0.9, "mid": 0.6, "worst": 0.2}


def _per_seed(experiments=("resnet18", "vit_b_16"), seeds=3) -> pd.DataFrame:
    """per_seed_summary-shaped rows where ``best`` beats ``mid`` beats ``worst`` on every metric, in its direction."""
    rng = np.random.default_rng(0)
    rows = []
    for experiment in experiments:
        for seed in range(seeds):
            for method, good in QUALITY.items():
                for metric in METRICS:
                    value = good + rng.normal(0, 0.01)
                    rows.append({"experiment": experiment, "seed": seed, "split": "test", "class": "overall",
                                 "method": method, "metric": metric,
                                 "value": 1 - value if metric in LOWER else value, "n_images": 4})
    return pd.DataFrame(rows)


def _randomized(experiments=("resnet18", "vit_b_16"), seeds=3) -> pd.DataFrame:
    """Randomisation-check rows: |ρ| per step, lower after all layers for the better method."""
    rho = {"best": 0.05, "mid": 0.3, "worst": 0.8}
    return pd.DataFrame([
        {"experiment": e, "seed": s, "split": "test", "method": m, "step": step, "value": rho[m] * (1 + step) / 3}
        for e in experiments for s in range(seeds) for m in rho for step in range(3)
    ])


def test_a_method_best_on_every_metric_scores_one_everywhere_and_area_one():
    table = rank_table(_per_seed(), randomized=_randomized())
    axes = [*METRICS, RANDOMIZATION]
    assert table.attrs["axes"] == {"resnet18": axes, "vit_b_16": axes}
    for experiment, rows in table.groupby("experiment"):
        rows = rows.set_index("method")
        assert (rows.loc["best", axes] == 1.0).all()
        assert rows.loc["best", "area"] == pytest.approx(1.0)
        assert (rows.loc["worst", axes] == 0.0).all() and rows.loc["worst", "area"] == pytest.approx(0.0)
        assert (rows.loc["mid", axes] == 0.5).all() and rows.loc["mid", "area"] == pytest.approx(0.25)
        assert rows.index[0] == "best"  # rows by area, best first


def test_lower_is_better_metrics_rank_the_lowest_value_first():
    per_seed = _per_seed(experiments=("e",))
    # Flip infidelity only: now the "best" method has the highest (worst) infidelity.
    flip = per_seed["metric"] == "infidelity"
    per_seed.loc[flip, "value"] = 1 - per_seed.loc[flip, "value"]
    table = rank_table(per_seed, randomized=_randomized(experiments=("e",))).set_index("method")
    assert table.loc["best", "infidelity"] == 0.0 and table.loc["worst", "infidelity"] == 1.0
    assert table.loc["best", "deletion_auc"] == 1.0  # lowest deletion AUC is still best
    assert table.loc["best", RANDOMIZATION] == 1.0  # lowest |ρ| after all layers is best
    assert table.loc["best", "area"] < 1.0


def test_an_across_seeds_table_ranks_like_the_per_seed_one_and_missing_metrics_are_noted():
    from xai_lightning.reporting.seeds import across_seeds

    per_seed = _per_seed(experiments=("e",))
    per_seed = per_seed[per_seed["metric"] != "pointing_game"]
    across = across_seeds(per_seed)
    table = rank_table(across, metrics=["tko", "pointing_game", "deletion_auc", "insertion_auc"])
    assert table.attrs["axes"] == {"e": ["tko", "deletion_auc", "insertion_auc"]}
    assert "pointing_game" not in table.columns
    assert "pointing game left out" in table.attrs["note"]
    assert table.set_index("method").loc["best", "area"] == pytest.approx(1.0)


def test_a_method_without_a_value_counts_as_zero_on_that_axis_and_is_named():
    per_seed = _per_seed(experiments=("e",))
    drop = (per_seed["method"] == "mid") & (per_seed["metric"] == "tko")
    table = rank_table(per_seed[~drop]).set_index("method")
    assert np.isnan(table.loc["mid", "tko"])
    assert "mid without TKO" in table.attrs["note"]
    # best and worst remain ranked 1 and 0 among the two methods that have TKO.
    assert table.loc["best", "tko"] == 1.0 and table.loc["worst", "tko"] == 0.0


def test_radar_area_is_the_normalised_shoelace_area():
    m = 5
    radii = np.array([1.0, 0.5, 0.25, 0.75, 0.0])
    angles = 2 * np.pi * np.arange(m) / m
    x, y = radii * np.cos(angles), radii * np.sin(angles)
    shoelace = 0.5 * abs(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))
    unit = 0.5 * m * np.sin(2 * np.pi / m)
    assert radar_area(radii) == pytest.approx(shoelace / unit)
    assert np.isnan(radar_area([1.0, 1.0]))


def test_radar_figure_and_section_are_written(tmp_path):
    table = rank_table(_per_seed(), randomized=_randomized())
    path = radar_figure(table, tmp_path / "radar.png", labels={"resnet18": "ResNet-18"})
    assert path.is_file() and path.stat().st_size > 0
    writer = ReportWriter(Report(tmp_path / "report" / "report.md"), tmp_path / "report")
    section = radar_section(writer, _per_seed(), _randomized())
    text = "\n".join(section.render(9))
    assert "randomisation |ρ|" in text and "![radar_ranks](figures/radar_ranks.png)" in text
    assert (tmp_path / "report" / "figures" / "radar_ranks.png").is_file()
    assert (tmp_path / "report" / "tables" / "radar_ranks.csv").is_file()
