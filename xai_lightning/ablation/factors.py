"""The factors of the poster ablation: each one choice of the poster's pipeline, changed towards the fair one.

A *training* factor trains its own seeds (its ``train_args`` on top of the poster config); a *scoring*
factor re-scores the poster arm's checkpoints: it swaps a method for a variant computed in the same
explanation pass (``replace``), or changes how the same per-image scores are counted (tie rule,
score, which images). So the poster arm is explained once per seed, and every scoring factor is read
off that one pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xai_lightning.metrics.names import DEFAULT_WIN_TIES

#: The methods the poster compares, in its order (the first-listed wins its ties).
POSTER_METHODS = ("gradcam", "saliency", "integrated_gradients")
#: Reference maps scored next to them (they compete in no win-rate): a method should beat them.
REFERENCES = ("center_prior", "edge")
#: The poster arm's name: the baseline every factor is compared with.
POSTER = "poster"


@dataclass(frozen=True)
class Factor:
    """One change to the poster's pipeline.

    Attributes:
        name: short name (a folder name for a training factor).
        change: what it changes, in words, for the table.
        train_args: training options that make this factor (non-empty: a training factor with its own seeds).
        replace: ``{compared method: method of the explanation pass that stands in for it}``.
        win_ties: the win-rate's tie rule; ``first_listed`` is the poster's.
        score: the per-image score reported next to the win-rate (``topk_iou``: the poster's; ``tko``).
        only_correct: score only correctly classified images (the poster's protocol).
    """

    name: str
    change: str
    train_args: tuple[str, ...] = ()
    replace: dict[str, str] = field(default_factory=dict)
    win_ties: str = "first_listed"
    score: str = "topk_iou"
    only_correct: bool = True

    @property
    def trains(self) -> bool:
        return bool(self.train_args)


def factors(early_stage: str) -> list[Factor]:
    """The poster arm, then every factor; ``early_stage`` is the encoder stage before the Grad-CAM layer's."""
    return [
        Factor(POSTER, "the poster's pipeline (configs/poster.yaml)"),
        Factor("lambda_0", "λ = 0: no segmentation loss", train_args=("--model.seg_loss_weight", "0")),
        Factor(
            "decoder_early",
            f"segmentation decoder on `{early_stage}`, not the Grad-CAM layer",
            train_args=("--model.decoder_stage", early_stage),
        ),
        Factor("bce", "BCE on the mask logits instead of MSE", train_args=("--model.seg_loss", "bce")),
        Factor("ig_blur_64", "IG with a blurred baseline, 64 steps", replace={"integrated_gradients": "ig_blur_64"}),
        Factor(
            "ig_mean_64", "IG with the mean-image baseline, 64 steps", replace={"integrated_gradients": "ig_mean_64"}
        ),
        Factor(
            "coarsened",
            "Saliency and IG averaged to Grad-CAM's grid",
            replace={"saliency": "saliency_coarsened", "integrated_gradients": "ig_coarsened"},
        ),
        Factor("fair_ties", "ties shared fairly (1 / #winners)", win_ties=DEFAULT_WIN_TIES),
        Factor("share_tko", "TKO (share of the top-K inside the mask) instead of IoU", score="tko"),
        Factor("all_images", "every defect image, not only correct predictions", only_correct=False),
        Factor("gradcam_early", f"Grad-CAM on `{early_stage}`", replace={"gradcam": "gradcam_early"}),
    ]


def explanation_methods(poster_methods: dict[str, dict], early_stage: str, variants: bool) -> dict[str, dict]:
    """The methods of one run's explanation pass: the poster's own (as its config sets them), the references,
    and with ``variants`` every scoring factor's stand-in."""
    methods = {name: dict(poster_methods.get(name, {"method": name})) for name in POSTER_METHODS}
    methods |= {name: {"method": name} for name in REFERENCES}
    if not variants:
        return methods
    ig = {k: v for k, v in methods["integrated_gradients"].items() if k != "method"}
    return methods | {
        "ig_blur_64": {"method": "integrated_gradients", **ig, "n_steps": 64, "baseline": "blur"},
        "ig_mean_64": {"method": "integrated_gradients", **ig, "n_steps": 64, "baseline": "mean"},
        "saliency_coarsened": {"method": "coarsened", "inner": "saliency"},
        "ig_coarsened": {"method": "coarsened", "inner": "integrated_gradients", "inner_options": ig},
        "gradcam_early": {"method": "gradcam", "layer": f"encoder.{early_stage}"},
    }


def backbone_of(args: list[str]) -> str:
    """The ``model.backbone`` the training CLI will use: the last ``--config`` or ``--model.backbone`` wins."""
    from xai_lightning.experiment import config_value
    from xai_lightning.models.backbones import DEFAULT_BACKBONE

    return config_value(args, "model.backbone", DEFAULT_BACKBONE)


def early_stage_of(backbone: str) -> str:
    """The encoder stage before the one that holds the Grad-CAM layer (its stride is lower: a finer map)."""
    from xai_lightning.models.backbones import create_backbone

    spec = create_backbone(backbone)
    stages = list(spec.stage_shapes())
    return stages[stages.index(spec.cam_stage) - 1]
