"""The attribution methods, registered by name: Captum-backed explainers and two reference maps.

Each explainer computes a raw attribution (``raw_attribution``) that its ``reduction`` turns into one map.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import warnings
from abc import abstractmethod
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from captum._utils.models.model import Model
from captum.attr import (
    DeepLift,
    GradientShap,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    KernelShap,
    LayerGradCam,
    Lime,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR
from captum.attr._utils.approximation_methods import SUPPORTED_METHODS as IG_METHODS
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision.models.resnet import BasicBlock, Bottleneck

from xai_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from xai_lightning.errors import ConfigError
from xai_lightning.explain.base import Explainer, PassCount, register_explainer
from xai_lightning.explain.integrated_gradients import (
    adaptive_integrated_gradients,
    default_internal_batch,
    integrated_gradients,
)
from xai_lightning.explain.reduction import reduce_attribution
from xai_lightning.explain.shared import GradientPass, GradientRequest, grad_cam

#: Reference inputs: ``zero`` is the dataset-mean image (0 after normalisation), ``black`` is
#: a black image pushed through the same ImageNet normalisation.
BASELINES = ("zero", "black")


# ---------------------------------------------------------------------------- option checks
def _positive_int(method: str, option: str, value: Any) -> int:
    # bool is an int subclass; `n_steps: true` in a YAML file is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"explainer {method}: {option} is {value!r}; it must be a positive integer.")
    return value


def _non_negative_float(method: str, option: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"explainer {method}: {option} is {value!r}; it must be a finite number >= 0.")
    return float(value)


def _choice(method: str, option: str, value: Any, choices: tuple[str, ...] | list[str]) -> str:
    if value not in choices:
        raise ConfigError(f"explainer {method}: {option} is {value!r}; use one of {', '.join(map(repr, choices))}.")
    return value


def _resolve_layer(method: str, model: nn.Module, layer: str | None) -> tuple[str, nn.Module]:
    """The dotted layer path (default ``model.cam_layer_name``) and the module it names."""
    if layer is None:
        layer = getattr(model, "cam_layer_name", None)
        if layer is None:
            raise ConfigError(f"explainer {method}: layer is not set and the model has no `cam_layer_name`.")
    if not isinstance(layer, str):
        raise ConfigError(f"explainer {method}: layer is {layer!r}; give a dotted module path like 'encoder.layer4'.")
    try:
        return layer, model.get_submodule(layer)
    except AttributeError:
        stages = [name for name, _ in model.named_children()]
        raise ConfigError(
            f"explainer {method}: layer '{layer}' is not a module of the model "
            f"(its top-level modules: {', '.join(stages)})."
        ) from None


# ---------------------------------------------------------------------------- shared helpers
class ClassLogits(nn.Module):
    """``model.classify`` as an ``nn.Module``: Captum's hook-based methods need a module to hook."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model.classify(images)


@contextlib.contextmanager
def relus_not_inplace(model: nn.Module) -> Iterator[None]:
    """Switch ``inplace`` off on every ``nn.ReLU`` for the duration, then switch it back on.

    torchvision builds its ReLUs with ``inplace=True``, and an in-place op overwrites the very tensor
    a backward hook is attached to (``register_full_backward_hook`` rejects it outright). Captum 0.9
    happens to hook a clone of the module's input, so today this changes no value (the tests compare
    with a hand-written guided ReLU); it keeps the hooked tensors distinct whatever the Captum
    version or hooking scheme, at no cost.
    """
    switched = [module for module in model.modules() if isinstance(module, nn.ReLU) and module.inplace]
    for module in switched:
        module.inplace = False
    try:
        yield
    finally:
        for module in switched:
            module.inplace = True


def make_baseline(kind: str, images: Tensor) -> Tensor:
    """A reference input shaped like ``images``: ``zero`` (the dataset mean) or ``black``."""
    if kind == "zero":
        return torch.zeros_like(images)
    if images.shape[1] != len(IMAGENET_MEAN):
        raise ValueError(f"A black baseline needs {len(IMAGENET_MEAN)}-channel images, got {images.shape[1]}.")
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device)
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device)
    return ((0.0 - mean) / std).view(1, -1, 1, 1).expand_as(images).contiguous()


def grid_feature_mask(height: int, width: int, cell: int, device: torch.device) -> Tensor:
    """(1, 1, H, W) square "superpixels" of ``cell`` pixels numbered row by row from 0; shared by all images."""
    rows = torch.arange(height, device=device) // cell
    cols = torch.arange(width, device=device) // cell
    return (rows[:, None] * math.ceil(width / cell) + cols[None, :]).view(1, 1, height, width)


@contextlib.contextmanager
def numpy_rng_seeded(seed: int) -> Iterator[None]:
    """Seed NumPy's global RNG for the duration, then restore its state.

    The base class seeds torch's RNG only; Captum's GradientShap draws its baselines and path
    points from NumPy's global RNG.
    """
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        np.random.set_state(state)


@contextlib.contextmanager
def quiet_captum() -> Iterator[None]:
    """Silence Captum's per-call notices (they fire on every batch); any other warning still shows."""
    with warnings.catch_warnings():
        for message in (
            r"Input Tensor \d+ did not already require gradients",
            r"Setting backward hooks on ReLU activations",
            r"Setting forward, backward hooks and attributes on non-linear",
            r"You are providing multiple inputs for Lime / Kernel SHAP",
        ):
            warnings.filterwarnings("ignore", message=message)
        yield


class WeightedLinearRegression(Model):
    """Captum interpretable model: weighted least squares with an unpenalised intercept, solved in closed form.

    ``alpha > 0`` adds a ridge penalty ``alpha·||w||²``. Captum's defaults for Lime and KernelShap
    (``SkLearnLasso``, ``SkLearnLinearRegression``) need scikit-learn, which is no dependency here;
    its torch ``SGDLasso``/``SGDRidge`` stop after 10–100 SGD steps at lr 0.01 and return
    coefficients far from the optimum. A float64 pseudo-inverse gives the exact (minimum-norm when
    there are more superpixels than samples) solution, deterministically, on any device.
    """

    def __init__(self, alpha: float = 0.0) -> None:
        self.alpha = alpha
        self.coef: Tensor | None = None
        self.intercept: Tensor | None = None

    def fit(self, train_data: DataLoader, **kwargs: object) -> dict[str, float]:
        batches = list(train_data)
        x = torch.cat([batch[0] for batch in batches]).double()
        y = torch.cat([batch[1] for batch in batches]).double().reshape(len(x), -1)
        if len(batches[0]) > 2:
            w = torch.cat([batch[2] for batch in batches]).double().reshape(-1)
        else:
            w = torch.ones(len(x), dtype=torch.float64, device=x.device)
        # Centring with weighted means keeps the intercept out of the penalty.
        x_mean = (w[:, None] * x).sum(0) / w.sum()
        y_mean = (w[:, None] * y).sum(0) / w.sum()
        root_w = w.sqrt()[:, None]
        design, response = (x - x_mean) * root_w, (y - y_mean) * root_w
        if self.alpha > 0:
            n_features = x.shape[1]
            design = torch.cat([design, math.sqrt(self.alpha) * torch.eye(n_features, dtype=x.dtype, device=x.device)])
            response = torch.cat([response, response.new_zeros(n_features, response.shape[1])])
        coef = torch.linalg.pinv(design) @ response  # (features, outputs)
        self.coef = coef.T.float()
        self.intercept = (y_mean - x_mean @ coef).float()
        return {"train_samples": float(len(x))}

    def representation(self) -> Tensor:
        """Coefficients, (outputs, features): the attribution of each superpixel."""
        if self.coef is None:
            raise RuntimeError("WeightedLinearRegression.representation() called before fit().")
        return self.coef

    def __call__(self, x: Tensor) -> Tensor:
        return x.float() @ self.representation().T + self.intercept


# ---------------------------------------------------------------------------- DeepLift's model twin
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


# ---------------------------------------------------------------------------- explainers
class ReducedExplainer(Explainer):
    """An explainer whose map is its ``reduction`` applied to a raw attribution."""

    @abstractmethod
    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        """The method's own output before reduction (signed (B, C, H, W) for input attributions)."""

    def attribute(self, images: Tensor, targets: Tensor) -> Tensor:
        with quiet_captum():
            raw = self.raw_attribution(images, targets)
        return reduce_attribution(self.reduction, raw.detach(), tuple(images.shape[-2:])).float()

    def from_gradients(self, gradients: GradientPass) -> Tensor:
        raw = self.raw_from_gradients(gradients)
        return reduce_attribution(self.reduction, raw.detach(), tuple(gradients.images.shape[-2:])).float()

    def raw_from_gradients(self, gradients: GradientPass) -> Tensor:
        """The raw attribution computed from a shared pass (explainers with a gradient request)."""
        raise NotImplementedError(f"{self.name} has no gradient_request(); call explain() instead.")


@register_explainer
class GradCAMExplainer(ReducedExplainer):
    """Grad-CAM: ``ReLU(Σ_k α_k A^k)``, α_k the spatial mean of ∂y_c/∂A^k on ``layer``; reduction ``cam``.

    Args:
        layer: dotted path of the hooked module inside the model (default ``model.cam_layer_name``).
    """

    name = "gradcam"
    reduction = "cam"

    def __init__(self, model: nn.Module, seed: int = 0, layer: str | None = None) -> None:
        super().__init__(model, seed)
        self.layer, module = _resolve_layer(self.name, model, layer)
        self._gradcam = LayerGradCam(model.classify, module)

    def options(self) -> dict[str, Any]:
        return {"layer": self.layer}

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        """(B, 1, h, w) CAM at the layer's resolution, already ReLU-ed."""
        return self._gradcam.attribute(images, target=targets, relu_attributions=True)

    def gradient_request(self) -> GradientRequest:
        return GradientRequest(layers=(self.layer,))

    def raw_from_gradients(self, gradients: GradientPass) -> Tensor:
        return grad_cam(gradients.activations[self.layer], gradients.layer_gradients[self.layer])


@register_explainer
class SaliencyExplainer(ReducedExplainer):
    """Saliency: ``|∂y_c/∂x|``; reduction ``max_abs`` (max over channels)."""

    name = "saliency"
    reduction = "max_abs"

    def __init__(self, model: nn.Module, seed: int = 0) -> None:
        super().__init__(model, seed)
        self._saliency = Saliency(model.classify)

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        return self._saliency.attribute(images, target=targets, abs=True)

    def gradient_request(self) -> GradientRequest:
        return GradientRequest(input_gradient=True)

    def raw_from_gradients(self, gradients: GradientPass) -> Tensor:
        return gradients.input_gradient.abs()


@register_explainer
class SmoothGradExplainer(ReducedExplainer):
    """SmoothGrad: ∂y_c/∂x averaged over ``nt_samples`` noisy copies of x; reduction ``max_abs``.

    The signed gradients are averaged, as in Smilkov et al. (2017), and the absolute value is taken
    by the reduction.

    Args:
        nt_samples: noisy copies per image.
        stdevs: standard deviation of the Gaussian noise, in normalised-input units (Captum's
            ``stdevs`` is absolute, not a fraction of the input range).
        nt_samples_batch_size: noisy copies per image in one forward pass (bounds memory).
    """

    name = "smoothgrad"
    reduction = "max_abs"
    stochastic = True

    def __init__(
        self,
        model: nn.Module,
        seed: int = 0,
        nt_samples: int = 16,
        stdevs: float = 0.15,
        nt_samples_batch_size: int = 8,
    ) -> None:
        super().__init__(model, seed)
        self.nt_samples = _positive_int(self.name, "nt_samples", nt_samples)
        self.stdevs = _non_negative_float(self.name, "stdevs", stdevs)
        self.nt_samples_batch_size = _positive_int(self.name, "nt_samples_batch_size", nt_samples_batch_size)
        self._smoothgrad = NoiseTunnel(Saliency(model.classify))

    def passes(self, image_size: tuple[int, int]) -> PassCount:
        return PassCount(forward_backward=self.nt_samples)

    def options(self) -> dict[str, Any]:
        return {
            "nt_samples": self.nt_samples,
            "stdevs": self.stdevs,
            "nt_samples_batch_size": self.nt_samples_batch_size,
        }

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        return self._smoothgrad.attribute(
            images,
            nt_type="smoothgrad",
            nt_samples=self.nt_samples,
            nt_samples_batch_size=min(self.nt_samples_batch_size, self.nt_samples),
            stdevs=self.stdevs,
            target=targets,
            abs=False,
        )


@register_explainer
class GuidedBackpropExplainer(ReducedExplainer):
    """Guided backpropagation: the gradient with negative gradients zeroed at every ReLU; reduction ``max_abs``.

    ResNet blocks apply one ReLU module twice; that is harmless here because the guided rule is
    elementwise and uses only the gradient flowing into each application (checked against a
    hand-written guided ReLU in the tests).
    """

    name = "guided_backprop"
    reduction = "max_abs"

    def __init__(self, model: nn.Module, seed: int = 0) -> None:
        super().__init__(model, seed)
        self._guided = GuidedBackprop(ClassLogits(model))

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        with relus_not_inplace(self.model):
            return self._guided.attribute(images, target=targets)


@register_explainer
class GuidedGradCAMExplainer(ReducedExplainer):
    """Guided Grad-CAM: guided backpropagation times the bilinearly upsampled Grad-CAM; reduction ``max_abs``.

    Args:
        layer: dotted path of the Grad-CAM layer inside the model (default ``model.cam_layer_name``).
    """

    name = "guided_gradcam"
    reduction = "max_abs"

    def __init__(self, model: nn.Module, seed: int = 0, layer: str | None = None) -> None:
        super().__init__(model, seed)
        self.layer, module = _resolve_layer(self.name, model, layer)
        self._guided_gradcam = GuidedGradCam(ClassLogits(model), module)

    def options(self) -> dict[str, Any]:
        return {"layer": self.layer}

    def passes(self, image_size: tuple[int, int]) -> PassCount:
        return PassCount(forward_backward=2)  # a guided and a plain backward

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        with relus_not_inplace(self.model):
            # Captum's default "nearest" would stamp the layer grid onto the product as blocks.
            return self._guided_gradcam.attribute(images, target=targets, interpolate_mode="bilinear")


@register_explainer
class IntegratedGradientsExplainer(ReducedExplainer):
    """Integrated Gradients: (x − x') · ∫₀¹ ∂y_c/∂x(x' + t(x − x')) dt; reduction ``sum_abs``.

    Computed by :func:`~xai_lightning.explain.integrated_gradients.integrated_gradients`: Captum's
    quadrature, batched over (image, step) pairs so peak memory is set by ``internal_batch_size``
    alone (equal to Captum's ``IntegratedGradients`` to float tolerance; tested).

    Args:
        n_steps: points of the path integral (the most per image when ``completeness_tolerance`` is set).
        baseline: the reference x': ``zero`` (dataset mean) or ``black``.
        internal_batch_size: path points per forward/backward pass; ``None`` takes the measured
            default for the device (16 on a CPU, 128 on a GPU).
        method: Captum's quadrature rule (``gausslegendre`` or a ``riemann_*`` rule).
        completeness_tolerance: if set, choose the steps per image: start at ``min_steps`` and double
            while ``|Σ a − (y_c(x) − y_c(x'))|`` (logit units) is above it, up to ``n_steps``.
        min_steps: first refinement level of the adaptive mode.
    """

    name = "integrated_gradients"
    reduction = "sum_abs"

    def __init__(
        self,
        model: nn.Module,
        seed: int = 0,
        n_steps: int = 32,
        baseline: str = "zero",
        internal_batch_size: int | None = None,
        method: str = "gausslegendre",
        completeness_tolerance: float | None = None,
        min_steps: int = 8,
    ) -> None:
        super().__init__(model, seed)
        self.n_steps = _positive_int(self.name, "n_steps", n_steps)
        self.baseline = _choice(self.name, "baseline", baseline, BASELINES)
        if internal_batch_size is not None:
            _positive_int(self.name, "internal_batch_size", internal_batch_size)
        self.internal_batch_size = internal_batch_size
        self.method = _choice(self.name, "method", method, IG_METHODS)
        if completeness_tolerance is not None:
            completeness_tolerance = _non_negative_float(self.name, "completeness_tolerance", completeness_tolerance)
        self.completeness_tolerance = completeness_tolerance
        self.min_steps = _positive_int(self.name, "min_steps", min_steps)
        if completeness_tolerance is not None and self.min_steps > self.n_steps:
            raise ConfigError(
                f"explainer {self.name}: min_steps ({min_steps}) is above n_steps ({n_steps}), the most steps the "
                "adaptive mode may use; lower min_steps or raise n_steps."
            )
        #: Steps used per image by the last call (the adaptive mode's choice; n_steps otherwise).
        self.last_steps: Tensor | None = None

    def passes(self, image_size: tuple[int, int]) -> PassCount:
        if self.completeness_tolerance is None:
            return PassCount(forward_backward=self.n_steps)
        # Adaptive: at least the first level, and the two forward passes that give f(x) − f(x').
        return PassCount(forward_backward=min(self.min_steps, self.n_steps), forward=2)

    def options(self) -> dict[str, Any]:
        return {
            "n_steps": self.n_steps,
            "baseline": self.baseline,
            "internal_batch_size": self.internal_batch_size,
            "method": self.method,
            "completeness_tolerance": self.completeness_tolerance,
            "min_steps": self.min_steps,
        }

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        """Signed (B, C, H, W) attributions; they sum to about y_c(x) − y_c(x') (completeness)."""
        chunk = self.internal_batch_size or default_internal_batch(images.device)
        baselines = make_baseline(self.baseline, images)
        if self.completeness_tolerance is None:
            self.last_steps = torch.full((len(images),), self.n_steps, dtype=torch.long)
            return integrated_gradients(
                self.model.classify, images, baselines, targets, self.n_steps, self.method, chunk
            )
        attributions, steps, _ = adaptive_integrated_gradients(
            self.model.classify,
            images,
            baselines,
            targets,
            self.completeness_tolerance,
            self.min_steps,
            self.n_steps,
            self.method,
            chunk,
        )
        self.last_steps = steps.cpu()
        return attributions


@register_explainer
class InputXGradientExplainer(ReducedExplainer):
    """Input × gradient: x · ∂y_c/∂x (x measured from the dataset mean); reduction ``sum_abs``."""

    name = "input_x_gradient"
    reduction = "sum_abs"

    def __init__(self, model: nn.Module, seed: int = 0) -> None:
        super().__init__(model, seed)
        self._input_x_gradient = InputXGradient(model.classify)

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        return self._input_x_gradient.attribute(images, target=targets)

    def gradient_request(self) -> GradientRequest:
        return GradientRequest(input_gradient=True)

    def raw_from_gradients(self, gradients: GradientPass) -> Tensor:
        return gradients.images * gradients.input_gradient


@register_explainer
class DeepLiftExplainer(ReducedExplainer):
    """DeepLIFT (rescale rule) against a baseline; reduction ``sum_abs``.

    Runs on a twin of the model (:func:`distinct_nonlinearity_twin`) that shares its weights but
    applies each ReLU module once per pass, which Captum's DeepLift requires. The twin is built once;
    each call re-points it at the model's current parameters and buffers.

    Args:
        baseline: the reference input: ``zero`` (dataset mean) or ``black``.
    """

    name = "deeplift"
    reduction = "sum_abs"

    def __init__(self, model: nn.Module, seed: int = 0, baseline: str = "zero") -> None:
        super().__init__(model, seed)
        self.baseline = _choice(self.name, "baseline", baseline, BASELINES)
        self._twin = distinct_nonlinearity_twin(model)
        self._twin_logits = ClassLogits(self._twin)
        self._deeplift = DeepLift(self._twin_logits)
        self._checked_single_use = False

    def options(self) -> dict[str, Any]:
        return {"baseline": self.baseline}

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
            return self._deeplift.attribute(images, baselines=make_baseline(self.baseline, images), target=targets)
        finally:
            # Hooked modules the target's gradient never reaches (the segmentation decoder) keep the
            # tensors DeepLift stored on them; drop those so they do not pin memory between calls.
            for module in self._twin.modules():
                for attribute in ("input", "output"):
                    module.__dict__.pop(attribute, None)


@register_explainer
class GradientShapExplainer(ReducedExplainer):
    """GradientSHAP: expected gradient × (x − x') over baselines x' and noisy x; reduction ``sum_abs``.

    The baseline distribution holds two images: the dataset mean (``zero``) and ``black``.

    Args:
        n_samples: random (baseline, path point, noise) draws per image.
        stdevs: standard deviation of the Gaussian noise added to x, in normalised-input units.
    """

    name = "gradient_shap"
    reduction = "sum_abs"
    stochastic = True

    def __init__(self, model: nn.Module, seed: int = 0, n_samples: int = 16, stdevs: float = 0.1) -> None:
        super().__init__(model, seed)
        self.n_samples = _positive_int(self.name, "n_samples", n_samples)
        self.stdevs = _non_negative_float(self.name, "stdevs", stdevs)
        self._gradient_shap = GradientShap(model.classify)

    def passes(self, image_size: tuple[int, int]) -> PassCount:
        return PassCount(forward_backward=self.n_samples)

    def options(self) -> dict[str, Any]:
        return {"n_samples": self.n_samples, "stdevs": self.stdevs}

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        first = images[:1]
        baselines = torch.cat([make_baseline(kind, first) for kind in BASELINES])
        # Drawn from torch's RNG, which the base class seeds per image: NumPy then follows the same key.
        with numpy_rng_seeded(int(torch.randint(0, 2**31 - 1, ()))):
            return self._gradient_shap.attribute(
                images, baselines=baselines, n_samples=self.n_samples, stdevs=self.stdevs, target=targets
            )


@register_explainer
class OcclusionExplainer(ReducedExplainer):
    """Occlusion: drop in y_c when a square window (all channels) is set to the baseline; reduction ``sum_abs``.

    Each pixel gets the mean drop over the windows that cover it.

    Args:
        window: side of the square window, in pixels.
        stride: step between windows, in pixels.
        baseline: what the window is filled with: ``zero`` (dataset mean) or ``black``.
        perturbations_per_eval: occluded copies per forward pass.
    """

    name = "occlusion"
    reduction = "sum_abs"

    def __init__(
        self,
        model: nn.Module,
        seed: int = 0,
        window: int = 16,
        stride: int = 8,
        baseline: str = "zero",
        perturbations_per_eval: int = 16,
    ) -> None:
        super().__init__(model, seed)
        self.window = _positive_int(self.name, "window", window)
        self.stride = _positive_int(self.name, "stride", stride)
        self.baseline = _choice(self.name, "baseline", baseline, BASELINES)
        self.perturbations_per_eval = _positive_int(self.name, "perturbations_per_eval", perturbations_per_eval)
        self._occlusion = Occlusion(model.classify)

    def passes(self, image_size: tuple[int, int]) -> PassCount:
        windows = math.prod(math.ceil(max(side - self.window, 0) / self.stride) + 1 for side in image_size)
        return PassCount(forward=1 + windows)  # the unoccluded image, then every window position

    def options(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "stride": self.stride,
            "baseline": self.baseline,
            "perturbations_per_eval": self.perturbations_per_eval,
        }

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        channels, height, width = images.shape[1:]
        if self.window > min(height, width):
            raise ConfigError(f"explainer occlusion: window {self.window} is larger than the {height}x{width} images.")
        return self._occlusion.attribute(
            images,
            sliding_window_shapes=(channels, self.window, self.window),
            strides=(channels, self.stride, self.stride),
            baselines=make_baseline(self.baseline, images),
            target=targets,
            perturbations_per_eval=self.perturbations_per_eval,
        )


class _SuperpixelExplainer(ReducedExplainer):
    """Shared options and feature mask of the surrogate-model methods (LIME, KernelSHAP)."""

    reduction = "sum_abs"
    stochastic = True

    def __init__(
        self,
        model: nn.Module,
        seed: int = 0,
        cell: int = 16,
        n_samples: int = 64,
        perturbations_per_eval: int = 16,
        baseline: str = "zero",
    ) -> None:
        super().__init__(model, seed)
        self.cell = _positive_int(self.name, "cell", cell)
        self.n_samples = _positive_int(self.name, "n_samples", n_samples)
        self.perturbations_per_eval = _positive_int(self.name, "perturbations_per_eval", perturbations_per_eval)
        self.baseline = _choice(self.name, "baseline", baseline, BASELINES)

    def passes(self, image_size: tuple[int, int]) -> PassCount:
        return PassCount(forward=self.n_samples)

    def options(self) -> dict[str, Any]:
        return {
            "cell": self.cell,
            "n_samples": self.n_samples,
            "perturbations_per_eval": self.perturbations_per_eval,
            "baseline": self.baseline,
        }

    def _attribute_superpixels(self, surrogate: Lime, images: Tensor, targets: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        if math.ceil(height / self.cell) * math.ceil(width / self.cell) < 2:
            raise ConfigError(
                f"explainer {self.name}: cell {self.cell} leaves a single superpixel on {height}x{width} images."
            )
        # Captum fits one surrogate per image (a Python loop over the batch); each pixel of a
        # superpixel gets that superpixel's coefficient.
        return surrogate.attribute(
            images,
            baselines=make_baseline(self.baseline, images),
            target=targets,
            feature_mask=grid_feature_mask(height, width, self.cell, images.device),
            n_samples=self.n_samples,
            perturbations_per_eval=self.perturbations_per_eval,
        )


@register_explainer
class LimeExplainer(_SuperpixelExplainer):
    """LIME: coefficients of a weighted ridge surrogate on square superpixels; reduction ``sum_abs``.

    Superpixels are switched off to the baseline at random; samples are weighted by Captum's
    exponential cosine-distance kernel. The surrogate is :class:`WeightedLinearRegression` (no
    scikit-learn).

    Args:
        cell: side of a square superpixel, in pixels.
        n_samples: perturbed copies per image.
        perturbations_per_eval: perturbed copies per forward pass.
        baseline: what a switched-off superpixel shows: ``zero`` (dataset mean) or ``black``.
        alpha: ridge penalty of the surrogate (the ``lime`` package's default Ridge uses 1).
    """

    name = "lime"

    def __init__(
        self,
        model: nn.Module,
        seed: int = 0,
        cell: int = 16,
        n_samples: int = 64,
        perturbations_per_eval: int = 16,
        baseline: str = "zero",
        alpha: float = 1.0,
    ) -> None:
        super().__init__(model, seed, cell, n_samples, perturbations_per_eval, baseline)
        self.alpha = _non_negative_float(self.name, "alpha", alpha)
        self._lime = Lime(model.classify, interpretable_model=WeightedLinearRegression(alpha=self.alpha))

    def options(self) -> dict[str, Any]:
        return {**super().options(), "alpha": self.alpha}

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        return self._attribute_superpixels(self._lime, images, targets)


@register_explainer
class KernelShapExplainer(_SuperpixelExplainer):
    """KernelSHAP: Shapley values of square superpixels estimated by Shapley-kernel regression; reduction ``sum_abs``.

    Coalitions are drawn from the Shapley kernel (Captum), so the regression is unweighted except
    for the full and empty coalitions; fitted by exact least squares (Captum hard-codes
    scikit-learn's LinearRegression, which we replace by :class:`WeightedLinearRegression`).

    Args:
        cell: side of a square superpixel, in pixels.
        n_samples: coalitions per image.
        perturbations_per_eval: coalitions per forward pass.
        baseline: what an absent superpixel shows: ``zero`` (dataset mean) or ``black``.
    """

    name = "kernel_shap"

    def __init__(
        self,
        model: nn.Module,
        seed: int = 0,
        cell: int = 16,
        n_samples: int = 64,
        perturbations_per_eval: int = 16,
        baseline: str = "zero",
    ) -> None:
        super().__init__(model, seed, cell, n_samples, perturbations_per_eval, baseline)
        self._kernel_shap = KernelShap(model.classify)
        self._kernel_shap.interpretable_model = WeightedLinearRegression(alpha=0.0)

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        return self._attribute_superpixels(self._kernel_shap, images, targets)


@register_explainer
class SegmentationHeadExplainer(ReducedExplainer):
    """The model's own defect mask, ``sigmoid(mask_logits)``: a supervised upper reference; reduction ``none``.

    It ignores the target class: the segmentation head predicts "defect" for any class.
    """

    name = "segmentation_head"
    reduction = "none"

    def passes(self, image_size: tuple[int, int]) -> PassCount:
        return PassCount(forward=1)

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        with torch.no_grad():
            output = self.model(images)
        if not hasattr(output, "mask_logits"):
            raise ConfigError(
                f"explainer {self.name}: the model's output ({type(output).__name__}) has no `mask_logits`; "
                "this reference needs a model with a segmentation head."
            )
        return torch.sigmoid(output.mask_logits)[:, 0]

    def gradient_request(self) -> GradientRequest:
        return GradientRequest(mask_logits=True)

    def raw_from_gradients(self, gradients: GradientPass) -> Tensor:
        return torch.sigmoid(gradients.mask_logits)[:, 0]


@register_explainer
class RandomExplainer(ReducedExplainer):
    """Uniform random values in [0, 1), seeded: the chance floor of every metric; reduction ``none``."""

    name = "random"
    reduction = "none"
    stochastic = True

    def passes(self, image_size: tuple[int, int]) -> PassCount:
        return PassCount()

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        batch, _, height, width = images.shape
        return torch.rand(batch, height, width, device=images.device)
