"""Error types that tell the user which file or option is wrong and how to fix it.

Raised before any training starts, so a bad path or option never costs a run.
"""

from __future__ import annotations


class XaiLightningError(Exception):
    """Base class for errors caused by user input (data on disk or configuration)."""


class DatasetError(XaiLightningError, FileNotFoundError):
    """The dataset on disk is missing, incomplete or inconsistent.

    Subclasses ``FileNotFoundError`` so callers that already catch I/O errors
    keep working; the message always names the offending path.
    """


class ConfigError(XaiLightningError, ValueError):
    """A configuration option has a value that cannot work; the message names the option."""


class RunError(XaiLightningError, FileNotFoundError):
    """A saved run is missing what was asked of it (a checkpoint, a finished epoch) or cannot be loaded."""
