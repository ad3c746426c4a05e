"""The stratified split is seeded, covers every class in every split and explains when it cannot."""

from __future__ import annotations

import pandas as pd
import pytest

from xai_lightning.data.mvtec import build_index
from xai_lightning.data.splits import SplitConfig, split_summary, stratified_split
from xai_lightning.errors import ConfigError, DatasetError


@pytest.fixture(scope="module")
def index(smoke_root) -> pd.DataFrame:
    return build_index(smoke_root, "hazelnut")


def test_every_class_in_every_split_with_the_asked_fractions(index):
    split = stratified_split(index, SplitConfig(val_fraction=0.34, test_fraction=0.33, seed=0))
    table = split_summary(split)
    assert list(table.columns) == ["train", "val", "test"]
    assert (table.values == 2).all()  # 6 images per class -> 2 / 2 / 2
    assert split["image_id"].is_unique
    assert set(split["image_id"]) == set(index.loc[index["mvtec_split"] == "test", "image_id"])


def test_same_seed_same_split_other_seed_other_split(index):
    config = SplitConfig(val_fraction=0.34, test_fraction=0.33, seed=3)
    first, again = stratified_split(index, config), stratified_split(index, config)
    pd.testing.assert_frame_equal(first, again)
    other = stratified_split(index, SplitConfig(val_fraction=0.34, test_fraction=0.33, seed=4))
    assert not first.set_index("image_id")["split"].equals(other.set_index("image_id").loc[first["image_id"], "split"])


def test_capped_sample_of_train_good_joins_the_pool(index):
    split = stratified_split(index, SplitConfig(val_fraction=0.34, test_fraction=0.33, max_train_good=3))
    from_train = split[split["mvtec_split"] == "train"]
    assert len(from_train) == 3 and set(from_train["label"]) == {"good"}
    assert (split["label"] == "good").sum() == 9


def test_a_class_left_without_images_in_a_split_is_an_error(index):
    with pytest.raises(DatasetError, match=r"leaves it no image in 'val'.*val_fraction"):
        stratified_split(index, SplitConfig(val_fraction=0.05, test_fraction=0.4))


@pytest.mark.parametrize(
    "options, option",
    [({"val_fraction": 1.2}, "val_fraction"), ({"val_fraction": 0.5, "test_fraction": 0.5}, "test_fraction"),
     ({"max_train_good": -1}, "max_train_good")],
)
def test_bad_split_options_name_the_option(options, option):
    with pytest.raises(ConfigError, match=option):
        SplitConfig(**options)
