"""Shared fixtures: a tiny synthetic MVTec-layout dataset made once per session, offline W&B; a tiny CNN."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

# Tests never touch the network: W&B writes offline runs that the tests read back.
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parents[1]
SMOKE_CONFIG = REPO / "configs" / "smoke.yaml"

#: Counts of the smoke config: enough for every class in every split, small enough to be instant.
SMOKE_COUNTS = {"train/good": 4, "test/good": 6, "test/crack": 6, "test/cut": 6, "test/hole": 6, "test/print": 6}


@pytest.fixture(scope="session")
def smoke_root(tmp_path_factory) -> Path:
    """Dataset root (holding ``hazelnut/``) of the smoke config's synthetic set, generated once."""
    from xai_lightning.data.synthetic import SyntheticConfig, generate_synthetic_mvtec

    root = tmp_path_factory.mktemp("synthetic-smoke")
    generate_synthetic_mvtec(root, SyntheticConfig(size=96, seed=0, counts=SMOKE_COUNTS))
    return root


@pytest.fixture
def dataset_copy(smoke_root, tmp_path) -> Path:
    """A private copy of the smoke dataset root that a test may damage."""
    target = tmp_path / "data"
    shutil.copytree(smoke_root, target)
    return target


@pytest.fixture(scope="module")
def one_thread():
    """One CPU thread for a module's trained models: the run is then the same on any machine, and on a loaded
    2-core CPU two threads are several times slower than one (they wait for each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def smoke_args(data_root: Path, experiment_dir: Path, *extra: str) -> list[str]:
    """train.py arguments for the smoke config writing only under the given folders."""
    return ["--config", str(SMOKE_CONFIG), "--data.root", str(data_root), "--experiment_dir", str(experiment_dir), *extra]


class TinyCNN(nn.Module):
    """Two convolutions, global average pooling and a linear head: small enough to differentiate by hand."""

    cam_layer_name = "features.2"

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU()
        )
        self.head = nn.Linear(6, num_classes)

    def classify(self, images: Tensor) -> Tensor:
        return self.head(self.features(images).mean(dim=(2, 3)))

    def forward(self, images: Tensor) -> Tensor:
        return self.classify(images)
