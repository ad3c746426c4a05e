"""Benchmark 2: Integrated Gradients against its floor, its peak memory, and the adaptive step count.

    python -m benchmarks.integrated_gradients --image-size 128 --images 2 --repeats 3

1. For each internal batch b: the time per image of IG with ``n_steps`` against ``n_steps`` plain
   forward + backward passes at that batch size (the floor: IG cannot do fewer), measured
   interleaved in the same run; Captum's IntegratedGradients with the same internal batch beside it.
   The best b is the one whose forward + backward per path point is fastest. Target: ≤ 1.15× there.
2. Peak memory of one IG call for n_steps 16 / 50 / 200, each in a fresh process (CPU: growth of
   the peak resident set over the loaded model; GPU: ``torch.cuda.max_memory_allocated``). Flat in
   n_steps is the goal; Captum without an internal batch is shown for contrast.
3. Adaptive steps: the completeness error and time of fixed step counts against the adaptive mode;
   the speed-up is taken against the cheapest fixed count whose worst error is no larger.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch
from captum.attr import IntegratedGradients

from benchmarks.timing import (
    device_of,
    forward_backward,
    interleaved_medians,
    print_header,
    synchronize,
)
from xai_lightning.explain.base import attribution_mode
from xai_lightning.explain.integrated_gradients import (
    adaptive_integrated_gradients,
    completeness_error,
    integrated_gradients,
)
from xai_lightning.models import MultiTaskClassifier


def build(args: argparse.Namespace, device: torch.device):
    torch.manual_seed(0)
    model = MultiTaskClassifier(backbone=args.backbone).eval().to(device)
    with torch.no_grad():  # BatchNorm statistics away from the identity, as after training
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    images = torch.randn(args.images, 3, args.image_size, args.image_size, device=device)
    targets = torch.arange(args.images, device=device) % model.num_classes
    return model, images, targets


def speed(args: argparse.Namespace, device: torch.device) -> None:
    model, images, targets = build(args, device)
    baselines = torch.zeros_like(images)
    candidates = {}
    for size in args.batch_sizes:
        points = torch.randn(size, *images.shape[1:], device=device)
        point_targets = torch.arange(size, device=device) % model.num_classes
        candidates[f"fwd+bwd b={size}"] = forward_backward(model, points, point_targets)
        candidates[f"ours b={size}"] = lambda size=size: integrated_gradients(
            model.classify, images, baselines, targets, args.n_steps, internal_batch_size=size
        )
        if size >= len(images):  # Captum raises smaller internal batches to the number of images
            captum = IntegratedGradients(model.classify)
            candidates[f"captum b={size}"] = lambda size=size, captum=captum: captum.attribute(
                images, baselines=baselines, target=targets, n_steps=args.n_steps, internal_batch_size=size
            )
    with attribution_mode(model):
        seconds = interleaved_medians(candidates, args.repeats, device)

    print_header(
        f"Integrated Gradients, {args.backbone} at {args.image_size}², {args.images} images, n_steps {args.n_steps}",
        device,
        args.repeats,
    )
    print(f"{'internal batch':>15}{'fwd+bwd ms/pt':>15}{'IG ms/img':>11}{'floor ms/img':>14}{'ours/floor':>12}{'captum/floor':>14}")
    per_point = {size: seconds[f"fwd+bwd b={size}"] / size for size in args.batch_sizes}
    for size in args.batch_sizes:
        floor = args.n_steps * per_point[size]
        ours = seconds[f"ours b={size}"] / len(images)
        captum = seconds.get(f"captum b={size}")
        captum_text = f"{captum / len(images) / floor:>14.2f}" if captum else f"{'-':>14}"
        print(f"{size:>15}{1000 * per_point[size]:>15.2f}{1000 * ours:>11.1f}{1000 * floor:>14.1f}{ours / floor:>12.2f}{captum_text}")
    best = min(per_point, key=per_point.get)
    ours_best = seconds[f"ours b={best}"] / len(images) / (args.n_steps * per_point[best])
    print(f"\nbest internal batch: {best}; IG / (n_steps x fwd+bwd) there = {ours_best:.2f} (target <= 1.15)")


def peak_memory_mib(args: argparse.Namespace, device: torch.device, n_steps: int, impl: str) -> float:
    """Peak memory of one IG call above the loaded model (run in a fresh process by :func:`memory`)."""
    model, images, targets = build(args, device)
    baselines = torch.zeros_like(images)
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.max_memory_allocated(device)
    else:
        before = reset_peak_rss()
    with attribution_mode(model):
        if impl == "ours":
            integrated_gradients(model.classify, images, baselines, targets, n_steps, internal_batch_size=args.memory_batch)
        else:
            IntegratedGradients(model.classify).attribute(images, baselines=baselines, target=targets, n_steps=n_steps)
    synchronize(device)
    if device.type == "cuda":
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    return (_status_kib("VmHWM") - before) / 1024


def reset_peak_rss() -> int:
    """Reset this process's peak resident set (Linux ``clear_refs`` 5) and return the current one, in KiB.

    Without the reset the peak would be the model's construction, not the IG call.
    """
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return _status_kib("VmRSS")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def memory(args: argparse.Namespace, argv: list[str]) -> None:
    print(f"\npeak memory of one IG call above the loaded model (MiB; fresh process each; ours at internal batch {args.memory_batch})")
    print(f"{'n_steps':>8}{'ours':>10}{'captum, no internal batch':>28}")
    for n_steps in args.memory_steps:
        row = []
        for impl in ("ours", "captum"):
            if impl == "captum" and n_steps > args.captum_max_steps:
                row.append(f"{'(skipped)':>28}")
                continue
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.integrated_gradients", *argv, "--_peak", f"{impl}:{n_steps}"],
                check=True,
                capture_output=True,
                text=True,
            )
            value = json.loads(out.stdout.strip().splitlines()[-1])["mib"]
            row.append(f"{value:>10.0f}" if impl == "ours" else f"{value:>28.0f}")
        print(f"{n_steps:>8}{''.join(row)}")


def adaptive(args: argparse.Namespace, device: torch.device) -> None:
    model, images, targets = build(args, device)
    images = torch.randn(args.adaptive_images, *images.shape[1:], device=device)
    targets = torch.arange(len(images), device=device) % model.num_classes
    baselines = torch.zeros_like(images)
    chunk = args.memory_batch
    results = {}
    with attribution_mode(model):
        for n_steps in args.adaptive_steps:
            found: dict = {}

            def run(n_steps=n_steps, found=found) -> None:
                found["a"] = integrated_gradients(model.classify, images, baselines, targets, n_steps, internal_batch_size=chunk)

            seconds = interleaved_medians({"fixed": run}, 1, device, warmup=0)["fixed"]
            error = completeness_error(model.classify, images, baselines, targets, found["a"])
            results[f"fixed {n_steps}"] = (seconds, float(error.max()), float(error.mean()), float(n_steps))
        found = {}

        def run_adaptive() -> None:
            found["r"] = adaptive_integrated_gradients(
                model.classify, images, baselines, targets, args.tolerance, args.adaptive_steps[0],
                args.adaptive_steps[-1], internal_batch_size=chunk,
            )

        seconds = interleaved_medians({"adaptive": run_adaptive}, 1, device, warmup=0)["adaptive"]
        _, steps, error = found["r"]
        results[f"adaptive tol={args.tolerance}"] = (seconds, float(error.max()), float(error.mean()), float(steps.float().mean()))
    print(f"\ncompleteness error |sum(a) - (f(x) - f(x'))| in logits, {len(images)} images")
    print(f"{'':<22}{'seconds':>9}{'max err':>10}{'mean err':>10}{'mean steps':>12}")
    for name, (seconds, worst, mean, steps) in results.items():
        print(f"{name:<22}{seconds:>9.2f}{worst:>10.4f}{mean:>10.4f}{steps:>12.1f}")
    adaptive_seconds, adaptive_worst = results[f"adaptive tol={args.tolerance}"][:2]
    matching = [(v[0], k) for k, v in results.items() if k.startswith("fixed") and v[1] <= adaptive_worst]
    if matching:
        seconds, name = min(matching)
        print(f"speed-up at equal (or better) worst error: {seconds / adaptive_seconds:.2f}x against {name}")
    else:
        print("no fixed step count reached the adaptive mode's worst error")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--n-steps", type=int, default=50)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-steps", type=int, nargs="+", default=[16, 50, 200])
    parser.add_argument("--memory-batch", type=int, default=8, help="internal batch for the memory and adaptive parts")
    parser.add_argument("--captum-max-steps", type=int, default=50, help="skip unbatched Captum above this (memory)")
    parser.add_argument("--tolerance", type=float, default=0.01, help="adaptive mode's completeness tolerance (logits)")
    parser.add_argument("--adaptive-images", type=int, default=6)
    parser.add_argument("--adaptive-steps", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--skip", nargs="*", default=[], choices=["speed", "memory", "adaptive"])
    parser.add_argument("--device", default=None)
    parser.add_argument("--_peak", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = device_of(args.device)
    if args._peak:
        impl, n_steps = args._peak.split(":")
        print(json.dumps({"mib": peak_memory_mib(args, device, int(n_steps), impl)}))
        return
    if "speed" not in args.skip:
        speed(args, device)
    if "memory" not in args.skip:
        memory(args, argv)
    if "adaptive" not in args.skip:
        adaptive(args, device)


if __name__ == "__main__":
    main()
