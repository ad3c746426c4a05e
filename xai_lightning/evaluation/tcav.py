"""TCAV (Kim et al., 2018) with concepts cut from the defect masks: does a class's own defect drive its prediction?

Concept images of a defect class are square patches cut from that class's images, centred on a pixel inside the
defect mask; the counter-examples are patches of ``good`` images at random positions. Each patch is pasted, at its
own scale, at the centre of a neutral image (the data set's mean colour, in the model's input space). Pasting rather
than resizing the patch up to the input size keeps the defect at the scale the network sees it in real images (a
layer's features are scale-dependent: a 4x enlarged 9 px marker is another pattern to a resnet) and puts concept and
random patches at the same place, so a CAV cannot separate them by position alone.

A CAV is the normal of a linear classifier between a concept's activations at one layer and those of a random set;
the TCAV score of a (target class, concept) is the fraction of the target class's images whose class logit grows
along the CAV (Captum's ``sign_count``). Following the paper, CAVs are trained in ``random_runs`` runs, each
against another random set, and a random set against the same random sets gives the scores of chance; a two-sided
t-test of the concept's scores against chance's (``scipy.stats.ttest_ind``) with p < 0.05 marks the concept
significant. Unlike the paper, each run draws its concept patches and chance's random set afresh from their pools
(see :func:`concept_scores`): with fixed sets the runs were not independent and the test far too often significant.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from captum.concept import TCAV, Classifier, Concept
from captum.concept._utils.common import concepts_to_str
from scipy.stats import ttest_ind
from torch import Tensor, nn

from xai_lightning.data.classes import DEFECT_TYPES
from xai_lightning.data.transforms import input_normalized
from xai_lightning.errors import ConfigError
from xai_lightning.explain.baselines import MEAN, baseline_image
from xai_lightning.explain.captum_support import ClassLogits

if TYPE_CHECKING:
    from xai_lightning.runs import LoadedRun

#: Patch side as a fraction of the image side: 16 px at 64 px input.
DEFAULT_PATCH_FRACTION = 0.25
#: Images of each target class whose gradients the TCAV score is taken over.
DEFAULT_IMAGES_PER_CLASS = 20
SIGNIFICANCE_LEVEL = 0.05
#: The model's encoder, whose modules CAVs can be trained on.
ENCODER_PREFIX = "encoder"
#: Captum's score of the fraction of inputs with a positive directional derivative (the paper's TCAV_Q).
SCORE = "sign_count"
TCAV_COLUMNS = [
    "experiment", "run", "seed", "class", "concept", "layer", "tcav_score", "tcav_std", "random_score",
    "p_value", "significant", "cav_accuracy", "transplant_effect", "n_inputs", "n_patches", "random_runs",
]  # fmt: skip


# ---------------------------------------------------------------------------------------------- the CAV classifier
class LogisticCAVClassifier(Classifier):
    """Captum ``Classifier`` for CAVs: L2-regularised logistic regression, fit by full-batch L-BFGS on the CPU.

    Used instead of Captum's ``DefaultClassifier``, which needs scikit-learn (not a dependency of this project) and
    splits with Python's global ``random``; this one is seeded, deterministic and takes milliseconds for the few
    dozen activations of a concept. ``accs`` (its stats) is the accuracy on the held-out ``test_fraction``.
    """

    def __init__(self, seed: int = 0, l2: float = 1e-2, test_fraction: float = 0.33, max_iter: int = 100) -> None:
        self.seed, self.l2, self.test_fraction, self.max_iter = seed, l2, test_fraction, max_iter
        self._weights: Tensor | None = None
        self._classes: list[int] = []

    def train_and_eval(self, dataloader: Any, **kwargs: Any) -> dict[str, Tensor]:
        """Fit the two concepts' activations apart; the held-out accuracy as ``{"accs": ...}``."""
        inputs, labels = zip(*dataloader)
        x = torch.cat(inputs).detach().float().cpu()
        y = torch.cat(labels).detach().long().cpu()
        classes = sorted(set(y.tolist()))
        if len(classes) != 2:
            raise ValueError(f"a CAV separates two concepts; got labels {classes}")
        target = (y == classes[1]).float()
        # The same seed for every CAV: each one's split is reproducible whatever order Captum trains them in.
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(y), generator=generator)
        n_test = min(max(1, round(self.test_fraction * len(y))), len(y) - 2)
        test, train = order[:n_test], order[n_test:]
        # Raw activations, as in the paper: standardising would divide by near-zero spreads of rarely active
        # channels and blow their weights up, which made the CAV directions much noisier.
        w, b = _fit_logistic(x[train], target[train], self.l2, self.max_iter)
        accuracy = (((x[test] @ w + b) > 0).float() == target[test]).float().mean()
        direction = w
        self._weights = torch.stack([-direction, direction])  # row k points toward classes[k]
        self._classes = classes
        return {"accs": accuracy}

    def weights(self) -> Tensor:
        """(2, F): one direction per concept, in the order of :meth:`classes`."""
        if self._weights is None:
            raise RuntimeError("train_and_eval has not been called")
        return self._weights

    def classes(self) -> list[int]:
        """The two concept ids, in the order of :meth:`weights`' rows."""
        return list(self._classes)


def _fit_logistic(x: Tensor, y: Tensor, l2: float, max_iter: int) -> tuple[Tensor, Tensor]:
    """Weights and bias of logistic regression with an L2 penalty on the weights (strictly convex: one optimum)."""
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(x @ w + b, y) + l2 * w.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return w.detach(), b.detach()


# ---------------------------------------------------------------------------------------------- concept patches
def patch_side(image_size: int, fraction: float = DEFAULT_PATCH_FRACTION) -> int:
    """Side in pixels of a concept patch: ``fraction`` of the image side, at least 1 and at most the image."""
    return min(image_size, max(1, round(fraction * image_size)))


def neutral_colour(model: nn.Module) -> Tensor:
    """(3,) the colour of the neutral image concept patches are pasted on: the data set's mean colour, in the model's
    input space (zeros once ImageNet-normalised, the mean itself for [0, 1] inputs, ``data.normalize: false``)."""
    return baseline_image(MEAN, torch.zeros(1, 3, 1, 1), normalized=input_normalized(model))[0, :, 0, 0]


def paste_centred(patch: Tensor, size: int, background: Tensor | None = None) -> Tensor:
    """(3, size, size): ``patch`` at the centre of a neutral image of colour ``background`` (3,), by default zeros:
    the mean colour of normalised images (see :func:`neutral_colour`)."""
    canvas = patch.new_zeros((patch.shape[0], size, size))
    if background is not None:
        canvas += background.to(canvas).view(-1, 1, 1)
    top, left = (size - patch.shape[1]) // 2, (size - patch.shape[2]) // 2
    canvas[:, top : top + patch.shape[1], left : left + patch.shape[2]] = patch
    return canvas


def _cut(image: Tensor, top: int, left: int, side: int) -> Tensor:
    """The ``side`` square of ``image`` at (top, left), moved inside the image where it would cross an edge."""
    height, width = image.shape[-2:]
    top, left = min(max(top, 0), height - side), min(max(left, 0), width - side)
    return image[:, top : top + side, left : left + side]


def patches_inside(
    images: Tensor, masks: Tensor, count: int, side: int, generator: torch.Generator, background: Tensor | None = None
) -> Tensor:
    """(count, 3, H, W) concept images: squares centred on random pixels inside ``masks``, pasted centred (on
    ``background``, see :func:`paste_centred`).

    ``images`` (N, 3, H, W) and ``masks`` (N, H, W) or (N, 1, H, W); images with an empty mask are skipped, and
    the rest are used in a random order (one patch each, then again in a new order when ``count`` exceeds them).
    """
    masks = masks.reshape(masks.shape[0], *images.shape[-2:]) > 0
    usable = torch.tensor([i for i in range(len(images)) if masks[i].any()], dtype=torch.long)
    if not len(usable):
        raise ValueError("no image has a non-empty mask to cut concept patches from")
    rounds = -(-count // len(usable))
    order = torch.cat([usable[torch.randperm(len(usable), generator=generator)] for _ in range(rounds)])
    patches = []
    for i in order[:count].tolist():
        ys, xs = torch.nonzero(masks[i], as_tuple=True)
        pick = int(torch.randint(len(ys), (1,), generator=generator))
        top, left = int(ys[pick]) - side // 2, int(xs[pick]) - side // 2
        patches.append(paste_centred(_cut(images[i], top, left, side), images.shape[-1], background))
    return torch.stack(patches)


def random_patches(
    images: Tensor, count: int, side: int, generator: torch.Generator, background: Tensor | None = None
) -> Tensor:
    """(count, 3, H, W) random images: squares at uniform positions of random ``images``, pasted centred (on
    ``background``)."""
    height, width = images.shape[-2:]
    patches = []
    for _ in range(count):
        i = int(torch.randint(len(images), (1,), generator=generator))
        top = int(torch.randint(height - side + 1, (1,), generator=generator))
        left = int(torch.randint(width - side + 1, (1,), generator=generator))
        patches.append(paste_centred(_cut(images[i], top, left, side), width, background))
    return torch.stack(patches)


def transplant_effects(
    model: nn.Module, sources: Tensor, masks: Tensor, targets: Tensor, generator: torch.Generator
) -> Tensor:
    """(N, K): how much each class's log-probability changes when a concept's own pixels are pasted onto ``targets``.

    The interventional counterpart of a TCAV score. Each of the N ``targets`` (N, 3, H, W) gets the pixels inside
    the mask of one random ``sources`` image (``masks`` (S, H, W) or (S, 1, H, W)), at the same place, and nothing
    else changes. TCAV asks whether a class logit grows along the concept's direction at one layer, a local
    question whose answer is a sign; this asks how far the model's output actually moves when the concept
    appears, in log-probability (shift-free, unlike a raw logit). Images with an empty mask are never drawn.
    """
    masks = masks.reshape(masks.shape[0], *sources.shape[-2:]) > 0
    usable = torch.nonzero(masks.flatten(1).any(1)).flatten()
    if not len(usable):
        raise ValueError("no source image has a non-empty mask to transplant")
    picks = usable[torch.randint(len(usable), (len(targets),), generator=generator)]
    pasted = torch.where(masks[picks, None], sources[picks], targets)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            before = torch.log_softmax(model.classify(targets).float(), dim=1)
            after = torch.log_softmax(model.classify(pasted).float(), dim=1)
    finally:
        model.train(was_training)
    return after - before


# ---------------------------------------------------------------------------------------------- TCAV and the test
@dataclass
class ConceptScores:
    """The TCAV scores of one (target class, concept) over the random runs, and chance's over the same runs."""

    scores: list[float]
    random_scores: list[float]
    cav_accuracy: float

    @property
    def p_value(self) -> float:
        return significance(self.scores, self.random_scores)


def significance(scores: Sequence[float], random_scores: Sequence[float]) -> float:
    """Two-sided p-value of Student's t-test (``ttest_ind``, equal variances) of a concept's scores against chance's.

    When both samples are constant the t statistic is undefined (scipy gives NaN): equal constants are then no
    evidence (p = 1) and different ones a difference without any spread (p = 0).
    """
    if np.ptp(scores) == 0 and np.ptp(random_scores) == 0:  # decided here: scipy would warn and give NaN
        return 1.0 if scores[0] == random_scores[0] else 0.0
    with warnings.catch_warnings():
        # scipy warns of precision loss when one sample is constant (all runs 0 or 1: common); the pooled variance
        # of the other sample still defines the test, so its p-value stands.
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        p = float(ttest_ind(scores, random_scores).pvalue)
    return 1.0 if math.isnan(p) else p  # NaN only for degenerate inputs (fewer than two values): no evidence


def _loader(images: Tensor, batch_size: int = 64) -> torch.utils.data.DataLoader:
    """Batches of a concept's images, as Captum's ``Concept.data_iter`` wants them (tensors, no labels)."""
    return torch.utils.data.DataLoader(images, batch_size=batch_size)


def concept_scores(
    model: nn.Module,
    layer: str,
    concepts: dict[str, Sequence[Tensor]],
    counterparts: Sequence[Tensor],
    chance: Sequence[Tensor],
    inputs: dict[int, Tensor],
) -> dict[tuple[int, str], ConceptScores]:
    """TCAV scores of every (target class index, concept) over independent runs, and chance's over the same runs.

    Run k trains each concept's CAV from ``concepts[name][k]`` (that concept's images drawn afresh for the run)
    against the random set ``counterparts[k]``, and chance's from the random set ``chance[k]`` against the same
    ``counterparts[k]``; so every run uses its own images and the runs are independent draws, as the t-test assumes.
    (With one fixed concept set and one fixed random "concept", as in Captum's tutorial, the runs shared their
    sets, chance's mean swung from 0.0 to 1.0 with the seed, and a random concept came out significant in 8 of 20
    known-answer cases (2 classes x seeds 0-9); drawn afresh per run, in none of the same 20.)

    ``model`` is a MultiTaskClassifier (anything with ``.classify``), ``layer`` a submodule path in it, ``inputs``
    the images of each target class. The model is put in eval mode for the computation (and put back), and
    gradients are enabled even inside inference mode.
    """
    runs = len(counterparts)
    if runs < 2 or len(chance) != runs or any(len(sets) != runs for sets in concepts.values()):
        raise ValueError("pass at least two runs, and as many chance sets and sets of each concept as counterparts")
    ids = iter(range(10**9))

    def concept(name: str, images: Tensor) -> Concept:
        index = next(ids)
        return Concept(index, f"{name}{index}", _loader(images))

    others = [concept("random", images) for images in counterparts]
    sets = {(name, k): [concept("concept", images), others[k]] for name, drawn in concepts.items() for k, images in
            enumerate(drawn)}  # fmt: skip
    sets.update({(None, k): [concept("chance", images), others[k]] for k, images in enumerate(chance)})
    key = f"model.{layer}"
    results: dict[tuple[int, str], ConceptScores] = {}
    was_training = model.training
    model.eval()
    try:
        with tempfile.TemporaryDirectory(prefix="tcav-") as save_path, torch.inference_mode(False), torch.enable_grad():
            tcav = TCAV(ClassLogits(model), [key], classifier=LogisticCAVClassifier(), save_path=save_path)
            for target, images in inputs.items():
                found = tcav.interpret(images.clone(), list(sets.values()), target=target)
                # The score of the first concept of each pair: the concept (or chance's random set) itself.
                first = {k: float(found[concepts_to_str(pair)][key][SCORE][0]) for k, pair in sets.items()}
                chance_scores = [first[None, k] for k in range(runs)]
                for name in concepts:
                    accuracy = np.mean([float(tcav.cavs[concepts_to_str(sets[name, k])][key].stats["accs"]) for k in
                                        range(runs)])  # fmt: skip
                    scores = [first[name, k] for k in range(runs)]
                    results[target, name] = ConceptScores(scores, chance_scores, float(accuracy))
    finally:
        model.train(was_training)
    return results


def score_table(
    results: dict[tuple[int, str], ConceptScores], class_names: Sequence[str], layer: str, **ids: object
) -> pd.DataFrame:
    """One row per (class, concept) of :func:`concept_scores`' results, with ``ids`` (experiment, run, seed) in
    front; ``significant`` is p < 0.05, ``tcav_std`` the spread (ddof=1) over the random runs."""
    rows = []
    for (target, name), result in results.items():
        p = result.p_value
        rows.append({
            **ids, "class": class_names[target], "concept": name, "layer": layer,
            "tcav_score": float(np.mean(result.scores)), "tcav_std": float(np.std(result.scores, ddof=1)),
            "random_score": float(np.mean(result.random_scores)), "p_value": p,
            "significant": bool(p < SIGNIFICANCE_LEVEL), "cav_accuracy": result.cav_accuracy,
            "random_runs": len(result.scores),
        })  # fmt: skip
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- one saved run
def default_layer(model: nn.Module) -> str:
    """The layer CAVs are trained on by default: the Grad-CAM layer, or the encoder stage before it when it is the
    encoder's last stage.

    The last stage feeds global average pooling and the linear classifier directly, so the gradient of a class
    logit with respect to its output is the class's weight vector spread over the grid, the same for every image:
    each CAV then gets one sign for all images and the TCAV score of every run is 0 or 1 (seen: only 0 and 1 at
    ``encoder.layer4`` of resnet18). One stage earlier the gradient depends on the image.
    """
    stages = [f"encoder.{name}" for name, _ in model.encoder.named_children()]
    cam = model.cam_layer_name
    if len(stages) > 1 and cam == stages[-1]:
        return stages[-2]
    return cam


def check_layer(
    encoder: nn.Module, layer: str, option: str = "tcav_table's `layer`", backbone: str | None = None
) -> str:
    """``layer`` when it is ``encoder.<path>`` of a module of the model's ``encoder``; otherwise a ConfigError naming
    ``option`` and the encoder's stages.

    Only the encoder: every class logit passes through it, while the segmentation decoder never runs for one (a CAV
    there would have no gradient to be compared with).
    """
    path = layer.removeprefix(f"{ENCODER_PREFIX}.") if layer.startswith(f"{ENCODER_PREFIX}.") else ""
    if not path or path not in dict(encoder.named_modules()):
        stages = ", ".join(f"{ENCODER_PREFIX}.{name}" for name, _ in encoder.named_children())
        raise ConfigError(
            f"{option} is {layer!r}, which is not a module of the {backbone or 'model'}'s encoder. Use a dotted path "
            f"inside it, e.g. one of its stages: {stages}."
        )
    return layer


def layer_for_backbone(
    layers: Sequence[str], backbone: str | None, option: str = "evaluate.py --tcav-layer"
) -> str | None:
    """The TCAV layer for a run of ``backbone`` from ``PATH`` / ``BACKBONE=PATH`` values (a backbone's own entry
    first, then the one without a backbone); None when neither is given (the default layer). Malformed or repeated
    entries are refused, naming ``option``."""
    chosen: dict[str | None, str] = {}
    for value in layers:
        name, _, path = value.partition("=") if "=" in value else (None, "", value)
        if not path or name == "" or "=" in path:
            raise ConfigError(f"{option} is {value!r}; use a module path (encoder.layer3) or BACKBONE=PATH.")
        if name in chosen:
            raise ConfigError(
                f"{option} names {'backbone ' + repr(name) if name else 'a layer for every backbone'} twice."
            )
        chosen[name] = path
    return chosen.get(backbone, chosen.get(None))


def _class_positions(frame: pd.DataFrame, label: str, generator: torch.Generator) -> list[int]:
    """Positions in the split's dataset of the images of ``label``, in a seeded random order."""
    positions = np.flatnonzero(frame["label"].to_numpy() == label)
    return [int(positions[i]) for i in torch.randperm(len(positions), generator=generator)]


def _load(dataset: Any, positions: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Images (N, 3, H, W) and masks (N, 1, H, W) of ``positions`` in a split's dataset."""
    items = [dataset[p] for p in positions]
    return torch.stack([item["image"] for item in items]), torch.stack([item["mask"] for item in items])


def tcav_table(
    loaded_run: LoadedRun,
    split: str = "train",
    layer: str | None = None,
    patches_per_concept: int = 20,
    random_runs: int = 10,
    seed: int = 0,
    patch_fraction: float = DEFAULT_PATCH_FRACTION,
    images_per_class: int = DEFAULT_IMAGES_PER_CLASS,
    experiment: str | None = None,
) -> pd.DataFrame:
    """TCAV of a saved run: one row per (target class, defect concept) of ``split``, see :data:`TCAV_COLUMNS`.

    Concepts are cut inside the masks of each defect class's images, random sets from the split's ``good`` images
    (each from a pool of ``2 * patches_per_concept`` images, drawn afresh for each of the ``random_runs`` runs);
    ``layer`` defaults to :func:`default_layer` (the Grad-CAM layer, or the stage before it when that one feeds
    the classifier directly). Each class's scores are taken over ``images_per_class`` of
    its images, preferably others than those its concept was cut from. ``transplant_effect`` is the median change of
    the row's class log-probability when the concept's masked pixels are pasted onto ``images_per_class`` good
    images (:func:`transplant_effects`): how far the output moves, where TCAV gives a direction. Seeded by ``seed``.
    """
    model, data = loaded_run.model, loaded_run.data
    backbone = getattr(model, "hparams", {}).get("backbone")
    layer = check_layer(model.encoder, layer, backbone=backbone) if layer else default_layer(model)
    background = neutral_colour(model)
    frame, dataset = data.frame(split), data.dataset(split)
    generator = torch.Generator().manual_seed(seed)
    class_names = list(model.class_names)
    positions = {label: _class_positions(frame, label, generator) for label in class_names}
    if not positions.get("good"):
        raise ValueError(f"split {split!r} has no good images to draw random patches from")
    # Source pools twice the patches per set: each run then draws a different subset of images and positions.
    pool = 2 * patches_per_concept
    good_images, _ = _load(dataset, positions["good"][:pool])
    side = patch_side(good_images.shape[-1], patch_fraction)
    # The last images of each class's order: disjoint from the concept's source images when the class has enough.
    inputs = {class_names.index(label): _load(dataset, found[-images_per_class:])[0] for label, found in
              positions.items() if found}  # fmt: skip
    concepts, transplants = {}, {}
    # Its own stream, so that adding the transplant left every TCAV draw as it was.
    transplant_generator = torch.Generator().manual_seed(seed + 1)
    good_inputs = inputs[class_names.index("good")]
    for label in (name for name in class_names if name in DEFECT_TYPES and positions[name]):
        images, masks = _load(dataset, positions[label][:pool])
        concepts[label] = [patches_inside(images, masks, patches_per_concept, side, generator, background) for _ in
                           range(random_runs)]  # fmt: skip
        transplants[label] = (
            transplant_effects(model, images, masks, good_inputs, transplant_generator).median(0).values
        )
    counterparts, chance = ([random_patches(good_images, patches_per_concept, side, generator, background) for _ in
                             range(random_runs)] for _ in range(2))  # fmt: skip
    results = concept_scores(model, layer, concepts, counterparts, chance, inputs)
    run = loaded_run.run
    ids = {"experiment": experiment or run.path.parent.name, "run": run.name, "seed": run.seed}
    table = score_table(results, class_names, layer, **ids)
    table["n_inputs"] = table["class"].map({label: min(len(found), images_per_class) for label, found in
                                            positions.items()})  # fmt: skip
    table["n_patches"] = patches_per_concept
    table["transplant_effect"] = [float(transplants[concept][class_names.index(label)]) for label, concept in
                                  zip(table["class"], table["concept"])]  # fmt: skip
    return table[TCAV_COLUMNS]


def concept_matches(table: pd.DataFrame) -> pd.DataFrame:
    """For each run and defect class: is its own concept significant for it, and does it push the class up?

    ``drives`` is the question "does the matching concept drive the class": significant and a TCAV score above
    chance's (a significant score below chance means the concept lowers the class's logit).
    """
    own = table[table["class"] == table["concept"]].copy()
    own["above_chance"] = own["tcav_score"] > own["random_score"]
    own["drives"] = own["significant"] & own["above_chance"]
    keys = [c for c in ("experiment", "run", "seed") if c in own.columns]
    columns = ["class", "layer", "tcav_score", "random_score", "p_value", "significant", "above_chance", "drives",
               "transplant_effect"]  # fmt: skip
    return own[[*keys, *columns]].reset_index(drop=True)


def maps_where_concepts_drive(matches: pd.DataFrame, per_image: pd.DataFrame | None) -> pd.DataFrame:
    """Per run and defect class: each method's mean TKO on that class's images, next to whether its own concept
    drives the class there, so the maps can be read against the concepts (empty without per-image TKO)."""
    if per_image is None or not len(per_image) or not len(matches):
        return pd.DataFrame()
    tko = per_image[(per_image["metric"] == "tko") & (per_image["split"] == per_image["split"].iloc[-1])]
    means = tko.groupby(["run", "class", "method"], as_index=False)["value"].mean()
    wide = means.pivot_table(index=["run", "class"], columns="method", values="value").reset_index()
    keys = [c for c in ("run", "class", "drives", "p_value") if c in matches.columns]
    return matches[keys].merge(wide, on=["run", "class"], how="left")
