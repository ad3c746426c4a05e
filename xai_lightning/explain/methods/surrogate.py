"""The surrogate model LIME and KernelSHAP fit to their perturbation samples: exact weighted least squares.

A closed-form float64 solve replaces Captum's scikit-learn and SGD surrogates, on any device.
"""

from __future__ import annotations

import math

import torch
from captum._utils.models.model import Model
from torch import Tensor
from torch.utils.data import DataLoader


class WeightedLinearRegression(Model):
    """Captum interpretable model: weighted least squares with an unpenalised intercept, solved in closed form.

    ``alpha > 0`` adds a ridge penalty ``alpha·||w||²``. Captum's defaults for Lime and KernelShap
    (``SkLearnLasso``, ``SkLearnLinearRegression``) need scikit-learn, which is no dependency here;
    its torch ``SGDLasso``/``SGDRidge`` stop after 10–100 SGD steps at lr 0.01 and return
    coefficients far from the optimum. A float64 pseudo-inverse gives the exact (minimum-norm when
    there are more superpixels than samples) solution, deterministically, on any device.
    """

    def __init__(self, alpha: float = 0.0) -> None:
        self.alpha = alpha
        self.coef: Tensor | None = None
        self.intercept: Tensor | None = None

    def fit(self, train_data: DataLoader, **kwargs: object) -> dict[str, float]:
        batches = list(train_data)
        x = torch.cat([batch[0] for batch in batches]).double()
        y = torch.cat([batch[1] for batch in batches]).double().reshape(len(x), -1)
        if len(batches[0]) > 2:
            w = torch.cat([batch[2] for batch in batches]).double().reshape(-1)
        else:
            w = torch.ones(len(x), dtype=torch.float64, device=x.device)
        # Centring with weighted means keeps the intercept out of the penalty.
        x_mean = (w[:, None] * x).sum(0) / w.sum()
        y_mean = (w[:, None] * y).sum(0) / w.sum()
        root_w = w.sqrt()[:, None]
        design, response = (x - x_mean) * root_w, (y - y_mean) * root_w
        if self.alpha > 0:
            n_features = x.shape[1]
            design = torch.cat([design, math.sqrt(self.alpha) * torch.eye(n_features, dtype=x.dtype, device=x.device)])
            response = torch.cat([response, response.new_zeros(n_features, response.shape[1])])
        coef = torch.linalg.pinv(design) @ response  # (features, outputs)
        self.coef = coef.T.float()
        self.intercept = (y_mean - x_mean @ coef).float()
        return {"train_samples": float(len(x))}

    def representation(self) -> Tensor:
        """Coefficients, (outputs, features): the attribution of each superpixel."""
        if self.coef is None:
            raise RuntimeError("WeightedLinearRegression.representation() called before fit().")
        return self.coef

    def __call__(self, x: Tensor) -> Tensor:
        return x.float() @ self.representation().T + self.intercept
