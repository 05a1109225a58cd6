"""Detection metrics under anomalib's names, one module for training's validation and for evaluation.

Image level (``pred_score`` against ``gt_label``): ``image_AUROC``, ``image_AUPR`` (average precision,
scikit-learn's definition: no interpolation), ``image_F1Max`` with its threshold, ``image_ECE``
(expected calibration error, 15 equal-width bins). Pixel level (``anomaly_map`` against ``gt_mask``):
``pixel_AUROC`` over every pixel, ``pixel_AUROC_anomalous`` over the anomalous images' pixels only,
``pixel_F1Max``, and ``pixel_AUPRO`` as MVTec AD defines it (regions: 8-connected components of each
mask; per-region overlap averaged over all regions; FPR over all normal pixels; the PRO curve integrated
up to FPR 0.3 and divided by 0.3).

Every curve is exact, ties included: counts are taken at each distinct score. Only ``np.sort`` is used on
large arrays (an argsort of 25 M pixels is ten times slower): negatives and positives are sorted apart and
counted with ``searchsorted``.

Example:
    >>> import numpy as np
    >>> round(roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])), 4)
    0.75
"""
from __future__ import annotations

import numpy as np

ECE_BINS = 15
AUPRO_FPR_LIMIT = 0.3


Split = tuple[np.ndarray, np.ndarray]  # (positives' scores sorted, negatives' scores sorted)


def split_sorted(scores: np.ndarray, labels: np.ndarray) -> Split:
    """Scores of the positives and of the negatives, each sorted; pass it as ``ranked=`` to several metrics
    of the same scores, so they sort once."""
    return _split(scores, labels)


def _split(scores: np.ndarray, labels: np.ndarray) -> Split:
    s = np.asarray(scores).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinity")
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    if not len(pos) or not len(neg):
        raise ValueError(f"need both classes, got {len(pos)} positive and {len(neg)} negative")
    return pos, neg


def _at_or_above(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many of ``sorted_values`` are >= each threshold."""
    return len(sorted_values) - np.searchsorted(sorted_values, thresholds, side="left")


def threshold_counts(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct thresholds in decreasing order, with the true and false positives at each (score >= t)."""
    pos, neg = _split(scores, labels)
    thresholds = np.unique(np.concatenate([pos, neg]))[::-1]
    return thresholds, _at_or_above(pos, thresholds), _at_or_above(neg, thresholds)


def roc_auc(scores: np.ndarray, labels: np.ndarray, ranked: Split | None = None) -> float:
    """Area under the ROC curve; a tie between a positive and a negative counts one half."""
    pos, neg = ranked or _split(scores, labels)
    below = np.searchsorted(neg, pos, side="left").sum(dtype=np.float64)
    not_above = np.searchsorted(neg, pos, side="right").sum(dtype=np.float64)
    return float((below + not_above) / 2 / (len(pos) * len(neg)))


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) from (0, 0) upwards, one point per distinct score."""
    thresholds, tp, fp = threshold_counts(scores, labels)
    fpr = np.concatenate([[0.0], fp / fp[-1]])
    tpr = np.concatenate([[0.0], tp / tp[-1]])
    return fpr, tpr, np.concatenate([[np.inf], thresholds])


def _at_positive_scores(scores: np.ndarray, labels: np.ndarray,
                        ranked: Split | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Distinct positive scores t (decreasing) with tp and fp at each (score >= t), and the positives' count.

    Precision-recall quantities need only these thresholds: between two of them, lowering the threshold
    adds negatives only, which changes neither recall nor anything F1 or average precision can gain."""
    pos, neg = ranked or _split(scores, labels)
    thresholds = np.unique(pos)[::-1]
    return thresholds, _at_or_above(pos, thresholds), _at_or_above(neg, thresholds), len(pos)


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """sum over thresholds of (R_n - R_{n-1}) P_n (scikit-learn's average precision)."""
    _, tp, fp, positives = _at_positive_scores(scores, labels)
    precision = tp / (tp + fp)
    recall = tp / positives
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


def f1_max(scores: np.ndarray, labels: np.ndarray, ranked: Split | None = None) -> tuple[float, float]:
    """The best F1 over all thresholds (score >= t is anomalous) and that threshold."""
    thresholds, tp, fp, positives = _at_positive_scores(scores, labels, ranked)
    f1 = 2 * tp / (tp + fp + positives)  # 2PR / (P + R) with P = tp / (tp + fp), R = tp / positives
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])


def reliability_bins(scores: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Per equal-width bin of [0, 1]: count, mean score and share of anomalous images (the last bin holds 1.0)."""
    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(labels, np.float64).ravel()
    if s.size == 0 or s.min() < 0 or s.max() > 1:
        raise ValueError("calibration needs scores in [0, 1]")
    which = np.minimum((s * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(which, s, bins) / count
        accuracy = np.bincount(which, y, bins) / count
    return {"count": count, "confidence": confidence, "accuracy": accuracy}


def expected_calibration_error(scores: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """sum over bins of (n_b / N) |share anomalous in b - mean score in b|."""
    r = reliability_bins(scores, labels, bins)
    used = r["count"] > 0
    gap = np.abs(r["accuracy"][used] - r["confidence"][used])
    return float(np.sum(r["count"][used] * gap) / r["count"].sum())


def image_metrics(pred_score: np.ndarray, gt_label: np.ndarray) -> dict[str, float]:
    """anomalib's image metrics plus ECE; ``pred_score`` must lie in [0, 1] for ECE (it is a probability)."""
    f1, threshold = f1_max(pred_score, gt_label)
    return {"image_AUROC": roc_auc(pred_score, gt_label), "image_AUPR": average_precision(pred_score, gt_label),
            "image_F1Max": f1, "image_F1Max_threshold": threshold,
            "image_ECE": expected_calibration_error(pred_score, gt_label)}


def _regions(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Each mask's 8-connected regions numbered across all masks (0: normal pixel), and how many there are."""
    from scipy import ndimage

    labels = np.zeros(masks.shape, np.int64)
    total = 0
    eight = np.ones((3, 3), bool)
    for i, mask in enumerate(masks):
        found, n = ndimage.label(mask, structure=eight)
        labels[i] = np.where(found > 0, found + total, 0)
        total += n
    return labels, total


def aupro(anomaly_map: np.ndarray, gt_mask: np.ndarray, fpr_limit: float = AUPRO_FPR_LIMIT,
          normal_sorted: np.ndarray | None = None) -> float:
    """MVTec AD's normalised area under the per-region-overlap curve up to ``fpr_limit``.

    At a threshold t: FPR = normal pixels >= t / all normal pixels; PRO = mean over regions of the region's
    share of pixels >= t. The curve runs through (0, 0) and every distinct score; its area up to
    ``fpr_limit`` (linear interpolation at the limit) is divided by ``fpr_limit``. ``normal_sorted``: the
    normal pixels' scores already sorted (``split_sorted(maps, masks)[1]``).
    """
    maps = np.asarray(anomaly_map).reshape(-1, *np.shape(anomaly_map)[-2:])
    masks = np.asarray(gt_mask).reshape(maps.shape).astype(bool)
    regions, n_regions = _regions(masks)
    if n_regions == 0 or masks.all():
        raise ValueError("AUPRO needs at least one anomalous region and one normal pixel")
    flat = regions.ravel()
    normal = np.sort(maps.ravel()[flat == 0]) if normal_sorted is None else normal_sorted
    inside = flat > 0
    order = np.argsort(maps.ravel()[inside], kind="stable")  # anomalous pixels only: few
    anomalous = maps.ravel()[inside][order]
    sizes = np.bincount(flat[inside])
    weights = 1.0 / (sizes[flat[inside][order]] * n_regions)
    pro_at_or_above = np.concatenate([np.cumsum(weights[::-1])[::-1], [0.0]])  # index: first pixel >= t
    # Only thresholds down to the first with FPR above the limit matter: the normal score that first
    # passes it, and every score above.
    floor = normal[max(0, len(normal) - int(np.floor(fpr_limit * len(normal))) - 1)]
    candidates = np.concatenate([normal[np.searchsorted(normal, floor, side="left"):],
                                 anomalous[np.searchsorted(anomalous, floor, side="left"):]])
    thresholds = np.unique(candidates)[::-1]
    fpr = _at_or_above(normal, thresholds) / len(normal)
    pro = pro_at_or_above[np.searchsorted(anomalous, thresholds, side="left")]
    fpr, pro = np.concatenate([[0.0], fpr]), np.concatenate([[0.0], pro])
    last = np.searchsorted(fpr, fpr_limit, side="right")  # points with fpr <= limit: fpr[:last]
    x, y = fpr[:last], pro[:last]
    if last < len(fpr) and fpr[last - 1] < fpr_limit:  # interpolate the curve at the limit
        step = (fpr_limit - fpr[last - 1]) / (fpr[last] - fpr[last - 1])
        x = np.append(x, fpr_limit)
        y = np.append(y, pro[last - 1] + step * (pro[last] - pro[last - 1]))
    return float(np.trapezoid(y, x) / fpr_limit)


def pixel_metrics(anomaly_map: np.ndarray, gt_mask: np.ndarray, aupro_too: bool = True) -> dict[str, float]:
    """Pixel metrics over maps (N, H, W) or (N, 1, H, W) and their masks; AUROC over anomalous images
    only where some image is normal and some anomalous."""
    maps = np.asarray(anomaly_map).reshape(-1, *np.shape(anomaly_map)[-2:])
    masks = np.asarray(gt_mask).reshape(maps.shape).astype(bool)
    ranked = _split(maps, masks)  # one sort of every pixel for AUROC, F1 and AUPRO's normal pixels
    f1, threshold = f1_max(maps, masks, ranked)
    out = {"pixel_AUROC": roc_auc(maps, masks, ranked), "pixel_F1Max": f1, "pixel_F1Max_threshold": threshold}
    anomalous = masks.any(axis=(1, 2))
    if anomalous.any() and not anomalous.all():
        out["pixel_AUROC_anomalous"] = roc_auc(maps[anomalous], masks[anomalous])
    if aupro_too:
        out["pixel_AUPRO"] = aupro(maps, masks, normal_sorted=ranked[1])
    return out


def retrieval_recall(image: np.ndarray, text: np.ndarray, ks: tuple[int, ...] = (1, 5),
                     chunk: int = 1024) -> dict[str, float]:
    """Recall@k of matched rows (image i's caption is text i) under open_clip's names:
    ``image_to_text_R@k`` (the share of images whose caption is among their k most similar texts) and
    ``text_to_image_R@k``. Similarity is the dot product of the L2-normalised rows; a tie counts in the
    pair's favour (its rank is the number of strictly more similar candidates)."""
    image = image / np.linalg.norm(image, axis=1, keepdims=True)
    text = text / np.linalg.norm(text, axis=1, keepdims=True)
    out = {}
    for name, queries, keys in (("image_to_text", image, text), ("text_to_image", text, image)):
        ranks = np.empty(len(queries), np.int64)
        for start in range(0, len(queries), chunk):
            sims = queries[start:start + chunk] @ keys.T
            own = sims[np.arange(len(sims)), np.arange(start, start + len(sims))]
            ranks[start:start + len(sims)] = (sims > own[:, None]).sum(axis=1)
        out.update({f"{name}_R@{k}": float((ranks < k).mean()) for k in ks})
    return out
