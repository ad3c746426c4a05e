"""The index check decodes every file once: its cost against PIL's verify() and against one epoch's decoding.

    python -m benchmarks.index_check --images 120 --repeats 5

Uses a synthetic set in the MVTec layout with 1024×1024 source images like MVTec AD's (generated
once into ``--data-dir``). Three things are timed, interleaved in every repeat (medians reported):
the index check as it is (``check_files``: a full decode of every image and mask, a thread per
core), the previous check (``Image.verify()`` on every file: chunk checksums only, blind to a
truncated JPEG or a damaged zlib stream), and the image cache's preload, which decodes and resizes
every file as the first training epoch must anyway.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from PIL import Image

from benchmarks.timing import interleaved_medians
from xai_lightning.data.cache import ResizedImageCache
from xai_lightning.data.layout import has_mask
from xai_lightning.data.mvtec import build_index, check_files
from xai_lightning.data.synthetic import DEFECT_TYPES, SyntheticConfig, generate_synthetic_mvtec


def verify_only(index) -> None:
    """The previous check: PIL's verify() of every image and mask (no pixel is decoded)."""
    for path in [*index["image_path"], *(p for p in index["mask_path"] if has_mask(p))]:
        with Image.open(path) as image:
            image.verify()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=120, help="images in the generated set")
    parser.add_argument("--source-size", type=int, default=1024)
    parser.add_argument("--image-size", type=int, default=224, help="size the cache resizes to")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "xai_lightning_index_bench")
    args = parser.parse_args(argv)

    per_class = max(2, args.images // (2 + len(DEFECT_TYPES)))
    counts = {"train/good": per_class * 2, "test/good": per_class} | {f"test/{d}": per_class for d in DEFECT_TYPES}
    root = args.data_dir / f"{args.source_size}px-{args.images}"
    generate_synthetic_mvtec(root, SyntheticConfig(size=args.source_size, seed=0, counts=counts))
    index = build_index(root, verify_images=False)
    files = len(index) + sum(has_mask(p) for p in index["mask_path"])

    def preload() -> None:  # a fresh memory cache each time: the first epoch's decoding
        ResizedImageCache(args.image_size).preload(index["image_path"], index["mask_path"], processes=os.cpu_count())

    times = interleaved_medians(
        {"decode check": lambda: check_files(index), "verify() only": lambda: verify_only(index), "preload": preload},
        repeats=args.repeats,
    )
    print(f"{files} files of {args.source_size}², {os.cpu_count()} cores, medians of {args.repeats}:")
    for name, seconds in times.items():
        print(f"  {name:14s} {seconds:7.3f} s  ({seconds / files * 1000:.2f} ms/file)")
    print(f"decode check / verify() only: {times['decode check'] / times['verify() only']:.1f} x")
    print(f"decode check / first epoch's decoding (cache preload): {times['decode check'] / times['preload']:.2f} x")


if __name__ == "__main__":
    main()
