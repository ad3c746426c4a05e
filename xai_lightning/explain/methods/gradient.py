"""Gradient methods: Saliency, SmoothGrad, Guided Backprop, Input×Gradient, Grad-CAM and Guided Grad-CAM.

Each reads ∂y_c at the input or at one layer; the plain ones can also be served by the engine's shared pass.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from captum.attr import GuidedBackprop, GuidedGradCam, InputXGradient, LayerGradCam, NoiseTunnel, Saliency
from torch import Tensor

from xai_lightning.explain.base import PassCount, register_explainer
from xai_lightning.explain.captum_support import ClassLogits, ReducedExplainer, relus_not_inplace
from xai_lightning.explain.options import (
    ExplainerOptions,
    LayerOptions,
    non_negative_float,
    positive_int,
    resolve_layer,
)
from xai_lightning.explain.shared import GradientPass, GradientRequest, grad_cam


class _LayerExplainer(ReducedExplainer):
    """A method hooking one layer: ``layer`` resolved against the model, and recorded as resolved."""

    Options = LayerOptions
    settings: LayerOptions

    def setup(self) -> None:
        layer, self.layer_module = resolve_layer(self.model, self.settings.layer)
        # The run record names the layer actually hooked, not ``None`` for "the model's default".
        self.settings = replace(self.settings, layer=layer)

    @property
    def layer(self) -> str:
        """Dotted path of the hooked module."""
        return self.settings.layer


@register_explainer
class GradCAMExplainer(_LayerExplainer):
    """Grad-CAM: ``ReLU(Σ_k α_k A^k)``, α_k the spatial mean of ∂y_c/∂A^k on ``layer``; reduction ``cam``.

    Options: :class:`~xai_lightning.explain.options.LayerOptions`.
    """

    name = "gradcam"
    reduction = "cam"

    def setup(self) -> None:
        super().setup()
        self._gradcam = LayerGradCam(self.model.classify, self.layer_module)

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        """(B, 1, h, w) CAM at the layer's resolution, already ReLU-ed."""
        return self._gradcam.attribute(images, target=targets, relu_attributions=True)

    def gradient_request(self) -> GradientRequest:
        return GradientRequest(layers=(self.layer,))

    def raw_from_gradients(self, gradients: GradientPass) -> Tensor:
        return grad_cam(gradients.activations[self.layer], gradients.layer_gradients[self.layer])


@register_explainer
class GuidedGradCAMExplainer(_LayerExplainer):
    """Guided Grad-CAM: guided backpropagation times the bilinearly upsampled Grad-CAM; reduction ``max_abs``.

    Options: :class:`~xai_lightning.explain.options.LayerOptions`.
    """

    name = "guided_gradcam"
    reduction = "max_abs"

    def setup(self) -> None:
        super().setup()
        self._guided_gradcam = GuidedGradCam(ClassLogits(self.model), self.layer_module)

    def passes(self, image_size: tuple[int, int]) -> PassCount:
        return PassCount(forward_backward=2)  # a guided and a plain backward

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        with relus_not_inplace(self.model):
            # Captum's default "nearest" would stamp the layer grid onto the product as blocks.
            return self._guided_gradcam.attribute(images, target=targets, interpolate_mode="bilinear")


@register_explainer
class SaliencyExplainer(ReducedExplainer):
    """Saliency: ``|∂y_c/∂x|``; reduction ``max_abs`` (max over channels)."""

    name = "saliency"
    reduction = "max_abs"

    def setup(self) -> None:
        self._saliency = Saliency(self.model.classify)

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        return self._saliency.attribute(images, target=targets, abs=True)

    def gradient_request(self) -> GradientRequest:
        return GradientRequest(input_gradient=True)

    def raw_from_gradients(self, gradients: GradientPass) -> Tensor:
        return gradients.input_gradient.abs()


@dataclass(frozen=True)
class SmoothGradOptions(ExplainerOptions):
    """Options of :class:`SmoothGradExplainer`.

    Attributes:
        nt_samples: noisy copies per image.
        stdevs: standard deviation of the Gaussian noise, in normalised-input units (Captum's
            ``stdevs`` is absolute, not a fraction of the input range).
        nt_samples_batch_size: noisy copies per image in one forward pass (bounds memory).
    """

    nt_samples: int = positive_int(16)
    stdevs: float = non_negative_float(0.15)
    nt_samples_batch_size: int = positive_int(8)


@register_explainer
class SmoothGradExplainer(ReducedExplainer):
    """SmoothGrad: ∂y_c/∂x averaged over ``nt_samples`` noisy copies of x; reduction ``max_abs``.

    The signed gradients are averaged, as in Smilkov et al. (2017), and the absolute value is taken
    by the reduction. Options: :class:`SmoothGradOptions`.
    """

    name = "smoothgrad"
    reduction = "max_abs"
    stochastic = True
    Options = SmoothGradOptions
    settings: SmoothGradOptions

    def setup(self) -> None:
        self._smoothgrad = NoiseTunnel(Saliency(self.model.classify))

    def passes(self, image_size: tuple[int, int]) -> PassCount:
        return PassCount(forward_backward=self.settings.nt_samples)

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        settings = self.settings
        return self._smoothgrad.attribute(
            images,
            nt_type="smoothgrad",
            nt_samples=settings.nt_samples,
            nt_samples_batch_size=min(settings.nt_samples_batch_size, settings.nt_samples),
            stdevs=settings.stdevs,
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

    def setup(self) -> None:
        self._guided = GuidedBackprop(ClassLogits(self.model))

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        with relus_not_inplace(self.model):
            return self._guided.attribute(images, target=targets)


@register_explainer
class InputXGradientExplainer(ReducedExplainer):
    """Input × gradient: x · ∂y_c/∂x (x measured from the dataset mean); reduction ``sum_abs``."""

    name = "input_x_gradient"
    reduction = "sum_abs"

    def setup(self) -> None:
        self._input_x_gradient = InputXGradient(self.model.classify)

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        return self._input_x_gradient.attribute(images, target=targets)

    def gradient_request(self) -> GradientRequest:
        return GradientRequest(input_gradient=True)

    def raw_from_gradients(self, gradients: GradientPass) -> Tensor:
        return gradients.images * gradients.input_gradient
