"""Save every random generator in each checkpoint and restore it on resume, so a resumed run is the same run.

Lightning checkpoints the model, the optimiser and the loops, but no random state: a run resumed
after a crash would replay the first epoch's shuffling and augmentation draws from a freshly seeded
generator, and end with other weights than an uninterrupted run of the same seed. What needs saving:

- torch's CPU generator: the training sampler's shuffle seed, the loader workers' base seed and, with
  ``num_workers: 0``, each sample's augmentation seed (:class:`~xai_lightning.data.dataset.DefectDataset`
  reseeds albumentations from it, so albumentations' own generator is covered too);
- the CUDA generators (dropout on the GPU), numpy's and Python's global generators;
- with loader workers, nothing more: the training loader starts its workers anew each epoch
  (:meth:`~xai_lightning.data.datamodule.MVTecDataModule.train_dataloader`), each seeded from the base
  seed drawn from torch's generator, so restoring that generator restores theirs;
- under DDP, each rank's generators (every rank draws its own augmentation seeds).

Lightning's own collectors (``_collect_rng_states`` / ``_set_rng_states``, used by its spawn launcher)
gather the states; this callback only stores them in a form that ``weights_only`` loading accepts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.seed import _collect_rng_states, _set_rng_states
from pytorch_lightning.utilities import rank_zero_warn


class RandomState(pl.Callback):
    """Checkpoints the random generators of every rank; restores them when training resumes.

    The states are taken when a checkpoint is written and put back as soon as Lightning hands the
    checkpoint to the callbacks, before it makes the first resumed epoch's training iterator (which
    draws the loader's base seed): in an uninterrupted run nothing draws between a checkpoint and that
    iterator, and Lightning's sanity check, in between on resume, runs with its generators isolated.
    """

    def state_dict(self) -> dict[str, Any]:
        states = [_plain(_collect_rng_states())]
        if _distributed():
            # Every rank takes part in writing a checkpoint; each rank's generators go into the file rank 0 writes.
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, states[0])
            states = gathered
        return {"ranks": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        ranks = state_dict["ranks"]
        world_size, rank = (
            (torch.distributed.get_world_size(), torch.distributed.get_rank()) if _distributed() else (1, 0)
        )
        if len(ranks) != world_size:
            rank_zero_warn(
                f"The checkpoint holds the random state of {len(ranks)} process(es) but this run has {world_size}: "
                "the generators are not restored, so the resumed run is not the same run as an uninterrupted one. "
                "Resume on the number of devices it was trained on."
            )
            return
        _set_rng_states(_native(ranks[rank]))


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _plain(states: dict[str, Any]) -> dict[str, Any]:
    """The states as tensors, lists and numbers only (numpy's key array becomes a tensor)."""
    kind, key, position, has_gauss, cached_gauss = states["numpy"]
    version, python_state, gauss = states["python"]
    return {
        "torch": states["torch"],
        "torch.cuda": list(states.get("torch.cuda", [])),
        "numpy": {
            "kind": kind,
            "key": torch.from_numpy(key.astype(np.int64)),
            "pos": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gauss),
        },
        "python": [version, list(python_state), gauss],
    }


def _native(states: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`_plain`, in the form ``_set_rng_states`` takes."""
    numpy_state = states["numpy"]
    restored = {
        "torch": states["torch"],
        "numpy": (
            numpy_state["kind"],
            numpy_state["key"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        ),
        "python": tuple(states["python"]),
    }
    if states["torch.cuda"] and torch.cuda.is_available():
        restored["torch.cuda"] = states["torch.cuda"]
    return restored
