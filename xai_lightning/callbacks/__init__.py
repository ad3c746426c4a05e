"""Lightning callbacks: the run manifest (and, with the attribution issue, the attribution callback)."""

from xai_lightning.callbacks.run_manifest import RunManifest

__all__ = ["RunManifest"]
