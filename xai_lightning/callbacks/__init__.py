"""Lightning callbacks: attribution quality during training, and the run manifest."""

from xai_lightning.callbacks.attribution import AttributionCallback
from xai_lightning.callbacks.run_manifest import RunManifest

__all__ = ["AttributionCallback", "RunManifest"]
