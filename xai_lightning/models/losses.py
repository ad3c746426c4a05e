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
) -> MultiTaskLoss:
    """``CE(logits, labels) + seg_weight · BCEWithLogits(mask_logits, masks)``.

    The BCE is a real binary cross-entropy on the mask logits (averaged over pixels), not MSE on raw
    logits as in the public code behind the hazelnut win-rate poster.

    >>> logits, labels = torch.zeros(2, 5), torch.tensor([0, 3])
    >>> mask_logits, masks = torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)
    >>> round(multitask_loss(logits, mask_logits, labels, masks, 0.5).loss.item(), 4)  # ln 5 + 0.5 ln 2
    1.956
    """
    ce = F.cross_entropy(logits, labels, weight=class_weights)
    bce = F.binary_cross_entropy_with_logits(mask_logits, masks)
    return MultiTaskLoss(ce + seg_weight * bce, ce, bce)
