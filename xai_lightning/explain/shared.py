"""One forward and one backward pass that serves every method needing the same gradient.

Grad-CAM, Saliency, Input×Gradient and the segmentation head's map all derive from a single
forward pass of the model and a single backward pass of the target logit: Grad-CAM reads the
hooked layer's activations and their gradient, Saliency and Input×Gradient read the gradient at the
input, the segmentation head reads the forward pass's mask logits. Captum offers each of these as a
separate ``attribute`` call with its own forward and backward; no library computes several
attribution methods from one pass, so this module does it with a forward hook and one
``torch.autograd.grad`` call.

Explainers opt in through :meth:`~xai_lightning.explain.base.Explainer.gradient_request` and
:meth:`~xai_lightning.explain.base.Explainer.from_gradients`; :mod:`xai_lightning.explain.engine`
groups them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import Tensor, nn

from xai_lightning.errors import ConfigError


@dataclass(frozen=True)
class GradientRequest:
    """What one explainer needs from the shared pass.

    Attributes:
        input_gradient: ∂y_c/∂x at the input.
        layers: dotted module paths whose output activations and their gradients are needed.
        mask_logits: the model's segmentation logits from the same forward pass.
    """

    input_gradient: bool = False
    layers: tuple[str, ...] = ()
    mask_logits: bool = False

    def merge(self, other: GradientRequest) -> GradientRequest:
        """The request that serves both (union of what each needs)."""
        return GradientRequest(
            input_gradient=self.input_gradient or other.input_gradient,
            layers=tuple(dict.fromkeys(self.layers + other.layers)),
            mask_logits=self.mask_logits or other.mask_logits,
        )

    @property
    def needs_backward(self) -> bool:
        return self.input_gradient or bool(self.layers)


@dataclass
class GradientPass:
    """The result of one shared forward/backward pass on a batch.

    Attributes:
        images: the (B, C, H, W) inputs.
        input_gradient: (B, C, H, W) ∂y_c/∂x, or None when not requested.
        activations: layer path → its (B, K, h, w) output.
        layer_gradients: layer path → ∂y_c/∂(that output), same shape.
        mask_logits: (B, 1, H, W) segmentation logits, or None when not requested.
    """

    images: Tensor
    input_gradient: Tensor | None = None
    activations: dict[str, Tensor] = field(default_factory=dict)
    layer_gradients: dict[str, Tensor] = field(default_factory=dict)
    mask_logits: Tensor | None = None


@contextlib.contextmanager
def capture_outputs(model: nn.Module, layers: tuple[str, ...]) -> Iterator[dict[str, Tensor]]:
    """Record the output of each named submodule during the forward passes run inside the block.

    The hook hands a clone downstream and keeps the original, as Captum's layer methods do: the
    module after a ResNet stage may modify its input in place (``ReLU(inplace=True)``), which would
    otherwise overwrite the recorded activation or invalidate its gradient.
    """
    captured: dict[str, Tensor] = {}

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
            if not isinstance(output, Tensor):
                raise TypeError(f"layer '{name}' returns {type(output).__name__}; a CAM layer must return one tensor.")
            if not output.requires_grad:
                # Frozen layers before this one: make the activation a leaf of the graph, as Captum does,
                # so its gradient can still be taken.
                output = output.detach().requires_grad_(True)
            captured[name] = output
            return output.clone()

        return record

    handles = [model.get_submodule(name).register_forward_hook(hook(name)) for name in layers]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def gradient_pass(model: nn.Module, images: Tensor, targets: Tensor, request: GradientRequest) -> GradientPass:
    """Run the forward pass and the single backward pass that ``request`` needs.

    Call inside :func:`~xai_lightning.explain.base.attribution_mode` (eval mode, gradients on).
    In eval mode an image's logit depends on that image only, so the gradient of the summed target
    logits is each image's own gradient: one backward serves the whole batch, as in Captum.
    ``torch.autograd.grad`` leaves the parameters' ``.grad`` untouched, and only the gradients the
    request names are computed (no weight gradients).
    """
    images = images.detach().requires_grad_(request.input_gradient)
    with capture_outputs(model, request.layers) as activations:
        if request.mask_logits:
            output = model(images)
            if not hasattr(output, "mask_logits"):
                raise ConfigError(
                    f"the model's output ({type(output).__name__}) has no `mask_logits`: no segmentation head to read."
                )
            logits, mask_logits = output.logits, output.mask_logits.detach()
        else:
            logits, mask_logits = model.classify(images), None
    result = GradientPass(images=images.detach(), mask_logits=mask_logits)
    result.activations = {name: activation.detach() for name, activation in activations.items()}
    if request.needs_backward:
        wrt = ([images] if request.input_gradient else []) + [activations[name] for name in request.layers]
        score = logits.gather(1, targets.view(-1, 1)).sum()
        gradients = list(torch.autograd.grad(score, wrt))
        if request.input_gradient:
            result.input_gradient = gradients.pop(0)
        result.layer_gradients = dict(zip(request.layers, gradients))
    return result


def grad_cam(activation: Tensor, gradient: Tensor) -> Tensor:
    """(B, 1, h, w) ``ReLU(Σ_k α_k A^k)`` with α_k the spatial mean of the gradient, as Captum's LayerGradCam."""
    weights = gradient.mean(dim=tuple(range(2, gradient.dim())), keepdim=True)
    return (weights * activation).sum(dim=1, keepdim=True).clamp_min(0)
