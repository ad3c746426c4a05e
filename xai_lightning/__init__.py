"""xai_lightning: train multi-task defect classifiers and measure how well attribution maps localise the defects."""

import os

# albumentations phones home for updates at import time; this machine (and many
# clusters) have no network, so the check only costs a timeout.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
