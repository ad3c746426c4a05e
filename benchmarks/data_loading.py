"""Training DataLoader with the image cache on and off: epoch 1 vs later epochs, and its share of a training epoch.

    python benchmarks/data_loading.py --images 80 --epochs 4 --repeats 3

Uses a synthetic set in the MVTec layout with 1024×1024 source images like MVTec AD's (generated
once into ``--data-dir``, then reused). Part (a) iterates the real training loader (train
augmentation, shuffling, ``--workers`` persistent workers) for ``--epochs`` epochs; epoch 1 includes
creating the loader, so the cache's preloading and the workers' start are counted. The variants run
interleaved in every repeat, so the ratios survive a noisy machine; medians are reported. Part (b)
trains the real model (resnet18 by default) with Lightning and compares its cached epochs with the
loader alone.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from xai_lightning.data.datamodule import MVTecDataModule
from xai_lightning.data.splits import SplitConfig
from xai_lightning.data.synthetic import (
    DEFECT_TYPES,
    SyntheticConfig,
    generate_synthetic_mvtec,
)
from xai_lightning.models import MultiTaskClassifier


def _counts(images: int) -> dict[str, int]:
    """Half ``train/good``, the rest over ``test/good`` and the defects (>= 6 each: val and test get every class)."""
    per_class = max(6, images // 2 // (1 + len(DEFECT_TYPES)))
    return {"train/good": images - per_class * (1 + len(DEFECT_TYPES)), "test/good": per_class} | {
        f"test/{defect}": per_class for defect in DEFECT_TYPES
    }


def _datamodule(args, root: Path, cache: str, cache_dir: Path | None = None) -> MVTecDataModule:
    data = MVTecDataModule(
        root=str(root),
        source="mvtec",
        image_size=args.image_size,
        batch_size=args.batch_size,
        num_workers=args.workers,
        # Most images train: the loader is what is measured.
        split=SplitConfig(val_fraction=0.15, test_fraction=0.15, max_train_good=args.images),
        cache=cache,
        cache_dir=None if cache_dir is None else str(cache_dir),
    )
    data.setup()  # indexing and file checks are not part of an epoch
    return data


def _epoch_times(make_loader, epochs: int) -> list[float]:
    """Seconds of each full pass over the loader; the first includes making it (preload, worker start)."""
    start = time.perf_counter()
    loader = make_loader()
    times = []
    for _ in range(epochs):
        for _batch in loader:
            pass
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
    del loader
    gc.collect()  # ends the persistent workers before the next variant starts its own
    return times


def measure_loading(args, root: Path, scratch: Path) -> dict[str, list[list[float]]]:
    """Epoch times of each loader variant, one list per repeat."""
    runs: dict[str, list[list[float]]] = {}
    for repeat in range(args.repeats):
        disk = scratch / f"disk-cache-{repeat}"  # empty: the cold run fills it, the warm run reuses it

        def without_preload():
            # The cache filled only by the workers themselves: what a per-process cache gives without
            # MVTecDataModule's preloading (each worker sees other images in the next shuffled epoch).
            data = _datamodule(args, root, "memory")
            dataset = data.dataset("train", augment=True)
            return lambda: DataLoader(
                dataset,
                batch_size=args.batch_size,
                shuffle=True,
                num_workers=args.workers,
                persistent_workers=args.workers > 0,
            )

        variants = {
            "none (decode every epoch)": lambda: _datamodule(args, root, "none").train_dataloader,
            "memory": lambda: _datamodule(args, root, "memory").train_dataloader,
            "memory, workers fill it": without_preload,
            "disk, empty folder": lambda disk=disk: _datamodule(args, root, "disk", disk).train_dataloader,
            "disk, filled (next run)": lambda disk=disk: _datamodule(args, root, "disk", disk).train_dataloader,
        }
        for name, prepare in variants.items():
            torch.manual_seed(repeat)
            runs.setdefault(name, []).append(_epoch_times(prepare(), args.epochs))
    return runs


class _EpochTimer(pl.Callback):
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def measure_training(args, root: Path, cache: str) -> tuple[list[float], dict[str, torch.Tensor]]:
    """Seconds of each training epoch (no validation) and the final weights."""
    pl.seed_everything(0, verbose=False)
    data = _datamodule(args, root, cache)
    model = MultiTaskClassifier(backbone=args.backbone, class_names=data.class_names, pretrained=False)
    timer = _EpochTimer()
    trainer = pl.Trainer(
        max_epochs=args.train_epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    trainer.fit(model, datamodule=data)
    return timer.seconds, {k: v.detach().clone() for k, v in model.state_dict().items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=80, help="images in the synthetic set")
    parser.add_argument("--source-size", type=int, default=1024, help="side of the source PNGs (MVTec AD: 1024)")
    parser.add_argument("--image-size", type=int, default=128, help="model input size (the quickstart's)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4, help="loader epochs per variant and repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--train-epochs", type=int, default=4, help="training epochs per cache setting (0: skip)")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "xai_lightning_bench")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*SYNTHETIC.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning vs newer torch, not ours
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning").setLevel(logging.WARNING)

    root = args.data_dir / f"synthetic-{args.source_size}px-{args.images}"
    start = time.perf_counter()
    generate_synthetic_mvtec(root, SyntheticConfig(size=args.source_size, seed=0, counts=_counts(args.images)))
    n_train = len(_datamodule(args, root, "none").frame("train"))
    print(
        f"{n_train} training images, {args.source_size}² PNG -> {args.image_size}², batch {args.batch_size}, "
        f"{args.workers} workers, {torch.get_num_threads()} torch threads; data ready in "
        f"{time.perf_counter() - start:.1f} s ({root})"
    )

    with tempfile.TemporaryDirectory() as scratch:
        runs = measure_loading(args, root, Path(scratch))
    print(f"\n(a) training loader, s per epoch, median of {args.repeats} repeats (later: epochs 2..{args.epochs})")
    print(f"{'cache':<28}{'epoch 1':>9}{'later':>9}{'1 / later':>11}")
    later_of: dict[str, float] = {}
    for name, repeats in runs.items():
        first = statistics.median(times[0] for times in repeats)
        later_of[name] = statistics.median(t for times in repeats for t in times[1:])
        print(f"{name:<28}{first:>9.3f}{later_of[name]:>9.3f}{first / later_of[name]:>10.1f}x")
    baseline = later_of["none (decode every epoch)"]
    print(f"later epochs, no cache / memory cache: {baseline / later_of['memory']:.1f}x")

    if args.train_epochs < 2:
        return
    # Epoch 1 also holds Lightning's start and the workers' first batches; epochs 2.. are the steady state.
    print(f"\n(b) training epoch of {args.backbone} (no validation), epochs 2..{args.train_epochs}, median")
    trained = {cache: measure_training(args, root, cache) for cache in ("none", "memory")}
    print(f"{'cache':<28}{'train epoch':>12}{'loader alone':>14}{'loader share':>14}")
    for cache, loader_name in (("none", "none (decode every epoch)"), ("memory", "memory")):
        epoch = statistics.median(trained[cache][0][1:])
        loader = later_of[loader_name]
        print(f"{cache:<28}{epoch:>12.3f}{loader:>14.3f}{loader / epoch:>13.1%}")
    same = all(torch.equal(trained["none"][1][k], trained["memory"][1][k]) for k in trained["none"][1])
    print(f"same seed, cache none vs memory: final weights {'identical' if same else 'DIFFERENT'}")
    # Other processes on the machine distort every number above; say how busy it was.
    one, five, _ = os.getloadavg()
    print(f"load average (1 / 5 min) at the end: {one:.1f} / {five:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
