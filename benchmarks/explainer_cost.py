"""Time per image of every registered explainer, as a multiple of one plain forward + backward pass.

    python -m benchmarks.explainer_cost --image-size 128 --batch-size 8 --repeats 3

The baseline (forward + backward of the class logit w.r.t. the input, the floor of any gradient
method) is measured in the same run, interleaved with the methods, so the ratios survive a noisy
machine. Medians of ``--repeats`` runs are reported.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.timing import forward_backward, interleaved_medians
from xai_lightning.explain import create_explainer, list_explainers
from xai_lightning.models import MultiTaskClassifier


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="*", default=None, help="default: every registered explainer")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = MultiTaskClassifier(backbone=args.backbone).eval()
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    targets = torch.randint(0, model.num_classes, (args.batch_size,))

    names = args.methods or [n for n in list_explainers() if not n.startswith("test_")]
    candidates = {"forward+backward": forward_backward(model, images, targets)}
    for name in names:
        explainer = create_explainer(name, model)
        candidates[name] = lambda explainer=explainer: explainer.explain(images, targets)
    seconds = {name: value / args.batch_size for name, value in interleaved_medians(candidates, args.repeats).items()}
    floor = seconds.pop("forward+backward")
    print(
        f"{args.backbone} at {args.image_size}², batch {args.batch_size}, {torch.get_num_threads()} threads; "
        f"forward+backward: {1000 * floor:.1f} ms/image (median of {args.repeats})"
    )
    print(f"{'method':<22}{'ms/image':>10}{'x fwd+bwd':>11}")
    for name, value in seconds.items():
        print(f"{name:<22}{1000 * value:>10.1f}{value / floor:>11.2f}")


if __name__ == "__main__":
    main()
