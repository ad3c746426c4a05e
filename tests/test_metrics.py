"""Tests of the localisation scores, the win-rate and their torchmetrics wrappers.

Hand-built cases with values worked out by hand, plus brute-force references on small random maps.
"""

from __future__ import annotations

import inspect
import itertools
import math
import warnings
from fractions import Fraction

import pytest
import torch

from xai_lightning.metrics import (
    LOCALIZATION_METRICS,
    OtsuIoU,
    OtsuPrecision,
    OtsuRecall,
    PixelAUROC,
    PointingGame,
    RelevanceMassAccuracy,
    TopKOverlap,
    WinRate,
    dilate_masks,
    flatten_result,
    localization_scores,
    otsu_iou_precision_recall,
    otsu_threshold,
    pixel_auroc,
    pointing_game,
    relevance_mass_accuracy,
    top_k_iou,
    top_k_overlap,
    win_credit,
    win_rate,
)
from xai_lightning.metrics import sorted_rows
from xai_lightning.metrics.names import DEFAULT_POINTING_TIES

NAN = float("nan")


def _random_masks(generator: torch.Generator, b: int, h: int, w: int, p: float = 0.3) -> torch.Tensor:
    masks = torch.rand(b, h, w, generator=generator) < p
    masks[:, 0, 0] = True  # never empty
    masks[:, -1, -1] = False  # never full
    return masks


def _tie_heavy_maps(generator: torch.Generator, b: int, h: int, w: int) -> torch.Tensor:
    """Maps with many ties: each row quantised to 2..6 levels, some ReLU'd to a block of zeros."""
    raw = torch.rand(b, h, w, generator=generator)
    levels = torch.randint(2, 7, (b, 1, 1), generator=generator).float()
    maps = (raw * levels).floor() / levels
    relu = torch.rand(b, 1, 1, generator=generator) < 0.3
    return torch.where(relu, (maps - 0.5).clamp(min=0), maps)


@pytest.fixture(params=["numpy", "torch"])
def code_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on both CPU paths: NumPy kernels (the CPU's default) and the pure-torch, sync-free path CUDA takes."""
    if request.param == "torch":
        monkeypatch.setattr(sorted_rows, "_use_numpy", lambda x: False)
    return request.param


# --------------------------------------------------------------------------- TKO


def test_tko_mask_as_map_is_one_and_complement_is_zero() -> None:
    g = torch.Generator().manual_seed(0)
    masks = _random_masks(g, 4, 8, 8)
    assert torch.equal(top_k_overlap(masks.float(), masks), torch.ones(4, dtype=torch.float64))
    assert torch.equal(top_k_overlap((~masks).float(), masks), torch.zeros(4, dtype=torch.float64))


def test_tko_ties_at_threshold_give_exact_fraction() -> None:
    # 3x3 map, mask = 3 pixels (K = 3). Values: one 9 (in mask), four 5s (two in
    # mask), four 0s. tau = 5, G = {9}, T = the four 5s: two of the remaining
    # K - |G| = 2 slots, each drawn from T with 2/4 chance of landing in M.
    # TKO = (1 + 2 * 2/4) / 3 = 2/3.
    a = torch.tensor([[[9.0, 5.0, 5.0], [5.0, 5.0, 0.0], [0.0, 0.0, 0.0]]])
    m = torch.tensor([[[True, True, False], [False, True, False], [False, False, False]]])
    assert top_k_overlap(a, m).item() == pytest.approx(2 / 3, abs=1e-15)
    # K = 2: G = {9}, one slot from 4 tied, 2 in M -> (1 + 1 * 2/4) / 2 = 3/4.
    assert top_k_overlap(a, m, k=2).item() == pytest.approx(3 / 4, abs=1e-15)


def test_tko_k_as_int_and_fraction() -> None:
    # 2x5 map with distinct values 9..0; mask holds the values 9, 7, 0.
    a = torch.arange(9, -1, -1, dtype=torch.float32).reshape(1, 2, 5)
    m = torch.zeros(1, 2, 5, dtype=torch.bool)
    m.view(-1)[[0, 2, 9]] = True
    assert top_k_overlap(a, m, k=1).item() == pytest.approx(1.0)  # {9}
    assert top_k_overlap(a, m, k=2).item() == pytest.approx(1 / 2)  # {9, 8}
    assert top_k_overlap(a, m, k=4).item() == pytest.approx(2 / 4)
    assert top_k_overlap(a, m, k=0.4).item() == pytest.approx(2 / 4)  # 0.4 * 10 = 4 pixels
    assert top_k_overlap(a, m, k=0.3).item() == pytest.approx(2 / 3)  # 3 pixels
    # 0.07 * 100 is 7.000000000000001 in floating point: 7 pixels, not 8.
    a100 = torch.arange(99, -1, -1, dtype=torch.float32).reshape(1, 10, 10)
    m100 = torch.zeros(1, 10, 10, dtype=torch.bool)
    m100.view(-1)[[0, 1, 2, 3, 4, 5, 7]] = True
    assert top_k_overlap(a100, m100, k=0.07).item() == pytest.approx(6 / 7)
    assert top_k_overlap(a, m, k=1.0).item() == pytest.approx(3 / 10)  # every pixel
    assert top_k_overlap(a, m).item() == pytest.approx(2 / 3)  # K = |M| = 3
    for bad in (0, 11, 0.0, 1.5, -0.2):
        with pytest.raises(ValueError):
            top_k_overlap(a, m, k=bad)
    with pytest.raises(TypeError):
        top_k_overlap(a, m, k=True)


def test_tko_k_varies_per_image_in_one_batch() -> None:
    a = torch.arange(16, dtype=torch.float32).reshape(1, 4, 4).repeat(3, 1, 1)
    m = torch.zeros(3, 4, 4, dtype=torch.bool)
    m[0].view(-1)[[15]] = True  # K=1, top pixel in M -> 1
    m[1].view(-1)[[15, 0]] = True  # K=2, top-2 = {15, 14} -> 1/2
    m[2].view(-1)[[0, 1, 2]] = True  # K=3, none of the top-3 -> 0
    torch.testing.assert_close(top_k_overlap(a, m), torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64))


def test_tko_empty_mask_and_nonfinite_map_are_nan() -> None:
    a = torch.rand(3, 5, 5)
    m = torch.zeros(3, 5, 5, dtype=torch.bool)
    m[1, 2, 2] = True
    m[2, 2, 2] = True
    a[2, 0, 0] = NAN
    out = top_k_overlap(a, m)
    assert math.isnan(out[0]) and not math.isnan(out[1]) and math.isnan(out[2])
    # A fixed K does not rescue an empty mask.
    assert math.isnan(top_k_overlap(a, m, k=3)[0])


def test_tko_independent_of_pixel_order() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.randint(0, 4, (6, 7, 9), generator=g).float()  # many ties
    m = _random_masks(g, 6, 7, 9)
    perm = torch.randperm(63, generator=g)
    a_p = a.reshape(6, -1)[:, perm].reshape(6, 7, 9)
    m_p = m.reshape(6, -1)[:, perm].reshape(6, 7, 9)
    for k in (None, 5, 0.25):
        torch.testing.assert_close(top_k_overlap(a_p, m_p, k=k), top_k_overlap(a, m, k=k), rtol=0, atol=1e-15)


def _brute_tko(values: list[float], inside: list[bool], k: int) -> Fraction:
    """docs/metrics.md's TKO, literally: tau the K-th largest value, G above it, T tied with it."""
    tau = sorted(values, reverse=True)[k - 1]
    n_above = sum(v > tau for v in values)
    n_above_in = sum(v > tau and i for v, i in zip(values, inside))
    n_tied = sum(v == tau for v in values)
    n_tied_in = sum(v == tau and i for v, i in zip(values, inside))
    return (n_above_in + (k - n_above) * Fraction(n_tied_in, n_tied)) / k


def test_tko_matches_brute_force_without_ties() -> None:
    g = torch.Generator().manual_seed(2)
    a = torch.rand(20, 6, 6, generator=g)
    m = _random_masks(g, 20, 6, 6)
    out = top_k_overlap(a, m)
    for i in range(20):
        k = int(m[i].sum())
        top = torch.argsort(a[i].flatten(), descending=True)[:k]
        assert out[i].item() == pytest.approx(m[i].flatten()[top].double().mean().item(), abs=1e-12)


@pytest.mark.parametrize("k", [None, 1, 5, 0.3, 1.0])
def test_tko_matches_brute_force_with_many_ties(k: int | float | None, code_path: str) -> None:  # noqa: PYI041
    # Randomised: quantised and ReLU'd maps put many pixels at tau, masks from nearly empty to nearly full.
    g = torch.Generator().manual_seed(20)
    for trial in range(4):
        h, w = 3 + trial, 5 + 2 * trial
        a = _tie_heavy_maps(g, 16, h, w)
        m = torch.rand(16, h, w, generator=g) < torch.rand(16, 1, 1, generator=g)
        m[:, 0, 0] = True
        out = top_k_overlap(a, m, k=k)
        for i in range(16):
            values, inside = a[i].flatten().tolist(), m[i].flatten().tolist()
            if k is None:
                kk = sum(inside)
            elif isinstance(k, float):  # not a dict lookup: k=1 and k=1.0 hash alike but differ
                kk = math.floor(k * h * w + 0.5)
            else:
                kk = k
            expected = float(_brute_tko(values, inside, kk))
            assert out[i].item() == pytest.approx(expected, abs=1e-12), (values, inside, kk)


def test_tko_equals_exact_expectation_over_tie_breaking() -> None:
    # Exhaustive over all 6! orders used as tie-breakers on a 2x3 map.
    g = torch.Generator().manual_seed(3)
    orders = list(itertools.permutations(range(6)))
    for _ in range(12):
        a = torch.randint(0, 3, (1, 2, 3), generator=g).float()
        m = torch.rand(1, 2, 3, generator=g) < 0.5
        m[0, 0, 0] = True
        values = a.flatten().tolist()
        inside = m.flatten().tolist()
        for k in range(1, 7):
            total = Fraction(0)
            for order in orders:
                # Sort by value descending, breaking ties by this order.
                ranked = sorted(range(6), key=lambda j: (-values[j], order[j]))
                total += Fraction(sum(inside[j] for j in ranked[:k]), k)
            expected = total / len(orders)
            got = top_k_overlap(a, m, k=k).item()
            assert got == pytest.approx(float(expected), abs=1e-12), (values, inside, k)


def test_tko_equal_values_reached_differently_tie_within_tolerance() -> None:
    # 1/3 once without ties (one of three top pixels in M) and once through a
    # tie fraction (no pixel above tau, 6 tied of which 2 in M): same TKO.
    a1 = torch.tensor([[[3.0, 2.0, 1.0, 0.0, 0.0, 0.0]]])
    m1 = torch.tensor([[[True, False, False, True, True, False]]])
    a2 = torch.tensor([[[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]]])
    m2 = torch.tensor([[[True, True, False, False, False, False, True]]])
    t1 = top_k_overlap(a1, m1).item()
    t2 = top_k_overlap(a2, m2).item()
    assert t1 == pytest.approx(1 / 3) and abs(t1 - t2) <= 1e-9
    credit = win_credit(torch.tensor([[t1, t2]], dtype=torch.float64))
    assert torch.equal(credit, torch.tensor([[0.5, 0.5]], dtype=torch.float64))


# ------------------------------------------------------------ other localisation


def test_pointing_game_hit_miss_and_empty_mask() -> None:
    a = torch.zeros(3, 5, 5)
    a[:, 1, 1] = 1.0
    m = torch.zeros(3, 5, 5, dtype=torch.bool)
    m[0, 1, 1] = True  # hit
    m[1, 3, 3] = True  # miss
    out = pointing_game(a, m)
    assert out[0].item() == 1.0 and out[1].item() == 0.0 and math.isnan(out[2])


def test_pointing_game_ties_any_versus_expected() -> None:
    a = torch.zeros(1, 4, 4)
    a[0, 0, 0] = a[0, 3, 3] = a[0, 0, 3] = a[0, 3, 0] = 2.0  # four tied maxima
    m = torch.zeros(1, 4, 4, dtype=torch.bool)
    m[0, 3, 3] = True
    assert pointing_game(a, m, ties="any").item() == 1.0
    assert pointing_game(a, m, ties="expected").item() == pytest.approx(0.25)
    # A constant map is a hit under "any" but only chance level under "expected".
    flat = torch.zeros(1, 4, 4)
    assert pointing_game(flat, m, ties="any").item() == 1.0
    assert pointing_game(flat, m, ties="expected").item() == pytest.approx(1 / 16)
    with pytest.raises(ValueError):
        pointing_game(a, m, ties="first")


def test_pointing_ties_default_is_expected_everywhere() -> None:
    # One default for the tie rule: the function, the torchmetrics wrapper and localization_scores agree.
    for function in (pointing_game, PointingGame.__init__, localization_scores):
        assert inspect.signature(function).parameters["ties"].default == DEFAULT_POINTING_TIES == "expected"
    a = torch.zeros(2, 4, 4)
    a[:, 0, 0] = a[:, 3, 3] = 1.0  # two tied maxima, one of them in the mask
    m = torch.zeros(2, 4, 4, dtype=torch.bool)
    m[:, 3, 3] = True
    assert pointing_game(a, m).tolist() == [0.5, 0.5]
    assert localization_scores(a, m)["pointing_game"].tolist() == [0.5, 0.5]
    metric = PointingGame()
    metric.update(a, m)
    assert metric.compute()["overall"].item() == 0.5
    with pytest.raises(ValueError):
        PointingGame(ties="first")
    with pytest.raises(ValueError):
        localization_scores(a, m, ties="first")


def test_pointing_game_tolerance_is_a_euclidean_disk() -> None:
    m = torch.zeros(1, 16, 16, dtype=torch.bool)
    m[0, 5, 5] = True
    straight = torch.zeros(1, 16, 16)
    straight[0, 5, 8] = 1.0  # distance 3
    diagonal = torch.zeros(1, 16, 16)
    diagonal[0, 7, 7] = 1.0  # distance 2 * sqrt(2) = 2.83
    assert [pointing_game(straight, m, tolerance=r).item() for r in (0, 2, 3)] == [0.0, 0.0, 1.0]
    # A square kernel of radius 2 would count the diagonal neighbour; a disk does not.
    assert [pointing_game(diagonal, m, tolerance=r).item() for r in (0, 2, 3)] == [0.0, 0.0, 1.0]
    dilated = dilate_masks(m, 2)
    assert int(dilated.sum()) == 13  # lattice points with dx^2 + dy^2 <= 4
    # An empty mask stays NaN at any tolerance.
    assert math.isnan(pointing_game(straight, torch.zeros_like(m), tolerance=5).item())


@pytest.mark.parametrize("radius", [1, 2, 3, 5])
def test_dilate_masks_matches_euclidean_distance(radius: int) -> None:
    g = torch.Generator().manual_seed(radius)
    m = torch.rand(2, 9, 13, generator=g) < 0.05
    m[0, 0, 12] = True  # a corner pixel exercises the borders
    ys, xs = torch.meshgrid(torch.arange(9), torch.arange(13), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()], dim=1).float()
    dist2 = torch.cdist(coords, coords) ** 2
    for i in range(2):
        inside = m[i].flatten()
        expected = ((dist2[:, inside] <= radius**2 + 1e-6).any(dim=1)).reshape(9, 13)
        assert torch.equal(dilate_masks(m, radius)[i], expected)


def test_relevance_mass_accuracy_hand_case() -> None:
    a = torch.tensor([[[4.0, 1.0], [3.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])
    m = torch.tensor(
        [[[True, False], [False, True]], [[True, False], [False, False]], [[False, False], [False, False]]]
    )
    out = relevance_mass_accuracy(a, m)
    assert out[0].item() == pytest.approx(6 / 10)
    assert out[1].item() == 0.0  # all-zero map: no relevance on the defect
    assert math.isnan(out[2])


def test_otsu_separates_a_bimodal_map() -> None:
    g = torch.Generator().manual_seed(4)
    m = _random_masks(g, 3, 32, 32, p=0.2)
    low = 0.1 + 0.05 * torch.rand(3, 32, 32, generator=g)
    high = 0.8 + 0.05 * torch.rand(3, 32, 32, generator=g)
    a = torch.where(m, high, low)
    t = otsu_threshold(a)
    assert bool(((t >= low.amax(dim=(1, 2)) - 1e-7) & (t < 0.8)).all())
    iou, precision, recall = otsu_iou_precision_recall(a, m)
    for value in (iou, precision, recall):
        torch.testing.assert_close(value, torch.ones(3, dtype=torch.float64))


def test_otsu_matches_brute_force_on_integer_maps() -> None:
    # Values 0..255 with both ends present: every value has its own histogram
    # bin, so binned Otsu must equal Otsu over the raw values.
    g = torch.Generator().manual_seed(5)
    a = torch.cat([torch.randint(0, 90, (4, 64), generator=g), torch.randint(150, 256, (4, 64), generator=g)], dim=1)
    a[:, 0], a[:, 1] = 0, 255
    a = a.float().reshape(4, 8, 16)
    t = otsu_threshold(a)
    for i in range(4):
        v = a[i].flatten().double()
        best, best_t = -1.0, None
        for cand in torch.unique(v)[:-1]:
            lo, hi = v[v <= cand], v[v > cand]
            var = len(lo) * len(hi) * (lo.mean() - hi.mean()).item() ** 2
            if var > best:
                best, best_t = var, cand.item()
        assert t[i].item() == best_t


def test_otsu_constant_map_predicts_nothing() -> None:
    a = torch.full((1, 4, 4), 0.3)
    m = torch.zeros(1, 4, 4, dtype=torch.bool)
    m[0, 0, 0] = True
    assert otsu_threshold(a).item() == pytest.approx(0.3)
    iou, precision, recall = otsu_iou_precision_recall(a, m)
    assert (iou.item(), precision.item(), recall.item()) == (0.0, 0.0, 0.0)
    assert all(math.isnan(x.item()) for x in otsu_iou_precision_recall(a, torch.zeros_like(m)))


def _brute_auroc(a: torch.Tensor, m: torch.Tensor) -> float:
    pos, neg = a[m].double(), a[~m].double()
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).double() + 0.5 * (diff == 0).double()).mean().item()


def test_pixel_auroc_matches_pairwise_brute_force_with_ties(code_path: str) -> None:
    g = torch.Generator().manual_seed(6)
    a = torch.randint(0, 5, (10, 6, 7), generator=g).float()
    m = _random_masks(g, 10, 6, 7, p=0.4)
    out = pixel_auroc(a, m)
    for i in range(10):
        assert out[i].item() == pytest.approx(_brute_auroc(a[i], m[i]), abs=1e-12)
    # Randomised over shapes, level counts, ReLU'd blocks of zeros and mask densities.
    for trial in range(4):
        h, w = 2 + trial, 4 + 3 * trial
        a = _tie_heavy_maps(g, 16, h, w)
        m = _random_masks(g, 16, h, w, p=0.1 + 0.2 * trial)
        out = pixel_auroc(a, m)
        for i in range(16):
            assert out[i].item() == pytest.approx(_brute_auroc(a[i], m[i]), abs=1e-12)


def test_pixel_auroc_edge_cases() -> None:
    m = torch.zeros(3, 2, 2, dtype=torch.bool)
    m[0, 0, 0] = True
    m[2] = True
    a = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]]])
    out = pixel_auroc(a, m)
    assert out[0].item() == 1.0 and math.isnan(out[1]) and math.isnan(out[2])
    assert pixel_auroc(torch.zeros(1, 2, 2), m[:1]).item() == 0.5  # constant map: chance


def test_rank_based_scores_independent_of_pixel_order() -> None:
    g = torch.Generator().manual_seed(7)
    a = torch.randint(0, 6, (5, 6, 8), generator=g).float()
    m = _random_masks(g, 5, 6, 8)
    perm = torch.randperm(48, generator=g)

    def permute(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(5, -1)[:, perm].reshape(5, 6, 8)

    for fn in (pixel_auroc, relevance_mass_accuracy, pointing_game):
        torch.testing.assert_close(fn(permute(a), permute(m)), fn(a, m), rtol=0, atol=1e-12)
    for x, y in zip(otsu_iou_precision_recall(permute(a), permute(m)), otsu_iou_precision_recall(a, m)):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-12)


def test_mask_dtypes_are_binarised_with_greater_than_zero() -> None:
    a = torch.tensor([[[3.0, 2.0], [1.0, 0.0]]])
    m255 = torch.tensor([[[255, 0], [128, 0]]], dtype=torch.uint8)  # values below 255 still count
    assert top_k_overlap(a, m255).item() == top_k_overlap(a, m255 > 0).item() == pytest.approx(0.5)
    with pytest.raises(ValueError):
        top_k_overlap(a, m255[0])


@pytest.mark.parametrize(("tolerance", "ties", "k"), [(0, "expected", None), (0, "any", 0.1), (2, "any", 7)])
def test_nonfinite_maps_score_nan_in_every_metric_and_spare_the_other_rows(
    tolerance: int, ties: str, k: int | float | None, code_path: str  # noqa: PYI041
) -> None:
    # NaN and -inf once crashed the Otsu histogram (INT64_MIN bin index) and took the whole batch down.
    g = torch.Generator().manual_seed(14)
    a = _tie_heavy_maps(g, 8, 9, 11)
    m = _random_masks(g, 8, 9, 11)
    clean = localization_scores(a, m, k=k, tolerance=tolerance, ties=ties)
    broken = a.clone()
    broken[1, 4, 5] = NAN
    broken[3, 0, 7] = -math.inf
    broken[4, 8, 10] = math.inf
    broken[6] = NAN  # a whole map
    bad = torch.tensor([1, 3, 4, 6])
    good = torch.tensor([0, 2, 5, 7])
    out = localization_scores(broken, m, k=k, tolerance=tolerance, ties=ties)
    assert set(out) == set(LOCALIZATION_METRICS)
    for name in LOCALIZATION_METRICS:
        assert torch.isnan(out[name][bad]).all(), name
        assert torch.equal(out[name][good], clean[name][good]), name
        assert torch.isfinite(out[name][good]).all(), name
    # The functions on their own agree, and so does the threshold.
    for x, y in zip(otsu_iou_precision_recall(broken, m), (out["otsu_iou"], out["otsu_precision"], out["otsu_recall"])):
        torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True)
    threshold = otsu_threshold(broken)
    assert torch.isnan(threshold[bad]).all()
    assert torch.equal(threshold[good], otsu_threshold(a)[good])
    # A batch of nothing but non-finite maps is all NaN, not an error.
    assert all(torch.isnan(v).all() for v in localization_scores(broken[bad], m[bad]).values())


def test_localization_scores_equal_the_separate_functions(code_path: str) -> None:
    # localization_scores shares one sort per batch between the scores; it must not change any value.
    g = torch.Generator().manual_seed(15)
    a = torch.cat([_tie_heavy_maps(g, 6, 12, 10), torch.rand(6, 12, 10, generator=g)])
    m = _random_masks(g, 12, 12, 10)
    m[2] = False  # an empty mask
    m[5] = True  # a full mask: AUROC is undefined
    for kwargs in ({}, {"k": 0.2, "tolerance": 1, "ties": "any"}):
        out = localization_scores(a, m, **kwargs)
        iou, precision, recall = otsu_iou_precision_recall(a, m)
        expected = {
            "tko": top_k_overlap(a, m, k=kwargs.get("k")),
            "topk_iou": top_k_iou(a, m, k=kwargs.get("k")),
            "pointing_game": pointing_game(
                a, m, tolerance=kwargs.get("tolerance", 0), ties=kwargs.get("ties", DEFAULT_POINTING_TIES)
            ),
            "relevance_mass": relevance_mass_accuracy(a, m),
            "otsu_iou": iou,
            "otsu_precision": precision,
            "otsu_recall": recall,
            "pixel_auroc": pixel_auroc(a, m),
        }
        assert out.keys() == expected.keys()
        for name, value in expected.items():
            torch.testing.assert_close(out[name], value, rtol=0, atol=0, equal_nan=True)
    assert all(v.shape == (0,) for v in localization_scores(a[:0], m[:0]).values())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_localization_scores_other_dtypes_match_float32_on_exact_values(dtype: torch.dtype, code_path: str) -> None:
    # Multiples of 1/8 are exact in every float dtype, so every score must be the same.
    g = torch.Generator().manual_seed(16)
    a = torch.randint(0, 9, (6, 8, 8), generator=g).float() / 8
    m = _random_masks(g, 6, 8, 8)
    ref = localization_scores(a, m)
    out = localization_scores(a.to(dtype), m)
    for name in LOCALIZATION_METRICS:
        torch.testing.assert_close(out[name], ref[name], rtol=0, atol=0, equal_nan=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_localization_scores_on_cuda_equal_the_cpu() -> None:
    g = torch.Generator().manual_seed(17)
    a = torch.cat([_tie_heavy_maps(g, 8, 32, 32), torch.rand(8, 32, 32, generator=g)])
    m = _random_masks(g, 16, 32, 32)
    a[3, 1, 1] = NAN
    m[5] = False
    for kwargs in ({}, {"k": 0.1, "tolerance": 2, "ties": "any"}):
        cpu = localization_scores(a, m, **kwargs)
        cuda = localization_scores(a.cuda(), m.cuda(), **kwargs)
        for name in LOCALIZATION_METRICS:
            assert cuda[name].device.type == "cuda"
            torch.testing.assert_close(cuda[name].cpu(), cpu[name], rtol=0, atol=1e-12, equal_nan=True)
    torch.testing.assert_close(otsu_threshold(a.cuda()).cpu(), otsu_threshold(a), rtol=0, atol=0, equal_nan=True)


# ------------------------------------------------------------------ win-rate


def test_win_credit_shares_ties_without_first_method_bias() -> None:
    tko = torch.tensor([[0.4, 0.4, 0.4], [0.2, 0.6, 0.6], [0.7, 0.1, 0.7]], dtype=torch.float64)
    credit = win_credit(tko)
    expected = torch.tensor([[1 / 3] * 3, [0.0, 0.5, 0.5], [0.5, 0.0, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(credit, expected)
    # Within 1e-9 of the best is a tie; 1e-6 is not.
    assert win_credit(torch.tensor([[0.5, 0.5 + 1e-12]], dtype=torch.float64)).tolist() == [[0.5, 0.5]]
    assert win_credit(torch.tensor([[0.5, 0.5 + 1e-6]], dtype=torch.float64)).tolist() == [[0.0, 1.0]]


def test_win_rate_permuting_methods_permutes_rates() -> None:
    g = torch.Generator().manual_seed(8)
    tko = torch.randint(0, 3, (40, 4), generator=g).double() / 2  # frequent ties
    names = ["gradcam", "ig", "saliency", "occlusion"]
    rates, n_excluded = win_rate(tko, names)
    assert n_excluded == 0 and sum(rates.values()) == pytest.approx(1.0)
    for perm in ([3, 2, 1, 0], [1, 0, 3, 2], [2, 3, 0, 1]):
        permuted, _ = win_rate(tko[:, perm], [names[j] for j in perm])
        assert permuted == pytest.approx(rates)
    three_way, _ = win_rate(torch.full((5, 3), 0.25, dtype=torch.float64), ["a", "b", "c"])
    assert three_way == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})


def test_win_rate_excludes_and_counts_nan_rows() -> None:
    tko = torch.tensor([[0.9, 0.1], [NAN, 0.5], [0.2, NAN], [0.3, 0.6]], dtype=torch.float64)
    credit = win_credit(tko)
    assert torch.isnan(credit[1:3]).all() and torch.isfinite(credit[[0, 3]]).all()
    rates, n_excluded = win_rate(tko, ["a", "b"])
    assert rates == pytest.approx({"a": 0.5, "b": 0.5}) and n_excluded == 2
    none_left, n_excluded = win_rate(tko[1:3], ["a", "b"])
    assert n_excluded == 2 and all(math.isnan(v) for v in none_left.values())


def test_winrate_metric_per_class_overall_and_sums_to_one() -> None:
    metric = WinRate(["a", "b", "c"], class_names=["crack", "hole", "print"])
    tko = torch.tensor(
        [
            [0.9, 0.1, 0.1],  # crack: a
            [0.5, 0.5, 0.5],  # crack: 1/3 each
            [0.2, 0.8, 0.8],  # hole: b, c share
            [NAN, 0.3, 0.3],  # hole: excluded
            [0.1, 0.1, 0.7],  # hole: c
        ],
        dtype=torch.float64,
    )
    labels = torch.tensor([0, 0, 1, 1, 1])
    metric.update(tko, labels)
    result = metric.compute()
    assert {k: v.item() for k, v in result["crack"].items()} == pytest.approx({"a": 2 / 3, "b": 1 / 6, "c": 1 / 6})
    assert {k: v.item() for k, v in result["hole"].items()} == pytest.approx({"a": 0.0, "b": 0.25, "c": 0.75})
    # Pooled over the four included images, not the mean of class rates.
    assert {k: v.item() for k, v in result["overall"].items()} == pytest.approx(
        {"a": (1 + 1 / 3) / 4, "b": (1 / 3 + 0.5) / 4, "c": (1 / 3 + 0.5 + 1) / 4}
    )
    for key in ("overall", "crack", "hole"):
        assert sum(v.item() for v in result[key].values()) == pytest.approx(1.0, abs=1e-12)
    assert all(math.isnan(v.item()) for v in result["print"].values())  # no images
    assert result["n_images"].item() == 4 and result["n_excluded"].item() == 1
    assert set(flatten_result(result, "val/winrate")) >= {"val/winrate/crack/a", "val/winrate/n_excluded"}


def test_winrate_metric_validates_inputs() -> None:
    with pytest.raises(ValueError):
        WinRate(["a", "a"])
    with pytest.raises(ValueError):
        WinRate(["a", "b"], class_names=["crack", "overall"])
    metric = WinRate(["a", "b"], class_names=["crack"])
    with pytest.raises(ValueError):
        metric.update(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError):
        metric.update(torch.zeros(2, 2))  # per-class metric needs labels


# ------------------------------------------------------- torchmetrics wrappers


def _batch(seed: int, b: int = 12) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 4, (b, 10, 10), generator=g).float()
    m = _random_masks(g, b, 10, 10)
    m[::4] = False  # some "good" images with empty masks
    labels = torch.randint(0, 3, (b,), generator=g)
    return a, m, labels


CLASSES = ["crack", "hole", "print"]
ALL_METRICS = {
    "tko": lambda: TopKOverlap(class_names=CLASSES),
    "tko_k0.1": lambda: TopKOverlap(class_names=CLASSES, k=0.1),
    "pointing_tol1": lambda: PointingGame(class_names=CLASSES, tolerance=1, ties="any"),
    "pointing_tol1_expected": lambda: PointingGame(class_names=CLASSES, tolerance=1),
    "relevance_mass": lambda: RelevanceMassAccuracy(class_names=CLASSES),
    "otsu_iou": lambda: OtsuIoU(class_names=CLASSES),
    "otsu_precision": lambda: OtsuPrecision(class_names=CLASSES),
    "otsu_recall": lambda: OtsuRecall(class_names=CLASSES),
    "pixel_auroc": lambda: PixelAUROC(class_names=CLASSES),
}


def _assert_results_equal(x: dict, y: dict) -> None:
    assert x.keys() == y.keys()
    for key, value in x.items():
        torch.testing.assert_close(value, y[key], rtol=0, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("make", list(ALL_METRICS.values()), ids=list(ALL_METRICS))
def test_metric_two_batches_equal_one_batch_and_merged_states(make) -> None:
    a1, m1, l1 = _batch(10)
    a2, m2, l2 = _batch(11)
    whole = make()
    whole.update(torch.cat([a1, a2]), torch.cat([m1, m2]), torch.cat([l1, l2]))
    expected = whole.compute()

    batched = make()
    batched.update(a1, m1, l1)
    batched.update(a2, m2, l2)
    _assert_results_equal(batched.compute(), expected)

    # DDP-style: two ranks each see one batch, then states are summed.
    rank0, rank1 = make(), make()
    rank0.update(a1, m1, l1)
    rank1.update(a2, m2, l2)
    rank0.merge_state(rank1)
    _assert_results_equal(rank0.compute(), expected)

    # The same by summing the raw states, as the "sum" all-reduce does.
    rank0, rank1 = make(), make()
    rank0.update(a1, m1, l1)
    rank1.update(a2, m2, l2)
    for name, reduction in rank0._reductions.items():
        assert reduction is not None  # every state is declared with dist_reduce_fx="sum"
        setattr(rank0, name, getattr(rank0, name) + getattr(rank1, name))
    _assert_results_equal(rank0.compute(), expected)

    # Overall pools images: it equals the mean of the functional scores.
    scores = whole.score(torch.cat([a1, a2]), torch.cat([m1, m2]))
    finite = torch.isfinite(scores)
    assert expected["overall"].item() == pytest.approx(scores[finite].mean().item(), abs=1e-12)
    assert expected["n_excluded"].item() == int((~finite).sum()) >= 6


def test_winrate_two_batches_and_merge_equal_one_batch() -> None:
    g = torch.Generator().manual_seed(12)
    tko = torch.randint(0, 3, (30, 3), generator=g).double() / 2
    tko[::7, 1] = NAN
    labels = torch.randint(0, 2, (30,), generator=g)
    names, classes = ["a", "b", "c"], ["crack", "hole"]
    whole = WinRate(names, classes)
    whole.update(tko, labels)
    rank0, rank1 = WinRate(names, classes), WinRate(names, classes)
    rank0.update(tko[:13], labels[:13])
    rank1.update(tko[13:], labels[13:])
    rank0.merge_state(rank1)
    x, y = whole.compute(), rank0.compute()
    for key in ("overall", "crack", "hole"):
        assert {k: v.item() for k, v in x[key].items()} == pytest.approx({k: v.item() for k, v in y[key].items()})
    assert (x["n_images"].item(), x["n_excluded"].item()) == (y["n_images"].item(), y["n_excluded"].item()) == (25, 5)
    rates, n_excluded = win_rate(tko, names)
    assert {k: v.item() for k, v in x["overall"].items()} == pytest.approx(rates) and n_excluded == 5


def test_tko_metric_hand_case_per_class_and_pooled_overall() -> None:
    # Four 1x4 images; map always ranks pixel 0 first, then 1, 2, 3.
    a = torch.tensor([4.0, 3.0, 2.0, 1.0]).repeat(5, 1, 1)
    m = torch.tensor(
        [
            [1, 0, 0, 0],  # crack, K=1: 1
            [0, 1, 0, 0],  # crack, K=1: 0
            [1, 0, 0, 1],  # hole, K=2: 1/2
            [0, 0, 0, 0],  # good (class 2): excluded
            [1, 1, 1, 0],  # hole, K=3: 1
        ],
        dtype=torch.bool,
    )[:, None, :]
    labels = torch.tensor([0, 0, 1, 2, 1])
    metric = TopKOverlap(class_names=["crack", "hole", "good"])
    metric.update(a, m, labels)
    result = metric.compute()
    assert result["crack"].item() == pytest.approx(0.5)
    assert result["hole"].item() == pytest.approx(0.75)
    assert math.isnan(result["good"].item())
    assert result["overall"].item() == pytest.approx(2.5 / 4)  # pooled, not (0.5 + 0.75) / 2
    assert result["n_images"].item() == 4 and result["n_excluded"].item() == 1
    assert TopKOverlap.higher_is_better and not TopKOverlap.full_state_update


def test_metric_without_classes_reports_overall_only() -> None:
    a, m, labels = _batch(13)
    metric = RelevanceMassAccuracy()
    metric.update(a, m)
    result = metric.compute()
    assert set(result) == {"overall", "n_images", "n_excluded"}
    named = RelevanceMassAccuracy(num_classes=3)
    named.update(a, m, labels)
    assert set(named.compute()) == {"overall", "class_0", "class_1", "class_2", "n_images", "n_excluded"}
    assert named.compute()["overall"].item() == pytest.approx(result["overall"].item())
    with pytest.raises(ValueError):
        RelevanceMassAccuracy(num_classes=2, class_names=["crack", "hole", "print"])


def test_update_scores_after_compute_is_not_served_from_the_cache() -> None:
    # update_scores once bypassed torchmetrics' update wrapper, so compute() kept returning its first, cached value.
    a, m, labels = _batch(20)
    scores = top_k_overlap(a, m)
    metric = TopKOverlap(class_names=CLASSES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "compute called before update" warning either
        metric.update_scores(scores[:6], labels[:6])
        first = metric.compute()
        metric.update_scores(scores[6:], labels[6:])
        second = metric.compute()
    whole = TopKOverlap(class_names=CLASSES)
    whole.update(a, m, labels)
    _assert_results_equal(second, whole.compute())
    assert first["n_images"].item() < second["n_images"].item()
    assert metric.update_count == 2
    with pytest.raises(ValueError):
        metric.update(a, m, labels, scores=scores)
    with pytest.raises(ValueError):
        metric.update(labels=labels)
