"""Known answer (issue 6): a classifier trained with a planted shortcut leans on it, and the metrics say so.

Two small synthetic sets are written by the project's own generator with the same seed: one with a
class-specific marker on every defect image (``shortcut_fraction=1``) and a control without markers.
The generator draws the marker from a separate random stream, so the two sets hold the same nuts,
defects, defect masks and split, and differ only in the marker's pixels. The same ``MultiTaskClassifier``
(resnet18 from scratch, segmentation head on) is trained on each by a Lightning ``Trainer``, and both
models are explained on the same held-out marked images, for their true class. What differs between
the two arms is therefore only what the weights learnt, and the known answer is the direction of
every effect: attributions of the shortcut model move from the defect to the marker (top-K overlap),
deleting what they point at (or just the marker) removes the evidence the model uses (deletion), and
the marker attribution disappears when the learnt weights are randomised (Adebayo's check).

The run is deliberately small (48 px images, ``hole`` against ``good``, a few epochs, one CPU
thread) so the file runs in under a minute; the margins asserted below are about half the smallest
gap seen over three seeds (numbers next to them).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import default_collate

from xai_lightning.data.cache import ResizedImageCache
from xai_lightning.data.datamodule import MVTecDataModule
from xai_lightning.data.splits import SplitConfig
from xai_lightning.data.synthetic import (
    SyntheticConfig,
    shortcut_mask_path,
    shortcut_settings,
)
from xai_lightning.data.transforms import AugmentationConfig
from xai_lightning.explain import build_explainers, explain_batch
from xai_lightning.metrics import (
    curve_area,
    curve_baseline,
    deletion_curve,
    top_k_overlap,
)
from xai_lightning.metrics.sanity import default_randomization_layers, randomize_layer
from xai_lightning.models import MultiTaskClassifier

# One CPU thread for the whole module (tests/conftest.py `one_thread`).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

#: One defect class (``hole``, the marker a magenta ring) against ``good``, which never carries a marker:
#: the smallest problem in which the marker predicts the class. With more classes a run this short leaves
#: the control unable to tell the defects apart, so its maps point nowhere and effect (1) has nothing to
#: compare with. One ``train/good`` image only because an MVTec category must have that folder
#: (``max_train_good: 0`` keeps it out of the split).
DEFECTS = ("hole",)
PER_CLASS = 24
COUNTS = {
    "train/good": 1,
    "test/good": PER_CLASS,
    **{f"test/{defect}": PER_CLASS for defect in DEFECTS},
}
GENERATED_SIZE = 96
IMAGE_SIZE = 48
#: Marker side as a fraction of the generated image: 14 px of 96, 7 px after resizing to 48.
SHORTCUT_SIZE = 0.15
SPLIT = SplitConfig(val_fraction=0.1, test_fraction=0.35, seed=0)
#: No augmentation: fewer epochs to learn, and the run is the same bit for bit.
NO_AUGMENTATION = AugmentationConfig(
    hflip=0.0, vflip=0.0, rotate_p=0.0, color_jitter_p=0.0
)
EPOCHS = 10
BATCH_SIZE = 8
LR = 1e-3
#: A fixed learning rate. (The configs' cosine schedule passes too, but leaves a narrower deletion margin.)
SCHEDULER = "none"
SEED = 0
GRADIENT_METHODS = ("saliency", "input_x_gradient")
# Margins. Observed over seeds 0, 1 and 2 (SEED in both the data and the training; 11 held-out hole images):
# true-class probability lost when only the marker is blurred away: shortcut 0.63-0.84, control -0.04-0.00;
# TKO against the marker: shortcut 0.56-0.65, control 0.03-0.12, random map 0.00-0.01;
# TKO against the defect: shortcut 0.000-0.004, control 0.11-0.18;
# deletion area on the shortcut model: gradient maps 0.04-0.06, random map 0.25-0.60;
# TKO against the marker after randomising every layer: 0.01-0.03 (random map 0.00-0.01).
# Each margin is at most about half the smallest gap seen.
MARKER_DROP_MARGIN = 0.3
TKO_MARGIN = 0.3
DEFECT_TKO_MARGIN = 0.05
DELETION_MARGIN = 0.1
#: Points of the deletion curve: 10 % of the image per step; the marker is ~1 % of it.
DELETION_STEPS = 10
#: A fully randomised net still reacts a little to a saturated patch; far below the trained model's 0.6.
RANDOMISED_SLACK = 0.15
METHODS = {name: {"method": name} for name in (*GRADIENT_METHODS, "random")}


@dataclass
class KnownAnswer:
    """Both trained models and the held-out marked images they are explained on (true class as target)."""

    shortcut: MultiTaskClassifier
    control: MultiTaskClassifier
    images: Tensor  # (B, 3, H, W) normalised, from the marked set
    targets: Tensor  # (B,) ground-truth classes
    defect: Tensor  # (B, H, W) bool defect masks (identical in both sets)
    marker: Tensor  # (B, H, W) bool marker masks


def _datamodule(
    root: Path,
    shortcut_fraction: float,
    counts: dict[str, int] = COUNTS,
    image_size: int = IMAGE_SIZE,
    seed: int = SEED,
) -> MVTecDataModule:
    """The known-answer set (generated at ``GENERATED_SIZE``, or ``image_size`` if larger), set up; ``seed`` seeds
    the generator (the split is always ``SPLIT``)."""
    synthetic = SyntheticConfig(
        size=max(GENERATED_SIZE, image_size),
        seed=seed,
        counts=counts,
        shortcut_fraction=shortcut_fraction,
        shortcut_size=SHORTCUT_SIZE,
    )
    data = MVTecDataModule(
        root=str(root),
        source="synthetic",
        image_size=image_size,
        batch_size=BATCH_SIZE,
        num_workers=0,
        split=SPLIT,
        augmentation=NO_AUGMENTATION,
        synthetic=synthetic,
    )
    data.prepare_data()
    data.setup()
    return data


def _train(data: MVTecDataModule, seed: int = SEED, epochs: int = EPOCHS) -> MultiTaskClassifier:
    """The project's model and training step, seeded; no validation, logger or checkpoint (nothing to pick)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = MultiTaskClassifier(
            "resnet18", class_names=data.class_names, lr=LR, scheduler=SCHEDULER
        )
        trainer = pl.Trainer(
            max_epochs=epochs,
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
        )
        trainer.fit(model, train_dataloaders=data.train_dataloader())
    return model.eval()


@pytest.fixture(scope="module")
def known_answer(tmp_path_factory, one_thread) -> KnownAnswer:
    """Both sets generated, both models trained, the held-out marked images loaded."""
    return build_known_answer(tmp_path_factory.mktemp("known-answer"))


def build_known_answer(root: Path) -> KnownAnswer:
    """Generate the marked and the control set under ``root``, train a model on each, load the held-out
    (val + test) defect images of the marked set with their defect and marker masks."""
    marked = _datamodule(root / "shortcut", 1.0)
    control = _datamodule(root / "control", 0.0)
    assert shortcut_settings(marked.root)["marked"]["hole"] == PER_CLASS
    assert shortcut_settings(control.root) is None
    # Same images (but for the marker) in the same splits: the split sees names and labels only.
    for split in ("train", "val", "test"):
        assert list(marked.frame(split)["image_id"]) == list(
            control.frame(split)["image_id"]
        )
    shortcut_model, control_model = _train(marked), _train(control)
    samples, paths = [], []
    for split in ("val", "test"):
        frame = marked.frame(split)
        dataset = marked.dataset(split)
        for position, (label, path) in enumerate(
            zip(frame["label"], frame["image_path"])
        ):
            if label != "good":
                samples.append(dataset[position])
                paths.append(path)
    batch = default_collate(samples)
    # Marker masks resized exactly like the defect masks (as xai_lightning.evaluate does).
    cache = ResizedImageCache(IMAGE_SIZE)
    marker = torch.stack(
        [torch.from_numpy(cache.mask(shortcut_mask_path(path))) > 0 for path in paths]
    )
    defect = batch["mask"][:, 0] > 0
    assert marker.flatten(1).any(1).all() and defect.flatten(1).any(1).all()
    assert not (marker & defect).any()  # the generator keeps the two targets apart
    return KnownAnswer(
        shortcut_model, control_model, batch["image"], batch["label"], defect, marker
    )


def _maps(
    model: MultiTaskClassifier, images: Tensor, targets: Tensor
) -> dict[str, Tensor]:
    result = explain_batch(build_explainers(METHODS, model, seed=SEED), images, targets)
    assert not result.errors, result.errors
    return result.maps


def _probability(model: MultiTaskClassifier, images: Tensor, targets: Tensor) -> Tensor:
    with torch.no_grad():
        return model.classify(images).softmax(1).gather(1, targets[:, None])[:, 0]


def _mean(values: Tensor) -> float:
    return float(values.double().mean())


def test_the_shortcut_model_uses_the_marker_and_the_control_does_not(known_answer):
    """The premise, checked on the model itself: blurring away just the marker costs the shortcut model much of
    its confidence in the true class, and the control (which never saw a marker) next to nothing."""
    ka = known_answer
    unmarked = torch.where(ka.marker[:, None], curve_baseline(ka.images), ka.images)
    drops = {}
    for name, model in (("shortcut", ka.shortcut), ("control", ka.control)):
        drops[name] = _mean(
            _probability(model, ka.images, ka.targets)
            - _probability(model, unmarked, ka.targets)
        )
    assert drops["shortcut"] > drops["control"] + MARKER_DROP_MARGIN, (
        f"mean drop of the true-class probability when the marker is deleted: {drops}"
    )


def test_top_k_overlap_moves_from_the_defect_to_the_marker(known_answer):
    """Gradient maps of the shortcut model overlap the marker more, and the defect less, than the control's on the
    same images; and far more than the random map overlaps the marker."""
    ka = known_answer
    maps = {
        "shortcut": _maps(ka.shortcut, ka.images, ka.targets),
        "control": _maps(ka.control, ka.images, ka.targets),
    }
    scores = {
        (arm, method, target): _mean(top_k_overlap(maps[arm][method], mask))
        for arm in maps
        for method in METHODS
        for target, mask in (("marker", ka.marker), ("defect", ka.defect))
    }
    table = "mean TKO per model, method and mask:\n" + "\n".join(
        f"{arm:8s} {method:16s} {target}: {value:.3f}"
        for (arm, method, target), value in scores.items()
    )
    for method in GRADIENT_METHODS:
        assert (
            scores["shortcut", method, "marker"]
            > scores["control", method, "marker"] + TKO_MARGIN
        ), table
        assert (
            scores["shortcut", method, "marker"]
            > scores["shortcut", "random", "marker"] + TKO_MARGIN
        ), table
        assert (
            scores["shortcut", method, "defect"]
            < scores["control", method, "defect"] - DEFECT_TKO_MARGIN
        ), table


def test_deletion_in_the_maps_order_removes_the_evidence_fastest(known_answer):
    """Deletion agrees with the overlap: on the shortcut model, blurring pixels in the order of a gradient map
    (marker first) lowers the true-class probability much faster than in the random map's order."""
    ka = known_answer
    maps = _maps(ka.shortcut, ka.images, ka.targets)
    with torch.no_grad():
        areas = {
            method: _mean(
                curve_area(
                    deletion_curve(
                        ka.shortcut.classify,
                        ka.images,
                        ka.targets,
                        maps[method],
                        steps=DELETION_STEPS,
                    )
                )
            )
            for method in METHODS
        }
    for method in GRADIENT_METHODS:
        assert areas[method] < areas["random"] - DELETION_MARGIN, (
            f"deletion areas (lower = more faithful): {areas}"
        )


def test_randomising_the_weights_removes_the_marker_attribution(known_answer):
    """The marker attribution comes from the learnt weights, not from the marker's bright pixels: after
    randomising every layer of the shortcut model (cascading, top-down, as Adebayo et al.), its gradient maps
    overlap the marker no more than a random map does, give or take a little."""
    ka = known_answer
    randomised = copy.deepcopy(ka.shortcut)
    for step, layer in enumerate(default_randomization_layers(randomised), start=1):
        randomize_layer(randomised.get_submodule(layer), seed=SEED * 1_000_003 + step)
    trained, after = (
        _maps(ka.shortcut, ka.images, ka.targets),
        _maps(randomised, ka.images, ka.targets),
    )
    scores = {
        method: (
            _mean(top_k_overlap(trained[method], ka.marker)),
            _mean(top_k_overlap(after[method], ka.marker)),
        )
        for method in METHODS
    }
    message = f"TKO against the marker, (trained, randomised): {scores}"
    floor = scores["random"][0]
    for method in GRADIENT_METHODS:
        before, randomised_tko = scores[method]
        assert before > floor + TKO_MARGIN, message
        assert randomised_tko < floor + RANDOMISED_SLACK, message
