"""Benchmark: our batched localisation metrics against Quantus' on the same maps, for speed and for equal values.

    python -m benchmarks.metrics_vs_quantus --n-images 256 --image-size 224 --repeats 3

Data: ``--methods`` synthetic attribution methods, each with ``--n-images`` float32 maps (a smooth
blob near the defect, a CAM-like low-frequency background and pixel noise, every value distinct
within a map, so no ties), against non-empty masks with a rotated elliptic defect; fixed seed.

Timed, interleaved so machine noise hits all alike (medians; Quantus' full calls take ~15 s each
and get ``--quantus-repeats`` rounds):

- ours: ``localization_scores`` (TKO at K=|M|, pointing game, relevance mass, Otsu IoU/precision/
  recall, pixel AUROC) plus ``win_credit`` over the methods, on torch tensors on the CPU and, when
  available, on CUDA; and each function on its own;
- Quantus: ``RelevanceRankAccuracy``, ``TopKIntersection(k=1000)``, ``PointingGame`` and
  ``RelevanceMassAccuracy`` called as a user calls them (``model=None``, precomputed ``a_batch``,
  ``abs=False, normalise=False``, warnings and progress bar off) on the same NumPy arrays, and
  their ``evaluate_batch`` alone ("core": the metric without Quantus' input checks, in batches
  of 64 as ``__call__`` does).

Also timed, for the issue's second criterion: the shared-gradient group (``explain_batch`` over
Grad-CAM, Saliency, Input×Gradient and the segmentation head of a ``MultiTaskClassifier`` with a
ResNet-18, ``--group-batch-size`` images of ``--image-size``², median of ``--group-repeats`` calls
after one warm-up), extrapolated to ``--n-images`` images, at torch's default thread count (the
group is what training runs) on the CPU, and on CUDA when available. ``--threads`` applies to
everything else. Skip it with ``--no-group``.

Checked on every method's maps: where the definitions coincide the values must be equal (rank
metrics exactly, relevance mass to float32 summation error, as Quantus sums in the maps' dtype);
the script exits non-zero otherwise. Targets: ours >= 20x faster than Quantus RRA+PG+RMA on the
CPU, and the metrics for the images' maps under 2 % of the time the group needs for those images.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.timing import interleaved_medians, machine, synchronize
from xai_lightning.explain import create_explainer
from xai_lightning.explain.engine import explain_batch
from xai_lightning.metrics.localization import (
    localization_scores,
    otsu_iou_precision_recall,
    pixel_auroc,
    pointing_game,
    relevance_mass_accuracy,
    top_k_overlap,
)
from xai_lightning.metrics.winrate import win_credit
from xai_lightning.models import MultiTaskClassifier

#: The shared-gradient group: one forward and one backward pass serve all four maps.
GROUP = ("gradcam", "saliency", "input_x_gradient", "segmentation_head")

# (shift of the blob from the defect centre in px at 224², blob width / defect size, background, noise)
METHOD_STYLES = ((3.0, 1.0, 0.2, 0.3), (8.0, 1.5, 0.4, 0.1), (15.0, 0.7, 0.1, 0.6), (25.0, 2.0, 0.5, 0.05))

# Largest accepted |ours - Quantus|. Rank metrics are ratios of the same integer counts: exact.
# Quantus sums relevance mass in float32 (the maps' dtype), we in float64.
TOLERANCE = {"rank": 1e-12, "relevance_mass": 1e-6}


def _distinct(maps: torch.Tensor) -> torch.Tensor:
    """Nudge tied values of each (B, N) row up by one ulp until all values of a row differ."""
    values, order = maps.sort(dim=1)
    for _ in range(64):
        tied = values[:, 1:] <= values[:, :-1]
        if not tied.any():
            return torch.empty_like(maps).scatter_(1, order, values)
        values[:, 1:] = torch.where(tied, torch.nextafter(values[:, :-1], torch.tensor(math.inf)), values[:, 1:])
    raise RuntimeError("could not make the map values distinct")


def make_data(n_images: int, size: int, n_methods: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``maps`` (n_methods, B, H, W) float32 without ties and ``masks`` (B, H, W) bool, never empty."""
    g = torch.Generator().manual_seed(seed)
    scale = size / 224
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    margin = 0.15 * size
    centre = margin + torch.rand(n_images, 2, generator=g) * (size - 2 * margin)  # (y, x)
    axes = size * (0.02 + 0.13 * torch.rand(n_images, 2, generator=g))  # semi-axes: 4.5 to 34 px at 224²
    angle = math.pi * torch.rand(n_images, generator=g)
    dy = yy - centre[:, 0, None, None]
    dx = xx - centre[:, 1, None, None]
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    u, v = dx * cos + dy * sin, -dx * sin + dy * cos
    masks = (u / axes[:, 1, None, None]) ** 2 + (v / axes[:, 0, None, None]) ** 2 <= 1
    assert masks.flatten(1).any(dim=1).all(), "every mask must hold a defect"

    maps = torch.empty(n_methods, n_images, size, size)
    for j in range(n_methods):
        shift, spread, background, noise = METHOD_STYLES[j % len(METHOD_STYLES)]
        blob_centre = centre + shift * scale * torch.randn(n_images, 2, generator=g)
        width = (spread * axes.mean(dim=1))[:, None, None]
        blob = torch.exp(
            -((yy - blob_centre[:, 0, None, None]) ** 2 + (xx - blob_centre[:, 1, None, None]) ** 2) / (2 * width**2)
        )
        coarse = torch.rand(n_images, 1, 7, 7, generator=g)
        smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        raw = blob + background * smooth + noise * torch.rand(n_images, size, size, generator=g)
        maps[j] = _distinct(raw.reshape(n_images, -1)).reshape(n_images, size, size)
    return maps, masks


def _interleaved_medians(
    candidates: dict[str, Callable[[], object]], repeats: dict[str, int], warmup: list[str], cuda: bool
) -> dict[str, float]:
    """Median seconds per call. Each round times every candidate that still has repeats left, in turn.

    Like ``benchmarks.timing.interleaved_medians``, but a candidate may take fewer rounds (Quantus'
    full calls take seconds each), and only the candidates named in ``warmup`` get an untimed first
    call (CUDA's kernel selection and caching allocator; on the CPU a first call costs no more).
    """
    for name in warmup:
        candidates[name]()
    runs: dict[str, list[float]] = {name: [] for name in candidates}
    for round_ in range(max(repeats.values())):
        for name, fn in candidates.items():
            if round_ >= repeats[name]:
                continue
            if cuda:
                synchronize(torch.device("cuda"))
            start = time.perf_counter()
            fn()
            if cuda:
                synchronize(torch.device("cuda"))
            runs[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in runs.items()}


def _quantus_metrics(k: int) -> dict:
    """The four Quantus metrics, configured so that nothing rescales or flips the maps."""
    import quantus

    common = {"abs": False, "normalise": False, "disable_warnings": True, "display_progressbar": False}
    return {
        "RelevanceRankAccuracy": quantus.RelevanceRankAccuracy(**common),
        "TopKIntersection": quantus.TopKIntersection(k=k, **common),
        "PointingGame": quantus.PointingGame(**common),
        "RelevanceMassAccuracy": quantus.RelevanceMassAccuracy(**common),
    }


def _quantus_call(metric, a: np.ndarray, s: np.ndarray) -> np.ndarray:
    """What a user runs: the full ``__call__`` with precomputed attributions and no model."""
    x = np.zeros_like(a)  # only its shape is read
    y = np.zeros(len(a), dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = metric(model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s)
    return np.asarray(scores, dtype=np.float64)


def _quantus_core(metric, a: np.ndarray, s: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Only the metric's ``evaluate_batch``, in ``__call__``'s default batches, skipping its input checks."""
    out = [metric.evaluate_batch(a_batch=a[i : i + batch_size], s_batch=s[i : i + batch_size]) for i in range(0, len(a), batch_size)]
    return np.concatenate(out).astype(np.float64)


def _group_seconds(device: str, batch_size: int, size: int, repeats: int, threads: int) -> float:
    """Median seconds of one ``explain_batch`` call of the shared-gradient group on a batch, at ``threads`` torch threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        model = MultiTaskClassifier(backbone="resnet18").eval().to(device)
        images = torch.randn(batch_size, 3, size, size, device=device)
        targets = torch.randint(0, model.num_classes, (batch_size,), device=device)
        explainers = {name: create_explainer(name, model) for name in GROUP}
        result = explain_batch(explainers, images, targets)  # a check, and the untimed warm-up
        if result.errors or set(result.maps) != set(GROUP):
            raise RuntimeError(f"the shared-gradient group failed: {result.errors}")
        seconds = interleaved_medians(
            {"group": lambda: explain_batch(explainers, images, targets)}, repeats, torch.device(device), warmup=0
        )
        return seconds["group"]
    finally:
        torch.set_num_threads(previous)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--methods", type=int, default=4, help="synthetic methods compared by the win-rate")
    parser.add_argument("--k", type=int, default=1000, help="TopKIntersection's k (Quantus' default 1000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quantus-repeats", type=int, default=1, help="rounds for Quantus' full calls (~15 s each)")
    parser.add_argument("--no-cuda", action="store_true", help="time ours on the CPU only")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: Quantus' NumPy runs on one core; 0: torch's default)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-speedup", type=float, default=None, help="also exit non-zero below this total speed-up")
    parser.add_argument("--group-batch-size", type=int, default=8, help="batch size of the shared-gradient group timing")
    parser.add_argument("--group-repeats", type=int, default=2, help="timed calls of the group per device (after one warm-up)")
    parser.add_argument("--no-group", action="store_true", help="skip the shared-gradient group timing (the 2 %% criterion)")
    args = parser.parse_args(argv)
    default_threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        quantus_metrics = _quantus_metrics(args.k)
    except ImportError:
        sys.exit("Quantus is not installed: pip install -e '.[bench]' (see the README for a --no-deps install)")

    started = time.perf_counter()
    maps, masks = make_data(args.n_images, args.image_size, args.methods, args.seed)
    # Quantus wants (B, 1, H, W) NumPy arrays; these share memory with the tensors.
    a_np = [maps[j].numpy()[:, None] for j in range(args.methods)]
    s_np = masks.numpy()[:, None]

    # Ours on every method, the values checked against Quantus; the TKOs feed the win credit.
    ours = [
        {
            "tko": top_k_overlap(maps[j], masks),
            "tko_at_k": top_k_overlap(maps[j], masks, k=args.k),
            "pointing_game": pointing_game(maps[j], masks, ties="any"),
            "relevance_mass": relevance_mass_accuracy(maps[j], masks),
        }
        for j in range(args.methods)
    ]
    tko = torch.stack([scores["tko"] for scores in ours], dim=1)

    # Timed on method 0's maps: ours on the CPU (and CUDA), Quantus' full call and its core.
    m0, a0 = maps[0], a_np[0]
    candidates: dict[str, Callable[[], object]] = {}
    repeats: dict[str, int] = {}
    warmup: list[str] = []
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.no_cuda else [])
    for dev in devices:
        m, s, t = m0.to(dev), masks.to(dev), tko.to(dev)
        ours_fns = {
            "all": lambda m=m, s=s, t=t: (localization_scores(m, s, ties="any"), win_credit(t)),
            "tko": lambda m=m, s=s: top_k_overlap(m, s),
            "tko_at_k": lambda m=m, s=s: top_k_overlap(m, s, k=args.k),
            "pointing_game": lambda m=m, s=s: pointing_game(m, s, ties="any"),
            "relevance_mass": lambda m=m, s=s: relevance_mass_accuracy(m, s),
            "otsu": lambda m=m, s=s: otsu_iou_precision_recall(m, s),
            "pixel_auroc": lambda m=m, s=s: pixel_auroc(m, s),
            "win_credit": lambda t=t: win_credit(t),
        }
        for name, fn in ours_fns.items():
            candidates[f"ours {dev} {name}"] = fn
            repeats[f"ours {dev} {name}"] = args.repeats
            if dev != "cpu":
                warmup.append(f"ours {dev} {name}")
    quantus_values: dict[str, np.ndarray] = {}
    for name, metric in quantus_metrics.items():
        candidates[f"quantus core {name}"] = lambda metric=metric: _quantus_core(metric, a0, s_np)
        repeats[f"quantus core {name}"] = args.repeats

        def call(name: str = name, metric=metric) -> None:
            quantus_values[name] = _quantus_call(metric, a0, s_np)

        candidates[f"quantus call {name}"] = call
        repeats[f"quantus call {name}"] = args.quantus_repeats
    seconds = _interleaved_medians(candidates, repeats, warmup, cuda="cuda" in devices)
    group_seconds = {
        dev: _group_seconds(dev, args.group_batch_size, args.image_size, args.group_repeats, default_threads)
        for dev in ([] if args.no_group else devices)
    }

    # Agreement on every method: method 0 through Quantus' full calls timed above, the others through
    # its core alone (the call adds input checks only: with normalise=False and abs=False the maps
    # pass through unchanged), which saves a minute.
    pairs = (
        ("tko", "RelevanceRankAccuracy", "rank"),
        ("tko_at_k", "TopKIntersection", "rank"),
        ("pointing_game", "PointingGame", "rank"),
        ("relevance_mass", "RelevanceMassAccuracy", "relevance_mass"),
    )
    worst = {ours_name: 0.0 for ours_name, _, _ in pairs}
    for j in range(args.methods):
        for ours_name, q_name, _ in pairs:
            if j == 0:
                theirs = quantus_values[q_name]
            else:
                theirs = _quantus_core(quantus_metrics[q_name], a_np[j], s_np)
            mine = ours[j][ours_name].numpy()
            if np.isnan(theirs).any() or np.isnan(mine).any():
                worst[ours_name] = math.inf  # no mask is empty: a NaN is a failure
            else:
                worst[ours_name] = max(worst[ours_name], float(np.abs(mine - theirs).max()))

    # Report.
    n, size = args.n_images, args.image_size
    mask_sizes = masks.flatten(1).sum(dim=1)
    credit = win_credit(tko)
    rates = credit.nanmean(dim=0)
    print(
        f"{n} maps of {size}² per method, {args.methods} methods; ours on {' and '.join(devices)}; "
        f"{machine()}; medians of {args.repeats} interleaved repeats (Quantus' full calls: {args.quantus_repeats})"
    )
    print(
        f"|M| = {int(mask_sizes.min())}..{int(mask_sizes.max())} px (median {int(mask_sizes.median())}); "
        f"no ties; win-rates {', '.join(f'{r:.3f}' for r in rates.tolist())} (sum {float(rates.sum()):.3f})"
    )
    dev_cols = "".join(f"{'ours ' + dev:>12}" for dev in devices)
    print(f"\n{'ms per ' + str(n) + ' maps':<44}{dev_cols}{'Quantus':>11}{'x':>8}{'core':>9}{'x':>7}{'max |diff|':>12}")
    rows = (
        ("TKO@|M| vs RelevanceRankAccuracy", "tko", "RelevanceRankAccuracy"),
        (f"TKO@{args.k} vs TopKIntersection(k={args.k})", "tko_at_k", "TopKIntersection"),
        ('pointing game ("any") vs PointingGame', "pointing_game", "PointingGame"),
        ("relevance mass vs RelevanceMassAccuracy", "relevance_mass", "RelevanceMassAccuracy"),
        ("Otsu IoU / precision / recall", "otsu", None),
        ("pixel AUROC", "pixel_auroc", None),
        (f"win credit ({args.methods} methods)", "win_credit", None),
    )

    def ms(value: float) -> str:
        return f"{1000 * value:.1f}" if value >= 0.01 else f"{1000 * value:.3f}"

    for label, ours_name, q_name in rows:
        line = f"{label:<44}" + "".join(f"{ms(seconds[f'ours {dev} {ours_name}']):>12}" for dev in devices)
        if q_name:
            ours_cpu = seconds[f"ours cpu {ours_name}"]
            call, core = seconds[f"quantus call {q_name}"], seconds[f"quantus core {q_name}"]
            line += f"{ms(call):>11}{call / ours_cpu:>8.1f}{ms(core):>9}{core / ours_cpu:>7.2f}{worst[ours_name]:>12.1e}"
        print(line)
    q_call = sum(seconds[f"quantus call {q}"] for _, q, _ in pairs if q != "TopKIntersection")
    q_core = sum(seconds[f"quantus core {q}"] for _, q, _ in pairs if q != "TopKIntersection")
    ours_all = {dev: seconds[f"ours {dev} all"] for dev in devices}
    label = "total: 7 scores + win credit | RRA+PG+RMA"
    print(
        f"{label:<44}" + "".join(f"{ms(ours_all[dev]):>12}" for dev in devices)
        + f"{ms(q_call):>11}{q_call / ours_all['cpu']:>8.1f}{ms(q_core):>9}{q_core / ours_all['cpu']:>7.2f}"
    )
    print(
        "\nx = Quantus / ours on the CPU. 'Quantus' is the full call, 'core' its evaluate_batch alone "
        "(the call's extra time is input validation, mostly a Python set of every attribution value)."
    )
    print(
        "ours, all scores + win credit: "
        + ", ".join(f"{1000 * ours_all[dev] / n:.2f} ms/image on {dev}" for dev in devices)
        + f" (Quantus RRA+PG+RMA: {1000 * q_call / n:.1f} ms/image, core {1000 * q_core / n:.2f})"
        + (f"; Quantus RRA+PG+RMA on the CPU is {q_call / ours_all['cuda']:.0f}x ours on cuda" if "cuda" in devices else "")
    )
    speedup = q_call / ours_all["cpu"]
    verdict = "met" if speedup >= 20 else "NOT met"
    print(f"target: ours >= 20x faster than Quantus RRA+PG+RMA on the CPU: {speedup:.1f}x, {verdict}")
    ours_threads = args.threads if args.threads > 0 else default_threads
    for dev, batch_seconds in group_seconds.items():
        group_total = batch_seconds * n / args.group_batch_size
        share = ours_all[dev] / group_total
        threads = f"; torch threads: group {default_threads} (default), ours {ours_threads}" if dev == "cpu" else ""
        print(
            f"\nshared-gradient group ({', '.join(GROUP)}) on {dev}, ResNet-18 at {size}², batch "
            f"{args.group_batch_size}: {ms(batch_seconds)} ms per batch (median of {args.group_repeats}) "
            f"-> {group_total:.2f} s for {n} images{threads}"
        )
        print(
            f"target: ours (7 scores + win credit) on {n} maps < 2 % of the group's time for {n} images on {dev}: "
            f"{ms(ours_all[dev])} ms / {group_total:.2f} s = {100 * share:.2f} %, {'met' if share < 0.02 else 'NOT met'}"
        )
        print(
            f"  (the group makes {len(GROUP)} maps per image and the callback scores each: "
            f"{len(GROUP)} x {ms(ours_all[dev])} ms = {100 * len(GROUP) * share:.2f} % of the group's time)"
        )
    print(f"wall time {time.perf_counter() - started:.0f} s")

    failures = [
        f"{ours_name}: max |ours - Quantus| = {worst[ours_name]:.3g} > {TOLERANCE[kind]:g}"
        for ours_name, _, kind in pairs
        if not worst[ours_name] <= TOLERANCE[kind]
    ]
    if args.min_speedup is not None and speedup < args.min_speedup:
        failures.append(f"total speed-up {speedup:.1f}x < {args.min_speedup:g}x")
    if failures:
        sys.exit("FAILED: " + "; ".join(failures))
    print("values agree with Quantus where the definitions coincide")


if __name__ == "__main__":
    main()
