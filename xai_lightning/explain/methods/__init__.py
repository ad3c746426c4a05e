"""The registered attribution methods, one module per family; importing this package registers them all.

Gradient, path, perturbation and reference methods and DeepLIFT on its model twin, each beside its options.
"""

from xai_lightning.explain.baselines import EXPLAINER_BASELINES as BASELINES
from xai_lightning.explain.baselines import baseline_image as make_baseline
from xai_lightning.explain.captum_support import (
    ClassLogits,
    ReducedExplainer,
    numpy_rng_seeded,
    quiet_captum,
    relus_not_inplace,
)
from xai_lightning.explain.methods.deeplift import (
    DeepLiftExplainer,
    DeepLiftOptions,
    distinct_nonlinearity_twin,
    nonlinearities_used_twice,
    share_tensors,
)
from xai_lightning.explain.methods.gradient import (
    GradCAMExplainer,
    GuidedBackpropExplainer,
    GuidedGradCAMExplainer,
    InputXGradientExplainer,
    SaliencyExplainer,
    SmoothGradExplainer,
    SmoothGradOptions,
)
from xai_lightning.explain.methods.path import (
    GradientShapExplainer,
    GradientShapOptions,
    IntegratedGradientsExplainer,
    IntegratedGradientsOptions,
)
from xai_lightning.explain.methods.perturbation import (
    KernelShapExplainer,
    LimeExplainer,
    LimeOptions,
    OcclusionExplainer,
    OcclusionOptions,
    SuperpixelOptions,
    grid_feature_mask,
)
from xai_lightning.explain.methods.coarsened import CoarsenedExplainer
from xai_lightning.explain.methods.reference import (
    CenterPriorExplainer,
    EdgeExplainer,
    RandomExplainer,
    SegmentationHeadExplainer,
)
from xai_lightning.explain.methods.surrogate import WeightedLinearRegression
from xai_lightning.explain.options import LayerOptions

__all__ = [
    "BASELINES",
    "ClassLogits",
    "DeepLiftExplainer",
    "DeepLiftOptions",
    "GradCAMExplainer",
    "GradientShapExplainer",
    "GradientShapOptions",
    "GuidedBackpropExplainer",
    "GuidedGradCAMExplainer",
    "InputXGradientExplainer",
    "IntegratedGradientsExplainer",
    "IntegratedGradientsOptions",
    "KernelShapExplainer",
    "LayerOptions",
    "LimeExplainer",
    "LimeOptions",
    "OcclusionExplainer",
    "OcclusionOptions",
    "CenterPriorExplainer",
    "CoarsenedExplainer",
    "EdgeExplainer",
    "RandomExplainer",
    "ReducedExplainer",
    "SaliencyExplainer",
    "SegmentationHeadExplainer",
    "SmoothGradExplainer",
    "SmoothGradOptions",
    "SuperpixelOptions",
    "WeightedLinearRegression",
    "distinct_nonlinearity_twin",
    "grid_feature_mask",
    "make_baseline",
    "nonlinearities_used_twice",
    "numpy_rng_seeded",
    "quiet_captum",
    "relus_not_inplace",
    "share_tensors",
]
