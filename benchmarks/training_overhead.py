"""Benchmark 4: what the attribution callback adds to a training run, against its attribution floor.

    python -m benchmarks.training_overhead --config configs/quickstart.yaml --epochs 3

Trains the config twice in this process, with the AttributionCallback explaining every epoch and
without it (same seed, data, W&B offline logging, no test run), and times both. The attribution
floor is what the explained images cannot avoid: for every pass, images × the passes per image each
method needs by definition (``Explainer.passes``, a shared Grad-CAM/Saliency/Input×Gradient/
segmentation-head pass counted once), priced at one forward+backward and one forward pass of the
trained model, measured in the same process after training. Target: (with − without) ≤ 1.2 × floor.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch
import yaml

from benchmarks.timing import forward_backward, interleaved_medians, machine
from xai_lightning.callbacks import AttributionCallback
from xai_lightning.cli import main as train
from xai_lightning.explain.engine import floor_passes

CALLBACK = "xai_lightning.callbacks.AttributionCallback"


def variant(config: dict, workdir: Path, name: str, epochs: int, explain: bool) -> Path:
    """Write the config with the callback explaining every epoch (or removed), W&B offline, no test run."""
    config = copy.deepcopy(config)
    config["experiment_dir"] = str(workdir / name)
    config["test_after_fit"] = False
    config["trainer"]["max_epochs"] = epochs
    callbacks = []
    for callback in config["trainer"].get("callbacks") or []:
        if callback.get("class_path") == CALLBACK:
            if not explain:
                continue
            callback = copy.deepcopy(callback)
            callback["init_args"]["every_n_epochs"] = 1
        callbacks.append(callback)
    config["trainer"]["callbacks"] = callbacks
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def timed_fit(path: Path, run_name: str):
    start = time.perf_counter()
    cli = train(["--config", str(path), "--run_name", run_name])
    return time.perf_counter() - start, cli


def floor_seconds(cli, repeats: int) -> tuple[float, dict]:
    """Seconds of attribution floor in the run, and the figures behind it."""
    callback = next(c for c in cli.trainer.callbacks if isinstance(c, AttributionCallback))
    model = cli.model.eval()
    size = cli.datamodule.image_size
    batch = torch.randn(callback.batch_size, 3, size, size, device=model.device)
    targets = torch.arange(callback.batch_size, device=model.device) % model.num_classes

    def forward() -> None:
        with torch.no_grad():
            model.classify(batch)

    seconds = interleaved_medians({"fb": forward_backward(model, batch, targets), "f": forward}, repeats, model.device)
    per_image_fb, per_image_f = seconds["fb"] / len(batch), seconds["f"] / len(batch)
    passes = floor_passes(callback.explainers, (size, size))
    images = sum(entry["n_images"] or 0 for entry in callback.history)
    floor = images * passes.seconds(per_image_fb, per_image_f)
    return floor, {
        "passes": len(callback.history),
        "images": images,
        "fb_ms": 1000 * per_image_fb,
        "f_ms": 1000 * per_image_f,
        "per_image": passes,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1, help="training runs per variant (alternating)")
    parser.add_argument("--floor-repeats", type=int, default=7)
    parser.add_argument("--workdir", default=None, help="default: a temporary folder")
    args = parser.parse_args(argv)
    config = yaml.safe_load(Path(args.config).read_text())

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        paths = {explain: variant(config, workdir, "on" if explain else "off", args.epochs, explain) for explain in (False, True)}
        train(["--config", str(paths[False]), "--run_name", "warmup", "--trainer.max_epochs", "1"])  # data, caches
        walls: dict[bool, list[float]] = {False: [], True: []}
        cli = None
        for repeat in range(args.repeats):
            for explain in (False, True):
                wall, run = timed_fit(paths[explain], f"r{repeat}")
                walls[explain].append(wall)
                cli = run if explain else cli
        floor, figures = floor_seconds(cli, args.floor_repeats)

    off, on = (sorted(walls[k])[len(walls[k]) // 2] for k in (False, True))
    overhead = on - off
    passes = figures["per_image"]
    print(f"{args.config}, {args.epochs} epochs, callback every epoch; {machine()}")
    print(f"training without the callback: {off:8.1f} s")
    print(f"training with the callback:    {on:8.1f} s  (+{overhead:.1f} s)")
    print(
        f"attribution floor: {figures['passes']} passes, {figures['images']} images explained; per image "
        f"{passes.forward_backward:g} fwd+bwd x {figures['fb_ms']:.1f} ms + {passes.forward:g} fwd x {figures['f_ms']:.1f} ms"
        f" = {floor:.1f} s"
    )
    print(f"overhead / floor = {overhead / floor:.2f} (target <= 1.2)")


if __name__ == "__main__":
    main()
