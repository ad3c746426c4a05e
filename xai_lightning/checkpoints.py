"""Reading checkpoints without running code: every checkpoint the project opens is loaded with ``weights_only``.

A Lightning checkpoint of this project holds tensors and plain data only (checked: state dict,
optimizer and scheduler states, loops, callback states, hyperparameters), so no type needs to be
allow-listed. A file that needs more was not written by this project, and unpickling it could run
arbitrary code: it is refused with a message that says how to proceed for a file one trusts.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

from xai_lightning.errors import RunError

#: Types beyond tensors and plain containers that this project's checkpoints need (none today). Listed
#: here, and registered with ``torch.serialization.add_safe_globals``, when a checkpoint starts holding one.
SAFE_GLOBALS: tuple[type, ...] = ()


def refusal(path: str | Path, error: BaseException) -> RunError:
    """The error for a checkpoint that ``weights_only`` loading refuses: one that names a Python object to
    call (it could run code), or a damaged file (it does not load)."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
    if found is None:
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(error))
        reason = detail.group(1).strip() if detail else f"{type(error).__name__}: {error}"
        return RunError(f"Checkpoint '{path}' does not load: the file is damaged or not a checkpoint ({reason}).")
    return RunError(
        f"Checkpoint '{path}' holds more than tensors and plain data (it calls {found.group(1)}); loading it could "
        "run code, so it is refused. This project's checkpoints never need that: the file was written elsewhere or was tampered "
        "with. If you trust it, re-save its state dict yourself (torch.load(path, weights_only=False) in a "
        "session of your own) or allow its types with torch.serialization.add_safe_globals([...]) before loading."
    )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents (on the CPU), loaded with ``weights_only=True``."""
    import torch

    _register_safe_globals()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise refusal(path, error) from None


def _register_safe_globals() -> None:
    if SAFE_GLOBALS:
        import torch

        torch.serialization.add_safe_globals(list(SAFE_GLOBALS))
