"""A saved run is read as it was trained: its split, its data root, and an experiment where one run is broken."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import smoke_args

from xai_lightning.cli import main
from xai_lightning.data.mvtec import build_index
from xai_lightning.data.splits import SplitConfig, stratified_split
from xai_lightning.runs import Run

pytestmark = pytest.mark.slow

#: One quick epoch, no attribution callback, no test: what these checks need of a run.
QUICK = ["--trainer.max_epochs", "1", "--trainer.callbacks", "[]", "--test_after_fit", "false"]


def _add_defect_images(data_root: Path, label: str, count: int) -> list[str]:
    """Copy an existing defect image and its mask under new names (images added after training)."""
    category = data_root / "hazelnut"
    added = []
    for i in range(count):
        name = f"9{i:02d}"
        shutil.copy(category / "test" / label / "000.png", category / "test" / label / f"{name}.png")
        shutil.copy(
            category / "ground_truth" / label / "000_mask.png", category / "ground_truth" / label / f"{name}_mask.png"
        )
        added.append(f"test/{label}/{name}")
    return added


def _assignment(frame: pd.DataFrame) -> dict[str, str]:
    return dict(zip(frame["image_id"], frame["split"]))


def test_evaluation_and_resume_use_the_saved_split_and_name_what_changed_on_disk(dataset_copy, tmp_path):
    main(smoke_args(dataset_copy, tmp_path / "exp", *QUICK))
    run = Run(tmp_path / "exp" / "seed0")
    saved = pd.read_csv(run.path / "split.csv", index_col="row")
    added = _add_defect_images(dataset_copy, "crack", 2)
    removed = saved[saved["split"] == "val"].iloc[0]
    Path(removed["image_path"]).unlink()
    # Splitting anew is not the run's split: images move between train, val and test.
    resplit = _assignment(
        stratified_split(build_index(dataset_copy), SplitConfig(val_fraction=0.34, test_fraction=0.33))
    )
    assert any(resplit.get(image) != split for image, split in _assignment(saved).items())

    with pytest.warns(UserWarning) as warned:
        data = run.load_datamodule()
    messages = " ".join(str(w.message) for w in warned)
    assert f"no longer on disk and are left out: {removed['image_id']}" in messages
    assert all(image in messages for image in added) and "not in the run's split" in messages
    expected = saved.drop(index=removed.name)
    pd.testing.assert_index_equal(data.split_frame.index, expected.index)
    assert _assignment(data.split_frame) == _assignment(expected)

    with pytest.warns(UserWarning, match="not in the run's split"):  # a resumed run keeps its split too
        main(smoke_args(dataset_copy, tmp_path / "exp", *QUICK[2:], "--trainer.max_epochs", "2", "--resume", "last"))
    assert _assignment(pd.read_csv(run.path / "split.csv")) == _assignment(expected)


def test_a_relative_data_root_resolves_against_where_the_run_was_trained(dataset_copy, tmp_path, monkeypatch):
    monkeypatch.chdir(dataset_copy.parent)  # the data is ./data here
    main(smoke_args(Path("data"), tmp_path / "exp", *QUICK))
    monkeypatch.chdir(tmp_path / "exp")  # evaluated from elsewhere: ./data is not there
    run = Run(tmp_path / "exp" / "seed0")
    assert run.data_root() == dataset_copy
    data = run.load_datamodule()
    data.setup()
    assert len(data.frame("test")) > 0


def test_one_broken_run_keeps_the_other_runs_results_and_is_named(smoke_root, tmp_path, capsys):
    from xai_lightning.evaluate import main as evaluate

    for seed in (0, 1):
        main(smoke_args(smoke_root, tmp_path, *QUICK, "--seed_everything", str(seed)))
    for checkpoint in (tmp_path / "seed1" / "checkpoints").glob("*.ckpt"):
        checkpoint.write_bytes(checkpoint.read_bytes()[:1000])  # damaged: seed 1 cannot be evaluated
    shutil.copytree(tmp_path / "seed0", tmp_path / "seed2")
    (tmp_path / "seed2" / "config.yaml").unlink()

    table = evaluate([str(tmp_path), "--methods", "--no-wandb", "--out", str(tmp_path / "evaluation")])
    printed = capsys.readouterr().out
    assert "without config.yaml" in printed and "seed2" in printed
    assert set(table["run"]) == {"seed0"} and list(table.attrs["failed"]) == [f"{tmp_path.name}/seed1"]
    assert "seed1" in printed and "damaged" in table.attrs["failed"][f"{tmp_path.name}/seed1"]
    assert "FAILED and left out" in (tmp_path / "evaluation" / "report.md").read_text()
    assert set(pd.read_csv(tmp_path / "evaluation" / "metrics.csv")["run"]) == {"seed0"}
