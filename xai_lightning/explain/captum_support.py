"""What the Captum-backed explainers share: the base that reduces a raw attribution to one map, and
guards around Captum's hooks, warnings and NumPy sampling.
"""

from __future__ import annotations

import contextlib
import warnings
from abc import abstractmethod
from typing import Iterator

import numpy as np
from torch import Tensor, nn

from xai_lightning.explain.base import Explainer
from xai_lightning.explain.reduction import reduce_attribution
from xai_lightning.explain.shared import GradientPass


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
