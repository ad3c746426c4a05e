"""Explainer options as frozen dataclasses: each field states a config key, its default and its check once.

A failed check raises :class:`~xai_lightning.errors.ConfigError` naming the option; the explainer adds its name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from torch import nn

from xai_lightning.errors import ConfigError
from xai_lightning.explain.baselines import EXPLAINER_BASELINES

#: ``check(option name, value)`` → the value to store (normalised), or a ConfigError.
Check = Callable[[str, Any], Any]


def check_positive_int(option: str, value: Any) -> int:
    """``value`` if it is an integer ≥ 1 (``True`` is not: in a YAML file it is a mistake, not 1)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{option} is {value!r}; it must be a positive integer.")
    return value


def check_non_negative_float(option: str, value: Any) -> float:
    """``value`` as a float if it is a finite number ≥ 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{option} is {value!r}; it must be a finite number >= 0.")
    return float(value)


def check_positive_float(option: str, value: Any) -> float:
    """``value`` as a float if it is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{option} is {value!r}; it must be a finite number > 0.")
    return float(value)


def check_choice(option: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{option} is {value!r}; use one of {', '.join(map(repr, choices))}.")
    return value


def check_module_path(option: str, value: Any) -> str:
    """``value`` if it is a string (a dotted module path; whether the model has it is checked later)."""
    if not isinstance(value, str):
        raise ConfigError(f"{option} is {value!r}; give a dotted module path like 'encoder.layer4'.")
    return value


def option(default: Any, check: Check | None = None, optional: bool = False) -> Any:
    """A dataclass field holding ``default``; ``check`` validates any value (``None`` passes when ``optional``)."""
    return field(default=default, metadata={"check": check, "optional": optional})


def positive_int(default: int | None, optional: bool = False) -> Any:
    """An integer option ≥ 1 (``None`` also allowed when ``optional``)."""
    return option(default, check_positive_int, optional)


def non_negative_float(default: float | None, optional: bool = False) -> Any:
    """A finite float option ≥ 0, stored as a float (``None`` also allowed when ``optional``)."""
    return option(default, check_non_negative_float, optional)


def positive_float(default: float) -> Any:
    """A finite float option > 0 (a width or a scale that zero would make undefined), stored as a float."""
    return option(default, check_positive_float)


def one_of(default: str, choices: Sequence[str]) -> Any:
    """A string option taking one of ``choices``."""
    return option(default, lambda name, value: check_choice(name, value, choices))


def baseline_option(default: str = "zero") -> Any:
    """The reference-image option (:data:`~xai_lightning.explain.baselines.EXPLAINER_BASELINES`)."""
    return one_of(default, EXPLAINER_BASELINES)


@dataclass(frozen=True)
class ExplainerOptions:
    """Base of every explainer's options: its fields are the keyword options ``create_explainer`` takes.

    ``__post_init__`` runs each field's check and stores the checked value, so an instance always
    holds valid, normalised options; :meth:`as_dict` is what the run record shows.

    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class StepOptions(ExplainerOptions):
    ...     n_steps: int = positive_int(32)
    ...     stdevs: float = non_negative_float(0.1)
    >>> StepOptions(stdevs=1).as_dict()
    {'n_steps': 32, 'stdevs': 1.0}
    >>> StepOptions(n_steps=0)
    Traceback (most recent call last):
    ...
    xai_lightning.errors.ConfigError: n_steps is 0; it must be a positive integer.
    """

    def __post_init__(self) -> None:
        for spec in fields(self):
            check, value = spec.metadata.get("check"), getattr(self, spec.name)
            if check is None or (value is None and spec.metadata.get("optional")):
                continue
            # Frozen: the checked value (e.g. 1 → 1.0 for a float option) replaces the given one.
            object.__setattr__(self, spec.name, check(spec.name, value))

    def as_dict(self) -> dict[str, Any]:
        """``{option: value}`` in field order (a shallow copy: values are plain config values)."""
        return {spec.name: getattr(self, spec.name) for spec in fields(self)}

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in field order."""
        return tuple(spec.name for spec in fields(cls))


@dataclass(frozen=True)
class LayerOptions(ExplainerOptions):
    """Options of the methods that hook one layer (Grad-CAM, Guided Grad-CAM).

    Attributes:
        layer: dotted path of the hooked module inside the model (default ``model.cam_layer_name``).
    """

    layer: str | None = option(None, check_module_path, optional=True)


def resolve_layer(model: nn.Module, layer: str | None) -> tuple[str, nn.Module]:
    """The dotted layer path (``None``: ``model.cam_layer_name``) and the module it names."""
    if layer is None:
        layer = getattr(model, "cam_layer_name", None)
        if layer is None:
            raise ConfigError("layer is not set and the model has no `cam_layer_name`.")
    layer = check_module_path("layer", layer)
    try:
        return layer, model.get_submodule(layer)
    except AttributeError:
        stages = [name for name, _ in model.named_children()]
        raise ConfigError(
            f"layer '{layer}' is not a module of the model (its top-level modules: {', '.join(stages)})."
        ) from None
