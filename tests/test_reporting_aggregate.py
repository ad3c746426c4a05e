"""Tests of the aggregation across seeds (per-seed summaries, mean ± std, significance) and the table writers.

Values are worked out by hand on small constructed frames; the win credits are also checked against the torch metric.
"""

from __future__ import annotations

import math
from itertools import permutations

import numpy as np
import pandas as pd
import pytest

from xai_lightning.reporting.aggregate import (
    across_seeds,
    excluded_counts,
    mean_std_label,
    paired_comparisons,
    per_seed_summary,
    significance_sentences,
    win_credits,
)
from xai_lightning.reporting.tables import mean_std_table, write_table

NAN = float("nan")


def tko_rows(images: dict[str, tuple[str, dict[str, float]]], seed: int = 0, split: str = "test") -> pd.DataFrame:
    """per_image tko rows from {image_id: (class, {method: tko})}."""
    return pd.DataFrame(
        [
            {"experiment": "exp", "seed": seed, "split": split, "image_id": image_id, "class": cls,
             "method": method, "metric": "tko", "value": value}
            for image_id, (cls, scores) in images.items()
            for method, value in scores.items()
        ]
    )


def per_seed_frame(values: dict[str, list[float]], metric: str = "win_rate") -> pd.DataFrame:
    """per_seed rows (test, overall) from {method: [value per seed]}."""
    return pd.DataFrame(
        [
            {"experiment": "exp", "seed": seed, "split": "test", "class": "overall", "method": method,
             "metric": metric, "value": value, "n_images": 10}
            for method, per_seed in values.items()
            for seed, value in enumerate(per_seed)
        ]
    )


def credit_of(credits: pd.DataFrame, image_id: str) -> dict[str, float]:
    rows = credits[credits["image_id"] == image_id]
    return dict(zip(rows["method"], rows["value"]))


# --- win credits -------------------------------------------------------------------------------------------------


def test_three_way_tie_shares_credit_equally_whatever_the_method_order():
    scores = {"saliency": 0.4, "gradcam": 0.4, "ig": 0.4 + 1e-12, "occlusion": 0.1}
    for order in permutations(scores):
        frame = tko_rows({"img": ("crack", {m: scores[m] for m in order})})
        credit = credit_of(win_credits(frame), "img")
        assert credit["saliency"] == pytest.approx(1 / 3)
        assert credit["gradcam"] == pytest.approx(1 / 3)
        assert credit["ig"] == pytest.approx(1 / 3)
        assert credit["occlusion"] == 0.0


def test_difference_above_tolerance_is_not_a_tie():
    credit = credit_of(win_credits(tko_rows({"img": ("cut", {"a": 0.5, "b": 0.5 + 1e-6})})), "img")
    assert credit == {"a": 0.0, "b": 1.0}


def test_nan_or_missing_tko_excludes_the_image_and_is_counted():
    frame = tko_rows(
        {
            "ok": ("crack", {"a": 0.9, "b": 0.1}),
            "nan": ("crack", {"a": NAN, "b": 0.7}),
            "missing": ("cut", {"a": 0.3}),  # method b has no row at all
            "good": ("good", {"a": NAN, "b": NAN}),
        }
    )
    credits = win_credits(frame)
    assert credit_of(credits, "ok") == {"a": 1.0, "b": 0.0}
    assert credits.loc[credits["image_id"] != "ok", "value"].isna().all()
    assert set(credits.loc[credits["excluded"], "image_id"]) == {"nan", "missing", "good"}

    counts = excluded_counts(frame).set_index("class")
    assert counts.loc["crack", "n_excluded"] == 1 and counts.loc["crack", "n_images"] == 2
    assert counts.loc["cut", "n_excluded"] == 1
    assert counts.loc["good", "n_excluded"] == 1
    assert counts.loc["overall", "n_excluded"] == 3 and counts.loc["overall", "n_images"] == 4

    summary = per_seed_summary(frame)
    win = summary[(summary["metric"] == "win_rate") & (summary["class"] == "overall")].set_index("method")
    # Only the one included image counts: a wins it outright.
    assert win.loc["a", "value"] == 1.0 and win.loc["a", "n_images"] == 1


def test_same_image_id_in_two_classes_are_two_images():
    # MVTec names files 000.png, 001.png, … in every defect folder.
    frame = tko_rows({"000.png": ("crack", {"a": 0.9, "b": 0.1})})
    frame = pd.concat([frame, frame.assign(**{"class": "cut", "value": [0.1, 0.9]})], ignore_index=True)
    credits = win_credits(frame)
    assert credits.set_index(["class", "method"])["value"].to_dict() == {
        ("crack", "a"): 1.0, ("crack", "b"): 0.0, ("cut", "a"): 0.0, ("cut", "b"): 1.0,
    }


def test_duplicate_tko_rows_are_rejected():
    frame = tko_rows({"img": ("crack", {"a": 0.9, "b": 0.1})})
    with pytest.raises(ValueError, match="duplicate"):
        win_credits(pd.concat([frame, frame.iloc[:1]], ignore_index=True))


def test_win_credits_agree_with_the_torch_win_rate():
    torch = pytest.importorskip("torch")
    from xai_lightning.metrics.winrate import win_rate

    rng = np.random.default_rng(3)
    # Values on a coarse grid so that ties are common; a few NaNs for exclusions.
    tko = rng.integers(0, 4, size=(60, 4)) / 4
    tko[rng.random(tko.shape) < 0.05] = np.nan
    methods = ["m0", "m1", "m2", "m3"]
    frame = tko_rows({f"i{i}": ("crack", dict(zip(methods, row))) for i, row in enumerate(tko)})
    summary = per_seed_summary(frame)
    ours = summary[(summary["metric"] == "win_rate") & (summary["class"] == "overall")].set_index("method")["value"]
    expected, n_excluded = win_rate(torch.tensor(tko, dtype=torch.float64), methods)
    assert ours.to_dict() == pytest.approx(expected)
    assert excluded_counts(frame).set_index("class").loc["overall", "n_excluded"] == n_excluded


# --- per-seed summary --------------------------------------------------------------------------------------------


def test_overall_pools_images_and_differs_from_the_mean_of_class_means():
    frame = pd.concat(
        [
            tko_rows({"c1": ("crack", {"a": 0.2}), "c2": ("crack", {"a": 0.4}), "c3": ("crack", {"a": 0.6})}),
            tko_rows({"u1": ("cut", {"a": 1.0}), "u2": ("cut", {"a": NAN})}),
        ],
        ignore_index=True,
    )
    summary = per_seed_summary(frame)
    tko = summary[summary["metric"] == "tko"].set_index("class")
    assert tko.loc["crack", "value"] == pytest.approx((0.2 + 0.4 + 0.6) / 3)
    assert tko.loc["cut", "value"] == pytest.approx(1.0)  # the NaN image is skipped, not read as 0
    assert tko.loc["overall", "value"] == pytest.approx((0.2 + 0.4 + 0.6 + 1.0) / 4)
    assert tko.loc["overall", "value"] != pytest.approx((0.4 + 1.0) / 2)
    assert tko.loc["cut", "n_images"] == 1 and tko.loc["overall", "n_images"] == 4
    assert list(summary.columns) == ["experiment", "seed", "split", "class", "method", "metric", "value", "n_images"]


def test_class_without_finite_values_keeps_a_nan_row():
    frame = tko_rows({"g": ("good", {"a": NAN, "b": NAN}), "c": ("crack", {"a": 0.5, "b": 0.2})})
    summary = per_seed_summary(frame)
    good = summary[(summary["class"] == "good") & (summary["metric"] == "tko")]
    assert len(good) == 2 and good["value"].isna().all() and (good["n_images"] == 0).all()


def test_win_rates_sum_to_one_per_split_and_class():
    rng = np.random.default_rng(0)
    methods = ["a", "b", "c"]
    frames = []
    for seed in range(3):
        for split in ("train", "test"):
            images = {
                f"{cls}{i}": (cls, dict(zip(methods, rng.integers(0, 3, size=3) / 2)))
                for cls in ("crack", "cut", "hole")
                for i in range(7)
            }
            frames.append(tko_rows(images, seed=seed, split=split))
    summary = per_seed_summary(pd.concat(frames, ignore_index=True))
    totals = summary[summary["metric"] == "win_rate"].groupby(["seed", "split", "class"])["value"].sum()
    assert len(totals) == 3 * 2 * 4
    np.testing.assert_allclose(totals.to_numpy(), 1.0)


def test_infinite_values_are_skipped_and_class_named_overall_is_rejected():
    frame = tko_rows({"x": ("crack", {"a": 0.5}), "y": ("crack", {"a": 0.25})})
    frame["metric"] = "pixel_auroc"
    frame.loc[1, "value"] = math.inf
    summary = per_seed_summary(frame)
    assert summary.set_index("class").loc["crack", "value"] == 0.5
    with pytest.raises(ValueError, match="overall"):
        per_seed_summary(frame.assign(**{"class": "overall"}))


# --- across seeds ------------------------------------------------------------------------------------------------


def test_across_seeds_mean_and_sample_std_by_hand():
    values = [0.50, 0.60, 0.90, 0.40]
    per_seed = per_seed_frame({"a": values, "b": [0.3, NAN, 0.5, 0.4]})
    result = across_seeds(per_seed).set_index("method")
    mean = (0.50 + 0.60 + 0.90 + 0.40) / 4  # 0.6
    variance = ((0.5 - mean) ** 2 + (0.6 - mean) ** 2 + (0.9 - mean) ** 2 + (0.4 - mean) ** 2) / (4 - 1)
    assert result.loc["a", "mean"] == pytest.approx(mean)
    assert result.loc["a", "std"] == pytest.approx(math.sqrt(variance))  # ddof = 1, not the population std
    assert result.loc["a", "std"] != pytest.approx(float(np.std(values)))
    assert result.loc["a", "n_seeds"] == 4
    # A seed without a value is left out of mean/std but kept in the list.
    assert result.loc["b", "mean"] == pytest.approx(0.4) and result.loc["b", "n_seeds"] == 3
    assert result.loc["b", "values"][1] != result.loc["b", "values"][1]  # NaN
    expected_columns = {"experiment", "split", "class", "metric", "mean", "std", "n_seeds", "values", "seeds"}
    assert set(result.columns) >= expected_columns
    assert "n_images" not in result.columns and "seed" not in result.columns


def test_across_seeds_keeps_per_seed_values_in_seed_order_and_one_seed_has_nan_std():
    per_seed = per_seed_frame({"a": [0.3, 0.1, 0.2]}).iloc[[2, 0, 1]]
    result = across_seeds(per_seed)
    assert result["values"].iloc[0] == [0.3, 0.1, 0.2]
    assert result["seeds"].iloc[0] == [0, 1, 2]
    single = across_seeds(per_seed_frame({"a": [0.7]}))
    assert single["mean"].iloc[0] == 0.7 and math.isnan(single["std"].iloc[0])


def test_across_seeds_on_model_metrics_and_explicit_by():
    model_metrics = pd.DataFrame(
        {"experiment": "exp", "seed": [0, 1, 0, 1], "split": ["val", "val", "test", "test"],
         "metric": "loss", "value": [1.0, 3.0, 2.0, 2.0]}
    )
    result = across_seeds(model_metrics).set_index("split")
    assert result.loc["val", "mean"] == 2.0 and result.loc["val", "std"] == pytest.approx(math.sqrt(2.0))
    assert result.loc["test", "std"] == 0.0
    # Without split in `by`, two rows share a seed: an error, not a silent mix of val and test.
    with pytest.raises(ValueError, match="repeat a seed"):
        across_seeds(model_metrics, by=["metric"])


def test_mean_std_label_formatting():
    assert mean_std_label(0.51234, 0.0337) == "0.512 ± 0.034"
    assert mean_std_label(0.51234, 0.0337, digits=2) == "0.51 ± 0.03"
    assert mean_std_label(0.5, NAN) == "0.500"
    assert mean_std_label(0.5, None) == "0.500"
    assert mean_std_label(NAN, 0.1) == "—"
    assert mean_std_label(np.float64(1.0), np.float64(0.0)) == "1.000 ± 0.000"


# --- significance ------------------------------------------------------------------------------------------------

BETTER = [0.61, 0.72, 0.66, 0.80, 0.75, 0.63, 0.70, 0.69]
WORSE = [0.40, 0.30, 0.36, 0.21, 0.27, 0.38, 0.29, 0.33]


def test_clearly_better_method_over_eight_seeds_holds():
    comparison = paired_comparisons(per_seed_frame({"ig": BETTER, "saliency": WORSE}), n_boot=2000).iloc[0]
    assert (comparison["method_a"], comparison["method_b"]) == ("ig", "saliency")
    assert comparison["n_seeds"] == 8
    # All 8 differences positive: the exact two-sided p is 2 · (1/2)^8.
    assert comparison["p_value"] == pytest.approx(2 / 2**8) == pytest.approx(0.0078125)
    assert comparison["p_min"] == pytest.approx(2 / 2**8)
    diffs = np.array(BETTER) - np.array(WORSE)
    assert comparison["mean_diff"] == pytest.approx(diffs.mean())
    assert comparison["mean_a"] - comparison["mean_b"] == pytest.approx(comparison["mean_diff"])
    assert diffs.min() <= comparison["ci_low"] <= comparison["mean_diff"] <= comparison["ci_high"] <= diffs.max()
    assert comparison["ci_low"] > 0
    assert bool(comparison["holds"]) is True


def test_identical_methods_give_p_one_and_do_not_hold():
    comparison = paired_comparisons(per_seed_frame({"a": BETTER, "b": BETTER}), n_boot=500).iloc[0]
    assert comparison["p_value"] == 1.0
    assert comparison["ci_low"] == 0.0 and comparison["ci_high"] == 0.0
    assert bool(comparison["holds"]) is False
    assert "zero" in comparison["note"]


def test_small_wilcoxon_p_alone_does_not_hold_when_the_ci_covers_zero():
    # 19 seeds slightly favour a, one seed favours b by a lot: the signed ranks
    # say "a" (p < 0.05), but the mean difference is not reliably above 0.
    diffs = [0.01 * k for k in range(1, 20)] + [-1.0]
    per_seed = per_seed_frame({"a": [0.5 + d for d in diffs], "b": [0.5] * 20})
    comparison = paired_comparisons(per_seed, n_boot=4000).iloc[0]
    assert comparison["p_value"] < 0.05
    assert comparison["ci_low"] < 0 < comparison["ci_high"]
    assert bool(comparison["holds"]) is False


def test_five_seeds_cannot_reach_alpha_and_the_note_says_so():
    comparison = paired_comparisons(per_seed_frame({"a": BETTER[:5], "b": WORSE[:5]}), n_boot=500).iloc[0]
    assert comparison["p_value"] == pytest.approx(0.0625)
    assert bool(comparison["holds"]) is False
    assert "smallest achievable p is 0.0625" in comparison["note"]


def test_one_paired_seed_gives_nan_p_and_a_note():
    per_seed = per_seed_frame({"a": [0.9, NAN, 0.8], "b": [0.1, 0.2, NAN]})
    comparison = paired_comparisons(per_seed, n_boot=100).iloc[0]
    assert comparison["n_seeds"] == 1
    assert math.isnan(comparison["p_value"])
    assert bool(comparison["holds"]) is False
    assert "no test possible" in comparison["note"]


def test_bootstrap_is_deterministic_with_its_seed_and_pairs_follow_the_given_order():
    per_seed = per_seed_frame({"a": BETTER, "b": WORSE, "c": [0.5, 0.4, 0.7, 0.2, 0.6, 0.3, 0.55, 0.45]})
    first = paired_comparisons(per_seed, n_boot=1000, seed=7)
    again = paired_comparisons(per_seed, n_boot=1000, seed=7)
    other = paired_comparisons(per_seed, n_boot=1000, seed=8)
    pd.testing.assert_frame_equal(first, again)
    assert not np.allclose(first[["ci_low", "ci_high"]], other[["ci_low", "ci_high"]])
    assert list(zip(first["method_a"], first["method_b"])) == [("a", "b"), ("a", "c"), ("b", "c")]
    ordered = paired_comparisons(per_seed, methods=["c", "a", "b"], n_boot=1000, seed=7)
    assert list(zip(ordered["method_a"], ordered["method_b"])) == [("c", "a"), ("c", "b"), ("a", "b")]
    # Each pair draws from its own generator: its CI does not depend on which other pairs are computed.
    ab = ordered[(ordered["method_a"] == "a") & (ordered["method_b"] == "b")].iloc[0]
    assert (ab["ci_low"], ab["ci_high"]) == (first["ci_low"].iloc[0], first["ci_high"].iloc[0])


def test_unknown_method_is_a_clear_error():
    with pytest.raises(ValueError, match="gradcam"):
        paired_comparisons(per_seed_frame({"a": BETTER, "b": WORSE}), methods=["a", "gradcam"])


def test_significance_sentences_name_the_winner_and_the_numbers():
    per_seed = per_seed_frame({"saliency": WORSE, "input_x_gradient": BETTER, "twin": WORSE})
    comparisons = paired_comparisons(per_seed, methods=["saliency", "input_x_gradient", "twin"], n_boot=1000)
    lines = significance_sentences(comparisons)
    assert len(lines) == 3
    assert lines[0].startswith("input_x_gradient beats saliency on test win-rate (overall): +0.")
    assert "Wilcoxon p = 0.00781" in lines[0] and "8 seeds" in lines[0] and "95% CI 0." in lines[0]
    # Pairs follow the given order: (saliency, input_x_gradient), (saliency, twin), (input_x_gradient, twin).
    assert lines[1].startswith("No reliable difference between saliency and twin on test win-rate (overall): +0.000")
    assert "Note: all differences are zero." in lines[1]
    assert lines[2].startswith("input_x_gradient beats twin")


# --- tables ------------------------------------------------------------------------------------------------------


def across_for_table() -> pd.DataFrame:
    rows = []
    for split in ("test", "train", "val"):
        for cls in ("hole", "overall", "crack"):
            for method in ("saliency", "gradcam"):
                rows.append({"experiment": "exp", "split": split, "class": cls, "method": method, "metric": "win_rate",
                             "mean": 0.25 if method == "gradcam" else 0.75, "std": 0.034, "n_seeds": 10})
    return pd.DataFrame(rows)


def test_mean_std_table_orders_splits_classes_and_methods():
    table = mean_std_table(across_for_table(), rows=["split", "class"], columns="method")
    assert list(table.columns) == ["split", "class", "gradcam", "saliency"]
    assert list(table["split"]) == ["train"] * 3 + ["val"] * 3 + ["test"] * 3
    assert list(table["class"][:3]) == ["overall", "crack", "hole"]
    assert table["saliency"].iloc[0] == "0.750 ± 0.034"
    given = mean_std_table(across_for_table(), rows=["split", "class"], columns="method",
                           order={"method": ["saliency", "gradcam"]})
    assert list(given.columns) == ["split", "class", "saliency", "gradcam"]
    assert table.attrs["seeds_note"] == "mean ± std over 10 seeds"


def test_mean_std_table_needs_one_value_per_cell():
    across = across_for_table()
    across = pd.concat([across, across.assign(metric="tko")], ignore_index=True)
    with pytest.raises(ValueError, match="filter"):
        mean_std_table(across, rows=["split", "class"], columns="method")


def test_write_table_writes_csv_markdown_and_latex(tmp_path):
    frame = pd.DataFrame({"method": ["input_x_gradient", "grad_cam"], "win_rate": [0.123456789, 0.876543211],
                          "note": ["50% & more", "#1"]})
    paths = write_table(frame, tmp_path / "tables", "win_rate", caption="Test win-rate")
    assert set(paths) == {"csv", "md", "tex"} and all(p.is_file() for p in paths.values())

    pd.testing.assert_frame_equal(pd.read_csv(paths["csv"]), frame)  # full precision round trip

    markdown = paths["md"].read_text(encoding="utf-8").splitlines()
    assert markdown[0] == "Test win-rate"
    table_lines = [line for line in markdown if line.startswith("|")]
    assert [c.strip() for c in table_lines[0].strip("|").split("|")] == ["method", "win_rate", "note"]
    assert set(table_lines[1].replace("|", "").replace(" ", "")) <= {"-", ":"}
    assert "| input_x_gradient" in table_lines[2] and "0.123" in table_lines[2]
    assert len(table_lines) == 4

    latex = paths["tex"].read_text(encoding="utf-8")
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert rule in latex
    assert r"input\_x\_gradient" in latex
    assert "input_x_gradient" not in latex
    assert r"50\% \& more" in latex and r"\#1" in latex
    assert r"\caption{Test win-rate}" in latex
    assert "method & win\\_rate & note \\\\" in latex


def test_seed_count_reaches_the_markdown_and_latex_caption(tmp_path):
    table = mean_std_table(across_for_table(), rows=["split", "class"], columns="method")
    paths = write_table(table, tmp_path, "winrate", caption="Win-rate per split and class")
    caption = "Win-rate per split and class; mean ± std over 10 seeds"
    assert paths["md"].read_text(encoding="utf-8").splitlines()[0] == caption
    latex = paths["tex"].read_text(encoding="utf-8")
    assert r"\caption{Win-rate per split and class; mean $\pm$ std over 10 seeds}" in latex
    assert r"0.750 $\pm$ 0.034" in latex and "±" not in latex.split("\n", 1)[1]
    assert pd.read_csv(paths["csv"])["saliency"].iloc[0] == table["saliency"].iloc[0]
