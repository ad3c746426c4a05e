"""Benchmark 6: ``evaluate.py`` on a 3-seed quickstart-sized experiment, against its floor and the previous release.

    python -m benchmarks.evaluate_cost                      # trains the 3 seeds once (cached in --workdir)
    python -m benchmarks.evaluate_cost --repeats 3 --previous 836be03

The experiment is the quickstart config (its data, its 8 methods, 128² resnet18) with training cut to
a few batches: evaluation's cost does not depend on how well the model learnt. Both versions run as
child processes with the same arguments, interleaved, each timing only its ``evaluate.main`` (not its
imports); the previous release is ``git archive``'d from ``--previous``.

The floor is what the evaluation cannot avoid, priced with the trained model's measured passes
(batch 8, this process): one forward of the full model per image and split for the model metrics;
per explained image one forward for the prediction, the methods' own passes (``engine.floor_passes``:
a shared gradient pass once), ``2 · (steps − 1)`` forwards per method for the inner points of the
deletion / insertion curves and one for the baseline image (the curves' ends are the same two images
for every method); on the check images, infidelity's and max-sensitivity's samples, one explanation per
randomised layer and ``R − 1`` reruns of each stochastic method.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.timing import forward_backward, interleaved_medians, machine

REPO = Path(__file__).resolve().parents[1]
OVERLAY = """\
test_after_fit: false
trainer:
  max_epochs: 1
  limit_train_batches: 4
  callbacks:
    - class_path: xai_lightning.callbacks.AttributionCallback
      init_args:
        methods: {gradcam: {}, saliency: {}, input_x_gradient: {}, guided_backprop: {},
                  integrated_gradients: {n_steps: 16}, smoothgrad: {nt_samples: 8}, segmentation_head: {}, random: {}}
        every_n_epochs: 1000
        on_train_end: false
"""
CHILD = """\
import os, sys, time
sys.path.insert(0, sys.argv[1])
from xai_lightning.evaluate import main
start = time.perf_counter()
main(sys.argv[2:])
print("EVALUATE_SECONDS", time.perf_counter() - start)
"""


def experiment(workdir: Path, seeds: int) -> Path:
    """The trained experiment (made on first use, reused afterwards)."""
    exp = workdir / "exp"
    if all((exp / f"seed{s}" / "finished.json").is_file() for s in range(seeds)):
        return exp
    overlay = workdir / "overlay.yaml"
    overlay.write_text(OVERLAY)
    command = [
        sys.executable,
        str(REPO / "train.py"),
        "--config",
        str(REPO / "configs/quickstart.yaml"),
        "--config",
        str(overlay),
        "--experiment_dir",
        str(exp),
        "--data.root",
        str(workdir / "data"),
        "--seeds",
        f"0-{seeds - 1}",
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir)
    return exp


def previous_release(revision: str, workdir: Path) -> Path:
    """The package as it was at ``revision`` (its ``xai_lightning/`` folder only)."""
    target = workdir / f"release-{revision}"
    if not (target / "xai_lightning").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", revision, "xai_lightning"], cwd=REPO, check=True, capture_output=True
        )
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def time_evaluate(source: Path, arguments: list[str]) -> float:
    done = subprocess.run([sys.executable, "-c", CHILD, str(source), *arguments], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"evaluate from {source} failed:\n{done.stderr[-3000:]}")
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("EVALUATE_SECONDS")]
    return float(line.split()[1])


def no_grad(fn, *args):
    """``fn(*args)`` without building a graph: a plain forward pass."""

    def run():
        with torch.no_grad():
            return fn(*args)

    return run


def floor_seconds(exp: Path, settings: argparse.Namespace) -> tuple[float, dict[str, float]]:
    """The evaluation's floor over every run of ``exp``, and its parts."""
    from xai_lightning.evaluation.settings import configured_methods
    from xai_lightning.explain import build_explainers
    from xai_lightning.explain.engine import floor_passes
    from xai_lightning.metrics.sanity import default_randomization_layers
    from xai_lightning.runs import find_runs
    from xai_lightning.scoring import select_images

    runs = find_runs(exp)
    loaded = runs[0].load()
    model, data = loaded.model, loaded.data
    images = torch.stack([data.dataset("test")[i]["image"] for i in range(8)])
    targets = torch.zeros(8, dtype=torch.long)
    passes = {"fb": forward_backward(model, images, targets), "f": no_grad(model.classify, images)}
    unit = interleaved_medians({**passes, "full": no_grad(model, images)}, repeats=7)
    fb, f, full = (unit[k] / len(images) for k in ("fb", "f", "full"))
    explainers = build_explainers(configured_methods(runs[0]), model)
    size = tuple(images.shape[-2:])
    explain = floor_passes(explainers, size).seconds(fb, f)
    n_all = sum(len(data.frame(split)) for split in ("train", "val", "test"))
    n_explained = sum(len(select_images(data.frame(s), settings.max_images_per_class)) for s in settings.xai_splits)
    n_check = len(select_images(data.frame(settings.xai_splits[-1]), settings.check_images_per_class))
    steps, m = settings.faithfulness_steps, len(explainers)
    layers = len(default_randomization_layers(model))
    stochastic = [e for e in explainers.values() if e.stochastic]
    parts = {
        "model metrics": n_all * full,
        "explanations": n_explained * (explain + f),  # + the forward that gives the prediction
        "curves": n_explained * (2 * (steps - 1) * m + 1) * f,  # inner points; the baseline image once
        "robustness": n_check * settings.robustness_samples * (m * f + explain),
        "randomisation": n_check * layers * explain,
        "stability": n_check * (settings.stability_runs - 1) * sum(e.passes(size).seconds(fb, f) for e in stochastic),
    }
    return len(runs) * sum(parts.values()), {k: len(runs) * v for k, v in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "xai_evaluate_benchmark")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--previous", default="836be03", help="git revision of the previous release")
    parser.add_argument("--xai-splits", nargs="+", default=["test"])
    parser.add_argument("--max-images-per-class", type=int, default=None, help="default: every defect image")
    parser.add_argument("--faithfulness-steps", type=int, default=5)
    parser.add_argument("--check-images-per-class", type=int, default=2)
    parser.add_argument("--robustness-samples", type=int, default=3)
    parser.add_argument("--stability-runs", type=int, default=3)
    settings = parser.parse_args()
    settings.workdir.mkdir(parents=True, exist_ok=True)
    exp = experiment(settings.workdir, settings.seeds)
    arguments = [
        str(exp),
        "--no-wandb",
        "--bootstrap",
        "1000",
        "--xai-splits",
        *settings.xai_splits,
        *(["--max-images-per-class", str(settings.max_images_per_class)] if settings.max_images_per_class else []),
        "--faithfulness-steps",
        str(settings.faithfulness_steps),
        "--check-images-per-class",
        str(settings.check_images_per_class),
        "--robustness-samples",
        str(settings.robustness_samples),
        "--stability-runs",
        str(settings.stability_runs),
    ]
    sources = {
        "this version": REPO,
        f"release {settings.previous}": previous_release(settings.previous, settings.workdir),
    }
    floor, parts = floor_seconds(exp, settings)
    print("floor parts (s): " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()), flush=True)
    times: dict[str, list[float]] = {name: [] for name in sources}
    for _ in range(settings.repeats):
        for name, source in sources.items():
            out = settings.workdir / f"evaluation-{name.split()[-1]}"
            times[name].append(time_evaluate(source, [*arguments, "--out", str(out)]))
            print(f"{name}: {times[name][-1]:.1f} s", flush=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    ours, previous = medians["this version"], medians[f"release {settings.previous}"]
    print(f"# evaluate.py on {settings.seeds} seeds of the quickstart experiment — {machine()}")
    print(f"settings: {' '.join(arguments[1:])}")
    print(f"| version | median s | × floor ({floor:.1f} s) |")
    print("| --- | --- | --- |")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.1f} | {seconds / floor:.2f}× |")
    print(f"this version is {previous / ours:.2f}× faster than release {settings.previous}")


if __name__ == "__main__":
    main()
