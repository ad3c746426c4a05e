"""Weights & Biases set-up: offline unless the user is logged in, and the commands to sync later."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

OFFLINE_HINT = "wandb sync {run_dir}"


def resolve_wandb_mode() -> str:
    """``WANDB_MODE`` if the user set it; else ``online`` with credentials, ``offline`` without.

    Credentials are an API key in ``WANDB_API_KEY`` or a ``wandb login`` entry in ``~/.netrc``.
    Without them wandb would prompt or fail on a machine with no network; offline runs are
    uploaded later with ``wandb sync``.
    """
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        auth = netrc.netrc(os.environ.get("NETRC")).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        auth = None
    return "online" if auth and auth[2] else "offline"


def wandb_run_dir(logger) -> Path | None:
    """Local folder of the W&B run behind a ``WandbLogger`` (``.../wandb/offline-run-*``), if it started."""
    run = getattr(logger, "_experiment", None)
    if run is None or not getattr(run, "dir", None):
        return None
    return Path(run.dir).parent


# --- Reading an offline run back -------------------------------------------------------------
# wandb (>= 0.18) no longer ships a Python reader for its ``run-*.wandb`` files (the Go core reads
# them), yet tests and evaluate.py need what a run logged without a network. The format is
# LevelDB's log: a 7-byte header, then records cut into 32 KiB blocks, each chunk with a 7-byte
# header (crc32c, little-endian length, type FULL/FIRST/MIDDLE/LAST); each whole record is a
# protobuf ``wandb_internal_pb2.Record``.
_FILE_HEADER = 7
_BLOCK = 32 * 1024
_CHUNK_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def iter_wandb_records(path: str | Path):
    """Yield every ``Record`` protobuf of an offline run file (``.../run-<id>.wandb``) in order."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"'{path}' is not a W&B run file (it should start with ':W&B').")
    offset, pending = _FILE_HEADER, b""
    while offset + _CHUNK_HEADER <= len(data):
        space = _BLOCK - offset % _BLOCK
        if space < _CHUNK_HEADER:  # trailer padding of a block
            offset += space
            continue
        length = int.from_bytes(data[offset + 4 : offset + 6], "little")
        kind = data[offset + 6]
        start = offset + _CHUNK_HEADER
        if start + length > len(data):  # the writer is still busy with this chunk
            return
        chunk = data[start : start + length]
        offset = start + length
        if kind == 0 and length == 0:  # zero padding at the end of a block
            offset += _BLOCK - offset % _BLOCK if offset % _BLOCK else 0
            continue
        if kind in (_FULL, _FIRST):
            pending = chunk
        elif kind in (_MIDDLE, _LAST):
            pending += chunk
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def read_wandb_history(run_dir: str | Path, wait: float = 30.0):
    """Logged history rows of an offline W&B run folder (``.../offline-run-*``) as a pandas DataFrame.

    Nested keys are joined with ``/``; media (images, tables) appear as their JSON descriptors.
    wandb's service process writes the file asynchronously, also after ``wandb.finish()`` returns;
    up to ``wait`` seconds are spent waiting for the run's closing ``exit`` record.
    """
    import json
    import time

    import pandas as pd

    run_file = next(Path(run_dir).glob("run-*.wandb"), None)
    if run_file is None:
        raise FileNotFoundError(f"No run-*.wandb file in '{run_dir}'.")
    deadline = time.monotonic() + wait
    records = list(iter_wandb_records(run_file))
    while not any(r.WhichOneof("record_type") == "exit" for r in records) and time.monotonic() < deadline:
        time.sleep(0.2)
        records = list(iter_wandb_records(run_file))
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            row = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            rows.append(row)
    return pd.DataFrame(rows)
