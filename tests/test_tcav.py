"""TCAV with concepts cut from masks (xai_lightning.evaluation.tcav): chance is not significant, a planted shortcut is.

The known answer is the one of tests/test_known_answer.py, whose data module and training are reused here:
``hole`` against ``good`` at 48 px, every hole image carrying a magenta ring
away from the defect, a resnet18 trained for a few epochs on one CPU thread. A "marker" concept, patches cut inside
the marker masks, must then drive the model's ``hole`` logit (significant, above chance) and not its ``good`` one.

Not asserted, because it does not hold: a control model trained without markers gets the same TCAV answer (the
marker concept drives its ``hole`` logit too, p 0.0002-0.03 at seeds 0-4), so here TCAV tells "the marker looks
unlike good nut patches, and hole is the not-good class" rather than "the model uses the marker". What does separate
the two models is the transplant effect, the interventional number next to each TCAV score: the marker's own pixels
pasted onto good nuts raise the shortcut model's log p(hole) by 2.85-5.70 (median over images, seeds 0-4) and the
control's by -0.25-0.86.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

# The known-answer set and its seeded training, shared with the test that checks the shortcut itself.
from test_known_answer import _datamodule as known_answer_datamodule
from test_known_answer import _train
from torch import Tensor

from xai_lightning.data.cache import ResizedImageCache
from xai_lightning.data.datamodule import MVTecDataModule
from xai_lightning.data.synthetic import shortcut_mask_path
from xai_lightning.errors import ConfigError
from xai_lightning.evaluation.tcav import (
    TCAV_COLUMNS,
    concept_matches,
    check_layer,
    concept_scores,
    default_layer,
    layer_for_backbone,
    neutral_colour,
    paste_centred,
    patch_side,
    patches_inside,
    random_patches,
    score_table,
    significance,
    tcav_table,
    transplant_effects,
)
from xai_lightning.models import MultiTaskClassifier
from xai_lightning.runs import LoadedRun, Run

pytestmark = pytest.mark.slow

# The known-answer set of tests/test_known_answer.py with two classes; IMAGE_SIZE is its input size.
PER_CLASS = 24
COUNTS = {"train/good": 1, "test/good": PER_CLASS, "test/hole": PER_CLASS}
IMAGE_SIZE = 48
SEED = 0
PATCHES = 20
RANDOM_RUNS = 10


@dataclass
class Arm:
    """The trained model with its data module."""

    model: MultiTaskClassifier
    data: MVTecDataModule


def _datamodule(root: Path, shortcut_fraction: float) -> MVTecDataModule:
    """The known-answer set of tests/test_known_answer.py, with only the hole and good classes."""
    return known_answer_datamodule(root, shortcut_fraction, counts=COUNTS)


@pytest.fixture(scope="module")
def arm(tmp_path_factory, one_thread) -> Arm:
    """The shortcut model, trained on the marked set."""
    data = _datamodule(tmp_path_factory.mktemp("tcav-known-answer") / "shortcut", 1.0)
    return Arm(_train(data), data)


@pytest.fixture(scope="module")
def control(tmp_path_factory, one_thread) -> Arm:
    """The control model, trained the same way on the same images without markers."""
    data = _datamodule(tmp_path_factory.mktemp("tcav-known-answer") / "control", 0.0)
    return Arm(_train(data), data)


def _split_images(data: MVTecDataModule, split: str, label: str) -> tuple[Tensor, list[str]]:
    """The images of ``label`` in ``split`` and their paths."""
    frame, dataset = data.frame(split), data.dataset(split)
    positions = [i for i, name in enumerate(frame["label"]) if name == label]
    images = torch.stack([dataset[i]["image"] for i in positions])
    return images, [frame["image_path"].iloc[i] for i in positions]


def _marked_holes(marked: MVTecDataModule) -> tuple[Tensor, Tensor]:
    """The marked set's training hole images and their marker masks (resized like the defect masks, as
    tests/test_known_answer.py does)."""
    images, paths = _split_images(marked, "train", "hole")
    cache = ResizedImageCache(IMAGE_SIZE)
    masks = torch.stack([torch.from_numpy(cache.mask(shortcut_mask_path(path))) > 0 for path in paths])
    assert masks.flatten(1).any(1).all()
    return images, masks


def _marker_concept(marked: MVTecDataModule, generator: torch.Generator) -> list[Tensor]:
    """One set per run of patches cut inside the marker masks of the marked set's training hole images."""
    images, masks = _marked_holes(marked)
    return [patches_inside(images, masks, PATCHES, patch_side(IMAGE_SIZE), generator) for _ in range(RANDOM_RUNS)]


def _random_sets(data: MVTecDataModule, generator: torch.Generator) -> list[Tensor]:
    """One set per run of random patches of the training good images."""
    good, _ = _split_images(data, "train", "good")
    return [random_patches(good, PATCHES, patch_side(IMAGE_SIZE), generator) for _ in range(RANDOM_RUNS)]


def _inputs(data: MVTecDataModule) -> dict[int, Tensor]:
    """Held-out (val + test) images of each class, by class index: what the TCAV scores are taken over."""
    inputs = {}
    for index, label in enumerate(data.class_names):
        inputs[index] = torch.cat([_split_images(data, split, label)[0] for split in ("val", "test")])
    return inputs


def test_significance_is_a_two_sided_t_test():
    """The p-value is scipy's two-sided t-test, with the constant-sample cases decided rather than NaN."""
    assert significance([0.9, 0.8, 1.0], [0.1, 0.2, 0.0]) < 0.01
    assert significance([0.1, 0.2, 0.0], [0.9, 0.8, 1.0]) < 0.01  # below chance is significant too
    assert significance([0.4, 0.6, 0.5], [0.5, 0.4, 0.6]) > 0.5
    assert significance([1.0, 1.0], [1.0, 1.0]) == 1.0 and significance([1.0, 1.0], [0.0, 0.0]) == 0.0


def test_a_random_concept_is_not_significant(arm):
    """Random-vs-random: a "concept" that is just another set of random good patches is not significant for any
    class, and its mean score stays near chance's."""
    generator = torch.Generator().manual_seed(SEED)
    random_concept, counterparts, chance = (_random_sets(arm.data, generator) for _ in range(3))
    layer = default_layer(arm.model)
    results = concept_scores(arm.model, layer, {"random": random_concept}, counterparts, chance, _inputs(arm.data))
    table = score_table(results, arm.data.class_names, layer)
    assert len(table) == len(arm.data.class_names)
    assert not table["significant"].any(), table.to_string()
    assert ((table["tcav_score"] - table["random_score"]).abs() < 0.3).all(), table.to_string()


def test_the_marker_concept_drives_the_shortcut_class_only(arm):
    """Known answer: patches of the marker are significant, above chance, for the shortcut model's ``hole`` class,
    and do not drive its ``good`` class (the control class: good images never carry the marker), whose score falls
    below chance instead (the marker pushes ``good`` down)."""
    generator = torch.Generator().manual_seed(SEED)
    layer = default_layer(arm.model)
    concepts = {"marker": _marker_concept(arm.data, generator)}
    counterparts, chance = _random_sets(arm.data, generator), _random_sets(arm.data, generator)
    results = concept_scores(arm.model, layer, concepts, counterparts, chance, _inputs(arm.data))
    rows = {row["class"]: row for row in score_table(results, arm.data.class_names, layer).to_dict("records")}
    report = "\n".join(f"{label}: score {r['tcav_score']:.2f} chance {r['random_score']:.2f} p {r['p_value']:.3g} "
                       f"CAV accuracy {r['cav_accuracy']:.2f}" for label, r in rows.items())  # fmt: skip
    hole, good = rows["hole"], rows["good"]
    assert hole["significant"] and hole["tcav_score"] > hole["random_score"], report
    assert not (good["significant"] and good["tcav_score"] > good["random_score"]), report
    assert good["tcav_score"] < good["random_score"], report


def test_the_tcav_layer_is_chosen_per_backbone_and_a_wrong_one_is_named():
    """``--tcav-layer`` values: a backbone's own entry first, then the one for every backbone, else the default;
    malformed and repeated entries, and a path outside the model's encoder, are refused with the option."""
    values = ["encoder.layer3", "vit_b_16=encoder.encoder"]
    assert layer_for_backbone(values, "vit_b_16") == "encoder.encoder"
    assert layer_for_backbone(values, "resnet18") == "encoder.layer3"
    assert layer_for_backbone(["vit_b_16=encoder.encoder"], "resnet18") is None
    for bad in (["=encoder.layer3"], ["resnet18="], ["resnet18=a=b"], ["encoder.layer2", "encoder.layer3"]):
        with pytest.raises(ConfigError, match="--tcav-layer"):
            layer_for_backbone(bad, "resnet18")
    model = MultiTaskClassifier("resnet18", class_names=["good", "hole"])
    assert check_layer(model.encoder, "encoder.layer2") == "encoder.layer2"
    assert check_layer(model.encoder, "encoder.layer2.0.conv1") == "encoder.layer2.0.conv1"
    # Not in the encoder: a typo, the encoder itself, and the segmentation decoder (no class logit runs through it).
    for wrong in ("encoder.layer9", "encoder", "decoder.deep"):
        assert wrong == "encoder" or wrong not in [f"encoder.{name}" for name, _ in model.encoder.named_modules()]
        with pytest.raises(ConfigError, match=rf"'{wrong}'.*encoder\.layer1, encoder\.layer2"):
            check_layer(model.encoder, wrong, backbone="resnet18")


def test_concept_patches_sit_on_the_mean_colour_of_the_models_input_space():
    """The neutral image is zeros for a model that takes normalised images and the ImageNet mean colour for one that
    takes [0, 1] values (``data.normalize: false``), as the curves' ``mean`` baseline is."""
    from xai_lightning.data.transforms import IMAGENET_MEAN

    normalised = MultiTaskClassifier("resnet18", class_names=["good", "hole"])
    raw = MultiTaskClassifier("resnet18", class_names=["good", "hole"], normalize_input=False)
    assert torch.equal(neutral_colour(normalised), torch.zeros(3))
    assert torch.allclose(neutral_colour(raw), torch.tensor(IMAGENET_MEAN))
    patch = torch.ones(3, 2, 2)
    pasted = paste_centred(patch, 6, neutral_colour(raw))
    assert torch.equal(pasted[:, 2:4, 2:4], patch)
    assert torch.allclose(pasted[:, 0, 0], torch.tensor(IMAGENET_MEAN))
    assert torch.equal(paste_centred(patch, 6)[:, 0, 0], torch.zeros(3))


class _Recorder(torch.nn.Module):
    """A classifier double that remembers what it was shown and scores every class 0."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Tensor] = []

    def classify(self, images: Tensor) -> Tensor:
        self.seen.append(images.clone())
        return images.new_zeros((len(images), 2))


def test_a_transplant_pastes_only_the_masked_pixels_of_a_source_with_a_mask():
    """Each target gets the pixels inside one source's mask, at the same place, and nothing else; a source with an
    empty mask is never drawn; a model that ignores its input changes by exactly 0."""
    sources = torch.stack([torch.full((3, 4, 4), 1.0), torch.full((3, 4, 4), 2.0)])
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[1, 1:3, 0] = True  # only the second source has a mask
    targets = torch.zeros(5, 3, 4, 4)
    model = _Recorder()
    effects = transplant_effects(model, sources, masks, targets, torch.Generator().manual_seed(0))
    before, after = model.seen
    assert torch.equal(before, targets) and effects.shape == (5, 2) and not effects.any()
    expected = torch.zeros(5, 3, 4, 4)
    expected[:, :, 1:3, 0] = 2.0
    assert torch.equal(after, expected)
    with pytest.raises(ValueError, match="non-empty mask"):
        transplant_effects(model, sources, torch.zeros_like(masks), targets, torch.Generator())


def test_the_marker_transplant_separates_the_shortcut_model_from_the_control(arm, control):
    """Known answer, interventionally: pasting the marker's pixels onto held-out good nuts makes the shortcut model
    much surer of ``hole`` (median gain in log p(hole) 2.85-5.70 over seeds 0-4) and the control barely so (-0.25 to
    0.86); pasting the hole defect itself barely moves the shortcut model (-0.01 to 0.07), which ignores the defect."""
    hole = arm.data.class_names.index("hole")
    assert control.data.class_names == arm.data.class_names
    sources, marker = _marked_holes(arm.data)
    defect = torch.stack([arm.data.dataset("train")[i]["mask"][0] > 0 for i, label in
                          enumerate(arm.data.frame("train")["label"]) if label == "hole"])  # fmt: skip
    good = _inputs(arm.data)[arm.data.class_names.index("good")]  # the same good images in both sets

    def gain(model: MultiTaskClassifier, masks: Tensor) -> float:
        effects = transplant_effects(model, sources, masks, good, torch.Generator().manual_seed(SEED))
        return float(effects[:, hole].median())

    shortcut, unmarked, defect_gain = gain(arm.model, marker), gain(control.model, marker), gain(arm.model, defect)
    report = (
        f"marker: shortcut {shortcut:+.2f}, control {unmarked:+.2f}; defect on the shortcut model {defect_gain:+.2f}"
    )
    assert shortcut > 1.4, report
    assert unmarked < 0.5 * shortcut, report
    assert defect_gain < 0.5, report


def test_tcav_table_has_one_row_per_class_and_concept(arm, tmp_path, monkeypatch):
    """``tcav_table`` of a loaded run: every (class, defect concept) once, p-values in [0, 1], and the matches
    table one row per defect class."""
    import xai_lightning.evaluation.tcav as tcav

    # Each concept's transplant effects tell which concept (call order) and class (column) they belong to.
    calls: list[int] = []

    def numbered_effects(model, sources, masks, targets, generator):
        calls.append(len(calls))
        classes = torch.arange(len(arm.data.class_names), dtype=torch.float32)
        return (100.0 * calls[-1] + classes).repeat(len(targets), 1)  # not expand: median of a stride-0 tensor is wrong

    monkeypatch.setattr(tcav, "transplant_effects", numbered_effects)
    loaded = LoadedRun(Run(tmp_path / "known_answer" / "seed0", planned_seed=0), arm.model, arm.data, "best")
    table = tcav_table(loaded, split="train", patches_per_concept=PATCHES, random_runs=RANDOM_RUNS, seed=SEED)
    defects = [name for name in arm.data.class_names if name != "good"]
    assert list(table.columns) == TCAV_COLUMNS
    assert len(table) == len(arm.data.class_names) * len(defects)
    assert not table.duplicated(["class", "concept"]).any()
    assert table["p_value"].between(0, 1).all()
    concept_order = [name for name in arm.data.class_names if name in defects]
    expected = [100.0 * concept_order.index(concept) + arm.data.class_names.index(label) for label, concept in
                zip(table["class"], table["concept"])]  # fmt: skip
    assert table["transplant_effect"].tolist() == expected
    assert (table["layer"] == default_layer(arm.model)).all()
    assert set(table[["experiment", "run", "seed"]].itertuples(index=False)) == {("known_answer", "seed0", 0)}
    matches = concept_matches(table)
    assert list(matches["class"]) == defects
