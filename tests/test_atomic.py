"""Result files are replaced whole or not at all: a full disk leaves the finished version in place."""

from __future__ import annotations

import errno

import pandas as pd
import pytest

from xai_lightning.atomic import WriteError, write_atomically


def _fills_the_disk(path):
    path.write_text("half a tab")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_keeps_the_previous_file_and_says_what_filled(tmp_path):
    target = tmp_path / "tables" / "tko.csv"
    write_atomically(target, lambda p: p.write_text("finished table"))
    with pytest.raises(WriteError, match=r"'.*tko.csv' \(the disk is full\).*unchanged.*Free space"):
        write_atomically(target, _fills_the_disk)
    assert target.read_text() == "finished table"
    assert [p.name for p in target.parent.iterdir()] == ["tko.csv"]  # no temporary file left behind


def test_the_callback_csv_sink_writes_atomically(tmp_path, monkeypatch):
    from xai_lightning.callbacks.sinks import write_pass_csv
    from xai_lightning.scoring import PassResult

    frame = pd.DataFrame({"image_id": ["a"], "class": ["crack"], "tko/m": [0.5]})
    result = PassResult(split="val", epoch=3, step=0, methods=["m"], values={}, win_rate={}, counts={}, per_image=frame)
    path = write_pass_csv(result, tmp_path)
    before = path.read_bytes()

    def full_disk(self, target, **kwargs):
        _fills_the_disk(target)

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    with pytest.raises(WriteError, match="val_epoch003.csv"):
        write_pass_csv(result, tmp_path)
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1
