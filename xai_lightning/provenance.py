"""What produced a run: git commit, package versions, machine. Written into every run's manifest."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

#: Distributions whose versions change results; recorded in every manifest.
TRACKED_PACKAGES = (
    "torch",
    "torchvision",
    "pytorch-lightning",
    "torchmetrics",
    "captum",
    "wandb",
    "albumentations",
    "opencv-python-headless",
    "numpy",
    "pandas",
    "pillow",
    "jsonargparse",
)


def package_versions() -> dict[str, str | None]:
    """Installed version of each tracked package (None when it is not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(path: str | Path | None = None) -> dict[str, str | bool | None]:
    """Commit hash and dirty flag of the git checkout holding ``path`` (default: this package).

    Returns ``{"commit": None, ...}`` outside a checkout (an installed wheel), never raises.
    """
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        commit = _git(where, "rev-parse", "HEAD")
        dirty = bool(_git(where, "status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None, "checkout": None}
    return {"commit": commit, "dirty": dirty, "checkout": _git(where, "rev-parse", "--show-toplevel")}


def machine() -> dict[str, str | int | None]:
    """Host facts that explain timing differences between runs."""
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "argv": " ".join(sys.argv),
    }


def _git(where: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=where, capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()
