"""How an attribution pass scores its maps: one typed record, saved with every run and read back by evaluate.py.

The callback writes it next to ``explainers.json`` (``xai/scoring.json``); ``evaluate.py`` scores with
it, so evaluation computes exactly what training computed unless a command-line option overrides it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from xai_lightning.errors import ConfigError
from xai_lightning.metrics.faithfulness import CURVE_BASELINES
from xai_lightning.metrics.names import (
    DEFAULT_POINTING_TIES,
    DEFAULT_WIN_TIES,
    FAITHFULNESS_METRICS,
    LOCALIZATION_METRICS,
    POINTING_TIES,
    WIN_TIES,
)

#: The file, in a run's ``xai/`` folder, that records the scoring configuration of its passes.
SCORING_FILE = "scoring.json"

TARGETS = ("label", "prediction")


class ScoringOptionError(ConfigError):
    """A bad scoring option; ``option`` names it so each driver can say where it was set."""

    def __init__(self, option: str, problem: str) -> None:
        self.option, self.problem = option, problem
        super().__init__(f"`{option}` {problem}")


@dataclass(frozen=True)
class ScoringConfig:
    """What a pass computes from each map (docs/metrics.md defines every score).

    Attributes:
        top_k: K of Top-K overlap: None for K = |mask|, a fraction of H·W in (0, 1], or a pixel count.
        pointing_tolerance: pointing-game tolerance in pixels (TorchRay uses 15 at 224²).
        pointing_ties: how tied maxima score in the pointing game (``expected`` or ``any``).
        target: explain the ground-truth class (``label``) or the model's prediction (``prediction``).
        include_good: also explain images with an empty mask; they take no part in the localisation
            metrics (counted in ``n_excluded``) but do in the faithfulness areas.
        faithfulness_steps: deletion / insertion curve steps per image and method (0: no curves).
        faithfulness_baseline: what removed pixels become: ``blur`` or ``mean`` (the dataset-mean image).
        seed: seeds the image sample and the stochastic methods.
        only_correct: score only the images the model classifies correctly (the poster's protocol); the
            others' scores are NaN, so they count as excluded, like an empty mask.
        win_ties: how the win-rate credits a tie: ``fair`` (shared) or ``first_listed`` (all to the first
            method listed: reproduces the poster code's argsort flaw, which favours the method listed first).
        top_k_iou: also score ``topk_iou``, the IoU of the top-K set with the mask (what the poster's code
            reports as Top-K overlap; TKO / (2 − TKO) at K = |mask|). Off by default: it ranks as TKO does,
            and every logged metric adds a key per class and method.

    >>> ScoringConfig(top_k=0.05).differences(ScoringConfig())
    {'top_k': (0.05, None)}
    """

    top_k: int | float | None = None
    pointing_tolerance: int = 0
    pointing_ties: Literal["expected", "any"] = DEFAULT_POINTING_TIES
    target: Literal["label", "prediction"] = "label"
    include_good: bool = False
    faithfulness_steps: int = 0
    faithfulness_baseline: Literal["blur", "mean"] = "blur"
    seed: int = 0
    only_correct: bool = False
    win_ties: Literal["fair", "first_listed"] = DEFAULT_WIN_TIES
    top_k_iou: bool = False

    def __post_init__(self) -> None:
        _check_top_k(self.top_k)
        for option in ("pointing_tolerance", "faithfulness_steps", "seed"):
            value = getattr(self, option)
            # bool is an int subclass; `faithfulness_steps: true` in a YAML file is a mistake, not 1.
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ScoringOptionError(option, f"is {value!r}; use an integer, 0 or more.")
        for option, choices in (
            ("pointing_ties", POINTING_TIES),
            ("target", TARGETS),
            ("faithfulness_baseline", CURVE_BASELINES),
            ("win_ties", WIN_TIES),
        ):
            if getattr(self, option) not in choices:
                raise ScoringOptionError(option, f"is {getattr(self, option)!r}; use one of {', '.join(choices)}.")
        for option in ("include_good", "only_correct", "top_k_iou"):
            if not isinstance(getattr(self, option), bool):
                raise ScoringOptionError(option, f"is {getattr(self, option)!r}; use true or false.")

    @classmethod
    def named(cls, where: str, **options: Any) -> ScoringConfig:
        """Build from a driver's options; an error names the option as ``<where>.<option>``."""
        try:
            return cls(**options)
        except ScoringOptionError as error:
            raise ConfigError(f"`{where}.{error.option}` {error.problem}") from None

    @property
    def metrics(self) -> tuple[str, ...]:
        """The per-image scores a pass records for each method."""
        localization = tuple(m for m in LOCALIZATION_METRICS if m != "topk_iou" or self.top_k_iou)
        return (*localization, *(FAITHFULNESS_METRICS if self.faithfulness_steps else ()))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "scoring") -> ScoringConfig:
        """Read a recorded configuration; an unknown key (a newer or hand-edited file) is named."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"{source}: unknown scoring option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})."
            )
        return cls.named(source, **values)

    def write(self, folder: str | Path) -> Path:
        path = Path(folder) / SCORING_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, folder: str | Path) -> ScoringConfig | None:
        """The configuration recorded in ``folder`` (a run's ``xai/``), or None when it holds none."""
        path = Path(folder) / SCORING_FILE
        if not path.is_file():
            return None
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ConfigError(f"'{path}' is not valid JSON ({error}); delete it to score with the defaults.") from None
        return cls.from_dict(values, source=str(path))

    def replace(self, **overrides: Any) -> ScoringConfig:
        """A copy with the given options changed (None values are ignored: "not overridden")."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def differences(self, other: ScoringConfig) -> dict[str, tuple[Any, Any]]:
        """``{option: (this value, other value)}`` for every option where the two differ."""
        mine, theirs = self.to_dict(), other.to_dict()
        # By type too: K = 1 is one pixel, K = 1.0 the whole image, and 1 == 1.0 in Python.
        return {k: (mine[k], theirs[k]) for k in mine if (type(mine[k]), mine[k]) != (type(theirs[k]), theirs[k])}


def _check_top_k(top_k: int | float | None) -> None:  # noqa: PYI041 (k=1 is one pixel, k=1.0 every pixel)
    if top_k is None:
        return
    if isinstance(top_k, bool) or not isinstance(top_k, (int, float)) or top_k <= 0:
        raise ScoringOptionError(
            "top_k", f"is {top_k!r}; use null (K = mask size), a fraction in (0, 1] or a pixel count."
        )
    if isinstance(top_k, float) and top_k > 1:
        raise ScoringOptionError("top_k", f"is {top_k}; a fraction of the image lies in (0, 1] (or give an int count).")
