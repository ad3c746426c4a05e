"""Tests of the synthetic MVTec-layout generator: layout, determinism, honest masks and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xai_lightning.data.synthetic import (
    DEFECT_TYPES,
    MARKER_FILE,
    MVTEC_HAZELNUT_COUNTS,
    SyntheticConfig,
    _render_nut,
    generate_synthetic_mvtec,
    is_synthetic,
    main,
    render_sample,
)
from xai_lightning.errors import DatasetError

SIZE = 64
COUNTS = {"train/good": 3, "test/good": 2, "test/crack": 2, "test/cut": 2, "test/hole": 2, "test/print": 2}
CONFIG = SyntheticConfig(size=SIZE, seed=7, counts=COUNTS)


def files_under(folder: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def expected_files(counts: dict[str, int]) -> set[str]:
    names = set()
    for key, count in counts.items():
        split, label = key.split("/")
        for index in range(count):
            names.add(f"{split}/{label}/{index:03d}.png")
            if label != "good":
                names.add(f"ground_truth/{label}/{index:03d}_mask.png")
    return names


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """Dataset root of CONFIG, written once for the module."""
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_mvtec(root, CONFIG)
    return root


# ---------------------------------------------------------------------------------------------- layout


def test_layout_counts_and_marker(generated):
    category_dir = generated / "hazelnut"
    assert set(files_under(category_dir)) == expected_files(COUNTS)
    assert not (category_dir / "ground_truth" / "good").exists()
    assert sorted(p.name for p in generated.iterdir()) == [MARKER_FILE, "hazelnut"]
    marker = json.loads((generated / MARKER_FILE).read_text())
    assert marker == {
        "generator": "xai_lightning.data.synthetic",
        "version": 1,
        "category": "hazelnut",
        "size": SIZE,
        "seed": 7,
        "counts": COUNTS,
    }
    assert is_synthetic(generated)
    assert not is_synthetic(category_dir)


def test_returns_category_folder_and_honours_category(tmp_path):
    config = SyntheticConfig(size=32, seed=0, category="nut-2", counts={"train/good": 1, "test/hole": 1})
    assert generate_synthetic_mvtec(tmp_path, config) == tmp_path / "nut-2"
    assert set(files_under(tmp_path / "nut-2")) == expected_files(config.counts)
    assert json.loads((tmp_path / MARKER_FILE).read_text())["counts"]["test/crack"] == 0


def test_images_and_masks_are_well_formed(generated):
    category_dir = generated / "hazelnut"
    for image_path in category_dir.glob("*/*/*.png"):
        if image_path.parts[-3] == "ground_truth":
            continue
        with Image.open(image_path) as image:
            assert image.mode == "RGB" and image.size == (SIZE, SIZE)
            assert not image.info, "PNG must carry no metadata"
        label = image_path.parent.name
        if label == "good":
            continue
        with Image.open(category_dir / "ground_truth" / label / f"{image_path.stem}_mask.png") as mask:
            assert mask.mode == "L" and mask.size == (SIZE, SIZE)
            values = np.asarray(mask)
        assert set(np.unique(values)) <= {0, 255}
        assert (values == 255).any(), f"empty mask for {image_path}"


# ---------------------------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_other_seed_differs(generated, tmp_path):
    again = tmp_path / "again"
    generate_synthetic_mvtec(again, CONFIG)
    assert files_under(again) == files_under(generated)

    other = tmp_path / "other"
    generate_synthetic_mvtec(other, SyntheticConfig(size=SIZE, seed=8, counts=COUNTS))
    first, second = files_under(generated / "hazelnut"), files_under(other / "hazelnut")
    images = [name for name in first if not name.startswith("ground_truth")]
    assert all(first[name] != second[name] for name in images)


def test_changing_one_count_leaves_other_files_unchanged(generated, tmp_path):
    counts = dict(COUNTS, **{"test/crack": 4, "train/good": 1})
    generate_synthetic_mvtec(tmp_path, SyntheticConfig(size=SIZE, seed=7, counts=counts))
    first, second = files_under(generated / "hazelnut"), files_under(tmp_path / "hazelnut")
    shared = set(first) & set(second)
    assert len(shared) == len(expected_files(COUNTS)) - 2  # train/good 001 and 002 are gone
    assert all(first[name] == second[name] for name in shared)
    assert "test/crack/003.png" in second and "ground_truth/crack/003_mask.png" in second


# ---------------------------------------------------------------------------------------------- masks


def test_good_sample_has_empty_mask():
    image, mask = render_sample(np.random.default_rng(0), SIZE, None)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert mask.shape == (SIZE, SIZE) and mask.dtype == bool and not mask.any()


@pytest.mark.parametrize("defect", DEFECT_TYPES)
@pytest.mark.parametrize("size", [32, 96])
def test_mask_is_exactly_the_changed_pixels(defect, size):
    for seed in range(4):
        clean, _ = render_sample(np.random.default_rng(seed), size, None)
        image, mask = render_sample(np.random.default_rng(seed), size, defect)
        assert mask.any()
        assert np.array_equal(image[~mask], clean[~mask]), "pixels outside the mask must be untouched"
        difference = np.abs(image.astype(int) - clean.astype(int))[mask]
        assert difference.max(axis=-1).min() > 0, "every mask pixel must have changed"
        assert difference.mean() > 20, f"{defect} is not visible enough: mean difference {difference.mean():.1f}"


@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_defect_lies_on_the_nut(defect):
    for seed in range(4):
        clean, nut = _render_nut(np.random.default_rng(seed), 96)
        _, mask = render_sample(np.random.default_rng(seed), 96, defect)
        assert (nut.alpha[mask] == 1).all(), "mask pixels must be on the nut, not the background"
        background = clean[nut.alpha == 0].mean()
        assert clean[mask].mean() > background + 30


# ---------------------------------------------------------------------------------------------- command line

CLI_COUNTS = ["--counts", "train/good=2,test/good=1", "--counts", "test/crack=1,test/cut=1,test/hole=1,test/print=1"]


def test_cli_writes_then_is_a_no_op_then_refuses_other_config(tmp_path, capsys):
    out = tmp_path / "synthetic"
    assert main(["--out", str(out), "--size", "32", "--quiet", *CLI_COUNTS]) == 0
    assert "wrote 7 images and 4 masks" in capsys.readouterr().out
    written = files_under(out)
    assert len(written) == 7 + 4 + 1
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}

    assert main(["--out", str(out), "--size", "32", *CLI_COUNTS]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == mtimes

    assert main(["--out", str(out), "--size", "32", "--seed", "1", *CLI_COUNTS]) != 0
    error = capsys.readouterr().err
    assert "different configuration" in error and "Delete" in error and "--out" in error
    assert files_under(out) == written


def test_cli_resumes_an_interrupted_run(tmp_path, capsys):
    out = tmp_path / "synthetic"
    assert main(["--out", str(out), "--size", "32", "--quiet", *CLI_COUNTS]) == 0
    written = files_under(out)
    (out / "hazelnut" / "test" / "hole" / "000.png").unlink()
    assert main(["--out", str(out), "--size", "32", "--quiet", *CLI_COUNTS]) == 0
    assert files_under(out) == written


def test_cli_refuses_markerless_mvtec_folder(tmp_path, capsys):
    (tmp_path / "hazelnut" / "train" / "good").mkdir(parents=True)
    assert main(["--out", str(tmp_path), "--size", "32", "--quiet", *CLI_COUNTS]) != 0
    error = capsys.readouterr().err
    assert MARKER_FILE in error and "real MVTec AD" in error
    assert not (tmp_path / MARKER_FILE).exists()

    with pytest.raises(DatasetError, match="real MVTec AD"):
        generate_synthetic_mvtec(tmp_path, SyntheticConfig(size=32, category="bottle", counts={"test/cut": 1}))


@pytest.mark.parametrize("counts", ["test/scratch=2", "test/crack", "test/crack=-1"])
def test_cli_rejects_bad_counts(tmp_path, capsys, counts):
    assert main(["--out", str(tmp_path / "x"), "--counts", counts]) == 2
    assert "counts" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------------------- config


def test_default_config_matches_mvtec_hazelnut():
    config = SyntheticConfig()
    assert (config.size, config.seed, config.category) == (1024, 0, "hazelnut")
    assert config.counts == MVTEC_HAZELNUT_COUNTS and config.counts is not MVTEC_HAZELNUT_COUNTS
    assert sum(config.counts.values()) == 501  # 391 train + 110 test images, as in MVTec AD hazelnut
    assert DEFECT_TYPES == ("crack", "cut", "hole", "print")


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"size": 16}, "size"),
        ({"size": 64.0}, "size"),
        ({"seed": -1}, "seed"),
        ({"category": "a/b"}, "category"),
        ({"category": ""}, "category"),
        ({"counts": {"test/scratch": 1}}, "test/scratch"),
        ({"counts": {"train/crack": 1}}, "train/crack"),
        ({"counts": {"test/crack": -2}}, "counts"),
        ({"counts": {"test/crack": 1.5}}, "counts"),
        ({"counts": {"test/crack": 0}}, "counts"),
    ],
)
def test_config_rejects_bad_options(options, named):
    with pytest.raises(ValueError, match=named):
        SyntheticConfig(**options)


def test_render_sample_rejects_unknown_defect():
    with pytest.raises(ValueError, match="scratch"):
        render_sample(np.random.default_rng(0), SIZE, "scratch")
