"""The multi-task objective: classification cross-entropy plus λ times pixel-wise BCE on the defect mask."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class MultiTaskLoss(NamedTuple):
    """The total loss and its two parts (logged separately)."""

    loss: torch.Tensor
    ce: torch.Tensor
    bce: torch.Tensor


def multitask_loss(
    logits: torch.Tensor,
    mask_logits: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor,
    seg_weight: float,
    class_weights: torch.Tensor | None = None,
    seg_loss: str = "bce",
) -> MultiTaskLoss:
    """``CE(logits, labels) + seg_weight · BCEWithLogits(mask_logits, masks)``.

    The BCE is a real binary cross-entropy on the mask logits (averaged over pixels). ``seg_loss="mse"``
    reproduces the public code behind the hazelnut win-rate poster instead: MSE between the raw logits
    and the 0/1 mask (which it calls BCE); the ``bce`` part of the result then holds that MSE.

    >>> logits, labels = torch.zeros(2, 5), torch.tensor([0, 3])
    >>> mask_logits, masks = torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)
    >>> round(multitask_loss(logits, mask_logits, labels, masks, 0.5).loss.item(), 4)  # ln 5 + 0.5 ln 2
    1.956
    >>> round(multitask_loss(logits, mask_logits, labels, masks, 0.5, seg_loss="mse").loss.item(), 4)  # ln 5 + 0.5
    2.1094
    """
    ce = F.cross_entropy(logits, labels, weight=class_weights)
    if seg_loss == "mse":
        bce = F.mse_loss(mask_logits, masks)
    else:
        bce = F.binary_cross_entropy_with_logits(mask_logits, masks)
    return MultiTaskLoss(ce + seg_weight * bce, ce, bce)
