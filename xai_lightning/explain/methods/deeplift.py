"""DeepLIFT on a twin of the model that Captum's DeepLift can attribute through exactly.

The twin shares the model's weights, gives each use of a nonlinearity its own module and fixes the max-pool rule.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from captum.attr import DeepLift
from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from xai_lightning.explain.base import PassCount, register_explainer
from xai_lightning.data.transforms import input_normalized
from xai_lightning.explain.baselines import baseline_image
from xai_lightning.explain.captum_support import ClassLogits, ReducedExplainer
from xai_lightning.explain.options import ExplainerOptions, baseline_option


class _DistinctReluBasicBlock(BasicBlock):
    """torchvision's BasicBlock computing the same function, its second ReLU a module of its own."""

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu_out(out + identity)


class _DistinctReluBottleneck(Bottleneck):
    """torchvision's Bottleneck computing the same function, each of its three ReLUs a module of its own."""

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu_mid(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu_out(out + identity)


class _DeepLiftMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` under its own type, so DeepLift applies :func:`_deeplift_maxpool2d_rule` to it."""


def _deeplift_maxpool2d_rule(
    module: nn.MaxPool2d, inputs: Tensor, outputs: Tensor, grad_input: Tensor, grad_output: Tensor, eps: float = 1e-10
) -> Tensor:
    """Captum 0.9's DeepLift max-pool multipliers, corrected; ``inputs`` = [x; x'] stacked on the batch.

    The change of each window's output is routed to the argmax of the input's and the reference's
    window and divided by the change of that input. Differences from Captum:

    - Captum routes with ``max_unpool2d``, which assigns instead of adding: when windows overlap
      (ResNet's 3×3 stride-2 stem pool) a position that wins several windows keeps one share and
      summation-to-delta fails. Here ``scatter_add_`` accumulates.
    - Captum's fallback, where the input does not change, broadcasts the first image's gradient
      to the whole batch (captum issue #1276); here each image keeps its own.
    - Both shares are weighted by the input half's incoming multipliers: only that half reaches
      the attributions, and Captum's other rules give both halves the same multipliers anyway.
    """
    with torch.no_grad():
        x, reference = inputs.chunk(2)
        out, out_reference = outputs.chunk(2)
        multiplier_out = grad_output.chunk(2)[0]
        cross_max = torch.max(out, out_reference)
        _, indices = F.max_pool2d(
            inputs, module.kernel_size, module.stride, module.padding, module.dilation, module.ceil_mode, True
        )
        x_argmax, reference_argmax = (index.flatten(2) for index in indices.chunk(2))
        routed = torch.zeros_like(x).flatten(2)
        routed.scatter_add_(2, x_argmax, (multiplier_out * (cross_max - out_reference)).flatten(2))
        routed.scatter_add_(2, reference_argmax, (multiplier_out * (out - cross_max)).flatten(2))
        delta_in = torch.cat(2 * [x - reference])
        multipliers = torch.cat(2 * [routed.view_as(x)]) / delta_in
    return torch.where(delta_in.abs() < eps, grad_input, multipliers)


# Captum dispatches DeepLift rules on the exact module type; this adds a rule for our private type only.
SUPPORTED_NON_LINEAR[_DeepLiftMaxPool2d] = _deeplift_maxpool2d_rule


def _fresh_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    # A view is a new tensor for autograd: see distinct_nonlinearity_twin.
    return tuple(arg.view_as(arg) if isinstance(arg, Tensor) else arg for arg in args)


def distinct_nonlinearity_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` that shares its parameters and buffers, rebuilt where Captum's DeepLift fails.

    Three Captum 0.9 flaws, each of which breaks summation-to-delta on a ResNet:

    - DeepLift stores a nonlinearity's input and output on the module in a forward hook and reads
      them back in its backward hook, so a module applied twice in one pass (torchvision's residual
      blocks reuse ``self.relu``) makes Captum raise. The twin's blocks use distinct ReLU modules.
    - When one hooked module feeds another directly (the stem's ReLU → MaxPool), Captum hangs the
      ReLU's grad-output hook and the pool's grad-input hook on the same tensor; the first runs
      first and the ReLU rule sees the plain gradient instead of the pool's multipliers. Each hooked
      module of the twin receives a view of its input, a distinct tensor, so the hooks run in order.
    - Its max-pool rule drops shares when windows overlap (:func:`_deeplift_maxpool2d_rule`).

    :func:`share_tensors` keeps the twin on the live weights.
    """
    shared = {id(tensor): tensor for tensor in itertools.chain(model.parameters(), model.buffers())}
    twin = copy.deepcopy(model, memo=shared)
    for module in twin.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
        if type(module) is nn.MaxPool2d and not module.return_indices:
            module.__class__ = _DeepLiftMaxPool2d
        elif type(module) is BasicBlock:
            module.__class__ = _DistinctReluBasicBlock
            module.relu_out = nn.ReLU()
        elif type(module) is Bottleneck:
            module.__class__ = _DistinctReluBottleneck
            module.relu_mid = nn.ReLU()
            module.relu_out = nn.ReLU()
    for module in twin.modules():
        if type(module) in SUPPORTED_NON_LINEAR:
            # Registered now, so it runs before the hooks Captum adds at each call.
            module.register_forward_pre_hook(_fresh_input)
    return twin


def share_tensors(source: nn.Module, twin: nn.Module) -> None:
    """Point the twin's parameters and buffers at the source's current ones (after ``.to()``, reloads)."""
    twin_modules = dict(twin.named_modules())
    for name, module in source.named_modules():
        twin_modules[name]._parameters.update(module._parameters)
        twin_modules[name]._buffers.update(module._buffers)


def nonlinearities_used_twice(module: nn.Module, images: Tensor) -> list[str]:
    """Names of modules DeepLift hooks (ReLU, Sigmoid, MaxPool, …) that run more than once per forward pass."""
    calls: dict[str, int] = {}
    handles = [
        sub.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls.get(name, 0) + 1))
        for name, sub in module.named_modules()
        if type(sub) in SUPPORTED_NON_LINEAR
    ]
    try:
        with torch.no_grad():
            module(images)
    finally:
        for handle in handles:
            handle.remove()
    return sorted(name for name, count in calls.items() if count > 1)


@dataclass(frozen=True)
class DeepLiftOptions(ExplainerOptions):
    """Options of :class:`DeepLiftExplainer`.

    Attributes:
        baseline: the reference input: ``mean`` (dataset mean; ``zero``, the default, is its older
            name) or ``black``.
    """

    baseline: str = baseline_option()


@register_explainer
class DeepLiftExplainer(ReducedExplainer):
    """DeepLIFT (rescale rule) against a baseline; reduction ``sum_abs``.

    Runs on a twin of the model (:func:`distinct_nonlinearity_twin`) that shares its weights but
    applies each ReLU module once per pass, which Captum's DeepLift requires. The twin is built once;
    each call re-points it at the model's current parameters and buffers. Options: :class:`DeepLiftOptions`.
    """

    name = "deeplift"
    reduction = "sum_abs"
    Options = DeepLiftOptions
    settings: DeepLiftOptions

    def setup(self) -> None:
        self._twin = distinct_nonlinearity_twin(self.model)
        self._twin_logits = ClassLogits(self._twin)
        self._deeplift = DeepLift(self._twin_logits)
        self._checked_single_use = False

    def passes(self, image_size: tuple[int, int]) -> PassCount:
        return PassCount(forward_backward=2)  # input and reference, one backward through both

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        """Signed (B, C, H, W) attributions; they sum to y_c(x) − y_c(baseline) (summation-to-delta)."""
        share_tensors(self.model, self._twin)
        self._twin.eval()
        if not self._checked_single_use:
            reused = nonlinearities_used_twice(self._twin_logits, images[:1])
            if reused:
                raise RuntimeError(
                    f"explainer deeplift: the modules {', '.join(reused)} run more than once per forward pass, "
                    "which Captum's DeepLift cannot attribute through; give each use a module of its own."
                )
            self._checked_single_use = True
        try:
            baselines = baseline_image(self.settings.baseline, images, normalized=input_normalized(self.model))
            return self._deeplift.attribute(images, baselines=baselines, target=targets)
        finally:
            # Hooked modules the target's gradient never reaches (the segmentation decoder) keep the
            # tensors DeepLift stored on them; drop those so they do not pin memory between calls.
            for module in self._twin.modules():
                for attribute in ("input", "output"):
                    module.__dict__.pop(attribute, None)
