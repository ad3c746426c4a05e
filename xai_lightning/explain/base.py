"""The explainer interface and its registry: methods created by name from the config, as timm creates models.

``create_explainer("gradcam", model, **options)`` builds one; importing :mod:`xai_lightning.explain` registers all.
"""

from __future__ import annotations

import contextlib
import fnmatch
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import torch
from torch import Tensor, nn

from xai_lightning.errors import ConfigError
from xai_lightning.explain.options import ExplainerOptions
from xai_lightning.explain.shared import GradientPass, GradientRequest


@dataclass(frozen=True)
class PassCount:
    """Model passes per image that a method cannot avoid: its cost floor, in units a benchmark can time.

    Attributes:
        forward_backward: forward passes followed by a backward pass to the input.
        forward: forward-only passes (perturbation methods).
    """

    forward_backward: float = 0.0
    forward: float = 0.0

    def __add__(self, other: PassCount) -> PassCount:
        return PassCount(self.forward_backward + other.forward_backward, self.forward + other.forward)

    def seconds(self, forward_backward: float, forward: float) -> float:
        """The floor in seconds, given the measured time of one forward+backward and one forward pass."""
        return self.forward_backward * forward_backward + self.forward * forward


class Explainer(ABC):
    """Turns a batch of images and target classes into one non-negative map per image.

    Subclasses set ``name``, ``reduction`` (how the raw attribution becomes a (B, H, W) map:
    ``max_abs``, ``sum_abs``, ``cam`` or ``none``), ``stochastic`` and ``Options``, the frozen
    dataclass of their options (:class:`~xai_lightning.explain.options.ExplainerOptions`); they
    implement :meth:`attribute`, and :meth:`setup` when they build something from the model. Call
    :meth:`explain`, which handles eval mode, gradients and validation of the result.

    Args:
        model: the multi-task model; ``model.classify(x)`` gives the class logits being explained.
        seed: seeds stochastic methods (noise, sampling), so a pass is reproducible.
        **options: the fields of ``Options``; the checked values are in ``self.settings``.

    Raises:
        TypeError: an option ``Options`` has no field for (``create_explainer`` reports it as a ConfigError).
        ConfigError: an option's value is invalid; the message starts with ``explainer <name>:``.
    """

    name: ClassVar[str]
    reduction: ClassVar[str]
    stochastic: ClassVar[bool] = False
    #: The options dataclass: its fields are the keyword options the explainer takes and records.
    Options: ClassVar[type[ExplainerOptions]] = ExplainerOptions

    def __init__(self, model: nn.Module, seed: int = 0, **options: Any) -> None:
        self.model = model
        self.seed = seed
        known = self.Options.names()
        for option in options:
            if option not in known:
                # Python's own wording for an unknown keyword, as when each explainer spelled out its signature.
                raise TypeError(f"{type(self).__name__}.__init__() got an unexpected keyword argument '{option}'")
        try:
            self.settings = self.Options(**options)
            self.setup()
        except ConfigError as error:
            # The same error with the method named; its chained copy would only repeat the message.
            raise ConfigError(f"explainer {self.name}: {error}") from None

    def setup(self) -> None:
        """Build what the method needs from ``self.model`` and ``self.settings`` (e.g. its Captum object).

        Runs once, at the end of ``__init__``; a ConfigError raised here is reported with the method's name.
        """

    @abstractmethod
    def attribute(self, images: Tensor, targets: Tensor) -> Tensor:
        """(B, H, W) non-negative maps at the images' resolution, on the images' device."""

    def explain(self, images: Tensor, targets: Tensor) -> Tensor:
        """Maps for ``images`` (B, 3, H, W) and ``targets`` (B,), computed in eval mode with gradients on.

        Works inside Lightning's validation (no_grad) and test (inference_mode) loops; the model's
        train/eval mode and its parameters' ``.grad`` are left as they were. Stochastic methods draw
        their noise per image from (seed, image content), so an image gets the same map whatever
        batch it is in, and therefore on one process or many.
        """
        with attribution_mode(self.model):
            # Inference tensors cannot be saved for backward: work on a normal copy.
            images = images.detach().clone()
            targets = targets.detach().clone()
            if self.stochastic:
                # One image at a time: its noise is drawn from (seed, its content), whatever batch it is in.
                singles = zip(images.split(1), targets.split(1))
                maps = torch.cat([self._seeded_attribute(image, target) for image, target in singles])
            else:
                maps = self.attribute(images, targets)
        maps = maps.detach()
        if maps.shape != (images.shape[0], *images.shape[-2:]):
            raise RuntimeError(f"{self.name} returned maps of shape {tuple(maps.shape)}, expected (B, H, W).")
        return maps

    def gradient_request(self) -> GradientRequest | None:
        """What this method needs from a shared forward/backward pass, or None when it cannot share one.

        Methods that return a request also implement :meth:`from_gradients`; the engine
        (:func:`xai_lightning.explain.engine.explain_batch`) then serves all of them from one pass.
        """
        return None

    def from_gradients(self, gradients: GradientPass) -> Tensor:
        """(B, H, W) maps from a shared pass that served :meth:`gradient_request` (same maps as :meth:`explain`)."""
        raise NotImplementedError(f"{self.name} has no gradient_request(); call explain() instead.")

    def _seeded_attribute(self, image: Tensor, target: Tensor) -> Tensor:
        # crc32 of the image bytes: a stable per-image key (Python's hash() of bytes is salted per process).
        key = zlib.crc32(image.detach().cpu().numpy().tobytes())
        devices = [image.device] if image.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed((self.seed * 1_000_003 + key) % 2**63)
            return self.attribute(image, target)

    def passes(self, image_size: tuple[int, int]) -> PassCount:
        """Passes per image the method needs by definition (e.g. IG: ``n_steps`` forward+backward).

        One forward and one backward, the cost of a plain gradient method; methods that need more
        (or less) override it. Benchmarks compare measured time against this floor.
        """
        return PassCount(forward_backward=1)

    def config(self) -> dict[str, Any]:
        """What the run records about this method: its name, reduction and options."""
        return {"name": self.name, "reduction": self.reduction, "stochastic": self.stochastic, **self.options()}

    def options(self) -> dict[str, Any]:
        """The method's own options, ``{option: value}`` in the order ``Options`` declares them."""
        return self.settings.as_dict()


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode, then restore each one's own mode (not just the top flag).

    A user may keep parts of a model in eval mode on purpose (frozen BatchNorm); restoring only
    ``model.train(was_training)`` would switch those back to training.
    """
    modes = {name: module.training for name, module in model.named_modules()}
    model.eval()
    try:
        yield
    finally:
        for name, module in model.named_modules():
            module.training = modes.get(name, module.training)


@contextlib.contextmanager
def attribution_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and gradients on (also inside no_grad / inference_mode); restores modes and ``.grad``.

    Captum computes with ``torch.autograd.grad``, which does not accumulate into ``.grad``; the
    saved-and-restored ``.grad`` guards against any method that calls ``backward()``, so attribution
    can never leak into the optimizer's next step.
    """
    grads = {name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()}
    try:
        with eval_mode(model), torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for name, p in model.named_parameters():
            p.grad = grads[name]


_REGISTRY: dict[str, type[Explainer]] = {}


def register_explainer(cls: type[Explainer]) -> type[Explainer]:
    """Class decorator: make an :class:`Explainer` subclass creatable by its ``name``.

    A name is registered once: registering it again is a ValueError, never a silent replacement.
    For an explainer that should exist only for a while (a test double), use
    :func:`registered_explainers`, which removes it again.
    """
    if cls.name in _REGISTRY:
        raise ValueError(f"Explainer '{cls.name}' is registered twice.")
    _REGISTRY[cls.name] = cls
    return cls


def unregister_explainer(name: str) -> type[Explainer]:
    """Remove ``name`` from the registry and return its class (a ValueError when it is not registered)."""
    if name not in _REGISTRY:
        raise ValueError(f"Explainer '{name}' is not registered.")
    return _REGISTRY.pop(name)


@contextlib.contextmanager
def registered_explainers(*classes: type[Explainer]) -> Iterator[None]:
    """Register ``classes`` for the duration of the block, then remove them, even when the block raises.

    The scope for test doubles: the registry is left as it was found. Names follow the rule of
    :func:`register_explainer` (a name taken already is a ValueError). In pytest::

        @pytest.fixture(autouse=True)
        def test_doubles():
            with registered_explainers(AlwaysFails, ReturnsNaN):
                yield

    >>> class Constant(Explainer):
    ...     name, reduction = "doc_constant", "none"
    ...     def attribute(self, images, targets):
    ...         return images.new_ones(len(images), *images.shape[-2:])
    >>> with registered_explainers(Constant):
    ...     list_explainers("doc_*")
    ['doc_constant']
    >>> list_explainers("doc_*")
    []
    """
    added: list[str] = []
    try:
        for cls in classes:
            register_explainer(cls)
            added.append(cls.name)
        yield
    finally:
        for name in reversed(added):
            _REGISTRY.pop(name, None)


def list_explainers(pattern: str = "*") -> list[str]:
    """Registered explainer names matching a shell-style pattern, sorted.

    >>> list_explainers("guided_*")
    ['guided_backprop', 'guided_gradcam']
    """
    return sorted(name for name in _REGISTRY if fnmatch.fnmatch(name, pattern))


def explainer_class(name: str) -> type[Explainer]:
    """The registered class of ``name``: its options and properties without building it for a model.

    >>> explainer_class("gradcam").__name__
    'GradCAMExplainer'
    """
    if name not in _REGISTRY:
        raise ConfigError(f"Unknown explainer '{name}'. Available: {', '.join(list_explainers())}.")
    return _REGISTRY[name]


def create_explainer(name: str, model: nn.Module, **options: Any) -> Explainer:
    """Build a registered explainer for ``model`` with its options (a clear error for unknown ones).

    >>> create_explainer("integrated_gradients", nn.Identity(), n_steps=8).options()["n_steps"]
    8
    >>> try:
    ...     create_explainer("saliency", nn.Identity(), n_steps=8)
    ... except ConfigError as error:
    ...     print(error)
    Bad options for explainer 'saliency': SaliencyExplainer.__init__() got an unexpected keyword argument 'n_steps'.
    """
    cls = explainer_class(name)
    try:
        return cls(model, **options)
    except TypeError as error:
        raise ConfigError(f"Bad options for explainer '{name}': {error}.") from error


def explainer_specs(methods: list[str] | dict[str, dict[str, Any] | None]) -> dict[str, dict[str, Any]]:
    """Normalise a ``methods`` config to ``{display name: {"method": registry name, **options}}``.

    A list names registry entries; a mapping gives options per display name, and ``method`` in the
    options lets one registry entry appear twice (``{ig_64: {method: integrated_gradients, n_steps: 64}}``).
    """
    if isinstance(methods, (list, tuple)):
        methods = {name: {} for name in methods}
    return {display: {"method": display, **(options or {})} for display, options in methods.items()}


def build_explainers(
    specs: dict[str, dict[str, Any]], model: nn.Module, seed: int = 0, where: str = "methods"
) -> dict[str, Explainer]:
    """Create every explainer of ``specs`` for ``model``; a bad entry's error names ``<where>.<display>``."""
    explainers = {}
    for display, spec in specs.items():
        options = dict(spec)
        try:
            explainers[display] = create_explainer(options.pop("method"), model, seed=seed, **options)
        except ConfigError as error:
            raise ConfigError(f"`{where}.{display}`: {error}") from error
    return explainers
