"""The command line ``python -m xai_lightning.data.synthetic``: write a synthetic set, or say it is already there.

Options mirror :class:`~xai_lightning.data.synthetic.config.SyntheticConfig`; ``--counts`` overrides MVTec's counts.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from xai_lightning.data.classes import DEFECT_TYPES
from xai_lightning.data.layout import SHORTCUT_MASK_DIR, TEST_DIR, marker_path
from xai_lightning.data.synthetic.config import LAYOUTS, MVTEC_HAZELNUT_COUNTS, SyntheticConfig
from xai_lightning.data.synthetic.shortcut import shortcut_marked
from xai_lightning.data.synthetic.writer import check_target, generate_synthetic_mvtec
from xai_lightning.errors import ConfigError, DatasetError


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write the synthetic set, or say it is already there; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        counts = _parse_counts(args.counts)
        config = SyntheticConfig(
            size=args.size,
            seed=args.seed,
            category=args.category,
            counts=counts,
            shortcut_fraction=args.shortcut_fraction,
            shortcut_size=args.shortcut_size,
            layout=args.layout,
        )
        category_dir = args.out if config.layout == "plain" else args.out / config.category
        n_images = sum(config.counts.values())
        if check_target(args.out, config):
            print(f"'{category_dir}' already holds this synthetic set ({n_images} images); nothing to do.")
            return 0
        start = time.perf_counter()
        generate_synthetic_mvtec(args.out, config, progress=not args.quiet)
    except (ConfigError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    n_masks = sum(config.count(TEST_DIR, defect) for defect in DEFECT_TYPES)
    n_marked = sum(len(indices) for indices in shortcut_marked(config).values())
    shortcut = f" and {n_marked} shortcut markers (masks in {SHORTCUT_MASK_DIR}/)" if n_marked else ""
    print(
        f"wrote {n_images} images and {n_masks} masks{shortcut} ({config.size}x{config.size}, seed {config.seed}) "
        f"to '{category_dir}' in {time.perf_counter() - start:.1f}s; '{marker_path(args.out)}' marks them synthetic."
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m xai_lightning.data.synthetic",
        description="Write a synthetic hazelnut-like data set in the MVTec AD folder layout, labelled by "
        "SYNTHETIC.json.",
    )
    parser.add_argument("--out", required=True, type=Path, help="dataset root; the category folder is created inside")
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels (default 1024, as MVTec AD)")
    parser.add_argument("--seed", type=int, default=0, help="RNG seed; the same seed gives byte-identical files")
    parser.add_argument("--category", default="hazelnut", help="category folder name (default hazelnut)")
    parser.add_argument(
        "--counts",
        action="append",
        metavar="SPLIT/CLASS=N[,...]",
        help="override counts of the MVTec hazelnut defaults, e.g. test/crack=5,train/good=20 (0 drops a class)",
    )
    parser.add_argument(
        "--shortcut-fraction",
        type=float,
        default=0.0,
        help="fraction (0..1) of each defect class's images that get a class-specific shortcut marker, with its "
        "mask in shortcut_mask/ (default 0: off; the known-answer experiment)",
    )
    parser.add_argument(
        "--shortcut-size", type=float, default=0.07, help="shortcut marker side, fraction of the image side"
    )
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="mvtec",
        help="folder layout: mvtec (<out>/<category>/train, test, ground_truth; default) or plain "
        "(<out>/images/<class>/ with <out>/masks/<class>/, read with --data.layout plain)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    return parser


def _parse_counts(specs: Sequence[str] | None) -> dict[str, int]:
    """``--counts`` items (``SPLIT/CLASS=N``, comma-separated, repeatable) applied to MVTec hazelnut's counts.

    >>> _parse_counts(["test/crack=5,train/good=20"])["test/crack"]
    5
    """
    counts = dict(MVTEC_HAZELNUT_COUNTS)
    for spec in specs or []:
        for item in filter(None, (part.strip() for part in spec.split(","))):
            key, sep, value = item.partition("=")
            if not sep or not value.strip().isdigit():
                raise ConfigError(f"--counts item {item!r} is not SPLIT/CLASS=N (for example test/crack=5).")
            counts[key.strip()] = int(value)
    return counts
