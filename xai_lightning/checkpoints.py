"""Reading checkpoints without running code: every checkpoint the project opens is loaded with ``weights_only``.

A Lightning checkpoint of this project holds tensors and plain data only (checked: state dict,
optimizer and scheduler states, loops, callback states, hyperparameters), so no type needs to be
allow-listed. A file that needs more was not written by this project, and unpickling it could run
arbitrary code: it is refused with a message that says how to proceed for a file one trusts.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

from lightning_fabric.plugins import TorchCheckpointIO

from xai_lightning.atomic import write_atomically
from xai_lightning.errors import RunError

#: Types beyond tensors and plain containers that this project's checkpoints need (none today). Listed
#: here, and registered with ``torch.serialization.add_safe_globals``, when a checkpoint starts holding one.
SAFE_GLOBALS: tuple[type, ...] = ()


class DamagedCheckpointError(RunError):
    """A checkpoint file that is not whole (truncated, or not a checkpoint); other checkpoints may still load."""


def refusal(path: str | Path, error: BaseException) -> RunError:
    """The error for a checkpoint that ``weights_only`` loading refuses: one that names a Python object to
    call (it could run code), or a damaged file (it does not load)."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
    if found is None:
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(error))
        reason = detail.group(1).strip() if detail else f"{type(error).__name__}: {error}"
        return DamagedCheckpointError(
            f"Checkpoint '{path}' does not load: the file is damaged or not a checkpoint ({reason})."
        )
    return RunError(
        f"Checkpoint '{path}' holds more than tensors and plain data (it calls {found.group(1)}); loading it could "
        "run code, so it is refused. This project's checkpoints never need that: the file was written elsewhere or was tampered "
        "with. If you trust it, re-save its state dict yourself (torch.load(path, weights_only=False) in a "
        "session of your own) or allow its types with torch.serialization.add_safe_globals([...]) before loading."
    )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents (on the CPU), loaded with ``weights_only=True``.

    Raises :class:`DamagedCheckpointError` for a file that is not a whole checkpoint (truncated by a full
    disk or a killed copy), and :class:`~xai_lightning.errors.RunError` for one that would run code.
    """
    import torch

    _register_safe_globals()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise refusal(path, error) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as error:  # torch's zip reader on a cut-off file
        raise DamagedCheckpointError(
            f"Checkpoint '{path}' does not load: the file is damaged or incomplete ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''})."
        ) from None


def newest_loadable(folder: str | Path, prefer: str | None = None) -> tuple[Path, list[str]] | None:
    """The newest checkpoint in ``folder`` that loads (``prefer``, a file name, first), and why others were passed.

    A checkpoint left damaged by a full disk or a killed copy would otherwise trap every retry; the
    next-newest intact one (each epoch's best is kept next to ``last.ckpt``) resumes instead.
    Returns None when the folder holds no checkpoint at all.
    """
    files = sorted(Path(folder).glob("*.ckpt"), key=lambda p: (p.name != prefer, -p.stat().st_mtime, p.name))
    if not files:
        return None
    passed: list[str] = []
    for path in files:
        try:
            load_checkpoint(path)
        except DamagedCheckpointError as error:
            passed.append(str(error))
            continue
        return path, passed
    raise DamagedCheckpointError(
        f"No checkpoint in '{folder}' loads:\n  " + "\n  ".join(passed) + "\nStart the run again without --resume "
        "(delete the folder's checkpoints/ first)."
    )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but each file is written next to its final name and renamed over it.

    Lightning's own writer stages the file in the system's temporary folder and moves it: across file
    systems that is a copy, and a full disk leaves a truncated ``last.ckpt`` in place of the previous
    intact one. Here the previous file stays whole until the new one is complete on disk (fsynced), and
    a full disk raises an error that names the file.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options.")
        import torch

        def write(temporary: Path) -> None:
            with open(temporary, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())

        write_atomically(path, write)


def _register_safe_globals() -> None:
    if SAFE_GLOBALS:
        import torch

        torch.serialization.add_safe_globals(list(SAFE_GLOBALS))
