"""The resized-image cache: same pixels as a fresh decode, one decode per file, re-read when a file changes."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from xai_lightning.data import cache as cache_module
from xai_lightning.data import decoding
from xai_lightning.data.cache import ResizedImageCache
from xai_lightning.data.datamodule import MVTecDataModule
from xai_lightning.data.dataset import DefectDataset
from xai_lightning.data.mvtec import build_index
from xai_lightning.data.splits import SplitConfig
from xai_lightning.data.transforms import (
    AugmentationConfig,
    eval_transform,
    train_transform,
)
from xai_lightning.errors import ConfigError

NAMES = ["crack", "cut", "good", "hole", "print"]


def _png(path, seed: int, size: int = 80) -> np.ndarray:
    """Write a random RGB PNG and return its pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


@pytest.fixture
def decodes(monkeypatch) -> list[str]:
    """Records every decode the cache does (image and mask decoders alike)."""
    calls: list[str] = []

    def counting(decoder, kind):
        def wrapper(file, *args):
            calls.append(kind)
            return decoder(file, *args)

        return wrapper

    monkeypatch.setattr(decoding, "load_image", counting(decoding.load_image, "image"))
    monkeypatch.setattr(decoding, "decode_mask", counting(decoding.decode_mask, "mask"))
    return calls


@pytest.mark.parametrize("mode", ["memory", "disk"])
@pytest.mark.parametrize("size", [64, 128])  # shrinking and enlarging the 96 px smoke images
def test_cached_items_equal_fresh_decode(smoke_root, tmp_path, mode, size):
    frame = build_index(smoke_root).iloc[::3]  # every class, a third of the images
    cache = ResizedImageCache(size, tmp_path / "cache" if mode == "disk" else None)
    augmentation = AugmentationConfig(rotate_p=1.0)
    for make, reseed in ((lambda: eval_transform(size), False), (lambda: train_transform(size, augmentation), True)):
        fresh = DefectDataset(frame, NAMES, make(), reseed=reseed)
        cached = DefectDataset(frame, NAMES, make(), reseed=reseed, cache=cache)
        for _ in range(2):  # the first pass fills the cache, the second reads from it
            torch.manual_seed(7)
            expected = [fresh[i] for i in range(len(fresh))]
            torch.manual_seed(7)
            got = [cached[i] for i in range(len(cached))]
            for a, b in zip(expected, got):
                assert all(torch.equal(a[key], b[key]) for key in a)
    assert any(item["mask"].sum() > 0 for item in got)  # defect masks were compared, not only empty ones


def test_second_read_does_not_decode(tmp_path, decodes):
    _png(tmp_path / "a.png", 0)
    mask = np.zeros((80, 80), dtype=np.uint8)
    mask[10:30, 20:40] = 255
    Image.fromarray(mask).save(tmp_path / "a_mask.png")
    cache = ResizedImageCache(32)
    first, first_mask = cache.image(str(tmp_path / "a.png")), cache.mask(str(tmp_path / "a_mask.png"))
    assert decodes == ["image", "mask"]
    assert np.array_equal(cache.image(str(tmp_path / "a.png")), first)
    assert np.array_equal(cache.mask(str(tmp_path / "a_mask.png")), first_mask)
    assert decodes == ["image", "mask"]
    assert first.shape == (32, 32, 3) and set(np.unique(first_mask)) == {0, 1}
    assert cache.mask(None).shape == (32, 32) and cache.mask(float("nan")).sum() == 0  # good images: no file
    first[:] = 0  # what a caller gets is its own copy
    assert not np.array_equal(cache.image(str(tmp_path / "a.png")), first)


def test_rewritten_file_is_read_again(tmp_path, decodes):
    path = tmp_path / "a.png"
    _png(path, 0)
    cache = ResizedImageCache(40)
    old = cache.image(str(path))
    stamp = os.stat(path).st_mtime_ns
    pixels = _png(path, 1)
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))  # coarse file-system clocks could keep the old time
    assert np.array_equal(cache.image(str(path)), cache_module.resize_image(pixels, 40))
    assert not np.array_equal(cache.image(str(path)), old)
    assert decodes == ["image", "image"] and len(cache) == 1  # the new version replaced the old entry


def test_disk_level_is_shared_and_keyed_by_content(tmp_path, decodes):
    path, folder = tmp_path / "a.png", tmp_path / "cache"
    original = _png(path, 0)
    ResizedImageCache(40, folder).image(str(path))
    assert len(list(folder.glob("*.npy"))) == 1 and not list(folder.glob("*.tmp"))

    # A fresh cache (another process, seed or run) reads the disk entry instead of decoding.
    assert np.array_equal(ResizedImageCache(40, folder).image(str(path)), cache_module.resize_image(original, 40))
    assert decodes == ["image"]

    # New content under the old modification time: the entry is named by content, so it cannot be hit.
    stamp = os.stat(path).st_mtime_ns
    changed = _png(path, 1)
    os.utime(path, ns=(stamp, stamp))
    assert np.array_equal(ResizedImageCache(40, folder).image(str(path)), cache_module.resize_image(changed, 40))
    assert decodes == ["image", "image"]
    # Another target size is another entry.
    assert ResizedImageCache(24, folder).image(str(path)).shape == (24, 24, 3)
    assert len(list(folder.glob("*.npy"))) == 3


def test_disk_entries_of_an_older_resize_rule_are_not_reused(tmp_path, monkeypatch, decodes):
    """Masks resized with the old (top-left) nearest rule were cached as recipe 1; they must be made again."""
    path, folder = tmp_path / "a.png", tmp_path / "cache"
    _png(path, 0)
    recipe = cache_module.RECIPE
    assert recipe >= 2  # the pixel-centred mask rule
    monkeypatch.setattr(cache_module, "RECIPE", 1)
    ResizedImageCache(40, folder).mask(str(path))
    monkeypatch.setattr(cache_module, "RECIPE", recipe)
    ResizedImageCache(40, folder).mask(str(path))
    assert decodes == ["mask", "mask"] and len(list(folder.glob("*.npy"))) == 2


def test_unwritable_disk_folder_only_warns(tmp_path):
    _png(tmp_path / "a.png", 0)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    cache = ResizedImageCache(40, blocker / "images")
    with pytest.warns(UserWarning, match="cannot be written"):
        image = cache.image(str(tmp_path / "a.png"))
    assert image.shape == (40, 40, 3)


def test_preload_fills_the_cache_in_worker_processes(smoke_root, decodes):
    def hung(*_):
        raise TimeoutError("preload did not finish")

    frame = build_index(smoke_root)
    cache = ResizedImageCache(48)
    # Lightning installs a SIGTERM handler that does not exit during fit, when the loaders are made;
    # forked workers inherit it, so they must be stopped without SIGTERM (multiprocessing.Pool hangs here).
    previous = signal.signal(signal.SIGTERM, lambda *_: None), signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        loaded = cache.preload(frame["image_path"], frame["mask_path"], processes=2)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGALRM, previous[1])
    assert loaded == len(frame) + frame["mask_path"].notna().sum() == len(cache)
    assert cache.preload(frame["image_path"], frame["mask_path"], processes=2) == 0
    for path in frame["image_path"]:
        cache.image(path)
    assert decodes == []  # decoded by the worker processes; this process only reads the cache


def test_datamodule_loader_with_cache_gives_the_same_batches(smoke_root):
    def batches(cache: str) -> list[dict]:
        data = MVTecDataModule(
            root=str(smoke_root),
            source="mvtec",
            image_size=48,
            batch_size=4,
            num_workers=2,
            cache=cache,
            split=SplitConfig(0.34, 0.33),
        )
        loader = data.train_dataloader()
        if cache != "none":  # filled before the workers start, so that every worker has every image
            train = data.frame("train")
            assert len(data.image_cache) == len(train) + train["mask_path"].notna().sum()
        out = []
        for _ in range(2):
            torch.manual_seed(0)
            out += list(loader)
        return out

    for a, b in zip(batches("none"), batches("memory"), strict=True):
        assert all(torch.equal(a[key], b[key]) for key in a)


def test_cache_options_are_checked(smoke_root, tmp_path):
    with pytest.raises(ConfigError, match="data.cache"):
        MVTecDataModule(root=str(smoke_root), cache="ram")
    with pytest.warns(UserWarning, match="data.cache_dir"):
        MVTecDataModule(root=str(smoke_root), cache="memory", cache_dir=str(tmp_path))
    data = MVTecDataModule(root=str(smoke_root), cache="disk", cache_dir=str(tmp_path / "c"))
    assert data.image_cache.directory == tmp_path / "c"
    assert MVTecDataModule(root=str(smoke_root), cache="none").image_cache is None
    with pytest.raises(ValueError, match="resizes to"):
        DefectDataset(build_index(smoke_root), NAMES, eval_transform(64), cache=ResizedImageCache(32))
