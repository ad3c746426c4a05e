"""Tests of the hierarchical bootstrap over seeds and images (reporting/hierarchical.py) and its part of report.md.

Each frame is built so that the expected verdict is known: collapsed CIs, a method better on every image, seeds that
agree while images disagree, references of known order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xai_lightning.reporting.hierarchical import (
    MEANS_COLUMNS,
    PAIR_COLUMNS,
    REFERENCE_COLUMNS,
    beats_best_reference,
    hierarchical_comparisons,
    hierarchical_means,
    image_values,
)
from xai_lightning.reporting.report import build_report
from xai_lightning.reporting.seeds import across_seeds, per_seed_summary
from xai_lightning.reporting.significance import paired_comparisons

NAN = float("nan")


def per_image_rows(values: dict[tuple[int, str], list[float]], split: str = "test") -> pd.DataFrame:
    """per_image TKO rows from {(seed, method): [value per image]}; image i is the same file in every seed."""
    return pd.DataFrame(
        [
            {"experiment": "exp", "run": f"seed{seed}", "seed": seed, "split": split, "image_id": f"{i:03d}.png",
             "class": "crack", "method": method, "metric": "tko", "value": value}
            for (seed, method), per_image in values.items()
            for i, value in enumerate(per_image)
        ]
    )


def model_metrics(seeds=(0, 1, 2)) -> pd.DataFrame:
    return pd.DataFrame(
        [{"experiment": "exp", "run": f"seed{s}", "seed": s, "split": "test", "metric": "acc", "value": 0.9}
         for s in seeds]
    )


def tko(per_image: pd.DataFrame) -> pd.DataFrame:
    return image_values(per_image, "tko")


def pair(comparisons: pd.DataFrame, a: str, b: str) -> pd.Series:
    return comparisons.set_index(["method_a", "method_b"]).loc[(a, b)]


# --- (a) the CI collapses where nothing varies ----------------------------------------------------------------------


def test_one_seed_with_identical_images_collapses_the_ci_to_the_point():
    per_image = per_image_rows({(0, "gradcam"): [0.4] * 6, (0, "saliency"): [0.1] * 6})
    means = hierarchical_means(tko(per_image), n_boot=500).set_index("method")
    assert list(hierarchical_means(tko(per_image), n_boot=10).columns) == MEANS_COLUMNS
    for method, value in (("gradcam", 0.4), ("saliency", 0.1)):
        row = means.loc[method]
        assert row["estimate"] == pytest.approx(value)
        assert row["ci_low"] == pytest.approx(value) and row["ci_high"] == pytest.approx(value)
        assert (row["n_seeds"], row["n_images"]) == (1, 6)
    difference = pair(hierarchical_comparisons(tko(per_image), n_boot=500), "gradcam", "saliency")
    assert difference["mean_diff"] == pytest.approx(0.3)
    assert difference["ci_low"] == pytest.approx(0.3) and difference["ci_high"] == pytest.approx(0.3)
    # The CI excludes 0, but one seed cannot show how another training run would change the result.
    assert not difference["holds"]


# --- (b) better on every image of every seed ------------------------------------------------------------------------


def test_a_method_better_on_every_image_of_every_seed_holds_on_tko_and_win_rate():
    rng = np.random.default_rng(0)
    values = {}
    for seed in range(4):
        worse = rng.uniform(0.0, 0.5, size=15)
        values[(seed, "saliency")] = list(worse)
        values[(seed, "gradcam")] = list(worse + rng.uniform(0.05, 0.4, size=15))
    per_image = per_image_rows(values)
    comparisons = hierarchical_comparisons(tko(per_image), n_boot=2000)
    assert list(comparisons.columns) == PAIR_COLUMNS
    row = pair(comparisons, "gradcam", "saliency")
    assert row["ci_low"] > 0 and bool(row["holds"]) is True
    assert row["mean_a"] - row["mean_b"] == pytest.approx(row["mean_diff"])
    assert (row["n_seeds"], row["n_images"]) == (4, 15)

    # gradcam wins every image: its win-rate is 1 in every replicate, the difference exactly 1.
    win = pair(hierarchical_comparisons(image_values(per_image, "win_rate"), n_boot=500), "gradcam", "saliency")
    assert (win["mean_diff"], win["ci_low"], win["ci_high"]) == pytest.approx((1.0, 1.0, 1.0))
    assert bool(win["holds"]) is True


# --- (c) why images matter ------------------------------------------------------------------------------------------

#: Per-image differences a − b: large and of both signs, a small positive mean (0.025).
WILD = [0.45, -0.40] * 10


def test_seeds_that_agree_while_images_vary_widely_hold_per_seed_but_not_over_images():
    # Eight seeds give the very same per-image values: every per-seed mean difference is 0.025, so the seed
    # level sees no variation at all, while the images disagree wildly about which method is better.
    values = {}
    for seed in range(8):
        values[(seed, "b")] = [0.5] * len(WILD)
        values[(seed, "a")] = [0.5 + d for d in WILD]
    per_image = per_image_rows(values)

    per_seed = paired_comparisons(per_seed_summary(per_image), metric="tko", n_boot=2000)
    seeds_only = per_seed.set_index(["method_a", "method_b"]).loc[("a", "b")]
    hierarchical = pair(hierarchical_comparisons(tko(per_image), n_boot=2000), "a", "b")

    assert seeds_only["mean_diff"] == pytest.approx(0.025) == hierarchical["mean_diff"]
    assert seeds_only["ci_high"] - seeds_only["ci_low"] == pytest.approx(0.0)
    assert hierarchical["ci_high"] - hierarchical["ci_low"] > 0.2
    # Per seed the difference holds (8 equal signs, p = 2 / 2^8); over images it does not.
    assert bool(seeds_only["holds"]) is True
    assert hierarchical["ci_low"] < 0 < hierarchical["ci_high"] and bool(hierarchical["holds"]) is False


def test_seeds_that_repeat_the_same_images_add_no_image_evidence():
    # Seeds re-use the test images: five seeds with the same per-image values are still 20 images, so the CI
    # must be the one of a single seed, not √5 times narrower as if each seed had drawn 20 new images.
    one = per_image_rows({(0, "a"): [0.5 + d for d in WILD], (0, "b"): [0.5] * len(WILD)})
    five = pd.concat([one.assign(seed=s, run=f"seed{s}") for s in range(5)], ignore_index=True)
    single = pair(hierarchical_comparisons(tko(one), n_boot=1000, seed=3), "a", "b")
    repeated = pair(hierarchical_comparisons(tko(five), n_boot=1000, seed=3), "a", "b")
    assert (repeated["ci_low"], repeated["ci_high"]) == pytest.approx((single["ci_low"], single["ci_high"]))
    assert repeated["n_seeds"] == 5 and repeated["n_images"] == 20


def test_point_estimates_are_the_reports_means_with_uneven_and_missing_images():
    # Seed 0 has 4 images, seed 1 has 2; saliency lacks one image of seed 0 (NaN) and an empty mask (NaN
    # everywhere) takes no part: each estimate must equal the report's mean over seeds of per-seed means.
    per_image = pd.concat(
        [
            per_image_rows({(0, "gradcam"): [0.9, 0.7, 0.6, NAN], (0, "saliency"): [0.3, NAN, 0.5, NAN]}),
            per_image_rows({(1, "gradcam"): [0.8, 0.4], (1, "saliency"): [0.2, 0.6]}),
        ],
        ignore_index=True,
    )
    summary = across_seeds(per_seed_summary(per_image))
    overall = summary[summary["class"] == "overall"].set_index(["metric", "method"])["mean"]
    for metric in ("tko", "win_rate"):
        means = hierarchical_means(image_values(per_image, metric), n_boot=200).set_index("method")["estimate"]
        for method in ("gradcam", "saliency"):
            assert means[method] == pytest.approx(overall[(metric, method)]), (metric, method)
    difference = pair(hierarchical_comparisons(tko(per_image), n_boot=200), "gradcam", "saliency")
    # Paired on the images both have: seed 0 images 0 and 2, seed 1 images 0 and 1.
    assert difference["mean_diff"] == pytest.approx(((0.6 + 0.1) / 2 + (0.6 - 0.2) / 2) / 2)
    assert difference["mean_a"] == pytest.approx(((0.9 + 0.6) / 2 + (0.8 + 0.4) / 2) / 2)
    assert difference["n_images"] == 3  # images 000, 001 (seed 1 only) and 002


# --- (d) determinism ------------------------------------------------------------------------------------------------


def test_the_bootstrap_is_deterministic_with_its_seed():
    rng = np.random.default_rng(5)
    per_image = per_image_rows({(s, m): list(rng.uniform(size=12)) for s in range(3) for m in ("a", "b", "c")})
    values = tko(per_image)
    for function in (hierarchical_means, hierarchical_comparisons):
        first = function(values, n_boot=300, seed=7)
        pd.testing.assert_frame_equal(first, function(values, n_boot=300, seed=7))
        other = function(values, n_boot=300, seed=8)
        assert not np.allclose(first[["ci_low", "ci_high"]], other[["ci_low", "ci_high"]])
        # The point estimate does not depend on the draws.
        estimate = "estimate" if "estimate" in first else "mean_diff"
        np.testing.assert_allclose(first[estimate], other[estimate])


def test_clear_errors_for_unknown_methods_and_bad_arguments():
    values = tko(per_image_rows({(0, "a"): [0.5], (0, "b"): [0.4]}))
    with pytest.raises(ValueError, match="gradcam"):
        hierarchical_means(values, methods=["a", "gradcam"])
    with pytest.raises(ValueError, match="alpha"):
        hierarchical_comparisons(values, alpha=1.5)
    with pytest.raises(ValueError, match="split 'val'"):
        beats_best_reference(values, split="val")
    with pytest.raises(ValueError, match="one metric"):
        hierarchical_means(pd.concat([values, values.assign(metric="win_rate")], ignore_index=True))


# --- (e) beating the best reference ---------------------------------------------------------------------------------


def reference_rows(seeds=range(3)) -> pd.DataFrame:
    """random < weak < center_prior < gradcam < segmentation_head on every image of every seed."""
    rng = np.random.default_rng(1)
    values = {}
    for seed in seeds:
        base = rng.uniform(0.0, 0.2, size=10)
        values[(seed, "random")] = list(base)
        values[(seed, "weak")] = list(base + 0.05)
        values[(seed, "center_prior")] = list(base + 0.1)
        values[(seed, "gradcam")] = list(base + 0.3 + rng.uniform(0, 0.1, size=10))
        values[(seed, "segmentation_head")] = list(base + 0.6)
    return per_image_rows(values)


def test_a_method_beats_the_best_reference_and_a_weaker_one_does_not():
    per_image = reference_rows()
    result = beats_best_reference(tko(per_image), n_boot=2000)
    assert list(result.columns) == REFERENCE_COLUMNS
    result = result.set_index("method")
    # The references are no candidates; segmentation_head is no reference (an upper bound), so it is compared.
    assert set(result.index) == {"gradcam", "weak", "segmentation_head"}
    assert set(result["reference"]) == {"center_prior"}
    assert bool(result.loc["gradcam", "beats"]) is True and result.loc["gradcam", "ci_low"] > 0
    # weak beats random on every image, but not the best reference.
    assert bool(result.loc["weak", "beats"]) is False and result.loc["weak", "ci_high"] < 0
    means = hierarchical_means(tko(per_image), n_boot=10).set_index("method")["estimate"]
    assert result.loc["gradcam", "reference_mean"] == pytest.approx(means["center_prior"])
    assert result.loc["gradcam", "mean"] - result.loc["gradcam", "reference_mean"] == pytest.approx(
        result.loc["gradcam", "mean_diff"]
    )


def test_without_any_reference_the_comparison_has_no_rows():
    per_image = reference_rows()
    no_reference = per_image[~per_image["method"].isin(["random", "center_prior"])]
    result = beats_best_reference(tko(no_reference), n_boot=100)
    assert result.empty and list(result.columns) == REFERENCE_COLUMNS
    # One reference alone is the best reference.
    only_random = per_image[per_image["method"] != "center_prior"]
    assert set(beats_best_reference(tko(only_random), n_boot=100)["reference"]) == {"random"}


# --- (f) report.md --------------------------------------------------------------------------------------------------


def test_report_has_the_hierarchical_subsections_and_their_tables(tmp_path):
    report = build_report(tmp_path, model_metrics(), reference_rows(), n_boot=50)
    text = report.path.read_text()
    # Subsections of "Which differences hold", so that the sections after it keep their numbers.
    assert "## 5. Which differences hold" in text
    assert "### 5.1 Seeds and images: hierarchical bootstrap" in text
    assert "### 5.2 Beating the best reference" in text
    assert "rest on seeds alone (n = 3 seeds)" in text and "n = 3 seeds × 10 images" in text
    assert "test TKO: best reference center_prior" in text and "gradcam +0." in text
    for name in ("hierarchical", "beats_reference", "hierarchical_pairs"):
        for suffix in ("csv", "md", "tex"):
            assert (tmp_path / "tables" / f"{name}.{suffix}").is_file(), (name, suffix)
    means = report.tables["hierarchical"]
    assert set(means["metric"]) == {"tko", "win_rate"} and len(means) == 2 * 5
    beats = report.tables["beats_reference"].set_index(["metric", "method"])
    assert bool(beats.loc[("tko", "gradcam"), "beats"]) is True
    assert len(report.tables["hierarchical_pairs"]) == 2 * 10  # 5 methods: 10 pairs per metric
    written = pd.read_csv(tmp_path / "tables" / "beats_reference.csv").set_index("metric")["reference"]
    assert set(written["tko"]) == {"center_prior"}
    # segmentation_head wins every image, so every reference's win-rate is 0: the tie goes to the first listed.
    assert set(written["win_rate"]) == {"random"}


def test_report_says_when_no_reference_was_run(tmp_path):
    per_image = reference_rows()
    per_image = per_image[~per_image["method"].isin(["random", "center_prior"])]
    report = build_report(tmp_path, model_metrics(), per_image, n_boot=20)
    text = report.path.read_text()
    assert "no reference (random, center_prior, edge) was run" in text
    assert "beats_reference" not in report.tables and "### 5.1 Seeds and images" in text
