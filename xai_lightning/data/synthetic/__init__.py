"""Synthetic hazelnut-like images, defect masks and a SYNTHETIC.json marker, written in the exact MVTec AD layout.

MVTec AD cannot be downloaded here; this stand-in lets the real MVTec reader, the tests and the quickstart run offline.
"""

# The public names, wherever they live, are imported from the package: it is the API.
from xai_lightning.data.classes import DEFECT_TYPES
from xai_lightning.data.layout import MARKER_FILE, SHORTCUT_MASK_DIR, is_synthetic, shortcut_mask_path
from xai_lightning.data.synthetic.cli import main
from xai_lightning.data.synthetic.config import MVTEC_HAZELNUT_COUNTS, SyntheticConfig
from xai_lightning.data.synthetic.defects import render_sample
from xai_lightning.data.synthetic.shortcut import (
    SHORTCUT_MARKERS,
    add_shortcut_marker,
    shortcut_marker_region,
    shortcut_settings,
)
from xai_lightning.data.synthetic.writer import generate_synthetic_mvtec

__all__ = [
    "DEFECT_TYPES",
    "MARKER_FILE",
    "MVTEC_HAZELNUT_COUNTS",
    "SHORTCUT_MARKERS",
    "SHORTCUT_MASK_DIR",
    "SyntheticConfig",
    "add_shortcut_marker",
    "generate_synthetic_mvtec",
    "is_synthetic",
    "main",
    "render_sample",
    "shortcut_marker_region",
    "shortcut_mask_path",
    "shortcut_settings",
]
