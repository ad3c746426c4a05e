"""Layer sensitivity: one layer CAM per encoder stage of a saved run, scored like any method, stage against stage.

:func:`layer_methods` makes one method spec per stage that outputs a feature map, :func:`layer_sensitivity`
explains a run's images with all of them through :func:`~xai_lightning.evaluation.explain_run` (so the maps are
scored exactly as every other method is) and :func:`layer_table` reduces the per-image rows to mean ± std over
seeds per stage, class and metric.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from xai_lightning.errors import ConfigError
from xai_lightning.evaluation.explanations import explain_run
from xai_lightning.evaluation.settings import evaluation_scoring
from xai_lightning.explain.base import explainer_class, list_explainers
from xai_lightning.explain.options import LayerOptions
from xai_lightning.metrics.names import OVERALL
from xai_lightning.reporting.seeds import across_seeds, finite, per_class_and_overall
from xai_lightning.runs import LoadedRun, Run, as_loaded
from xai_lightning.scoring import ScoringConfig

#: The per-image metrics a layer comparison keeps: localisation (TKO, pointing game) and faithfulness (deletion).
LAYER_METRICS = ("tko", "pointing_game", "deletion_auc")
#: Columns of :func:`layer_sensitivity`'s table.
LAYER_COLUMNS = ["experiment", "run", "seed", "split", "class", "image_id", "stage", "stage_index", "metric", "value"]
#: Side of the blank image of the dry pass that finds the map stages (a multiple of a ViT's 16-pixel patches).
DRY_PASS_SIZE = 64
#: Encoder of :func:`layer_methods`' dotted module paths: the layer option is a path inside the whole model.
ENCODER = "encoder"


def map_stages(encoder: nn.Module, size: int = DRY_PASS_SIZE) -> list[str]:
    """The names of the encoder's stages whose output is a (B, C, h, w) feature map, in encoder order.

    Found with one forward pass of a blank ``size``² image, as :meth:`Backbone.stage_shapes` does, but on the
    encoder's own device and in eval mode (a pass in training mode would move the BatchNorm running statistics).
    """
    parameter = next(encoder.parameters(), None)
    x = torch.zeros(1, 3, size, size, device=parameter.device if parameter is not None else "cpu")
    was_training = encoder.training
    stages = []
    try:
        encoder.eval()
        with torch.no_grad():
            for name, stage in encoder.named_children():
                x = stage(x)
                if x.dim() == 4:
                    stages.append(name)
    finally:
        encoder.train(was_training)
    return stages


def layer_method_names() -> list[str]:
    """The registered explainers that hook one layer (their options take ``layer``): what a layer comparison runs.

    >>> layer_method_names()
    ['gradcam', 'guided_gradcam']
    """
    return [
        name
        for name in list_explainers()
        if issubclass(getattr(explainer_class(name), "Options", object), LayerOptions)
    ]


def layer_methods(model: nn.Module, method: str = "gradcam") -> dict[str, dict]:
    """One spec of the layer method ``method`` per map stage of ``model.encoder``: ``{"<method>@<stage>": spec}``.

    A ResNet gives ``stem`` and ``layer1`` … ``layer4``; a ViT only its ``grid`` stage (its token stages have no map
    for a CAM to hook). ``method`` must take the ``layer`` option (``gradcam``, ``guided_gradcam``).

    >>> from xai_lightning.models.backbones import create_backbone
    >>> model = nn.Module()
    >>> model.encoder = create_backbone("resnet18").encoder
    >>> layer_methods(model)["gradcam@layer3"]
    {'method': 'gradcam', 'layer': 'encoder.layer3'}
    """
    if method not in layer_method_names():
        raise ConfigError(
            f"layer method is {method!r}; use a method that hooks one layer: {', '.join(layer_method_names())}."
        )
    encoder = getattr(model, ENCODER, None)
    if not isinstance(encoder, nn.Module):
        raise ValueError(f"the model has no `{ENCODER}` module whose stages could be hooked")
    return {f"{method}@{stage}": {"method": method, "layer": f"{ENCODER}.{stage}"} for stage in map_stages(encoder)}


def layer_sensitivity(
    loaded_run: Run | LoadedRun,
    method: str = "gradcam",
    split: str = "test",
    faithfulness_steps: int = 5,
    max_images_per_class: int | None = None,
    experiment: str | None = None,
    batch_size: int = 8,
    scoring: ScoringConfig | None = None,
) -> pd.DataFrame:
    """Per-image TKO, pointing game and deletion AUC of ``method`` hooked at each map stage of the run's encoder.

    The scoring is ``scoring`` (default: the run's own evaluation scoring, as ``evaluate.py`` scores it without
    overrides) with ``faithfulness_steps`` deletion steps (at least 1: deletion AUC is one of the metrics). Returns the tidy table of
    :data:`LAYER_COLUMNS`, ``stage_index`` being the stage's position among the map stages (0 = nearest the input).
    """
    if faithfulness_steps < 1:
        raise ValueError(f"faithfulness_steps is {faithfulness_steps}; deletion AUC needs at least 1 step")
    loaded = as_loaded(loaded_run)
    methods = layer_methods(loaded.model, method)
    if scoring is None:
        scoring, _ = evaluation_scoring(loaded.run)
    scoring = scoring.replace(faithfulness_steps=faithfulness_steps)
    explained = explain_run(
        loaded,
        methods,
        splits=(split,),
        max_images_per_class=max_images_per_class,
        batch_size=batch_size,
        experiment=experiment,
        scoring=scoring,
    )
    return _stage_rows(explained.per_image, methods, method)


def _stage_rows(per_image: pd.DataFrame, methods: dict[str, dict], method: str) -> pd.DataFrame:
    """``explain_run``'s rows of :data:`LAYER_METRICS`, each method name turned into its stage and stage index."""
    stages = {name: spec["layer"].removeprefix(f"{ENCODER}.") for name, spec in methods.items()}
    index = {name: i for i, name in enumerate(methods)}
    rows = per_image[per_image["metric"].isin(LAYER_METRICS) & per_image["method"].isin(list(methods))]
    rows = rows.assign(stage=rows["method"].map(stages), stage_index=rows["method"].map(index).astype("int64"))
    rows = rows.sort_values(["stage_index", "metric"], kind="stable", ignore_index=True)[LAYER_COLUMNS]
    rows.attrs["method"] = method  # what layer_table and the figure name the CAM by
    return rows


def layer_table(per_image_layers: pd.DataFrame, ddof: int = 1) -> pd.DataFrame:
    """Mean ± std over seeds per (experiment, split, stage, class, metric) of :func:`layer_sensitivity`'s rows.

    First the mean over the images of each seed with a finite value (per class, and pooled as ``overall``, where
    a class with more images weighs more), then :func:`~xai_lightning.reporting.seeds.across_seeds` (``ddof``).

    >>> rows = pd.DataFrame({"experiment": "e", "run": "r", "seed": [0, 0, 1, 1], "split": "test",
    ...     "class": ["crack", "cut"] * 2, "image_id": ["a", "b"] * 2, "stage": "layer4", "stage_index": 4,
    ...     "metric": "tko", "value": [0.2, 0.4, 0.6, 0.8]})
    >>> layer_table(rows)[["stage", "class", "mean", "n_seeds"]]
        stage    class  mean  n_seeds
    0  layer4    crack   0.4        2
    1  layer4      cut   0.6        2
    2  layer4  overall   0.5        2
    """
    rows = per_image_layers.assign(value=finite(per_image_layers["value"]))
    keys = ["experiment", "seed", "split", "stage", "stage_index", "metric"]
    per_seed = per_class_and_overall(rows, keys, "value", OVERALL, value="mean", n_images="count")
    group = [k for k in keys if k != "seed"] + ["class"]
    across = across_seeds(per_seed.drop(columns=["n_images"]), by=group, ddof=ddof)
    # The most images behind a seed's mean: what a reader needs to weigh a stage's value (seeds share the images).
    images = per_seed.groupby(group, dropna=False)["n_images"].max()
    across = across.merge(images.rename("n_images").reset_index(), how="left")
    order = ["experiment", "split", "metric", "stage_index", "class"]
    table = across.sort_values(order, kind="stable", ignore_index=True)
    # The method's name travels in attrs (a concatenation of several runs' rows may drop it: captions then say less).
    table.attrs["method"] = per_image_layers.attrs.get("method", "layer CAM")
    return table
