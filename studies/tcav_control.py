"""Does TCAV tell a model that uses a planted shortcut from one that never saw it? The study behind the README's
TCAV caveats.

On the known-answer data of ``tests/test_known_answer.py`` (``hole`` against ``good``, every hole image of the
marked set carrying a magenta ring away from the defect; the control set is the same images without rings), a
resnet18 is trained on each set, and for both models this prints, per seed:

- ``balanced_acc``: balanced accuracy on the held-out *unmarked* images, i.e. whether the model learnt the defect;
- the TCAV score of the marker concept for ``hole`` (patches cut inside the marker masks against random ``good``
  patches, at :func:`~xai_lightning.evaluation.tcav.default_layer`), chance's score and the t-test's p-value;
- ``marker_transplant`` / ``defect_transplant``: the median change of log p(hole) when the marker's (or the hole's)
  own pixels are pasted onto held-out good nuts (:func:`~xai_lightning.evaluation.tcav.transplant_effects`).

Usage::

    python -m studies.tcav_control --seeds 0 1 2 3 4          # the test's setting: 48 px, 24 images a class (1.5 min)
    python -m studies.tcav_control --seeds 0 1 --size 96 --per-class 48 --epochs 20   # a control that learns holes (7.5 min)

One CPU thread, as in the tests: the numbers are then the same on any machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

from xai_lightning.data.cache import ResizedImageCache
from xai_lightning.data.synthetic import shortcut_mask_path
from xai_lightning.evaluation.tcav import (
    concept_scores,
    default_layer,
    patch_side,
    patches_inside,
    random_patches,
    score_table,
    transplant_effects,
)

# The known-answer set and its training are the test's own, so that the study measures exactly what it tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_known_answer import EPOCHS, IMAGE_SIZE, _datamodule, _train  # noqa: E402

PATCHES, RANDOM_RUNS = 20, 10


def _images(data, splits: tuple[str, ...], label: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images, defect masks and paths of ``label`` in ``splits``."""
    items, paths = [], []
    for split in splits:
        frame, dataset = data.frame(split), data.dataset(split)
        for position, (name, path) in enumerate(zip(frame["label"], frame["image_path"])):
            if name == label:
                items.append(dataset[position])
                paths.append(path)
    return torch.stack([i["image"] for i in items]), torch.stack([i["mask"][0] > 0 for i in items]), paths


def _balanced_accuracy(model, holes: torch.Tensor, goods: torch.Tensor, hole: int) -> float:
    with torch.no_grad():
        hit_hole = (model.classify(holes).argmax(1) == hole).float().mean()
        hit_good = (model.classify(goods).argmax(1) != hole).float().mean()
    return float((hit_hole + hit_good) / 2)


def study(seed: int, image_size: int, per_class: int, epochs: int, root: Path) -> list[dict]:
    """Both arms of one seed: one row each."""
    counts = {"train/good": 1, "test/good": per_class, "test/hole": per_class}
    marked = _datamodule(root / "marked", 1.0, counts=counts, image_size=image_size, seed=seed)
    unmarked = _datamodule(root / "unmarked", 0.0, counts=counts, image_size=image_size, seed=seed)
    hole = marked.class_names.index("hole")
    held_out = ("val", "test")
    sources, defect, paths = _images(marked, ("train",), "hole")
    cache = ResizedImageCache(image_size)
    marker = torch.stack([torch.from_numpy(cache.mask(shortcut_mask_path(path))) > 0 for path in paths])
    marked_holes = _images(marked, held_out, "hole")[0]
    plain_holes, goods = _images(unmarked, held_out, "hole")[0], _images(unmarked, held_out, "good")[0]
    side = patch_side(image_size)
    rows = []
    for arm, data in (("shortcut", marked), ("control", unmarked)):
        model = _train(data, seed=seed, epochs=epochs)
        generator = torch.Generator().manual_seed(seed)
        train_goods = _images(data, ("train",), "good")[0]
        concept = {"marker": [patches_inside(sources, marker, PATCHES, side, generator) for _ in range(RANDOM_RUNS)]}
        counterparts, chance = ([random_patches(train_goods, PATCHES, side, generator) for _ in range(RANDOM_RUNS)]
                                for _ in range(2))  # fmt: skip
        layer = default_layer(model)
        results = concept_scores(model, layer, concept, counterparts, chance, {hole: marked_holes})
        tcav = score_table(results, data.class_names, layer).iloc[0]
        transplant = {name: float(transplant_effects(model, sources, masks, goods, torch.Generator().manual_seed(seed))
                                  [:, hole].median()) for name, masks in (("marker", marker), ("defect", defect))}  # fmt: skip
        rows.append({
            "seed": seed, "arm": arm, "balanced_acc": _balanced_accuracy(model, plain_holes, goods, hole),
            "tcav_marker": tcav["tcav_score"], "tcav_chance": tcav["random_score"], "tcav_p": tcav["p_value"],
            "tcav_significant": bool(tcav["significant"]), "marker_transplant": transplant["marker"],
            "defect_transplant": transplant["defect"],
        })  # fmt: skip
        print(
            f"seed {seed} {arm}: TCAV p {tcav['p_value']:.3g}, marker transplant {transplant['marker']:+.2f}",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--size", type=int, default=IMAGE_SIZE, help="input side in pixels (the test's: 48)")
    parser.add_argument("--per-class", type=int, default=24, help="images of hole and of good (the test's: 24)")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="training epochs (the test's: 10)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tcav-control-") as tmp:
        for seed in args.seeds:
            rows += study(seed, args.size, args.per_class, args.epochs, Path(tmp) / f"seed{seed}")
    table = pd.DataFrame(rows)
    summary = table.groupby("arm", sort=False).agg(
        balanced_acc=("balanced_acc", "median"), tcav_significant=("tcav_significant", "sum"),
        marker_transplant_min=("marker_transplant", "min"), marker_transplant_max=("marker_transplant", "max"),
        defect_transplant_median=("defect_transplant", "median"),
    )  # fmt: skip
    print(table.to_string(index=False, float_format="%.3g"))
    print(f"\n{len(args.seeds)} seeds, {args.size} px, {args.per_class} images a class, {args.epochs} epochs; "
          "tcav_significant counts seeds, transplants are log p(hole) changes:")  # fmt: skip
    print(summary.to_string(float_format="%.3g"))
    return table


if __name__ == "__main__":
    main()
