"""Faults a long run meets, for tests to inject: a process killed without any chance to clean up.

Importable by a training subprocess (the tests put this folder on its PYTHONPATH) as
``--trainer.callbacks+=faults.KillAt``.
"""

from __future__ import annotations

import os
import signal

import pytorch_lightning as pl


class KillAt(pl.Callback):
    """SIGKILLs its own process when training reaches ``batch`` of ``epoch``: no hook, no ``finally`` runs."""

    def __init__(self, epoch: int = 1, batch: int = 1) -> None:
        self.epoch = epoch
        self.batch = batch

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)
