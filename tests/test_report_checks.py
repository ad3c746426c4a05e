"""Tests of the report's "does the explanation tell the truth" evidence: faithfulness curves, sanity, stability,
agreement, the cost table and the comparison across experiments (backbones).

Every frame is small and hand-made, so that each expected number can be worked out on paper.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xai_lightning.metrics.sanity import sanity_verdict
from xai_lightning.reporting import figures
from xai_lightning.reporting.aggregate import (
    agreement_square,
    agreement_summary,
    randomization_summary,
    stability_summary,
)
from xai_lightning.reporting.figures import common
from xai_lightning.reporting.report import build_report

NAN = float("nan")
METHODS = ["gradcam", "saliency", "smoothgrad"]
LAYERS = ["original", "classifier", "encoder.layer4"]
NEW_HEADINGS = [
    "Does the explanation tell the truth?",
    "Deletion and insertion curves",
    "Sanity: cascading randomisation",
    "Run-to-run stability",
    "Cross-method agreement",
    "Cost and quality",
    "Across experiments",
]


# --- hand-made inputs ----------------------------------------------------------------------------


def per_image_rows(
    values: dict[tuple[str, int, str, str], list[float]],
    backbones: dict[str, str] | None = None,
):
    """per_image rows from {(experiment, seed, method, metric): [value per image]} on the test split, class crack."""
    rows = []
    for (experiment, seed, method, metric), per_image in values.items():
        for i, value in enumerate(per_image):
            row = {
                "experiment": experiment,
                "run": f"seed{seed}",
                "seed": seed,
                "split": "test",
                "image_id": f"{i:03d}.png",
                "class": "crack",
                "target": 1,
                "prediction": 1,
                "method": method,
                "metric": metric,
                "value": value,
            }
            if backbones:
                row["backbone"] = backbones[experiment]
            rows.append(row)
    return pd.DataFrame(rows)


def model_metrics(experiments=("exp",), seeds=(0, 1)) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "experiment": e,
                "run": f"seed{s}",
                "seed": s,
                "split": "test",
                "metric": "acc",
                "value": 0.9,
            }
            for e in experiments
            for s in seeds
        ]
    )


def make_faithfulness(experiment: str = "exp", seeds=(0, 1, 2)) -> pd.DataFrame:
    rows = []
    for seed in seeds:
        for method in METHODS:
            for curve in ("deletion", "insertion"):
                for fraction in np.linspace(0.0, 1.0, 5):
                    probability = 1 - fraction if curve == "deletion" else fraction
                    rows.append(
                        {
                            "experiment": experiment,
                            "run": f"seed{seed}",
                            "seed": seed,
                            "split": "test",
                            "method": method,
                            "curve": curve,
                            "fraction": fraction,
                            "probability": probability * (0.9 + 0.05 * seed),
                            "n_images": 4,
                        }
                    )
    return pd.DataFrame(rows)


def make_randomization(
    spearman: dict[tuple[int, str, str], list[float]], experiment: str = "exp"
) -> pd.DataFrame:
    """Raw randomisation rows from {(seed, method, image_id): [spearman per step]}."""
    rows = []
    for (seed, method, image_id), values in spearman.items():
        for step, value in enumerate(values):
            rows.append(
                {
                    "experiment": experiment,
                    "run": f"seed{seed}",
                    "seed": seed,
                    "split": "test",
                    "method": method,
                    "step": step,
                    "layer": LAYERS[step],
                    "image_id": image_id,
                    "class": "crack",
                    "spearman": value,
                }
            )
    return pd.DataFrame(rows)


def make_agreement(
    values: dict[tuple[int, str, str, str, str], float], experiment: str = "exp"
) -> pd.DataFrame:
    """Agreement rows from {(seed, image_id, class, method_a, method_b): iou}."""
    return pd.DataFrame(
        [
            {
                "experiment": experiment,
                "run": f"seed{seed}",
                "seed": seed,
                "split": "test",
                "image_id": image_id,
                "class": cls,
                "method_a": a,
                "method_b": b,
                "iou": iou,
            }
            for (seed, image_id, cls, a, b), iou in values.items()
        ]
    )


def make_stability(
    values: dict[tuple[int, str], list[tuple[float, float]]], experiment: str = "exp"
) -> pd.DataFrame:
    """Stability rows from {(seed, method): [(spearman, iou) per image]}."""
    return pd.DataFrame(
        [
            {
                "experiment": experiment,
                "run": f"seed{seed}",
                "seed": seed,
                "split": "test",
                "method": method,
                "image_id": f"{i:03d}.png",
                "class": "crack",
                "spearman": rho,
                "iou": iou,
                "runs": 5,
            }
            for (seed, method), per_image in values.items()
            for i, (rho, iou) in enumerate(per_image)
        ]
    )


def assert_png(path: Path | None) -> None:
    assert path is not None and path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- agreement -----------------------------------------------------------------------------------


AGREEMENT = {
    # seed 0: two images of two classes
    (0, "i1", "crack", "a", "b"): 0.2,
    (0, "i2", "cut", "a", "b"): 0.4,
    (0, "i1", "crack", "a", "c"): 0.6,
    (0, "i2", "cut", "a", "c"): 0.8,
    (0, "i1", "crack", "b", "c"): 0.1,
    (0, "i2", "cut", "b", "c"): 0.3,
    # seed 1 lists the pair (a, b) the other way round: still the same pair
    (1, "i1", "crack", "b", "a"): 0.6,
    (1, "i2", "cut", "b", "a"): 0.8,
    (1, "i1", "crack", "a", "c"): 0.5,
    (1, "i2", "cut", "a", "c"): 0.5,
    (1, "i1", "crack", "b", "c"): 0.0,
    (1, "i2", "cut", "b", "c"): 0.2,
}


def test_agreement_matrix_is_symmetric_with_ones_on_the_diagonal_and_averages_seeds():
    summary = agreement_summary(make_agreement(AGREEMENT))
    overall = agreement_square(summary, "exp", "test")
    assert list(overall.index) == list(overall.columns) == ["a", "b", "c"]
    values = overall.to_numpy()
    np.testing.assert_allclose(values, values.T)
    np.testing.assert_allclose(np.diag(values), 1.0)
    # Per seed the mean over images, then the mean over seeds: a–b is (0.3 + 0.7) / 2.
    assert overall.loc["a", "b"] == pytest.approx(0.5)
    assert overall.loc["a", "c"] == pytest.approx((0.7 + 0.5) / 2)
    assert overall.loc["b", "c"] == pytest.approx((0.2 + 0.1) / 2)
    crack = agreement_square(summary, "exp", "test", class_="crack")
    assert crack.loc["b", "a"] == pytest.approx((0.2 + 0.6) / 2)
    row = summary[
        (summary["class"] == "overall")
        & (summary["method_a"] == "a")
        & (summary["method_b"] == "b")
    ]
    assert (
        row["std"].iloc[0] == pytest.approx(np.std([0.3, 0.7], ddof=1))
        and row["n_seeds"].iloc[0] == 2
    )


def test_agreement_square_keeps_the_given_method_order():
    summary = agreement_summary(make_agreement(AGREEMENT))
    square = agreement_square(summary, "exp", "test", methods=["c", "a"])
    assert list(square.index) == ["c", "a", "b"]
    with pytest.raises(ValueError, match="no agreement values"):
        agreement_square(summary, "exp", "val")


# --- randomisation -------------------------------------------------------------------------------


RANDOMIZATION = {
    # m: image x has a constant intact map (NaN at step 0) and is left out at every step;
    # image y's randomised map became constant at the last step (NaN) and counts as 0.
    (0, "m", "w"): [1.0, -0.8, 0.6],
    (0, "m", "x"): [NAN, 0.9, 0.9],
    (0, "m", "y"): [1.0, 0.4, NAN],
    (0, "n", "w"): [1.0, 0.2, 0.1],
    (0, "n", "x"): [1.0, NAN, -0.3],
    (0, "n", "y"): [1.0, 0.0, 0.2],
    (1, "m", "w"): [1.0, 0.5, 0.7],
    (1, "m", "x"): [1.0, 0.5, 0.9],
    (1, "m", "y"): [1.0, 0.5, 0.8],
    (1, "n", "w"): [1.0, 0.0, 0.0],
    (1, "n", "x"): [1.0, 0.1, 0.1],
    (1, "n", "y"): [1.0, 0.1, 0.1],
}


def test_randomization_summary_follows_sanity_verdict_nan_rules():
    raw = make_randomization(RANDOMIZATION)
    summary = randomization_summary(raw).set_index(["seed", "method", "step"])
    assert (
        summary.loc[(0, "m", 0), "value"] == 1.0
        and summary.loc[(0, "m", 0), "n_images"] == 2
    )
    # |ρ|, and image x (NaN at step 0) is left out ...
    assert summary.loc[(0, "m", 1), "value"] == pytest.approx((0.8 + 0.4) / 2)
    # ... while image y's NaN at the last step counts as 0.
    assert summary.loc[(0, "m", 2), "value"] == pytest.approx((0.6 + 0.0) / 2)
    assert summary.loc[(0, "n", 1), "value"] == pytest.approx((0.2 + 0.0 + 0.0) / 3)
    assert summary.loc[(0, "n", 2), "layer"] == "encoder.layer4"
    # The last step agrees with sanity_verdict, seed by seed.
    for seed in (0, 1):
        frame = raw[raw["seed"] == seed].rename(columns={"image_id": "image"})
        verdict = sanity_verdict(frame)
        for method in ("m", "n"):
            assert summary.loc[(seed, method, 2), "value"] == pytest.approx(
                verdict.loc[method, "spearman"]
            )
            assert (
                summary.loc[(seed, method, 2), "n_images"]
                == verdict.loc[method, "n_images"]
            )


def test_randomization_summary_keeps_a_method_without_informative_images_as_nan():
    raw = make_randomization(
        {(0, "m", "w"): [NAN, 0.3, 0.2], (0, "n", "w"): [1.0, 0.3, 0.2]}
    )
    summary = randomization_summary(raw).set_index(["method", "step"])
    assert (
        math.isnan(summary.loc[("m", 2), "value"])
        and summary.loc[("m", 2), "n_images"] == 0
    )
    assert summary.loc[("n", 2), "value"] == pytest.approx(0.2)


# --- stability -----------------------------------------------------------------------------------


def test_stability_summary_is_the_image_mean_per_seed():
    frame = make_stability(
        {
            (0, "smoothgrad"): [(0.9, 0.6), (0.7, NAN)],
            (1, "smoothgrad"): [(0.5, 0.5), (0.5, 0.7)],
        }
    )
    summary = stability_summary(frame).set_index(["seed", "metric"])
    assert summary.loc[(0, "spearman"), "value"] == pytest.approx(0.8)
    assert (
        summary.loc[(0, "iou"), "value"] == pytest.approx(0.6)
        and summary.loc[(0, "iou"), "n_images"] == 1
    )
    assert summary.loc[(1, "iou"), "value"] == pytest.approx(0.6)


# --- figures -------------------------------------------------------------------------------------


@pytest.fixture
def drawn(monkeypatch) -> list[dict]:
    """Axis labels and tick labels of each figure, read just before the module saves it."""
    records: list[dict] = []
    save = common.save_figure

    def recording_save(fig, out_path):
        axes = [
            ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"
        ]
        records.append(
            {
                "xlabels": [ax.get_xlabel() for ax in axes],
                "ylabels": [ax.get_ylabel() for ax in axes],
                "xticklabels": [
                    [t.get_text() for t in ax.get_xticklabels()] for ax in axes
                ],
                "texts": [[t.get_text() for t in ax.texts] for ax in axes],
                "lines": [[line.get_ydata() for line in ax.get_lines()] for ax in axes],
            }
        )
        return save(fig, out_path)

    monkeypatch.setattr(common, "save_figure", recording_save)
    return records


def test_curve_summary_takes_the_x_column_and_training_curves_still_use_epochs():
    rows = pd.DataFrame(
        {
            "seed": [0, 1, 0, 1],
            "fraction": [0.0, 0.0, 1.0, 1.0],
            "probability": [0.8, 1.0, 0.0, 0.2],
        }
    )
    stats, n_seeds = common.curve_summary(rows, x="fraction", value="probability")
    assert n_seeds == 2 and list(stats.index) == [0.0, 1.0]
    assert stats["mean"].tolist() == pytest.approx([0.9, 0.1])
    assert stats["low"].tolist() == pytest.approx([0.8, 0.0])
    assert stats["high"].tolist() == pytest.approx([1.0, 0.2])
    epochs = pd.DataFrame(
        {"seed": [0, 1, 2], "epoch": [0, 0, 0], "value": [1.0, 2.0, 3.0]}
    )
    stats, _ = common.curve_summary(epochs)
    # Three seeds: the band is ± the sample std, 1.
    assert stats.loc[0, "low"] == pytest.approx(1.0)
    assert stats.loc[0, "high"] == pytest.approx(3.0)


def test_faithfulness_curves_draws_two_labelled_panels(tmp_path, drawn):
    path = figures.faithfulness_curves(
        make_faithfulness(), tmp_path / "faithfulness.png"
    )
    assert_png(path)
    record = drawn[-1]
    assert record["xlabels"] == [
        "fraction of pixels removed",
        "fraction of pixels inserted",
    ]
    assert record["ylabels"][0] == "target probability"
    assert all(len(lines) == len(METHODS) for lines in record["lines"])
    with pytest.raises(ValueError, match="split"):
        figures.faithfulness_curves(
            make_faithfulness(), tmp_path / "x.png", split="val"
        )


def test_randomization_curves_list_layers_in_order_with_the_threshold(tmp_path, drawn):
    raw = make_randomization(RANDOMIZATION)
    for data in (raw, randomization_summary(raw)):
        assert_png(figures.randomization_curves(data, tmp_path / "randomization.png"))
        record = drawn[-1]
        assert record["xticklabels"][0] == LAYERS
        # One line per method plus the dashed threshold at 0.5.
        assert len(record["lines"][0]) == 3
        assert list(record["lines"][0][-1]) == [0.5, 0.5]


def test_agreement_heatmap_annotates_every_cell(tmp_path, drawn):
    summary = agreement_summary(make_agreement(AGREEMENT))
    assert_png(figures.agreement_heatmap(summary, tmp_path / "agreement.png"))
    texts = drawn[-1]["texts"][0]
    assert len(texts) == 9 and texts.count("1.00") == 3 and texts.count("0.50") == 2
    assert drawn[-1]["xticklabels"][0] == ["a", "b", "c"]
    two = pd.concat([summary, summary.assign(experiment="other")], ignore_index=True)
    assert_png(
        figures.agreement_heatmap(
            two, tmp_path / "agreement2.png", title="two experiments"
        )
    )
    assert len(drawn[-1]["texts"]) == 2


# --- report --------------------------------------------------------------------------------------


def cost_per_image() -> pd.DataFrame:
    """Two methods, two seeds, two images: time, TKO and deletion AUC."""
    return per_image_rows(
        {
            ("exp", 0, "gradcam", "seconds"): [0.01, 0.03],
            ("exp", 1, "gradcam", "seconds"): [0.04, 0.04],
            ("exp", 0, "saliency", "seconds"): [0.002, 0.002],
            ("exp", 1, "saliency", "seconds"): [0.002, 0.002],
            ("exp", 0, "gradcam", "tko"): [0.8, 0.6],
            ("exp", 1, "gradcam", "tko"): [0.6, 0.6],
            ("exp", 0, "saliency", "tko"): [0.2, 0.4],
            ("exp", 1, "saliency", "tko"): [0.4, 0.4],
            ("exp", 0, "gradcam", "deletion_auc"): [0.1, 0.3],
            ("exp", 1, "gradcam", "deletion_auc"): [0.2, 0.2],
            ("exp", 0, "saliency", "deletion_auc"): [0.5, 0.5],
            ("exp", 1, "saliency", "deletion_auc"): [0.4, 0.6],
        }
    )


def test_cost_table_columns_and_values(tmp_path):
    randomization = make_randomization(
        {
            (s, m, "w"): [1.0, 0.5, 0.2 if m == "gradcam" else 0.9]
            for s in (0, 1)
            for m in ("gradcam", "saliency")
        }
    )
    report = build_report(
        tmp_path,
        model_metrics(),
        cost_per_image(),
        n_boot=20,
        randomization=randomization,
    )
    table = report.tables["cost_quality"].set_index("method")
    expected = [
        "experiment",
        "ms / image",
        "TKO",
        "win-rate",
        "deletion AUC",
        "randomisation |ρ|",
    ]
    assert list(table.columns) == expected
    # gradcam: 20 ms on seed 0 and 40 ms on seed 1.
    assert (
        table.loc["gradcam", "ms / image"] == f"30.000 ± {np.std([20, 40], ddof=1):.3f}"
    )
    assert table.loc["saliency", "ms / image"] == "2.000 ± 0.000"
    assert table.loc["gradcam", "TKO"] == f"0.650 ± {np.std([0.7, 0.6], ddof=1):.3f}"
    assert table.loc["gradcam", "win-rate"] == "1.000 ± 0.000"
    assert table.loc["saliency", "deletion AUC"] == "0.500 ± 0.000"
    assert table.loc["gradcam", "randomisation |ρ|"] == "0.200 ± 0.000"
    # The time is in the cost table, not among the other metrics of section 4.
    assert "seconds" not in report.tables
    text = report.path.read_text()
    assert (
        "## 6. Does the explanation tell the truth?" in text
        and "## 7. Cost and quality" in text
    )
    sanity = report.tables["randomization"].set_index("method")
    assert (
        sanity.loc["saliency", "verdict"] == "fails"
        and sanity.loc["gradcam", "verdict"] == "passes"
    )
    assert (tmp_path / "tables" / "cost_quality.tex").is_file()


def across_per_image(backbones: dict[str, str]) -> pd.DataFrame:
    """Two experiments where gradcam leads on r18 and saliency on r50."""
    return per_image_rows(
        {
            ("r18", 0, "gradcam", "tko"): [0.9],
            ("r18", 1, "gradcam", "tko"): [0.7],
            ("r18", 0, "saliency", "tko"): [0.1],
            ("r18", 1, "saliency", "tko"): [0.3],
            ("r50", 0, "gradcam", "tko"): [0.2],
            ("r50", 1, "gradcam", "tko"): [0.2],
            ("r50", 0, "saliency", "tko"): [0.5],
            ("r50", 1, "saliency", "tko"): [0.7],
            ("r18", 0, "gradcam", "deletion_auc"): [0.1],
            ("r18", 1, "gradcam", "deletion_auc"): [0.1],
            ("r18", 0, "saliency", "deletion_auc"): [0.3],
            ("r18", 1, "saliency", "deletion_auc"): [0.3],
            ("r50", 0, "gradcam", "deletion_auc"): [0.2],
            ("r50", 1, "gradcam", "deletion_auc"): [0.2],
            ("r50", 0, "saliency", "deletion_auc"): [0.4],
            ("r50", 1, "saliency", "deletion_auc"): [0.4],
        },
        backbones=backbones,
    )


def test_across_experiments_uses_backbones_as_columns_and_ranks_within_each(tmp_path):
    per_image = across_per_image({"r18": "resnet18", "r50": "resnet50"})
    report = build_report(tmp_path, model_metrics(("r18", "r50")), per_image, n_boot=20)
    table = report.tables["across_experiments"]
    assert list(table.columns) == ["metric", "method", "resnet18", "resnet50"]
    cells = table.set_index(["metric", "method"])
    assert (
        cells.loc[("TKO", "gradcam"), "resnet18"]
        == f"0.800 ± {np.std([0.9, 0.7], ddof=1):.3f} (1)"
    )
    assert cells.loc[("TKO", "saliency"), "resnet18"].endswith("(2)")
    assert cells.loc[("TKO", "saliency"), "resnet50"].endswith("(1)")
    assert cells.loc[("win-rate", "saliency"), "resnet50"] == "1.000 ± 0.000 (1)"
    # Deletion AUC: lower is better, so gradcam ranks first in both columns.
    assert cells.loc[("deletion AUC", "gradcam"), "resnet18"] == "0.100 ± 0.000 (1)"
    assert cells.loc[("deletion AUC", "gradcam"), "resnet50"] == "0.200 ± 0.000 (1)"
    text = report.path.read_text()
    assert "Across experiments" in text
    assert "TKO: the top method differs (resnet18: gradcam, resnet50: saliency)" in text
    assert "deletion AUC: gradcam ranks first in every column" in text


def test_across_experiments_falls_back_to_experiment_names(tmp_path):
    per_image = across_per_image({"r18": "resnet18", "r50": "resnet18"})
    report = build_report(tmp_path, model_metrics(("r18", "r50")), per_image, n_boot=20)
    assert list(report.tables["across_experiments"].columns) == [
        "metric",
        "method",
        "r18",
        "r50",
    ]


def test_report_has_every_new_section_with_figures_when_all_evidence_is_given(tmp_path):
    stability = make_stability(
        {(s, "smoothgrad"): [(0.9, 0.8), (0.7, 0.6)] for s in (0, 1)}
    )
    agreement = make_agreement(AGREEMENT)
    randomization = make_randomization(RANDOMIZATION)
    report = build_report(
        tmp_path,
        model_metrics(),
        cost_per_image(),
        n_boot=20,
        faithfulness_curves=make_faithfulness(seeds=(0, 1)),
        randomization=randomization,
        stability=stability,
        agreement=agreement,
    )
    text = report.path.read_text()
    for heading in NEW_HEADINGS[:-1]:
        assert heading in text
    assert (
        "### 6.1 Deletion and insertion curves" in text
        and "### 6.4 Cross-method agreement" in text
    )
    assert "Across experiments" not in text  # one experiment: nothing to compare
    for name in ("faithfulness_curves", "randomization_curves", "agreement_heatmap"):
        assert_png(report.figures[name])
        # Shown in its section, not again under "Figures".
        assert text.count(f"figures/{name}.png") == 1
    stable = report.tables["stability"].set_index("method")
    assert list(stable.columns) == ["experiment", "Spearman", "top-10 % IoU"]
    assert stable.loc["smoothgrad", "Spearman"] == "0.800 ± 0.000"
    assert (tmp_path / "tables" / "agreement_per_class.csv").is_file()
    per_class = pd.read_csv(tmp_path / "tables" / "agreement_per_class.csv")
    assert {"crack", "cut", "overall"} <= set(per_class["class"])


def test_report_without_new_evidence_has_no_new_sections(tmp_path):
    per_image = per_image_rows(
        {
            ("exp", s, m, "tko"): [0.1 * (s + 1) + (0.3 if m == "gradcam" else 0.0)]
            for s in (0, 1)
            for m in METHODS
        }
    )
    report = build_report(tmp_path, model_metrics(), per_image, n_boot=20)
    text = report.path.read_text()
    for heading in NEW_HEADINGS:
        assert heading not in text
    assert {
        "cost_quality",
        "randomization",
        "stability",
        "agreement",
        "across_experiments",
    }.isdisjoint(report.tables)
    assert "## 5. Which differences hold" in text
    empty = build_report(
        tmp_path / "empty",
        model_metrics(),
        per_image,
        n_boot=20,
        stability=pd.DataFrame(),
        agreement=None,
    )
    assert "Run-to-run stability" not in empty.path.read_text()
