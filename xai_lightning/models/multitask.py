"""The multi-task LightningModule: a backbone with a classification head and a segmentation head.

Loss = CE(class logits, y) + λ · BCEWithLogits(mask logits, defect mask); per-split metrics through
torchmetrics, so they accumulate over the epoch and synchronise under DDP.
"""

from __future__ import annotations

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
from xai_lightning.models.backbones import create_backbone
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


class MultiTaskClassifier(pl.LightningModule):
    """Defect classifier with an auxiliary defect-segmentation head.

    Args:
        backbone: torchvision model name (see :func:`xai_lightning.models.backbones.list_backbones`).
        class_names: class labels in order (linked from the data module by the CLI).
        pretrained: start from torchvision's ImageNet weights (needs them downloaded or cached).
        seg_loss_weight: λ, the weight of the segmentation BCE in the loss (≥ 0; 0 trains a plain classifier).
        class_weights: optional CE weight per class, in ``class_names`` order.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        scheduler: ``cosine`` anneals the learning rate over ``max_epochs``; ``none`` keeps it fixed.
        dropout: dropout before the classification layer.
        decoder_width: channels of the segmentation decoder.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        class_names: list[str] | None = None,
        pretrained: bool = False,
        seg_loss_weight: float = 1.0,
        class_weights: list[float] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        scheduler: Literal["cosine", "none"] = "cosine",
        dropout: float = 0.0,
        decoder_width: int = 64,
    ) -> None:
        super().__init__()
        class_names = list(class_names or HAZELNUT_CLASSES)
        if seg_loss_weight < 0:
            raise ConfigError(f"`model.seg_loss_weight` (λ) is {seg_loss_weight}; it must be >= 0.")
        if class_weights is not None and (len(class_weights) != len(class_names) or min(class_weights) <= 0):
            raise ConfigError(
                f"`model.class_weights` must hold one positive weight per class ({len(class_names)}: "
                f"{', '.join(class_names)}); got {class_weights}."
            )
        if scheduler not in ("cosine", "none"):
            raise ConfigError(f"`model.scheduler` is '{scheduler}'; use 'cosine' or 'none'.")
        self.save_hyperparameters()
        self.class_names = class_names
        spec = create_backbone(backbone, pretrained=pretrained)
        skip_channels, deep_channels = spec.channels()
        self.encoder = spec.encoder
        self.skip_stage = spec.skip_stage
        #: Dotted path of the layer Grad-CAM hooks by default, relative to this module.
        self.cam_layer_name = f"encoder.{spec.cam_layer}"
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(deep_channels, len(class_names))
        )
        self.decoder = SegmentationDecoder(skip_channels, deep_channels, decoder_width)
        self.register_buffer(
            "class_weights", None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
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
        x, skip = images, None
        for name, stage in self.encoder.named_children():
            x = stage(x)
            if name == self.skip_stage:
                skip = x
        return MultiTaskOutput(self.classifier(x), self.decoder(skip, x, images.shape[-2:]))

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
        parts = multitask_loss(
            out.logits, out.mask_logits, batch["label"], batch["mask"], self.hparams.seg_loss_weight, self.class_weights
        )
        self.update_metrics(self.split_metrics[f"{split}_metrics"], batch, out, parts)
        return parts.loss

    def update_metrics(
        self, metrics: MetricCollection, batch: Sample, out: MultiTaskOutput | None = None, parts=None
    ) -> None:
        """Accumulate one batch into a metric collection (made by ``make_metrics``); runs forward if needed."""
        with torch.no_grad():
            out = out if out is not None else self(batch["image"])
            if parts is None:
                parts = multitask_loss(
                    out.logits, out.mask_logits, batch["label"], batch["mask"], self.hparams.seg_loss_weight,
                    self.class_weights,
                )
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
