"""What the synthetic generator writes: image size, seed, category, images per ``split/class``, the shortcut.

Also how each sample is seeded, so that a sample's pixels depend on the seed and its own position only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from xai_lightning.data.classes import DEFECT_TYPES, GOOD, label_order
from xai_lightning.data.layout import MVTEC_SPLITS, TEST_DIR, TRAIN_DIR
from xai_lightning.errors import ConfigError

#: The (MVTec folder, class) pairs the generator can fill, in the order it writes them: MVTec's ``train/``
#: holds good images only.
SPLIT_CLASSES: tuple[tuple[str, str], ...] = (
    (TRAIN_DIR, GOOD),
    (TEST_DIR, GOOD),
    *((TEST_DIR, defect) for defect in DEFECT_TYPES),
)


def count_key(split: str, label: str) -> str:
    """Key of ``SyntheticConfig.counts`` for the images of ``label`` in MVTec folder ``split``.

    >>> count_key("test", "crack")
    'test/crack'
    """
    return f"{split}/{label}"


COUNT_KEYS: tuple[str, ...] = tuple(count_key(split, label) for split, label in SPLIT_CLASSES)

#: Image counts of the real MVTec AD hazelnut category, per ``split/class``.
MVTEC_HAZELNUT_COUNTS: dict[str, int] = {
    "train/good": 391,
    "test/good": 40,
    "test/crack": 18,
    "test/cut": 17,
    "test/hole": 18,
    "test/print": 17,
}

#: Folder layouts the generator writes: MVTec AD's, or the plain one of :mod:`xai_lightning.data.plain`.
LAYOUTS: tuple[str, ...] = ("mvtec", "plain")

_CATEGORY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_MIN_MARKER_SIDE = 5  # pixels: below this the four marker shapes can no longer be told apart
# Part of every sample's seed: reordering either would change every file of every set written so far.
_SEED_SPLITS = MVTEC_SPLITS
_SEED_CLASSES = (GOOD, *DEFECT_TYPES)


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate: image size, RNG seed, category folder name, image count per ``split/class`` and the shortcut.

    ``counts`` keys are ``train/good``, ``test/good`` and ``test/<defect>``; a missing key means 0 images.

    ``shortcut_fraction`` (0..1, default 0 = off) is the known-answer experiment's planted shortcut: that
    fraction of the images of each defect class (chosen by ``seed``) gets a small marker of a class-specific
    shape and colour (:data:`SHORTCUT_MARKERS`), drawn away from the defect, with its mask written to
    ``<category>/shortcut_mask/<class>/<stem>_mask.png``. ``good`` images never get one, so marker presence
    and shape predict the class. All defect images sit in MVTec's ``test/`` folder and the project's own
    stratified split deals them into train, val and test, so marked images land in every split at about
    the same rate. ``shortcut_size`` is the marker's side as a fraction of the image side (at least 5 px).
    With the shortcut off the files are byte-identical to those written before the option existed.

    ``layout`` is the folder layout written: ``mvtec`` (``<out>/<category>/train|test|ground_truth/...``) or
    ``plain`` (``<out>/images/<class>/NNN.png`` with ``<out>/masks/<class>/NNN.png``, read by
    :func:`~xai_lightning.data.plain.build_plain_index`), with the same pixels; in ``plain`` the images of MVTec's
    ``train/good`` are ``images/good/train_NNN.png``. The shortcut needs the ``mvtec`` layout (its masks live there).

    >>> config = SyntheticConfig(size=64, counts={"train/good": 4, "test/good": 2, "test/crack": 2})
    >>> config.count("test", "crack"), config.count("test", "print")
    (2, 0)
    >>> config.class_names
    ['crack', 'good']
    """

    size: int = 1024
    seed: int = 0
    category: str = "hazelnut"
    counts: dict[str, int] = field(default_factory=lambda: dict(MVTEC_HAZELNUT_COUNTS))
    shortcut_fraction: float = 0.0
    shortcut_size: float = 0.07
    layout: str = "mvtec"

    def __post_init__(self) -> None:
        if not _is_int(self.size) or self.size < 32:
            raise ConfigError(f"synthetic `size` is {self.size!r}; use an integer >= 32 (MVTec AD images are 1024).")
        if not _is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"synthetic `seed` is {self.seed!r}; use an integer >= 0.")
        if not isinstance(self.category, str) or not _CATEGORY_PATTERN.fullmatch(self.category):
            raise ConfigError(
                f"synthetic `category` is {self.category!r}; use a plain folder name of letters, digits, '_', '-' "
                "or '.' (for example 'hazelnut')."
            )
        self._check_counts()
        # Copy so that later changes to the caller's dict cannot alter this frozen config.
        object.__setattr__(self, "counts", dict(self.counts))
        if not _is_real(self.shortcut_fraction) or not 0.0 <= self.shortcut_fraction <= 1.0:
            raise ConfigError(
                f"synthetic `shortcut_fraction` is {self.shortcut_fraction!r}; use a number from 0 (no shortcut "
                "markers) to 1 (a marker on every defect image)."
            )
        if not _is_real(self.shortcut_size) or not 0.01 <= self.shortcut_size <= 0.2:
            raise ConfigError(
                f"synthetic `shortcut_size` is {self.shortcut_size!r}; use a fraction of the image side from 0.01 "
                "to 0.2 (default 0.07)."
            )
        self._check_layout()
        # Floats, so that a YAML `1` and `1.0` make the same SYNTHETIC.json and compare equal on resume.
        object.__setattr__(self, "shortcut_fraction", float(self.shortcut_fraction))
        object.__setattr__(self, "shortcut_size", float(self.shortcut_size))

    def _check_counts(self) -> None:
        if not isinstance(self.counts, dict):
            raise ConfigError(f"synthetic `counts` is {self.counts!r}; use a mapping such as {{'test/crack': 5}}.")
        for key, count in self.counts.items():
            if key not in COUNT_KEYS:
                raise ConfigError(
                    f"synthetic `counts` has unknown key {key!r}; use only {', '.join(COUNT_KEYS)}."
                )
            if not _is_int(count) or count < 0:
                raise ConfigError(f"synthetic `counts['{key}']` is {count!r}; use an integer >= 0.")
        if sum(self.counts.values()) == 0:
            raise ConfigError("synthetic `counts` asks for no images at all; give at least one class a count > 0.")

    def _check_layout(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError(f"synthetic `layout` is {self.layout!r}; use one of {', '.join(LAYOUTS)}.")
        if self.layout == "plain" and self.shortcut_fraction > 0:
            raise ConfigError(
                "synthetic `shortcut_fraction` > 0 needs `layout: mvtec`: the shortcut markers' masks are written in "
                "the MVTec layout only. Set the fraction to 0 or use the MVTec layout."
            )

    @property
    def shortcut_side(self) -> int:
        """Side of the shortcut marker in pixels."""
        return max(_MIN_MARKER_SIDE, round(self.shortcut_size * self.size))

    def count(self, split: str, label: str) -> int:
        """How many images of ``label`` go into MVTec folder ``split`` (0 when ``counts`` omits them)."""
        return self.counts.get(count_key(split, label), 0)

    @property
    def class_names(self) -> list[str]:
        """The classes of the set, in label order, known before it is written.

        Those with images in ``test/``: what :func:`~xai_lightning.data.mvtec.list_classes` reads back
        from the written set (a class with count 0 gets no folder). In the ``plain`` layout, those with images
        anywhere (``images/good/`` holds MVTec's ``train/good`` too): what
        :func:`~xai_lightning.data.plain.list_plain_classes` reads back.
        """
        in_test_only = self.layout == "mvtec"
        return label_order(
            label
            for split, label in SPLIT_CLASSES
            if (split == TEST_DIR or not in_test_only) and self.count(split, label)
        )


def sample_entropy(config: SyntheticConfig, split: str, label: str, index: int) -> list[int]:
    """Seed of one sample: one stream per sample, so changing one class's count leaves every other file unchanged.

    >>> sample_entropy(SyntheticConfig(seed=3), "test", "crack", 5)
    [3, 1, 1, 5]
    """
    return [config.seed, _SEED_SPLITS.index(split), _SEED_CLASSES.index(label), index]


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    return numeric and math.isfinite(value)
