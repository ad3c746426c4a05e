"""Images and masks decoded once and resized to the model's input size, kept in memory and optionally on disk.

MVTec AD images are 1024×1024 PNGs: decoding and shrinking one costs ~28 ms on one CPU core, while all
that follows (augmentation and normalisation at the model's size) costs about 1 ms. Without a cache
every epoch pays the decode again. The cache resizes exactly as the pipelines' first step does
(:data:`~xai_lightning.data.transforms.IMAGE_INTERPOLATION` for images, nearest for masks), so that
step then has nothing to do and a cached sample equals a freshly decoded one bit for bit. Random
augmentation runs after it, on the cached pixels, so caching leaves the random stream untouched.

Two levels:

* memory: one entry per file, valid while the file's modification time and byte size are unchanged
  (a rewritten file is read again);
* disk (optional): one ``.npy`` per file, named by a hash of the file's bytes, the kind and the size,
  so runs, seeds and processes share it and a changed file can never hit a stale entry, even when
  its modification time was preserved. Files are written under a temporary name and renamed into
  place, so a parallel reader sees a whole file or none.

Memory cost: ``size² × 3`` bytes an image (196 KB at 256², 150 KB at 224²) plus ``size²`` a defect
mask; all 501 hazelnut images at 256² take about 100 MB, and a run only caches the splits it uses.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import tempfile
import warnings
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

# resize_image / resize_mask are re-exported: callers import them from here.
from xai_lightning.data.decoding import decode_resized, resize_image, resize_mask
from xai_lightning.data.layout import has_mask

__all__ = ["RECIPE", "ResizedImageCache", "default_cache_dir", "resize_image", "resize_mask"]

#: Bump when the decoding or resizing changes: disk entries of an older recipe are then not reused.
#: 2: masks resized with the pixel-centred nearest rule (``MASK_INTERPOLATION``).
RECIPE = 2


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/xai_lightning/images`` (``~/.cache/...`` when unset): per user, outside the dataset."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "xai_lightning" / "images"


class ResizedImageCache:
    """Decoded images and masks of one target size, memoised in memory and optionally on disk.

    Args:
        size: side of the square the images are resized to (the data module's ``image_size``).
        directory: folder of the disk level; None keeps the cache in memory only.

    Each process holds its own memory level. DataLoader workers are processes: a shuffled epoch hands
    a worker other images than the last one did, so a worker's own entries would cover only about
    1/num_workers of the next epoch. Call :meth:`preload` in the main process before the workers
    start; forked workers then share every entry (copy-on-write, nothing is copied while it is only
    read), and ``persistent_workers`` keeps them for all epochs.
    """

    def __init__(self, size: int, directory: str | Path | None = None) -> None:
        self.size = size
        self.directory = None if directory is None else Path(directory).expanduser()
        # (kind, path) -> ((st_mtime_ns, st_size), read-only array). Keyed by path rather than by
        # stamp so that a rewritten file replaces its old entry instead of piling up beside it.
        self._memory: dict[tuple[str, str], tuple[tuple[int, int], np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self._memory)

    def image(self, path: str) -> np.ndarray:
        """RGB uint8 (size, size, 3) of an image file."""
        # A copy: the caller's pipeline may write into what it gets; the cached pixels must not change.
        return self._get("image", path).copy()

    def mask(self, path: str | None) -> np.ndarray:
        """Binary uint8 (size, size) of a mask file; all zeros when there is none (``good`` images)."""
        if not has_mask(path):
            return np.zeros((self.size, self.size), dtype=np.uint8)
        return self._get("mask", path).copy()

    def preload(self, image_paths: Iterable[str], mask_paths: Iterable[str | None] = (), processes: int = 0) -> int:
        """Load every listed file that memory does not hold yet; return how many were loaded.

        ``processes`` > 1 decodes in that many worker processes (Pillow holds the GIL while it
        decodes a PNG, so threads would not run in parallel). Nothing here draws random numbers.
        """
        jobs = [("image", path) for path in image_paths]
        jobs += [("mask", path) for path in mask_paths if has_mask(path)]
        jobs = [job for job in dict.fromkeys(jobs) if self._fresh(*job) is None]
        # Stamps are taken before the files are read, as in _get: a file rewritten meanwhile then
        # carries a newer stamp than its entry and is read again on first use.
        stamps = [_stamp(path) for _, path in jobs]
        args = [(kind, path, self.size, self.directory) for kind, path in jobs]
        if processes > 1 and len(jobs) > 1:
            # Not multiprocessing.Pool: leaving its `with` block SIGTERMs the workers, and a worker that
            # inherited a SIGTERM handler (Lightning installs one during fit) never exits. The executor
            # stops its workers by message, and reports a killed worker instead of waiting for it.
            context = multiprocessing.get_context()
            with ProcessPoolExecutor(min(processes, len(jobs)), mp_context=context) as pool:
                arrays = list(pool.map(_load, *zip(*args), chunksize=max(1, len(jobs) // (4 * processes))))
        else:
            arrays = [_load(*arg) for arg in args]
        for (kind, path), stamp, array in zip(jobs, stamps, arrays):
            self._store(kind, path, stamp, array)
        return len(jobs)

    # ------------------------------------------------------------------ internals
    def _get(self, kind: str, path: str) -> np.ndarray:
        stamp = _stamp(path)
        array = self._fresh(kind, path, stamp)
        if array is None:
            array = _load(kind, path, self.size, self.directory)
            self._store(kind, path, stamp, array)
        return array

    def _fresh(self, kind: str, path: str, stamp: tuple[int, int] | None = None) -> np.ndarray | None:
        entry = self._memory.get((kind, path))
        if entry is None or entry[0] != (stamp or _stamp(path)):
            return None
        return entry[1]

    def _store(self, kind: str, path: str, stamp: tuple[int, int], array: np.ndarray) -> None:
        array.setflags(write=False)  # a bug that writes into a cached array fails loudly instead of spreading
        self._memory[(kind, path)] = (stamp, array)


def _stamp(path: str) -> tuple[int, int]:
    """What identifies a file's version cheaply (one stat call, no read)."""
    info = os.stat(path)
    return info.st_mtime_ns, info.st_size


def _load(kind: str, path: str, size: int, directory: Path | None) -> np.ndarray:
    """Resized array of one file: from the disk level when it has the file's content, else decoded.

    Module-level so that a process pool can run it without pickling the cache's memory.
    """
    # One read serves hash and decode alike, so the entry is always named after the bytes it was made from.
    data = Path(path).read_bytes()
    if directory is None:
        return decode_resized(kind, data, size, path)
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    file = directory / f"{digest}-{kind}{size}-r{RECIPE}.npy"
    shape = (size, size, 3) if kind == "image" else (size, size)
    try:
        array = np.load(file, allow_pickle=False)
        if array.shape == shape and array.dtype == np.uint8:
            return array
    except FileNotFoundError:
        pass
    except (OSError, ValueError):
        pass  # damaged (not by us: writes are atomic); decoded and replaced below
    array = decode_resized(kind, data, size, path)
    _write_atomically(file, array)
    return array


_unwritable: set[Path] = set()


def _write_atomically(file: Path, array: np.ndarray) -> None:
    """Write under a temporary name in the same folder, then rename: readers never see a partial file.

    The disk level only saves time, so a folder that cannot be written (read-only, full) costs a
    warning, once per folder and process, never the run.
    """
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=file.parent, prefix=f".{file.stem}-", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                np.save(out, array, allow_pickle=False)
            os.replace(temporary, file)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError as error:
        if file.parent not in _unwritable:
            _unwritable.add(file.parent)
            warnings.warn(
                f"Image cache folder '{file.parent}' cannot be written ({error}); images are decoded without the "
                "disk cache. Set `data.cache_dir` to a writable folder, or `data.cache: memory`.",
                stacklevel=2,
            )
