"""The studies behind README claims still run: each on the smallest setting that exercises all of its code."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow


def test_the_tcav_control_study_measures_both_arms(capsys):
    """``python -m studies.tcav_control``: one row per (seed, arm) with every measured column finite, a p-value in
    [0, 1] and the summary printed. (Two epochs teach the models too little for the numbers to mean anything.)"""
    from studies.tcav_control import main

    threads = torch.get_num_threads()
    try:
        table = main(["--seeds", "0", "--per-class", "12", "--epochs", "2"])
    finally:
        torch.set_num_threads(threads)
    assert list(table["arm"]) == ["shortcut", "control"]
    measured = ["balanced_acc", "tcav_marker", "tcav_chance", "tcav_p", "marker_transplant", "defect_transplant"]
    assert table[measured].notna().all().all() and table["tcav_p"].between(0, 1).all()
    assert "marker_transplant_min" in capsys.readouterr().out
