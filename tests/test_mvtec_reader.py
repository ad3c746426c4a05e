"""The MVTec reader pairs images with masks and rejects every kind of broken dataset with a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from xai_lightning.data.mvtec import build_index, list_categories, list_classes
from xai_lightning.errors import DatasetError
from conftest import SMOKE_COUNTS


def test_index_pairs_every_defect_image_with_its_mask(smoke_root):
    index = build_index(smoke_root, "hazelnut")
    assert len(index) == sum(SMOKE_COUNTS.values())
    assert index.groupby(["mvtec_split", "label"]).size().to_dict() == {
        tuple(key.split("/")): count for key, count in SMOKE_COUNTS.items()
    }
    defects = index[index["label"] != "good"]
    for row in defects.itertuples():
        image, mask = Path(row.image_path), Path(row.mask_path)
        assert mask == image.parents[2] / "ground_truth" / row.label / f"{image.stem}_mask.png"
    assert index.loc[index["label"] == "good", "mask_path"].isna().all()
    assert index["image_id"].is_unique


def test_categories_and_classes(smoke_root):
    assert list_categories(smoke_root) == ["hazelnut"]
    assert list_classes(smoke_root, "hazelnut") == ["crack", "cut", "good", "hole", "print"]


def test_missing_root_names_path_and_fix(tmp_path):
    with pytest.raises(DatasetError, match="does not exist") as error:
        build_index(tmp_path / "nowhere", "hazelnut")
    assert str(tmp_path / "nowhere") in str(error.value)
    assert "data.source: synthetic" in str(error.value)


def test_empty_root(tmp_path):
    with pytest.raises(DatasetError, match="is empty"):
        build_index(tmp_path, "hazelnut")


def test_missing_category_lists_those_found(dataset_copy):
    with pytest.raises(DatasetError, match="Category 'screw' not found") as error:
        build_index(dataset_copy, "screw")
    assert "hazelnut" in str(error.value) and "data.category" in str(error.value)


def test_defect_image_without_mask(dataset_copy):
    mask = dataset_copy / "hazelnut" / "ground_truth" / "cut" / "002_mask.png"
    mask.unlink()
    with pytest.raises(DatasetError, match="has no mask") as error:
        build_index(dataset_copy, "hazelnut")
    assert str(mask) in str(error.value)
    assert str(dataset_copy / "hazelnut" / "test" / "cut" / "002.png") in str(error.value)


def test_mask_of_another_size(dataset_copy):
    mask = dataset_copy / "hazelnut" / "ground_truth" / "hole" / "001_mask.png"
    Image.new("L", (50, 40)).save(mask)
    with pytest.raises(DatasetError, match="50x40") as error:
        build_index(dataset_copy, "hazelnut")
    assert str(mask) in str(error.value) and "001.png" in str(error.value)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_image_file(dataset_copy, damage):
    image = dataset_copy / "hazelnut" / "test" / "print" / "003.png"
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a png at all" * 10)
    with pytest.raises(DatasetError, match="Cannot read image file") as error:
        build_index(dataset_copy, "hazelnut")
    assert str(image) in str(error.value)


def test_corrupt_files_pass_unchecked_when_verification_is_off(dataset_copy):
    image = dataset_copy / "hazelnut" / "test" / "print" / "003.png"
    image.write_bytes(b"garbage")
    assert len(build_index(dataset_copy, "hazelnut", verify_images=False)) == sum(SMOKE_COUNTS.values())


def _break_zlib_stream(path: Path) -> None:
    """Damage a PNG's compressed pixel data but keep every chunk checksum valid, so ``verify()`` passes."""
    import struct
    import zlib

    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", data[start : start + 4])
    body = start + 8
    data[body + length // 2 : body + length // 2 + 16] = b"\xff" * 16  # garbage in the middle of the stream
    crc = zlib.crc32(bytes(data[start + 4 : body + length])) & 0xFFFFFFFF
    data[body + length : body + length + 4] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["image", "mask"])
def test_a_png_with_a_broken_zlib_stream_is_named_by_the_index_check_and_when_decoded(dataset_copy, kind):
    from xai_lightning.data.cache import ResizedImageCache
    from xai_lightning.data.decoding import load_image, load_mask

    index = build_index(dataset_copy)
    row = index[index["label"] == "crack"].iloc[0]
    path = Path(row["image_path"] if kind == "image" else row["mask_path"])
    _break_zlib_stream(path)
    with Image.open(path) as image:
        image.verify()  # the damage passes verify(): only a decode finds it
    with pytest.raises(DatasetError, match=rf"Cannot read image file '{path}'"):
        build_index(dataset_copy)
    build_index(dataset_copy, verify_images=False)  # unchecked, the file is named where it is read
    read = load_image if kind == "image" else lambda p: load_mask(p, (1, 1))
    with pytest.raises(DatasetError, match=rf"'{path}' cannot be decoded .*damaged"):
        read(str(path))
    cache = ResizedImageCache(32)
    with pytest.raises(DatasetError, match=rf"'{path}' cannot be decoded"):
        cache.image(str(path)) if kind == "image" else cache.mask(str(path))


def test_a_truncated_jpeg_that_passes_verify_is_named_by_the_index_check(dataset_copy):
    import io

    png = dataset_copy / "hazelnut" / "test" / "print" / "003.png"
    jpeg = png.with_suffix(".jpg")
    buffer = io.BytesIO()
    Image.open(png).convert("RGB").save(buffer, "JPEG")
    png.unlink()
    jpeg.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 2 // 3])
    with Image.open(jpeg) as image:
        image.verify()
    with pytest.raises(DatasetError, match=rf"Cannot read image file '{jpeg}'.*truncated"):
        build_index(dataset_copy)


def test_stray_folders_are_not_classes_and_a_broken_class_folder_is_refused(dataset_copy):
    test_dir = dataset_copy / "hazelnut" / "test"
    (test_dir / "notes").mkdir()
    (test_dir / "notes" / "readme.txt").write_text("not an image")
    (test_dir / "__MACOSX" / "print").mkdir(parents=True)
    (test_dir / ".ipynb_checkpoints").mkdir()
    with pytest.warns(UserWarning, match="notes' holds no images; it is not a class"):
        assert list_classes(dataset_copy, "hazelnut") == ["crack", "cut", "good", "hole", "print"]
    with pytest.warns(UserWarning, match="notes"):
        assert set(build_index(dataset_copy)["label"]) == {"crack", "cut", "good", "hole", "print"}

    (test_dir / "scratch").symlink_to(dataset_copy / "moved-away")
    with pytest.raises(DatasetError, match=r"Class folder '.*scratch' is a link to '.*moved-away', which does not"):
        build_index(dataset_copy)
