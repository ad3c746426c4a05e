"""Tests of the synthetic MVTec-layout generator: layout, determinism, honest masks and the command line."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from xai_lightning.data.mvtec import build_index
from xai_lightning.data.synthetic import (
    DEFECT_TYPES,
    MARKER_FILE,
    MVTEC_HAZELNUT_COUNTS,
    SHORTCUT_MARKERS,
    SHORTCUT_MASK_DIR,
    SyntheticConfig,
    generate_synthetic_mvtec,
    is_synthetic,
    main,
    render_sample,
    shortcut_marker_region,
    shortcut_mask_path,
    shortcut_settings,
)
from xai_lightning.data.synthetic.nut import render_nut
from xai_lightning.errors import ConfigError, DatasetError

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
        clean, nut = render_nut(np.random.default_rng(seed), 96)
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


# ---------------------------------------------------------------------------------------------- shortcut (known answer)

SHORTCUT_COUNTS = {"train/good": 1, "test/good": 1, "test/crack": 4, "test/cut": 4, "test/hole": 4, "test/print": 4}
SHORTCUT_CONFIG = SyntheticConfig(size=SIZE, seed=7, counts=SHORTCUT_COUNTS, shortcut_fraction=0.5)
# Decoded pixels of CONFIG's files as written before the shortcut option existed (PNG bytes could
# change with the zlib build; the pixels may not).
PIXELS_BEFORE_SHORTCUT = "fd47c72d1718fc5bd7c27323f6ef72785af8535b45cfb058e7c6e3e7ece3268e"


def pixel_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.png")):
        digest.update(path.relative_to(folder).as_posix().encode())
        with Image.open(path) as image:
            digest.update(np.asarray(image).tobytes())
    return digest.hexdigest()


def read_mask(path: Path | str) -> np.ndarray:
    with Image.open(path) as mask:
        assert mask.mode == "L"
        values = np.asarray(mask)
    assert set(np.unique(values)) <= {0, 255}
    return values == 255


@pytest.fixture(scope="module")
def shortcut_sets(tmp_path_factory) -> tuple[Path, Path]:
    """Category folders of SHORTCUT_CONFIG and of the same config with the shortcut off."""
    marked = tmp_path_factory.mktemp("shortcut")
    plain = tmp_path_factory.mktemp("plain")
    generate_synthetic_mvtec(marked, SHORTCUT_CONFIG)
    generate_synthetic_mvtec(plain, dataclasses.replace(SHORTCUT_CONFIG, shortcut_fraction=0.0))
    return marked / "hazelnut", plain / "hazelnut"


def test_shortcut_off_leaves_the_data_set_unchanged(generated, tmp_path):
    assert SyntheticConfig().shortcut_fraction == 0.0
    assert pixel_digest(generated) == PIXELS_BEFORE_SHORTCUT
    explicit = SyntheticConfig(size=SIZE, seed=7, counts=COUNTS, shortcut_fraction=0, shortcut_size=0.15)
    generate_synthetic_mvtec(tmp_path, explicit)
    assert files_under(tmp_path) == files_under(generated)  # SYNTHETIC.json included: no shortcut key
    assert shortcut_settings(tmp_path) is None
    assert all(shortcut_mask_path(p) is None for p in (tmp_path / "hazelnut").glob("*/*/*.png"))


def test_shortcut_marks_the_chosen_fraction_of_each_defect_class(shortcut_sets):
    marked, _ = shortcut_sets
    assert set(files_under(marked)) - expected_files(SHORTCUT_COUNTS) == {
        f"{SHORTCUT_MASK_DIR}/{label}/{index:03d}_mask.png"
        for label in DEFECT_TYPES
        for index in range(4)
        if shortcut_mask_path(marked / "test" / label / f"{index:03d}.png")
    }
    for label in DEFECT_TYPES:
        images = sorted((marked / "test" / label).glob("*.png"))
        with_marker = [p for p in images if shortcut_mask_path(p)]
        assert len(with_marker) == 2, f"{label}: half of 4 images should carry the marker"
        for image_path in with_marker:
            marker = read_mask(shortcut_mask_path(image_path))
            defect = read_mask(marked / "ground_truth" / label / f"{image_path.stem}_mask.png")
            assert marker.any(), f"empty marker mask for {image_path}"
            assert not (marker & defect).any(), f"marker overlaps the defect in {image_path}"
    for image_path in [*marked.glob("train/good/*.png"), *marked.glob("test/good/*.png")]:
        assert shortcut_mask_path(image_path) is None
    settings = shortcut_settings(marked.parent)
    assert settings["fraction"] == 0.5 and settings["mask_dir"] == SHORTCUT_MASK_DIR
    assert settings["marked"] == {label: 2 for label in DEFECT_TYPES}
    # The MVTec reader indexes train/ and test/ only: the extra folder changes nothing for it.
    index = build_index(marked.parent, "hazelnut")
    assert len(index) == sum(SHORTCUT_COUNTS.values())
    assert not index["image_path"].str.contains(SHORTCUT_MASK_DIR).any()


def test_marker_changes_only_its_own_pixels(shortcut_sets):
    marked, plain = shortcut_sets
    first, second = files_under(marked), files_under(plain)
    for name, data in second.items():
        image_path = marked / name
        marker_path = shortcut_mask_path(image_path) if not name.startswith("ground_truth") else None
        if marker_path is None:
            assert first[name] == data, f"{name} must not change when it carries no marker"
            continue
        with Image.open(image_path) as a, Image.open(plain / name) as b:
            changed = (np.asarray(a) != np.asarray(b)).any(axis=-1)
        assert np.array_equal(changed, read_mask(marker_path)), f"{name}: changed pixels are not the marker mask"


def test_marker_shape_and_colour_identify_the_class(shortcut_sets):
    marked, _ = shortcut_sets
    colours = {}
    for label in DEFECT_TYPES:
        for image_path in (marked / "test" / label).glob("*.png"):
            if shortcut_mask_path(image_path):
                with Image.open(image_path) as image:
                    pixels = np.asarray(image)[read_mask(shortcut_mask_path(image_path))]
                colours.setdefault(label, set()).update(map(tuple, pixels))
    assert all(len(found) == 1 for found in colours.values()), colours
    assert len({next(iter(found)) for found in colours.values()}) == len(DEFECT_TYPES)
    assert {label: next(iter(found)) for label, found in colours.items()} == {
        label: rgb for label, (_, rgb) in SHORTCUT_MARKERS.items()
    }
    shapes = {label: shortcut_marker_region(label, 10, 10, 12, 32) for label in DEFECT_TYPES}
    for a, b in itertools.combinations(DEFECT_TYPES, 2):
        assert not np.array_equal(shapes[a], shapes[b]), f"{a} and {b} markers have the same shape"
    assert all(shape[10:22, 10:22].sum() == shape.sum() > 12 for shape in shapes.values())


def test_shortcut_is_deterministic_and_inside_the_rotation_safe_disc(shortcut_sets, tmp_path):
    marked, _ = shortcut_sets
    generate_synthetic_mvtec(tmp_path, SHORTCUT_CONFIG)
    assert files_under(tmp_path) == files_under(marked.parent)
    centre = (SIZE - 1) / 2
    for marker_path in marked.glob(f"{SHORTCUT_MASK_DIR}/*/*.png"):
        ys, xs = np.nonzero(read_mask(marker_path))
        assert np.hypot(xs - centre, ys - centre).max() <= SIZE / 2, f"{marker_path} reaches a corner"


def test_full_shortcut_marks_every_defect_image_and_resumes(tmp_path, capsys):
    out = tmp_path / "set"
    args = ["--out", str(out), "--size", "48", "--quiet", *CLI_COUNTS, "--shortcut-fraction", "1"]
    assert main(args) == 0
    assert "and 4 shortcut markers" in capsys.readouterr().out
    defect_images = [p for p in (out / "hazelnut" / "test").glob("*/*.png") if p.parent.name != "good"]
    assert len(defect_images) == 4 and all(shortcut_mask_path(p) for p in defect_images)
    written = files_under(out)
    Path(shortcut_mask_path(defect_images[0])).unlink()
    assert main(args) == 0
    assert files_under(out) == written

    # The shortcut is part of the set's identity: the same root is never reused with it switched off.
    assert main(["--out", str(out), "--size", "48", "--quiet", *CLI_COUNTS]) == 2
    assert "shortcut_fraction=1.0" in capsys.readouterr().err
    with pytest.raises(DatasetError, match="different configuration"):
        generate_synthetic_mvtec(out, SyntheticConfig(size=48, counts={"test/cut": 1}))


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"shortcut_fraction": -0.1}, "shortcut_fraction"),
        ({"shortcut_fraction": 1.5}, "shortcut_fraction"),
        ({"shortcut_fraction": float("nan")}, "shortcut_fraction"),
        ({"shortcut_fraction": "0.5"}, "shortcut_fraction"),
        ({"shortcut_fraction": True}, "shortcut_fraction"),
        ({"shortcut_size": 0.0}, "shortcut_size"),
        ({"shortcut_size": 0.5}, "shortcut_size"),
    ],
)
def test_config_rejects_bad_shortcut_options(options, named):
    with pytest.raises(ConfigError, match=named):
        SyntheticConfig(**options)


def test_known_answer_config_parses_with_the_shortcut_on_and_off(capsys, monkeypatch):
    """configs/known_answer.yaml names real options; its control run is one flag away."""
    from conftest import REPO

    from xai_lightning.cli import XaiLightningCLI

    monkeypatch.setattr(sys, "argv", ["train.py"])  # pytest's own arguments are not the CLI's

    config = REPO / "configs" / "known_answer.yaml"
    printed = {}
    for fraction in (None, "0"):
        override = [] if fraction is None else ["--data.synthetic.shortcut_fraction", fraction]
        with pytest.raises(SystemExit) as done:
            XaiLightningCLI(args=["--config", str(config), *override, "--print_config"])
        assert done.value.code in (0, None)
        printed[fraction] = yaml.safe_load(capsys.readouterr().out)
    assert printed[None]["data"]["synthetic"]["shortcut_fraction"] == 1.0
    assert printed["0"]["data"]["synthetic"]["shortcut_fraction"] == 0.0
    assert printed[None]["experiment_dir"] == "runs/known_answer"
    quickstart = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    assert printed[None]["data"]["root"] != quickstart["data"]["root"]
    callbacks = [c["class_path"] for c in printed[None]["trainer"]["callbacks"]]
    assert "xai_lightning.callbacks.AttributionCallback" in callbacks


# ---------------------------------------------------------------------------------------------- class names

# The smoke config's counts with one class dropped.
COUNTS_WITHOUT_PRINT = {
    "train/good": 2, "test/good": 3, "test/crack": 3, "test/cut": 3, "test/hole": 3, "test/print": 0
}


def test_class_names_of_an_unwritten_set_follow_its_counts(tmp_path):
    """A class with count 0 is not a class: named before the set exists exactly as read back after."""
    from xai_lightning.data.datamodule import MVTecDataModule
    from xai_lightning.data.mvtec import list_classes
    from xai_lightning.data.splits import SplitConfig

    synthetic = SyntheticConfig(size=32, seed=0, counts=COUNTS_WITHOUT_PRINT)
    assert synthetic.class_names == ["crack", "cut", "good", "hole"]
    split = SplitConfig(val_fraction=0.34, test_fraction=0.33)
    data = MVTecDataModule(
        root=str(tmp_path / "data"), source="synthetic", image_size=32, split=split, synthetic=synthetic
    )
    before = data.class_names
    assert before == ["crack", "cut", "good", "hole"]
    data.prepare_data()
    data.setup()
    assert list_classes(tmp_path / "data", "hazelnut") == before == data.class_names
    assert set(data.split_frame["label"]) == set(before)


def test_cli_builds_the_model_with_the_class_names_of_the_data(tmp_path, monkeypatch):
    """Regression: the model's classes were those of the full hazelnut set whatever `data.synthetic.counts` said."""
    from conftest import smoke_args

    from xai_lightning.cli import XaiLightningCLI

    monkeypatch.setattr(sys, "argv", ["train.py"])  # pytest's own arguments are not the CLI's
    counts = "{" + ", ".join(f"{key}: {count}" for key, count in COUNTS_WITHOUT_PRINT.items()) + "}"
    args = smoke_args(tmp_path / "data", tmp_path / "exp", "--data.synthetic.counts", counts)
    cli = XaiLightningCLI(args=[*args, "--trainer.logger", "false", "--trainer.callbacks", "[]"])
    assert not (tmp_path / "data").exists()  # the model was built before the data was written
    assert cli.model.class_names == ["crack", "cut", "good", "hole"]
    assert cli.model.hparams.class_names == cli.model.class_names
    cli.datamodule.prepare_data()
    cli.datamodule.setup()
    assert cli.datamodule.class_names == cli.model.class_names
    labels = {int(sample["label"]) for sample in cli.datamodule.dataset("train")}
    assert {cli.model.class_names[label] for label in labels} == set(cli.datamodule.frame("train")["label"])
