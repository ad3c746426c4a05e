"""The plain layout (images/<class>/ with masks/<class>/, or index.csv): reader, generator, data module, end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import SMOKE_COUNTS, smoke_args
from PIL import Image

from xai_lightning.data.mvtec import INDEX_COLUMNS
from xai_lightning.data.plain import build_plain_index, list_plain_classes
from xai_lightning.data.synthetic import SyntheticConfig, generate_synthetic_mvtec
from xai_lightning.errors import ConfigError, DatasetError

CLASSES = ["crack", "cut", "good", "hole", "print"]


@pytest.fixture(scope="module")
def plain_root(tmp_path_factory) -> Path:
    """The smoke config's synthetic set, written in the plain layout (same pixels as ``smoke_root``)."""
    root = tmp_path_factory.mktemp("plain-smoke")
    generate_synthetic_mvtec(root, SyntheticConfig(size=96, seed=0, counts=SMOKE_COUNTS, layout="plain"))
    return root


@pytest.fixture
def plain_copy(plain_root, tmp_path) -> Path:
    """A private copy of the plain set that a test may damage."""
    target = tmp_path / "plain"
    shutil.copytree(plain_root, target)
    return target


def _write_csv(index: pd.DataFrame, csv_path: Path, relative_to: Path | None = None) -> None:
    """The CSV form of an index: image, mask, class (paths relative to ``relative_to`` when given)."""

    def spell(path) -> str:
        if not isinstance(path, str):
            return ""
        return str(Path(path).relative_to(relative_to)) if relative_to else path

    table = pd.DataFrame(
        {"image": index["image_path"].map(spell), "mask": index["mask_path"].map(spell), "class": index["label"]}
    )
    table.sample(frac=1.0, random_state=0).to_csv(csv_path, index=False)  # any row order gives the same index


# ---------------------------------------------------------------------------------------------- the reader
def test_folder_form_pairs_every_defect_image_with_its_mask(plain_root):
    index = build_plain_index(plain_root, category="hazelnut")
    assert list(index.columns) == INDEX_COLUMNS
    assert len(index) == sum(SMOKE_COUNTS.values())
    assert index["label"].value_counts().to_dict() == {"good": 10, "crack": 6, "cut": 6, "hole": 6, "print": 6}
    assert index["image_id"].is_unique and (index["mvtec_split"] == "test").all()
    assert (index["category"] == "hazelnut").all()
    for row in index[index["label"] != "good"].itertuples():
        assert Path(row.mask_path) == plain_root / "masks" / row.label / Path(row.image_path).name
        assert row.image_id == f"{row.label}/{Path(row.image_path).stem}"
    assert index.loc[index["label"] == "good", "mask_path"].isna().all()
    assert list_plain_classes(plain_root) == CLASSES


def test_plain_generator_writes_the_pixels_of_the_mvtec_layout(plain_root, smoke_root):
    mvtec, plain = smoke_root / "hazelnut", plain_root
    pairs = [
        (mvtec / "test" / "crack" / "003.png", plain / "images" / "crack" / "003.png"),
        (mvtec / "ground_truth" / "crack" / "003_mask.png", plain / "masks" / "crack" / "003.png"),
        (mvtec / "test" / "good" / "001.png", plain / "images" / "good" / "001.png"),
        (mvtec / "train" / "good" / "001.png", plain / "images" / "good" / "train_001.png"),
    ]
    for written_mvtec, written_plain in pairs:
        assert written_mvtec.read_bytes() == written_plain.read_bytes(), written_plain
    assert not (plain / "masks" / "good").exists() and (plain / "SYNTHETIC.json").is_file()
    assert '"layout": "plain"' in (plain / "SYNTHETIC.json").read_text()
    assert "layout" not in (smoke_root / "SYNTHETIC.json").read_text()  # the MVTec marker is unchanged


def test_csv_form_gives_the_index_of_the_folder_form(plain_copy, tmp_path):
    folders = build_plain_index(plain_copy)
    _write_csv(folders, plain_copy / "index.csv", relative_to=plain_copy)  # relative paths: from the CSV's folder
    from_default_csv = build_plain_index(plain_copy)
    pd.testing.assert_frame_equal(from_default_csv, folders)
    elsewhere = tmp_path / "lists" / "all.csv"
    elsewhere.parent.mkdir()
    _write_csv(folders, elsewhere)  # absolute paths
    pd.testing.assert_frame_equal(build_plain_index(plain_copy, csv=elsewhere), folders)
    assert list_plain_classes(plain_copy, csv=elsewhere) == CLASSES


def test_the_split_pools_every_plain_image(plain_root):
    from xai_lightning.data.splits import SplitConfig, stratified_split

    split = stratified_split(build_plain_index(plain_root), SplitConfig(val_fraction=0.34, test_fraction=0.33))
    assert len(split) == sum(SMOKE_COUNTS.values())
    assert (split.groupby(["split", "label"]).size() >= 2).all() and len(split.groupby(["split", "label"])) == 15


# ---------------------------------------------------------------------------------------------- broken sets
def test_a_defect_image_without_its_mask_names_both_files(plain_copy):
    mask = plain_copy / "masks" / "cut" / "002.png"
    mask.unlink()
    with pytest.raises(DatasetError, match="has no mask") as error:
        build_plain_index(plain_copy)
    assert str(mask) in str(error.value) and str(plain_copy / "images" / "cut" / "002.png") in str(error.value)
    shutil.rmtree(plain_copy / "masks" / "cut")
    with pytest.raises(DatasetError, match=r"images/cut/000.png' has no mask"):
        build_plain_index(plain_copy)


def test_a_mask_with_another_suffix_is_found_and_two_masks_are_refused(plain_copy):
    mask = plain_copy / "masks" / "hole" / "004.png"
    Image.open(mask).save(mask.with_suffix(".bmp"))
    with pytest.raises(DatasetError, match="has 2 masks") as error:
        build_plain_index(plain_copy)
    assert str(mask) in str(error.value) and str(mask.with_suffix(".bmp")) in str(error.value)
    mask.unlink()
    index = build_plain_index(plain_copy).set_index("image_id")
    assert index.loc["hole/004", "mask_path"] == str(mask.with_suffix(".bmp"))


def test_a_mask_of_another_size_names_both_files(plain_copy):
    mask = plain_copy / "masks" / "hole" / "001.png"
    Image.new("L", (50, 40)).save(mask)
    with pytest.raises(DatasetError, match="50x40") as error:
        build_plain_index(plain_copy)
    assert str(mask) in str(error.value) and str(plain_copy / "images" / "hole" / "001.png") in str(error.value)


@pytest.mark.parametrize("kind", ["image", "mask"])
def test_a_corrupt_file_is_named(plain_copy, kind):
    path = plain_copy / ("images" if kind == "image" else "masks") / "print" / "003.png"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DatasetError, match=rf"Cannot read image file '{path}'"):
        build_plain_index(plain_copy)
    assert len(build_plain_index(plain_copy, verify_images=False)) == sum(SMOKE_COUNTS.values())


def test_csv_errors_name_the_line_and_the_file(plain_copy):
    csv = plain_copy / "index.csv"
    _write_csv(build_plain_index(plain_copy), csv, relative_to=plain_copy)
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    line = table.index[table["class"] == "crack"][0]

    broken = table.copy()
    broken.loc[line, "mask"] = ""
    broken.to_csv(csv, index=False)
    with pytest.raises(DatasetError, match=rf"line {line + 2} of '{csv}', class 'crack'\) has no mask"):
        build_plain_index(plain_copy)

    broken.loc[line, "mask"] = "masks/crack/999.png"
    broken.to_csv(csv, index=False)
    with pytest.raises(DatasetError, match=r"Mask 'masks/crack/999.png' of image .* does not exist"):
        build_plain_index(plain_copy)

    table.drop(columns="mask").to_csv(csv, index=False)
    with pytest.raises(DatasetError, match=r"lacks the column\(s\) mask"):
        build_plain_index(plain_copy)


def test_stray_folders_are_skipped_and_a_broken_class_folder_is_refused(plain_copy):
    images = plain_copy / "images"
    (images / "notes").mkdir()
    (images / "notes" / "readme.txt").write_text("not an image")
    (images / ".ipynb_checkpoints").mkdir()
    (images / "__MACOSX" / "print").mkdir(parents=True)
    with pytest.warns(UserWarning, match="notes' holds no images; it is not a class"):
        assert list_plain_classes(plain_copy) == CLASSES
    with pytest.warns(UserWarning, match="notes"):
        assert set(build_plain_index(plain_copy)["label"]) == set(CLASSES)
    (images / "scratch").symlink_to(plain_copy / "moved-away")
    with pytest.raises(DatasetError, match=r"Class folder '.*scratch' is a link to '.*moved-away'"):
        build_plain_index(plain_copy)


def test_unreadable_sets_are_explained(plain_copy, smoke_root, tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        build_plain_index(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="data.layout: mvtec"):
        build_plain_index(smoke_root)  # an MVTec root read as plain
    duplicate = plain_copy / "images" / "crack" / "000.bmp"
    Image.open(plain_copy / "images" / "crack" / "001.png").save(duplicate)
    with pytest.raises(DatasetError, match=r"share the id 'crack/000'") as error:
        build_plain_index(plain_copy)
    assert str(duplicate) in str(error.value)
    duplicate.unlink()
    for defect in ("crack", "cut", "hole", "print"):
        shutil.rmtree(plain_copy / "images" / defect)
    with pytest.raises(DatasetError, match="holds only 'good' images"):
        build_plain_index(plain_copy)


# ---------------------------------------------------------------------------------------------- generator and module
def test_generator_options_for_the_plain_layout(tmp_path, plain_copy):
    with pytest.raises(ConfigError, match="layout"):
        SyntheticConfig(size=64, layout="coco")
    with pytest.raises(ConfigError, match="needs `layout: mvtec`"):
        SyntheticConfig(size=64, layout="plain", shortcut_fraction=0.5)
    counts = {"train/good": 2, "test/crack": 1}
    assert SyntheticConfig(size=64, counts=counts, layout="plain").class_names == ["crack", "good"]
    assert SyntheticConfig(size=64, counts=counts).class_names == ["crack"]  # MVTec: classes of test/ only
    (tmp_path / "real" / "images" / "cat").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no SYNTHETIC.json"):
        generate_synthetic_mvtec(tmp_path / "real", SyntheticConfig(size=64, counts=counts, layout="plain"))
    with pytest.raises(DatasetError, match="different configuration.*layout=plain"):
        generate_synthetic_mvtec(plain_copy, SyntheticConfig(size=96, seed=0, counts=SMOKE_COUNTS))


def test_datamodule_reads_the_plain_layout(plain_copy):
    from xai_lightning.data.datamodule import MVTecDataModule
    from xai_lightning.data.splits import SplitConfig

    split = SplitConfig(val_fraction=0.34, test_fraction=0.33)
    data = MVTecDataModule(root=str(plain_copy), layout="plain", image_size=32, num_workers=0, split=split)
    assert data.class_names == CLASSES
    data.setup()
    assert len(data.split_frame) == sum(SMOKE_COUNTS.values())
    assert data.describe()["layout"] == "plain" and data.describe()["kind"] == "synthetic"
    sample = data.dataset("val")[0]
    assert sample["image"].shape == (3, 32, 32)
    _write_csv(build_plain_index(plain_copy), plain_copy / "lists.csv", relative_to=plain_copy)
    from_csv = MVTecDataModule(root=str(plain_copy), layout="plain", index_csv="lists.csv", split=split)
    from_csv.setup()
    pd.testing.assert_frame_equal(from_csv.split_frame, data.split_frame)
    with pytest.raises(ConfigError, match="data.layout"):
        MVTecDataModule(root=str(plain_copy), layout="flat")
    with pytest.raises(ConfigError, match="index_csv"):
        MVTecDataModule(root=str(plain_copy), source="synthetic", layout="plain", index_csv="lists.csv")


# ---------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_train_and_evaluate_a_plain_layout_set(tmp_path):
    from xai_lightning.cli import main
    from xai_lightning.evaluate import main as evaluate

    data_root, experiment = tmp_path / "plain-data", tmp_path / "experiment"
    cli = main(smoke_args(data_root, experiment, "--data.layout", "plain"))
    run_dir = experiment / "seed0"
    assert (data_root / "images" / "crack").is_dir() and not (data_root / "hazelnut").exists()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert cli.datamodule.layout == "plain" and len(pd.read_csv(run_dir / "split.csv")) == sum(SMOKE_COUNTS.values())
    assert list((run_dir / "xai").glob("test_epoch002.csv")), "the attribution callback wrote no table"

    out = tmp_path / "evaluation"
    evaluate(
        [str(experiment), "--no-wandb", "--out", str(out), "--methods", "gradcam", "--check-images-per-class", "0",
         "--bootstrap", "200"]
    )
    assert (out / "report.md").is_file() and (out / "metrics.csv").is_file()
    per_image = pd.read_parquet(out / "per_image.parquet")
    gradcam = per_image[per_image["method"] == "gradcam"]
    assert len(gradcam) > 0 and gradcam["image_id"].str.fullmatch(r"(crack|cut|hole|print)/\d{3}").all()
