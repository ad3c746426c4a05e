"""Tests of the paper figures: each writes a readable PNG of the expected size, draws what the data says, fails clearly.

Figures are inspected twice: as written PNGs (size, not blank, mask outline visible) and, through a hook on the
module's save step, as matplotlib objects (tick labels, titles, bar heights, bands) just before they are saved.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.contour import ContourSet
from matplotlib.patches import Rectangle
from PIL import Image

from xai_lightning.reporting import figures
from xai_lightning.reporting.figures import common
from xai_lightning.reporting.figures import heatmap_grid, method_colors, metric_distributions, training_curves, win_rate_bars

METHODS = ["gradcam", "saliency", "random"]
CLASSES = ["crack", "hole"]
SEEDS = [0, 1, 2]
#: Overall win-rates per method, chosen so that the default order (mean descending) is saliency, gradcam, random.
OVERALL_MEANS = {"gradcam": 0.35, "saliency": 0.45, "random": 0.20}


# --- synthetic inputs ---------------------------------------------------------------------------


def make_across(experiment: str = "exp") -> pd.DataFrame:
    """The aggregated table: 3 methods × (overall + 2 classes) × 2 metrics × 2 splits, 3 seeds each."""
    rng = np.random.default_rng(0)
    rows = []
    for split in ("train", "test"):
        for cls in ["overall", *CLASSES]:
            for metric in ("win_rate", "tko"):
                for method in METHODS:
                    centre = OVERALL_MEANS[method] if cls == "overall" else rng.uniform(0.1, 0.6)
                    values = list(centre + rng.normal(0, 0.05, len(SEEDS)))
                    rows.append(
                        {
                            "experiment": experiment,
                            "split": split,
                            "class": cls,
                            "method": method,
                            "metric": metric,
                            "mean": float(np.mean(values)),
                            "std": float(np.std(values, ddof=1)),
                            "n_seeds": len(values),
                            "values": values,
                        }
                    )
    return pd.DataFrame(rows)


def make_per_image() -> pd.DataFrame:
    """Per-image TKO: 6 images × 3 seeds per method, with NaNs on some images of 'random' only."""
    rng = np.random.default_rng(1)
    rows = []
    for seed in SEEDS:
        for k in range(6):
            cls = CLASSES[k % 2]
            for i, method in enumerate(METHODS):
                value = float(rng.uniform(0.1 * i, 0.1 * i + 0.5))
                if method == "random" and k < 2:
                    value = math.nan  # e.g. an image whose mask was empty: the metric is undefined there
                rows.append(
                    {
                        "experiment": "exp",
                        "seed": seed,
                        "split": "test",
                        "image_id": f"{cls}/{k:03d}",
                        "class": cls,
                        "method": method,
                        "metric": "tko",
                        "value": value,
                    }
                )
    return pd.DataFrame(rows)


def make_curves(seeds: list[int] = SEEDS) -> pd.DataFrame:
    """Per-epoch curves of loss, accuracy and TKO per method, plus a per-class TKO key the default must skip."""
    rng = np.random.default_rng(2)
    rows = []
    for seed in seeds:
        for epoch in range(5):
            values = {
                "val/loss": 1.0 / (epoch + 1) + 0.1 * seed,
                "val/acc": 0.5 + 0.1 * epoch - 0.02 * seed,
                "train/loss": 1.2 / (epoch + 1),
                "xai/val/tko/crack/gradcam": 0.3,
            }
            values.update({f"xai/val/tko/{m}": 0.2 + 0.05 * epoch + 0.01 * seed + 0.01 * rng.random() for m in METHODS})
            rows += [{"experiment": "exp", "seed": seed, "epoch": epoch, "key": k, "value": v} for k, v in values.items()]
    return pd.DataFrame(rows)


def make_examples(n_per_class: int = 1, empty_mask: bool = False) -> list[dict]:
    """32×32 examples: a dark grey image, a square defect mask, and maps that peak away from the mask."""
    examples = []
    yy, xx = np.mgrid[:32, :32]
    for cls in CLASSES:
        for k in range(n_per_class):
            mask = np.zeros((32, 32), dtype=bool)
            if not empty_mask:
                mask[8:20, 10:24] = True
            maps = {m: np.exp(-((yy - 24 + 2 * i) ** 2 + (xx - 6 - 3 * i) ** 2) / 30.0) for i, m in enumerate(METHODS)}
            examples.append(
                {
                    "image": np.full((32, 32, 3), 0.25, dtype=np.float32),
                    "mask": mask,
                    "class": cls,
                    "image_id": f"{cls}_{k:03d}",
                    "maps": maps,
                }
            )
    return examples


# --- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def drawn(monkeypatch) -> list[dict]:
    """What each figure drew, read from the matplotlib objects just before the module saves and clears them."""
    records: list[dict] = []
    save = common.save_figure

    def recording_save(fig, out_path):
        axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "colorbar"]
        records.append(
            {
                "suptitle": fig._suptitle.get_text() if fig._suptitle else "",
                "legend": [t.get_text() for legend in fig.legends for t in legend.get_texts()],
                "axes": [
                    {
                        "title": ax.get_title(),
                        "xticklabels": [t.get_text() for t in ax.get_xticklabels()],
                        "ylabel": ax.get_ylabel(),
                        "ylim": ax.get_ylim(),
                        "bars": [
                            (p.get_x() + p.get_width() / 2, p.get_height(), p.get_facecolor()[:3])
                            for p in ax.patches
                            if isinstance(p, Rectangle)
                        ],
                        "contours": sum(isinstance(c, ContourSet) for c in ax.collections),
                        "bands": [c for c in ax.collections if isinstance(c, PolyCollection)],
                        "lines": [line.get_ydata() for line in ax.get_lines()],
                    }
                    for ax in axes
                ],
            }
        )
        path = save(fig, out_path)
        records[-1]["axes_after_save"] = len(fig.axes)
        return path

    monkeypatch.setattr(common, "save_figure", recording_save)
    return records


def read_png(path: Path) -> np.ndarray:
    """The PNG as an RGB uint8 array, after checking that it exists and is non-empty."""
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def assert_not_blank(pixels: np.ndarray) -> None:
    """A figure with content has pixels of different values."""
    assert pixels.std() > 0


# --- method_colors ------------------------------------------------------------------------------


def test_method_colors_are_stable_distinct_and_order_free():
    registry = [
        "gradcam", "saliency", "smoothgrad", "guided_backprop", "guided_gradcam", "integrated_gradients", "input_x_gradient",
        "deeplift", "gradient_shap", "occlusion", "lime", "kernel_shap", "segmentation_head", "random",
    ]
    colors = method_colors(registry)
    assert set(colors) == set(registry)
    assert colors == method_colors(list(reversed(registry))) == method_colors(registry)
    assert len(set(colors.values())) == len(registry)
    for color in colors.values():
        assert len(color) == 3 and all(0.0 <= c <= 1.0 for c in color)
    small = method_colors(METHODS)
    assert len(set(small.values())) == 3
    # The random baseline reads as grey in every figure; no other method is grey.
    assert small["random"] == colors["random"] and len(set(small["random"])) == 1
    assert all(len(set(np.round(c, 3))) > 1 for m, c in colors.items() if m != "random")


# --- win_rate_bars ------------------------------------------------------------------------------


def test_win_rate_bars_draws_means_stds_and_classes(tmp_path, drawn):
    across = make_across()
    path = win_rate_bars(across, tmp_path / "sub" / "win.png")
    assert path == tmp_path / "sub" / "win.png"
    pixels = read_png(path)
    assert pixels.shape[:2] == (round(2.8 * figures.DPI), round(7.0 * figures.DPI))  # full paper width at 200 dpi
    assert_not_blank(pixels)

    (ax,) = drawn[0]["axes"]
    assert ax["xticklabels"] == ["overall", "crack", "hole"]
    assert ax["ylim"][0] == 0.0 and ax["ylim"][1] >= 1.0
    assert "mean ± std over 3 seeds" in ax["title"]
    # Default order: overall mean descending, shown by the legend and by the bars' left-to-right order.
    assert drawn[0]["legend"][:3] == ["saliency", "gradcam", "random"]
    test = across[(across["split"] == "test") & (across["metric"] == "win_rate")]
    expected = {(r["class"], r["method"]): r["mean"] for _, r in test.iterrows()}
    bars = sorted(ax["bars"])
    heights = [h for _, h, _ in bars]
    order = [(c, m) for c in ["overall", "crack", "hole"] for m in ["saliency", "gradcam", "random"]]
    assert heights == pytest.approx([expected[k] for k in order])
    colors = method_colors(METHODS)
    first_group = [tuple(np.round(c, 6)) for _, _, c in bars[:3]]
    assert first_group == [tuple(np.round(colors[m], 6)) for m in ["saliency", "gradcam", "random"]]
    assert drawn[0]["axes_after_save"] == 0  # the figure was cleared once saved


def test_win_rate_bars_respects_requested_methods_and_ranges(tmp_path, drawn):
    across = make_across()
    win_rate_bars(across, tmp_path / "two.png", methods=["random", "gradcam"])
    assert drawn[0]["legend"][:2] == ["random", "gradcam"]
    assert len(drawn[0]["axes"][0]["bars"]) == 2 * 3
    # TKO is no share of 1: its axis follows the data instead of stretching to 1.
    win_rate_bars(across, tmp_path / "tko.png", metric="tko", split="train")
    assert drawn[1]["axes"][0]["ylim"][1] < 1.0
    assert "TKO" in drawn[1]["axes"][0]["title"] and "train" in drawn[1]["axes"][0]["title"]


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"split": "val"}, "'val'"),
        ({"metric": "auroc"}, "'auroc'"),
        ({"methods": ["lime"]}, "lime"),
        ({"experiment": "other"}, "'other'"),
    ],
)
def test_win_rate_bars_rejects_what_the_table_lacks(tmp_path, kwargs, named):
    with pytest.raises(ValueError, match=named) as error:
        win_rate_bars(make_across(), tmp_path / "x.png", **kwargs)
    assert not (tmp_path / "x.png").exists()
    # The message also says what does exist.
    assert any(word in str(error.value) for word in ("test", "win_rate", "gradcam", "exp"))


def test_win_rate_bars_needs_a_choice_among_experiments(tmp_path, drawn):
    both = pd.concat([make_across("a"), make_across("b")])
    with pytest.raises(ValueError, match=r"\['a', 'b'\]"):
        win_rate_bars(both, tmp_path / "x.png")
    assert win_rate_bars(both, tmp_path / "b.png", experiment="b").is_file()


def test_win_rate_bars_with_one_seed_has_no_error_bars(tmp_path, drawn):
    one_seed = make_across().assign(std=math.nan, n_seeds=1)  # a sample std needs two seeds
    pixels = read_png(win_rate_bars(one_seed, tmp_path / "one.png"))
    assert_not_blank(pixels)
    title = drawn[0]["axes"][0]["title"]
    assert "1 seed" in title and "±" not in title


# --- metric_distributions -----------------------------------------------------------------------


def test_metric_distributions_counts_defined_values_per_method(tmp_path, drawn):
    path = metric_distributions(make_per_image(), tmp_path / "tko.png")
    pixels = read_png(path)
    assert pixels.shape[:2] == (round(2.6 * figures.DPI), round(figures.COLUMN_WIDTH * figures.DPI))
    assert_not_blank(pixels)
    (ax,) = drawn[0]["axes"]
    labels = {label.split("\n")[0]: label for label in ax["xticklabels"]}
    assert set(labels) == set(METHODS)
    # 6 images × 3 seeds, less the 2 undefined images × 3 seeds for 'random'.
    assert labels["gradcam"].endswith("n = 18") and labels["saliency"].endswith("n = 18")
    assert labels["random"].endswith("n = 12")
    assert "3 seeds" in ax["title"]
    # Default order: mean descending ('random' was drawn highest by construction, then saliency, then gradcam).
    assert [label.split("\n")[0] for label in ax["xticklabels"]] == ["random", "saliency", "gradcam"]


@pytest.mark.parametrize(
    ("kwargs", "named"), [({"split": "train"}, "'train'"), ({"metric": "pointing_game"}, "'pointing_game'")]
)
def test_metric_distributions_rejects_what_the_table_lacks(tmp_path, kwargs, named):
    with pytest.raises(ValueError, match=named):
        metric_distributions(make_per_image(), tmp_path / "x.png", **kwargs)


# --- heatmap_grid -------------------------------------------------------------------------------


def test_heatmap_grid_layout_labels_and_outlines(tmp_path, drawn):
    path = heatmap_grid(make_examples(), tmp_path / "grid.png")
    pixels = read_png(path)
    assert_not_blank(pixels)
    # 2 rows × (image + 3 methods) cells of 1.1 in plus margins: 4.8 in × 2.94 in at 200 dpi.
    height, width = pixels.shape[:2]
    assert (width, height) == (960, 588)
    axes = drawn[0]["axes"]
    assert len(axes) == 2 * 4
    assert [ax["title"] for ax in axes[:4]] == ["image", *METHODS]
    assert [axes[0]["ylabel"], axes[4]["ylabel"]] == ["crack\ncrack_000", "hole\nhole_000"]
    assert all(ax["contours"] == 1 for ax in axes)  # the mask is outlined on every cell, the image included


def test_heatmap_grid_outline_is_visible_in_the_png(tmp_path):
    with_mask = read_png(heatmap_grid(make_examples(), tmp_path / "mask.png")).astype(int)
    without = read_png(heatmap_grid(make_examples(empty_mask=True), tmp_path / "empty.png")).astype(int)
    changed = np.abs(with_mask - without).max(axis=2) > 40
    assert changed.sum() > 100
    # What changed is the white outline: the changed pixels are near-white where the mask is drawn.
    assert (with_mask[changed].min(axis=1) > 180).mean() > 0.5


def test_heatmap_grid_caps_rows_and_keeps_every_class(tmp_path, drawn):
    examples = make_examples(n_per_class=3)
    heatmap_grid(examples, tmp_path / "cap.png", methods=["random"], max_rows=2)
    axes = drawn[0]["axes"]
    assert len(axes) == 2 * 2
    assert [axes[0]["ylabel"].split("\n")[0], axes[2]["ylabel"].split("\n")[0]] == CLASSES
    assert axes[1]["title"] == "random"


def test_heatmap_grid_rejects_unknown_methods_and_mismatched_maps(tmp_path):
    with pytest.raises(ValueError, match="lime"):
        heatmap_grid(make_examples(), tmp_path / "x.png", methods=["gradcam", "lime"])
    broken = make_examples()
    broken[1]["maps"]["saliency"] = np.zeros((16, 16))
    with pytest.raises(ValueError, match="saliency"):
        heatmap_grid(broken, tmp_path / "x.png")
    with pytest.raises(ValueError, match="no map"):
        heatmap_grid([*make_examples(), {**make_examples()[0], "maps": {"gradcam": np.zeros((32, 32))}}], tmp_path / "x.png")
    with pytest.raises(ValueError, match="at least one"):
        heatmap_grid([], tmp_path / "x.png")


# --- training_curves ----------------------------------------------------------------------------


def test_training_curves_default_keys_mean_and_std_band(tmp_path, drawn):
    curves = make_curves()
    path = training_curves(curves, tmp_path / "curves.png")
    pixels = read_png(path)
    assert pixels.shape[:2] == (round(4.0 * figures.DPI), round(7.0 * figures.DPI))
    assert_not_blank(pixels)
    record = drawn[0]
    titles = [ax["title"] for ax in record["axes"]]
    assert titles == ["val/loss", "val/acc", *[f"xai/val/tko/{m}" for m in sorted(METHODS)]]
    assert "mean of 3 seeds" in record["suptitle"] and "± std" in record["suptitle"]
    loss = curves[curves["key"] == "val/loss"].groupby("epoch")["value"]
    (mean_line,) = record["axes"][0]["lines"]
    assert np.asarray(mean_line) == pytest.approx(loss.mean().to_numpy())
    band = record["axes"][0]["bands"][0].get_paths()[0].vertices[:, 1]
    assert band.max() == pytest.approx((loss.mean() + loss.std()).max())
    assert band.min() == pytest.approx((loss.mean() - loss.std()).min())


def test_training_curves_min_max_band_with_two_seeds(tmp_path, drawn):
    curves = make_curves(seeds=[0, 1])
    training_curves(curves, tmp_path / "two.png", keys=["val/loss"])
    record = drawn[0]
    assert "2 seeds" in record["suptitle"] and "min–max" in record["suptitle"]
    loss = curves[curves["key"] == "val/loss"]["value"]
    band = record["axes"][0]["bands"][0].get_paths()[0].vertices[:, 1]
    assert band.max() == pytest.approx(loss.max()) and band.min() == pytest.approx(loss.min())


def test_training_curves_caps_default_keys_at_six(tmp_path, drawn):
    curves = make_curves()
    extra = curves[curves["key"] == "xai/val/tko/gradcam"].assign(key="xai/val/tko/zz_extra")
    more = pd.concat([curves, extra.assign(key="xai/val/tko/occlusion"), extra.assign(key="xai/val/tko/lime"), extra])
    training_curves(more, tmp_path / "six.png")
    assert len(drawn[0]["axes"]) == figures.MAX_DEFAULT_CURVES


def test_training_curves_rejects_missing_keys(tmp_path):
    with pytest.raises(ValueError, match="val/f1") as error:
        training_curves(make_curves(), tmp_path / "x.png", keys=["val/loss", "val/f1"])
    assert "val/acc" in str(error.value)
    with pytest.raises(ValueError, match="default keys"):
        training_curves(make_curves().query("key == 'train/loss'"), tmp_path / "x.png")


# --- no leaks -----------------------------------------------------------------------------------


def test_figures_leave_no_pyplot_figures_open(tmp_path):
    before = plt.get_fignums()
    for i in range(2):
        win_rate_bars(make_across(), tmp_path / f"w{i}.png")
        metric_distributions(make_per_image(), tmp_path / f"d{i}.png")
        heatmap_grid(make_examples(), tmp_path / f"h{i}.png")
        training_curves(make_curves(), tmp_path / f"c{i}.png")
    assert plt.get_fignums() == before

