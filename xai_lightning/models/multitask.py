"""The multi-task LightningModule: a backbone with a classification head and a segmentation head.

Loss = CE(class logits, y) + λ · BCEWithLogits(mask logits, defect mask); per-split metrics through
torchmetrics, so they accumulate over the epoch and synchronise under DDP.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import BinaryJaccardIndex, MulticlassAccuracy

from xai_lightning.data.classes import HAZELNUT_CLASSES
from xai_lightning.data.dataset import Sample
from xai_lightning.data.splits import SPLITS
from xai_lightning.errors import ConfigError
from xai_lightning.models.backbones import DEFAULT_BACKBONE, create_backbone, pretrained_weights_cached
from xai_lightning.models.losses import multitask_loss


class MultiTaskOutput(NamedTuple):
    logits: torch.Tensor  # (B, num_classes)
    mask_logits: torch.Tensor  # (B, 1, H, W), at the input's resolution


class SegmentationDecoder(nn.Module):
    """Light two-scale decoder: deep features upsampled onto the stride-8 skip features, then to input size.

    The stride-8 skip keeps predicted masks sharper than a head on the stride-32 map alone, which
    matters because the predicted mask is also the supervised reference map for attribution.
    """

    def __init__(self, skip_channels: int, deep_channels: int, width: int = 64) -> None:
        super().__init__()
        self.deep = nn.Conv2d(deep_channels, width, 1)
        self.skip = nn.Conv2d(skip_channels, width, 1)
        self.fuse = nn.Sequential(
            nn.Conv2d(2 * width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 1, 1),
        )

    def forward(self, skip: torch.Tensor, deep: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        deep = F.interpolate(self.deep(deep), size=skip.shape[-2:], mode="bilinear", align_corners=False)
        fused = self.fuse(torch.cat([self.skip(skip), deep], dim=1))
        return F.interpolate(fused, size=size, mode="bilinear", align_corners=False)


class TransposedDecoder(nn.Module):
    """The decoder of the hazelnut win-rate poster's code: one encoder feature map upsampled by learned 2× steps.

    Each step is [ConvTranspose2d(k4, s2, p1) + BN + ReLU, Conv 3×3 + BN + ReLU]; a 1×1 conv then gives one
    logit map. On EfficientNet-B0's 1280×7×7 output at 224² that is the poster's five steps with widths
    16 → 32 → 16 → 8 → 4. A map of another stride takes as many steps as its stride needs (log2), the
    last widths of that list. Read from the Grad-CAM layer (the poster's choice), the segmentation loss
    trains exactly the features Grad-CAM explains: the point of the poster ablation.
    """

    POSTER_WIDTHS = (16, 32, 16, 8, 4)

    def __init__(self, in_channels: int, stride: int, widths: tuple[int, ...] = POSTER_WIDTHS) -> None:
        super().__init__()
        steps = max(1, round(math.log2(stride)))
        widths = (widths[0],) * max(0, steps - len(widths)) + tuple(widths[-steps:])
        layers: list[nn.Module] = []
        for width in widths:
            layers += [
                nn.ConvTranspose2d(in_channels, width, 4, stride=2, padding=1),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, padding=1),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            in_channels = width
        self.steps = nn.Sequential(*layers)
        self.head = nn.Conv2d(in_channels, 1, 1)

    def forward(self, features: torch.Tensor, deep: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Mask logits at ``size`` from ``features`` alone; ``deep`` (the last stage's output) is taken only to
        share :class:`SegmentationDecoder`'s call, so the model calls either decoder the same way."""
        logits = self.head(self.steps(features))
        if tuple(logits.shape[-2:]) != tuple(size):  # an input size that is not the stride times the grid
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits


#: ``model.decoder``: the two-scale decoder (deep features onto the stride-8 skip), or the poster's
#: transposed decoder on one stage (``model.decoder_stage``, default: the Grad-CAM layer's stage).
DECODERS = ("two_scale", "transposed")
#: ``model.seg_loss``: a real BCE on the mask logits, or the poster's MSE on the raw logits.
SEG_LOSSES = ("bce", "mse")
#: ``model.class_weights: balanced``: CE weights n / (K · n_c) from the training split's class counts.
BALANCED = "balanced"
#: ``model.pretrained: if_available``: ImageNet weights when the weights file is on disk, else from scratch.
IF_AVAILABLE = "if_available"


class MultiTaskClassifier(pl.LightningModule):
    """Defect classifier with an auxiliary defect-segmentation head.

    Args:
        backbone: torchvision model name (see :func:`xai_lightning.models.backbones.list_backbones`).
        class_names: class labels in order (linked from the data module by the CLI).
        pretrained: start from torchvision's ImageNet weights (needs them downloaded or cached).
            ``if_available`` uses them when the weights file is in torchvision's cache and trains from
            scratch otherwise (``weights_source`` says which, and the run manifest records it).
        seg_loss_weight: λ, the weight of the segmentation loss (≥ 0; 0 trains a plain classifier).
        class_weights: optional CE weight per class, in ``class_names`` order, or ``balanced``
            (n / (K · n_c) from the training split's class counts, as scikit-learn's "balanced").
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay (0 makes AdamW exactly Adam).
        scheduler: ``cosine`` anneals the learning rate over ``max_epochs``; ``none`` keeps it fixed.
        dropout: dropout before the classification layer.
        decoder_width: channels of the two-scale segmentation decoder.
        decoder: ``two_scale`` (deep features fused onto the stride-8 skip) or ``transposed`` (the poster's
            decoder, :class:`TransposedDecoder`, on ``decoder_stage``).
        decoder_stage: encoder stage the transposed decoder reads (default: the stage of the Grad-CAM layer).
        seg_loss: ``bce`` (BCE with logits) or ``mse`` (MSE on the raw mask logits against the 0/1 mask: the
            poster code's "BCE", kept to reproduce it; it is not a probability loss).
        normalize_input: whether inputs are ImageNet-normalised (linked from ``data.normalize``); baselines and
            displays of the images follow it.
    """

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        class_names: list[str] | None = None,
        pretrained: bool | Literal["if_available"] = False,
        seg_loss_weight: float = 1.0,
        class_weights: list[float] | Literal["balanced"] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        scheduler: Literal["cosine", "none"] = "cosine",
        dropout: float = 0.0,
        decoder_width: int = 64,
        decoder: Literal["two_scale", "transposed"] = "two_scale",
        decoder_stage: str | None = None,
        seg_loss: Literal["bce", "mse"] = "bce",
        normalize_input: bool = True,
    ) -> None:
        super().__init__()
        class_names = list(class_names or HAZELNUT_CLASSES)
        _check_options(class_names, seg_loss_weight, class_weights, scheduler, decoder, seg_loss, pretrained)
        self.save_hyperparameters()
        self.class_names = class_names
        if pretrained == IF_AVAILABLE:
            pretrained = pretrained_weights_cached(backbone)
        #: ``imagenet`` or ``scratch``: what the encoder started from (``pretrained: if_available`` decides at build).
        self.weights_source = "imagenet" if pretrained else "scratch"
        spec = create_backbone(backbone, pretrained=bool(pretrained))
        shapes = spec.stage_shapes()
        self.encoder = spec.encoder
        #: Dotted path of the layer Grad-CAM hooks by default, relative to this module.
        self.cam_layer_name = f"encoder.{spec.cam_layer}"
        deep_channels = shapes[next(reversed(shapes))][0]
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(deep_channels, len(class_names))
        )
        if decoder == "two_scale":
            #: The encoder stage whose output the decoder reads next to the deep features.
            self.decoder_stage = spec.skip_stage
            self.decoder = SegmentationDecoder(shapes[spec.skip_stage][0], deep_channels, decoder_width)
        else:
            self.decoder_stage = decoder_stage or spec.cam_stage
            if self.decoder_stage not in shapes:
                raise ConfigError(
                    f"`model.decoder_stage` is '{self.decoder_stage}'; {backbone}'s stages are {', '.join(shapes)}."
                )
            self.decoder = TransposedDecoder(*shapes[self.decoder_stage])
        # "balanced" weights are counted from the training split in setup(); a buffer either way, so checkpoints hold them.
        weights = torch.ones(len(class_names)) if class_weights == BALANCED else class_weights
        self.register_buffer(
            "class_weights", None if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        )
        # "train" cannot be a ModuleDict key (it shadows nn.Module.train), hence the suffix.
        self.split_metrics = nn.ModuleDict({f"{split}_metrics": self.make_metrics() for split in SPLITS})

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def cam_layer(self) -> nn.Module:
        """The backbone layer whose activations Grad-CAM uses by default (the last feature stage)."""
        return self.get_submodule(self.cam_layer_name)

    def forward(self, images: torch.Tensor) -> MultiTaskOutput:
        x, read = images, None
        for name, stage in self.encoder.named_children():
            x = stage(x)
            if name == self.decoder_stage:
                read = x
        return MultiTaskOutput(self.classifier(x), self.decoder(read, x, images.shape[-2:]))

    def setup(self, stage: str) -> None:
        if self.hparams.class_weights == BALANCED and stage == "fit":
            self.class_weights.copy_(balanced_class_weights(self.trainer.datamodule.frame("train"), self.class_names))

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits only: the function attribution methods explain.

        Skips the segmentation decoder, which every IG step, occlusion window and LIME sample
        would otherwise run for nothing.
        """
        return self.classifier(self.encoder(images))

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: Sample, batch_idx: int) -> torch.Tensor:
        loss = self._shared_step(batch, "train")
        self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(batch["label"]))
        return loss

    def validation_step(self, batch: Sample, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: Sample, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if self.hparams.scheduler == "none" or not self.trainer or not self.trainer.max_epochs:
            return optimizer
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, self.trainer.max_epochs))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}

    # ------------------------------------------------------------------ internals
    def make_metrics(self) -> MetricCollection:
        n = len(self.class_names)
        return MetricCollection(
            {
                "loss": MeanMetric(),
                "loss_ce": MeanMetric(),
                "loss_bce": MeanMetric(),
                "acc": MulticlassAccuracy(n, average="micro"),
                # Macro-averaged recall is balanced accuracy.
                "balanced_acc": MulticlassAccuracy(n, average="macro"),
                "class_acc": MulticlassAccuracy(n, average=None),
                "seg_iou": BinaryJaccardIndex(),
            },
            compute_groups=False,
        )

    def _shared_step(self, batch: Sample, split: str) -> torch.Tensor:
        out = self(batch["image"])
        parts = self.loss(out, batch)
        self.update_metrics(self.split_metrics[f"{split}_metrics"], batch, out, parts)
        return parts.loss

    def loss(self, out: MultiTaskOutput, batch: Sample):
        """The multi-task loss of one batch, with its parts (:func:`~xai_lightning.models.losses.multitask_loss`)."""
        return multitask_loss(
            out.logits,
            out.mask_logits,
            batch["label"],
            batch["mask"],
            self.hparams.seg_loss_weight,
            self.class_weights,
            seg_loss=self.hparams.get("seg_loss", "bce"),
        )

    def update_metrics(
        self, metrics: MetricCollection, batch: Sample, out: MultiTaskOutput | None = None, parts=None
    ) -> None:
        """Accumulate one batch into a metric collection (made by ``make_metrics``); runs forward if needed."""
        with torch.no_grad():
            out = out if out is not None else self(batch["image"])
            if parts is None:
                parts = self.loss(out, batch)
            n = len(batch["label"])
            for name, value in zip(("loss", "loss_ce", "loss_bce"), parts):
                metrics[name].update(value.detach(), weight=n)
            predictions = out.logits.argmax(dim=1)
            for name in ("acc", "balanced_acc", "class_acc"):
                metrics[name].update(predictions, batch["label"])
            metrics["seg_iou"].update(torch.sigmoid(out.mask_logits), batch["mask"].long())

    def _log_epoch_metrics(self, split: str) -> None:
        metrics = self.split_metrics[f"{split}_metrics"]
        if metrics["acc"].update_count == 0:
            return
        values = metrics.compute()
        logged = {f"{split}/{name}": value for name, value in values.items() if name not in ("acc", "class_acc")}
        for name, value in zip(self.class_names, values["class_acc"]):
            logged[f"{split}/acc/{name}"] = value
        self.log_dict(logged, prog_bar=False)
        self.log(f"{split}/acc", values["acc"], prog_bar=split == "val")
        metrics.reset()


def _check_options(class_names, seg_loss_weight, class_weights, scheduler, decoder, seg_loss, pretrained) -> None:
    if seg_loss_weight < 0:
        raise ConfigError(f"`model.seg_loss_weight` (λ) is {seg_loss_weight}; it must be >= 0.")
    if class_weights == BALANCED:
        pass
    elif isinstance(class_weights, str) or (
        class_weights is not None and (len(class_weights) != len(class_names) or min(class_weights) <= 0)
    ):
        raise ConfigError(
            f"`model.class_weights` must be '{BALANCED}' or hold one positive weight per class ({len(class_names)}: "
            f"{', '.join(class_names)}); got {class_weights}."
        )
    for option, value, allowed in (
        ("scheduler", scheduler, ("cosine", "none")),
        ("decoder", decoder, DECODERS),
        ("seg_loss", seg_loss, SEG_LOSSES),
        ("pretrained", pretrained, (True, False, IF_AVAILABLE)),
    ):
        if value not in allowed:
            raise ConfigError(f"`model.{option}` is {value!r}; use one of {', '.join(map(repr, allowed))}.")


def balanced_class_weights(frame, class_names: list[str]) -> torch.Tensor:
    """``n / (K · n_c)`` per class, from the labels of ``frame`` (a class without images gets weight 1).

    >>> import pandas as pd
    >>> [round(w, 4) for w in balanced_class_weights(pd.DataFrame({"label": ["a", "a", "a", "b"]}), ["a", "b"]).tolist()]
    [0.6667, 2.0]
    """
    counts = frame["label"].value_counts()
    n, k = len(frame), len(class_names)
    return torch.tensor([n / (k * counts[c]) if counts.get(c, 0) else 1.0 for c in class_names], dtype=torch.float32)
