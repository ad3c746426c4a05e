"""Sanity and robustness checks of attribution methods: parameter randomisation and run-to-run stability.

- :func:`cascading_randomization` is Adebayo et al.'s (2018) model-parameter randomisation test: a
  map that barely changes when the model's weights are destroyed explains the input, not the model,
  and fails the check (:func:`sanity_verdict`).
- :func:`stability` explains the same images R times with different seeds: stochastic methods
  (SmoothGrad, LIME, KernelSHAP) should give nearly the same map every time.

Both compare maps with :func:`spearman` (rank correlation of all pixels) and, for stability, with the
IoU of the top 10 % pixels (:func:`xai_lightning.metrics.agreement.top_fraction_iou`), as defined in
docs/metrics.md, "Faithfulness, robustness and sanity".
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from itertools import combinations
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from xai_lightning.explain.base import Explainer, create_explainer
from xai_lightning.explain.engine import explain_batch
from xai_lightning.metrics.agreement import TOP_FRACTION, top_fraction_iou

__all__ = [
    "SANITY_THRESHOLD",
    "MethodSpec",
    "cascading_randomization",
    "default_randomization_layers",
    "randomize_layer",
    "sanity_verdict",
    "spearman",
    "stability",
]

#: How a method is given: a registry name; an options mapping (``{"method": name, **options}``,
#: ``method`` defaulting to the display name; None means no options); an :class:`Explainer` (rebuilt
#: from its ``name``, ``seed`` and ``options()``); or a factory ``(model, seed) -> Explainer``.
MethodSpec = str | Mapping[str, Any] | None | Explainer | Callable[[nn.Module, int], Explainer]


# ----------------------------------------------------------------------------- rank correlation
def _average_ranks(rows: Tensor) -> Tensor:
    """1-based ranks of each row's values, ties given the mean of the ranks they span (float64)."""
    sorted_rows = torch.sort(rows, dim=1).values
    # For a value v: #(values < v) and #(values <= v). The tied block of v spans ranks
    # less+1 .. less_equal, whose mean is (less + 1 + less_equal) / 2.
    less = torch.searchsorted(sorted_rows, rows, right=False)
    less_equal = torch.searchsorted(sorted_rows, rows, right=True)
    return (less + less_equal + 1).to(torch.float64) / 2


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """(B,) Spearman rank correlation between the rows of two (B, H, W) map batches, float64.

    Ties get average ranks (as ``scipy.stats.spearmanr``). A row that is constant in ``a`` or ``b``
    has no ranking and gives NaN, as does a row holding a non-finite value; other rows are
    unaffected. Identical rows give exactly 1.0: ranks are half-integers, so every sum below is
    exact in float64.
    """
    if a.shape != b.shape:
        raise ValueError(f"maps must have the same shape; got {tuple(a.shape)} and {tuple(b.shape)}.")
    if a.ndim < 2:
        raise ValueError(f"maps must be batched, (B, ...); got shape {tuple(a.shape)}.")
    a = a.detach().flatten(1)
    b = b.detach().flatten(1)
    if a.dtype == torch.bool:
        a = a.to(torch.uint8)
    if b.dtype == torch.bool:
        b = b.to(torch.uint8)
    ra = _average_ranks(a)
    rb = _average_ranks(b)
    # The mean rank is (N + 1) / 2 whatever the ties, so centring is exact too.
    centre = (a.shape[1] + 1) / 2
    ra = ra - centre
    rb = rb - centre
    cov = (ra * rb).sum(dim=1)
    # sqrt of the product (not a product of square roots): sqrt(s * s) == s exactly in IEEE
    # arithmetic, so identical rows give exactly 1.0.
    denominator = torch.sqrt((ra * ra).sum(dim=1) * (rb * rb).sum(dim=1))
    rho = (cov / denominator).clamp(-1.0, 1.0)  # 0/0 -> NaN for a constant row
    finite = torch.isfinite(a.to(torch.float64)).all(dim=1) & torch.isfinite(b.to(torch.float64)).all(dim=1)
    return torch.where(finite & (denominator > 0), rho, torch.full_like(rho, float("nan")))


# ----------------------------------------------------------------------------- methods
def _normalise_methods(methods: Mapping[str, MethodSpec] | Sequence[str]) -> dict[str, MethodSpec]:
    if isinstance(methods, str):
        return {methods: None}
    if isinstance(methods, (list, tuple)):
        return {name: None for name in methods}
    return dict(methods)


def _builder(display: str, spec: MethodSpec) -> Callable[[nn.Module, int], Explainer]:
    """A function ``(model, seed) -> Explainer`` for one method spec (see :data:`MethodSpec`).

    Explainers keep a reference to the model they were built for, so a method must be rebuilt on
    every (randomised) model rather than reused.
    """
    if isinstance(spec, Explainer):
        name, options = spec.name, spec.options()
        return lambda model, seed: create_explainer(name, model, seed=seed, **options)
    if isinstance(spec, str):
        return lambda model, seed: create_explainer(spec, model, seed=seed)
    if spec is None or isinstance(spec, Mapping):
        options = dict(spec or {})
        method = options.pop("method", display)
        return lambda model, seed: create_explainer(
            method, model, seed=options.get("seed", seed), **_without_seed(options)
        )
    if callable(spec):
        return spec
    raise TypeError(
        f"method '{display}': expected a name, an options mapping, an Explainer or a factory; got {spec!r}."
    )


def _without_seed(options: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in options.items() if key != "seed"}


def _seed_of(spec: MethodSpec, seed: int) -> int:
    # An Explainer instance brings its own seed; everything else takes the function's.
    return spec.seed if isinstance(spec, Explainer) else seed


def _explain_all(
    builders: Mapping[str, Callable[[nn.Module, int], Explainer]],
    seeds: Mapping[str, int],
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
) -> dict[str, Tensor]:
    explainers = {name: build(model, seeds[name]) for name, build in builders.items()}
    # explain_batch serves gradient methods from one shared pass; its maps equal explain()'s.
    result = explain_batch(explainers, images, targets)
    if result.errors:
        name, error = next(iter(result.errors.items()))
        raise RuntimeError(f"method '{name}' failed: {error}") from error
    return result.maps


# ----------------------------------------------------------------------------- randomisation
def default_randomization_layers(model: nn.Module) -> list[str]:
    """Layers randomised top-down: ``classifier``, then the encoder's stages from the last to the first.

    For a :class:`~xai_lightning.models.multitask.MultiTaskClassifier` with a ResNet this is
    ``["classifier", "encoder.layer4", ..., "encoder.layer1", "encoder.stem"]``. The segmentation
    decoder is not on the path ``model.classify`` takes, so it is not included (pass ``layers``
    explicitly to randomise it for the ``segmentation_head`` method).
    """
    if not isinstance(getattr(model, "encoder", None), nn.Module) or not isinstance(
        getattr(model, "classifier", None), nn.Module
    ):
        raise TypeError("the model has no `encoder` and `classifier` modules; pass `layers` explicitly.")
    stages = [f"encoder.{name}" for name, _ in model.encoder.named_children()]
    return ["classifier", *reversed(stages)]


def randomize_layer(module: nn.Module, seed: int = 0) -> None:
    """Re-initialise every parameter of ``module`` in place, reproducibly for a given ``seed``.

    Modules with ``reset_parameters()`` (convolutions, linear layers, norms: BatchNorm also resets
    its running statistics) get their own initialisation, the distribution the model started from.
    Parameters of modules without one are randomly permuted, which keeps their scale and destroys
    what was learnt. The global RNG state is left as it was (``fork_rng``), so a caller's random
    stream does not depend on whether the check ran.
    """
    devices = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        for child in module.modules():
            reset = getattr(child, "reset_parameters", None)
            if callable(reset):
                reset()
                continue
            for parameter in child.parameters(recurse=False):
                order = torch.randperm(parameter.numel(), device=parameter.device)
                parameter.copy_(parameter.flatten()[order].reshape(parameter.shape))


def cascading_randomization(
    model: nn.Module,
    explainers: Mapping[str, MethodSpec] | Sequence[str],
    images: Tensor,
    targets: Tensor,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    intact: Mapping[str, Tensor] | None = None,
) -> pd.DataFrame:
    """Cascading model-parameter randomisation (Adebayo et al., 2018): how much each map depends on the weights.

    Layers are randomised top-down and cumulatively (step 1 randomises ``layers[0]``, step 2 also
    ``layers[1]``, ...). After each step every method's maps are recomputed and compared with the
    maps of the intact model by :func:`spearman`. All of this happens on a deep copy: the caller's
    model (weights, buffers, modes) is never touched.

    Args:
        model: the model explained (a :class:`~xai_lightning.models.multitask.MultiTaskClassifier`
            or anything with ``classify``).
        explainers: display name -> method spec (:data:`MethodSpec`), or a list of registry names.
            Methods are rebuilt on the randomised copy at every step, since an explainer holds a
            reference to its model.
        images: (B, 3, H, W) images.
        targets: (B,) classes explained (the same classes at every step).
        layers: dotted module paths in randomisation order; default
            :func:`default_randomization_layers`.
        seed: seeds the re-initialisation (step ``s`` uses ``seed * 1_000_003 + s``) and the
            stochastic methods (unless a spec brings its own seed).
        intact: the methods' maps of ``images`` on the intact model, when the caller has them already
            (computed with the same seed); step 0 then explains nothing.

    Returns:
        A tidy frame with columns ``method, step, layer, image, spearman``. Step 0 (layer
        ``"original"``) compares the intact maps with themselves: 1, or NaN for a constant map,
        which has no ranking to compare. A randomised map that became constant (e.g. Grad-CAM
        zeroed by its ReLU) also gives NaN; :func:`sanity_verdict` explains how NaNs are counted.
    """
    methods = _normalise_methods(explainers)
    builders = {name: _builder(name, spec) for name, spec in methods.items()}
    seeds = {name: _seed_of(spec, seed) for name, spec in methods.items()}
    work = copy.deepcopy(model)
    layers = list(default_randomization_layers(work) if layers is None else layers)
    for layer in layers:
        try:
            work.get_submodule(layer)
        except AttributeError as error:
            raise ValueError(f"layer '{layer}' is not a submodule of the model: {error}") from error

    def record(step: int, layer: str, maps: Mapping[str, Tensor]) -> None:
        for name in builders:
            rho = spearman(original[name], maps[name]).cpu().tolist()
            rows.extend(
                {"method": name, "step": step, "layer": layer, "image": i, "spearman": r} for i, r in enumerate(rho)
            )

    rows: list[dict[str, Any]] = []
    known = intact is not None and all(name in intact for name in builders)
    original = dict(intact) if known else _explain_all(builders, seeds, work, images, targets)
    record(0, "original", original)
    for step, layer in enumerate(layers, start=1):
        randomize_layer(work.get_submodule(layer), seed=seed * 1_000_003 + step)
        record(step, layer, _explain_all(builders, seeds, work, images, targets))
    return pd.DataFrame(rows, columns=["method", "step", "layer", "image", "spearman"])


#: A method fails the randomisation check when its mean |ρ| after all layers exceeds this (Adebayo et al.).
SANITY_THRESHOLD = 0.5


def sanity_verdict(frame: pd.DataFrame, threshold: float = SANITY_THRESHOLD, absolute: bool = True) -> pd.DataFrame:
    """Which methods fail the randomisation check: mean correlation after randomising every layer > ``threshold``.

    Read from the last step of :func:`cascading_randomization`'s frame. By default the mean is of
    ``|spearman|`` (Adebayo et al. report the absolute rank correlation): a map whose ranking
    merely flipped still mirrors the intact one. Images whose intact map is constant (NaN at step
    0) are left out; a randomised map that became constant carries nothing of the intact one and
    counts as correlation 0.

    Returns:
        One row per method (index ``method``): ``layer`` (the last layer randomised), ``spearman``
        (the mean), ``n_images`` and ``fails`` (True: the map survives randomisation).
    """
    informative = frame[(frame["step"] == 0) & frame["spearman"].notna()][["method", "image"]]
    last = frame[frame["step"] == frame["step"].max()].merge(informative, on=["method", "image"])
    values = last["spearman"].fillna(0.0)
    last = last.assign(spearman=values.abs() if absolute else values)
    verdict = last.groupby("method", sort=False).agg(
        layer=("layer", "first"), spearman=("spearman", "mean"), n_images=("image", "count")
    )
    # Methods without a single informative image still appear, with no verdict to give.
    verdict = verdict.reindex(pd.Index(frame["method"].unique(), name="method"))
    verdict["n_images"] = verdict["n_images"].fillna(0).astype(int)
    verdict["fails"] = verdict["spearman"] > threshold
    return verdict


# ----------------------------------------------------------------------------- stability
def stability(
    method: MethodSpec,
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    fraction: float = TOP_FRACTION,
    first: Tensor | None = None,
) -> pd.DataFrame:
    """Run-to-run stability: the same images explained once per seed, compared pairwise.

    For R seeds there are R(R-1)/2 pairs of runs; each image gets the mean over pairs of
    :func:`spearman` and of the top-``fraction`` IoU. A deterministic method scores exactly 1 on
    both; a stochastic one the less, the more its maps vary. A constant map gives NaN Spearman (no
    ranking), which propagates to that image's mean.

    Args:
        method: a registry name, a spec ``{"method": name, **options}``, an :class:`Explainer`
            (rebuilt per seed from its options) or a factory ``(model, seed) -> Explainer``.
        model: the model explained; used as is (``explain`` restores its modes and gradients).
        images: (B, 3, H, W) images.
        targets: (B,) classes explained.
        seeds: one run per seed (at least two, distinct).
        fraction: share of pixels for the top-fraction IoU (default ``TOP_FRACTION``, 10 %).
        first: the maps of the run with ``seeds[0]``, when the caller has them already.

    Returns:
        A frame with one row per image: ``method, image, spearman, iou, runs``.
    """
    seeds = list(seeds)
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ValueError(f"stability needs at least two distinct seeds; got {seeds}.")
    display = method if isinstance(method, str) else None
    if isinstance(method, Mapping):
        display = method.get("method")
    build = _builder(display or "method", method)
    runs = []
    for index, seed in enumerate(seeds):
        explainer = build(model, seed)
        display = display or explainer.name
        runs.append(first if index == 0 and first is not None else explainer.explain(images, targets))
    pairs = list(combinations(range(len(runs)), 2))
    rho = torch.stack([spearman(runs[i], runs[j]) for i, j in pairs]).mean(dim=0)
    iou = torch.stack([top_fraction_iou(runs[i], runs[j], fraction) for i, j in pairs]).mean(dim=0)
    return pd.DataFrame(
        {
            "method": display,
            "image": range(len(images)),
            "spearman": rho.cpu().numpy(),
            "iou": iou.cpu().numpy(),
            "runs": len(runs),
        }
    )
