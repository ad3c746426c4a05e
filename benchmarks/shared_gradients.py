"""Benchmark 1: the shared-gradient group against one plain forward + backward and against separate Captum calls.

    python -m benchmarks.shared_gradients --image-size 224 --batch-size 8 --repeats 7

Grad-CAM, Saliency, Input×Gradient and the segmentation head's map come from one forward and one
backward pass (``explain_batch``). The same run times, interleaved so machine noise hits all alike:

- ``forward+backward``: ``model.classify(x)`` and ``autograd.grad`` of the target logit w.r.t. x,
  the floor any gradient method pays;
- ``captum x3``: Captum's LayerGradCam, Saliency and InputXGradient one after another (what the
  registry runs for a method on its own);
- ``separate x4``: the same plus the segmentation head's own forward pass;
- ``pytorch-grad-cam``: its GradCAM alone, when the optional ``bench`` extra is installed.

Targets: shared ≤ 1.3 × forward+backward, and ≥ 2 × faster than ``captum x3``.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.timing import (
    device_of,
    forward_backward,
    interleaved_medians,
    print_header,
)
from xai_lightning.explain import create_explainer
from xai_lightning.explain.engine import explain_batch
from xai_lightning.models import MultiTaskClassifier

GROUP = ("gradcam", "saliency", "input_x_gradient", "segmentation_head")


def pytorch_grad_cam(model: MultiTaskClassifier, images: torch.Tensor, targets: torch.Tensor):
    """pytorch-grad-cam's GradCAM on the same layer, or None when the package is not installed."""
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        return None

    class Classify(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model.classify(x)

    cam = GradCAM(model=Classify(), target_layers=[model.cam_layer])
    outputs = [ClassifierOutputTarget(int(t)) for t in targets]
    return lambda: cam(input_tensor=images, targets=outputs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    args = parser.parse_args(argv)

    device = device_of(args.device)
    torch.manual_seed(0)
    model = MultiTaskClassifier(backbone=args.backbone).eval().to(device)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    targets = torch.randint(0, model.num_classes, (args.batch_size,), device=device)
    explainers = {name: create_explainer(name, model) for name in GROUP}

    candidates = {
        "forward+backward": forward_backward(model, images, targets),
        "shared group x4": lambda: explain_batch(explainers, images, targets),
        "captum x3": lambda: [explainers[name].explain(images, targets) for name in GROUP[:3]],
        "separate x4": lambda: explain_batch(explainers, images, targets, share_gradients=False),
    }
    grad_cam = pytorch_grad_cam(model, images, targets)
    if grad_cam is not None:
        candidates["pytorch-grad-cam GradCAM"] = grad_cam
    seconds = interleaved_medians(candidates, args.repeats, device)

    print_header(f"{args.backbone} at {args.image_size}², batch {args.batch_size}", device, args.repeats)
    floor, shared = seconds["forward+backward"], seconds["shared group x4"]
    print(f"{'':<26}{'ms/batch':>10}{'x fwd+bwd':>11}{'x shared':>10}")
    for name, value in seconds.items():
        print(f"{name:<26}{1000 * value:>10.1f}{value / floor:>11.2f}{value / shared:>10.2f}")
    print(
        f"\nshared / forward+backward = {shared / floor:.2f} (target <= 1.3); "
        f"captum x3 / shared = {seconds['captum x3'] / shared:.2f} (target >= 2)"
    )


if __name__ == "__main__":
    main()
