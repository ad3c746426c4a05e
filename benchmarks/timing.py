"""Timing helpers shared by the benchmark scripts: interleaved medians, device choice, a common header."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch


def device_of(name: str | None) -> torch.device:
    """The device to benchmark on: ``name`` if given, else CUDA when available, else the CPU."""
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def synchronize(device: torch.device) -> None:
    # CUDA kernels run asynchronously: time only after they have finished.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(
    candidates: dict[str, Callable[[], object]], repeats: int, device: torch.device | None = None, warmup: int = 1
) -> dict[str, float]:
    """Median seconds per call of each candidate.

    Every round times each candidate once, in turn, so a burst of load on a noisy machine hits all of
    them alike and the ratios between them stay meaningful. The first ``warmup`` calls (allocation,
    kernel selection) are not timed.
    """
    device = device or torch.device("cpu")
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    runs: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            runs[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in runs.items()}


def forward_backward(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor) -> Callable[[], None]:
    """One plain forward + backward of the target logits w.r.t. the input: the floor of any gradient method."""

    def run() -> None:
        x = images.clone().requires_grad_(True)
        torch.autograd.grad(model.classify(x).gather(1, targets[:, None]).sum(), x)

    return run


def machine() -> str:
    """One line naming the machine, for the tables quoted in the README."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def print_header(what: str, device: torch.device, repeats: int) -> None:
    print(f"{what}; device {device} — {machine()}; medians of {repeats} interleaved repeats")
