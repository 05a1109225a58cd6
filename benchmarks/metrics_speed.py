"""Pixel metrics over 500 test maps of 224 x 224 (25 M pixels), one core, against scikit-learn's
``roc_auc_score`` and MVTec AD's own AUPRO algorithm (argsort every pixel, cumulative sums) on the same maps.

    .venv/bin/python benchmarks/metrics_speed.py
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import time  # noqa: E402

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from pipelines.metrics import aupro, pixel_metrics, roc_auc  # noqa: E402


def mvtec_aupro(maps: np.ndarray, masks: np.ndarray, limit: float = 0.3) -> float:
    """MVTec AD's evaluation code's algorithm, as published: every pixel sorted, FPR and PRO as running sums."""
    fp_change = np.zeros(maps.shape, np.float64)
    pro_change = np.zeros(maps.shape, np.float64)
    regions = normal = 0
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m, structure=np.ones((3, 3)))
        regions += n
        ok = lab == 0
        normal += ok.sum()
        fp_change[i][ok] = 1
        for k in range(1, n + 1):
            r = lab == k
            pro_change[i][r] = 1.0 / r.sum()
    order = np.argsort(maps.ravel())[::-1]
    scores = maps.ravel()[order]
    fprs = np.cumsum(fp_change.ravel()[order]) / normal
    pros = np.cumsum(pro_change.ravel()[order]) / regions
    keep = np.append(np.diff(scores) != 0, True)
    fprs, pros = np.concatenate([[0], fprs[keep], [1]]), np.concatenate([[0], pros[keep], [1]])
    last = np.searchsorted(fprs, limit, side="right")
    x, y = list(fprs[:last]), list(pros[:last])
    if x[-1] < limit:
        x.append(limit)
        y.append(np.interp(limit, fprs, pros))
    return float(np.trapezoid(y, x) / limit)


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main() -> None:
    rng = np.random.default_rng(0)
    masks = np.zeros((500, 224, 224), bool)
    for i in range(250):  # half the images anomalous, compact lesions of various sizes, some with two regions
        for _ in range(1 + i % 2):
            y, x = rng.integers(10, 170, 2)
            h, w = rng.integers(10, 50, 2)
            masks[i, y:y + h, x:x + w] = True
    maps = np.clip(rng.random(masks.shape, dtype=np.float32) * 0.8 + 0.3 * ndimage.gaussian_filter(
        masks.astype(np.float32), (0, 3, 3)), 0, 1)
    ours, t_ours = timed(lambda: pixel_metrics(maps, masks))
    auc, t_auc = timed(lambda: roc_auc(maps, masks))
    ref_auc, t_ref_auc = timed(lambda: roc_auc_score(masks.ravel(), maps.ravel()))
    pro, t_pro = timed(lambda: aupro(maps, masks))
    ref_pro, t_ref_pro = timed(lambda: mvtec_aupro(maps, masks))
    print(f"all pixel metrics (AUROC, AUROC over anomalous images, F1Max, AUPRO): {t_ours:.2f} s")
    print(f"pixel_AUROC {auc:.9f} in {t_auc:.2f} s; scikit-learn {ref_auc:.9f} in {t_ref_auc:.2f} s "
          f"({t_ref_auc / t_auc:.1f}x)")
    print(f"pixel_AUPRO {pro:.6f} in {t_pro:.2f} s; MVTec's algorithm {ref_pro:.6f} in {t_ref_pro:.2f} s "
          f"({t_ref_pro / t_pro:.1f}x)")
    print({k: round(v, 6) for k, v in ours.items()})


if __name__ == "__main__":
    main()
