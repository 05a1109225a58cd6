"""The metrics against independent references: scikit-learn, a plain MVTec AUPRO sweep, hand computations."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from pipelines.metrics import (
    aupro,
    average_precision,
    expected_calibration_error,
    f1_max,
    image_metrics,
    pixel_metrics,
    roc_auc,
    roc_curve,
)


def tied_scores(n: int, seed: int, levels: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Scores on a coarse grid (many ties), labels related to them but not separable."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    s = np.round((rng.random(n) + 0.6 * y) / 1.6 * levels) / levels
    return s, y


@pytest.mark.parametrize("seed", range(5))
def test_auroc_and_average_precision_equal_scikit_learn_with_ties(seed):
    s, y = tied_scores(500, seed)
    assert abs(roc_auc(s, y) - roc_auc_score(y, s)) < 1e-9
    assert abs(average_precision(s, y) - average_precision_score(y, s)) < 1e-9
    fpr, tpr, _ = roc_curve(s, y)
    assert abs(np.trapezoid(tpr, fpr) - roc_auc_score(y, s)) < 1e-9
    p, r, t = precision_recall_curve(y, s)
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-300), 0)
    best, threshold = f1_max(s, y)
    assert abs(best - f1.max()) < 1e-9
    assert threshold == t[np.argmax(f1[:-1])]


def test_auroc_of_continuous_scores_and_refusals():
    rng = np.random.default_rng(0)
    s, y = rng.random(10_000).astype(np.float32), rng.random(10_000) < 0.1
    assert abs(roc_auc(s, y) - roc_auc_score(y, s)) < 1e-9
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(s, np.zeros_like(y))
    with pytest.raises(ValueError, match="NaN"):
        roc_auc(np.array([0.1, np.nan]), np.array([0, 1]))


def test_ece_by_hand():
    # bins of width 1/15: 0.05 and 0.06 share bin 0; 0.5 is bin 7; 0.95 and 1.0 are bin 14 (1.0 in the last).
    scores = np.array([0.05, 0.06, 0.5, 0.95, 1.0])
    labels = np.array([0, 1, 1, 1, 1])
    by_hand = (2 * abs(0.5 - 0.055) + 1 * abs(1 - 0.5) + 2 * abs(1 - 0.975)) / 5
    assert expected_calibration_error(scores, labels) == pytest.approx(by_hand, abs=1e-12)
    assert image_metrics(scores, labels)["image_ECE"] == pytest.approx(by_hand, abs=1e-12)


def aupro_reference(maps: np.ndarray, masks: np.ndarray, limit: float = 0.3) -> float:
    """MVTec AD's definition, computed plainly: at every distinct score, each region's overlap."""
    regions = []
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m, structure=np.ones((3, 3)))
        regions += [(i, lab == k) for k in range(1, n + 1)]
    normal = ~masks
    points = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
        hit = maps >= t
        fpr = hit[normal].sum() / normal.sum()
        pro = np.mean([hit[i][r].mean() for i, r in regions])
        points.append((fpr, pro))
    points.append((1.0, 1.0))
    x, y = np.array(points).T
    keep = x <= limit
    xs, ys = list(x[keep]), list(y[keep])
    if xs[-1] < limit:
        xs.append(limit)
        ys.append(np.interp(limit, x, y))
    return float(np.trapezoid(ys, xs) / limit)


def blob_maps(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Six 24 x 24 maps with tied scores; masks with several regions, one empty mask, touching corners."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((6, 24, 24), bool)
    masks[0, 2:6, 2:8] = True
    masks[0, 15:20, 14:22] = True          # a second region of the same image
    masks[1, 6:7, 6:7] = masks[1, 7:9, 7:9] = True   # diagonal neighbours: one region under 8-connectivity
    masks[3, 10:18, 3:9] = True
    masks[4, 0:24, 20:24] = True
    # masks[2] and masks[5] are empty: normal images
    maps = np.round(np.clip(rng.random(masks.shape) * 0.7 + 0.35 * masks, 0, 1) * 20) / 20
    return maps, masks


@pytest.mark.parametrize("seed", range(3))
def test_aupro_equals_the_plain_mvtec_reference(seed):
    maps, masks = blob_maps(seed)
    assert abs(aupro(maps, masks) - aupro_reference(maps, masks)) < 1e-4
    continuous = maps + np.random.default_rng(seed).random(maps.shape) * 1e-3  # no ties
    assert abs(aupro(continuous, masks) - aupro_reference(continuous, masks)) < 1e-4


def test_aupro_bounds_and_refusals():
    maps, masks = blob_maps(0)
    assert aupro(masks.astype(float), masks) == pytest.approx(1.0)   # a perfect map
    assert 0.0 <= aupro(1 - masks.astype(float), masks) < 0.05       # an inverted one
    with pytest.raises(ValueError, match="anomalous region"):
        aupro(maps, np.zeros_like(masks))


def test_pixel_metrics_against_scikit_learn():
    maps, masks = blob_maps(1)
    m = pixel_metrics(maps[:, None], masks[:, None])
    assert abs(m["pixel_AUROC"] - roc_auc_score(masks.ravel(), maps.ravel())) < 1e-9
    anomalous = masks.any(axis=(1, 2))
    assert abs(m["pixel_AUROC_anomalous"] - roc_auc_score(masks[anomalous].ravel(), maps[anomalous].ravel())) < 1e-9
    assert abs(m["pixel_AUPRO"] - aupro_reference(maps, masks)) < 1e-4
    p, r, _ = precision_recall_curve(masks.ravel(), maps.ravel())
    assert abs(m["pixel_F1Max"] - np.max(2 * p * r / np.maximum(p + r, 1e-300))) < 1e-9


def test_retrieval_recall_matches_open_clips_argsort_ranking():
    from pipelines.metrics import retrieval_recall

    rng = np.random.default_rng(4)
    image, text = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    text[:150] = image[:150] + 0.8 * rng.normal(size=(150, 16))  # half the pairs are close
    got = retrieval_recall(image, text, ks=(1, 5, 10), chunk=64)
    # open_clip's zero-shot retrieval: rank = position of the ground truth in the descending argsort
    vi = image / np.linalg.norm(image, axis=1, keepdims=True)
    vt = text / np.linalg.norm(text, axis=1, keepdims=True)
    for name, logits in (("image_to_text", vi @ vt.T), ("text_to_image", vt @ vi.T)):
        ranking = np.argsort(-logits, axis=1)
        rank = np.nonzero(ranking == np.arange(300)[:, None])[1]
        for k in (1, 5, 10):
            assert got[f"{name}_R@{k}"] == pytest.approx(float((rank < k).mean()))
    assert 0.4 < got["image_to_text_R@1"] < 0.6  # the close half, and chance for the rest
