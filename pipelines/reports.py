"""Pictures of an evaluation, drawn with OpenCV: anomaly-map overlays, the ROC curve, the reliability diagram.

Example:
    >>> png = overlay(image, mask, amap, vmax=1.0, title="0.93 abnormal")            # doctest: +SKIP
    >>> draw_curve([(fpr, tpr, "ours")], "ROC", "false positive rate", "true positive rate", "roc.png")  # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

GREEN, WHITE, GREY = (0, 220, 0), (255, 255, 255), (150, 150, 150)
COLOURS = [(40, 120, 255), (60, 200, 60), (220, 120, 40), (160, 80, 200)]
FONT = cv2.FONT_HERSHEY_SIMPLEX


def overlay(image: np.ndarray, mask: np.ndarray, amap: np.ndarray, vmax: float, vmin: float = 0.0,
            title: str = "") -> np.ndarray:
    """The image, the map as a heat overlay (``vmin``..``vmax``), the mask's contour in green: BGR uint8."""
    grey = cv2.cvtColor((np.clip(image, 0, 1) * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    level = np.clip((amap - vmin) / max(vmax - vmin, 1e-12), 0, 1)
    heat = cv2.applyColorMap((level * 255).astype(np.uint8), cv2.COLORMAP_JET)
    out = cv2.addWeighted(grey, 0.55, heat, 0.45, 0)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, GREEN, 1)
    side = np.concatenate([grey, out], axis=1)
    if side.shape[0] < 160:  # small working sizes: enlarge (nearest) so that the tile can be read
        factor = -(-160 // side.shape[0])
        side = cv2.resize(side, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)
    if title:
        cv2.putText(side, title, (3, 12), FONT, 0.35, WHITE, 1, cv2.LINE_AA)
    return side


def grid(tiles: list[np.ndarray], columns: int = 4) -> np.ndarray:
    """Tiles of one size in rows of ``columns`` (the last row padded black)."""
    h, w = tiles[0].shape[:2]
    rows = []
    for at in range(0, len(tiles), columns):
        row = tiles[at:at + columns] + [np.zeros_like(tiles[0])] * (columns - len(tiles[at:at + columns]))
        rows.append(np.concatenate(row, axis=1))
    return np.concatenate(rows, axis=0) if rows else np.zeros((h, w * columns, 3), np.uint8)


def _canvas(title: str, xlabel: str, ylabel: str, size: int = 420, margin: int = 50):
    img = np.full((size, size, 3), 255, np.uint8)
    box = (margin, 20, size - 15, size - margin)  # left, top, right, bottom
    cv2.rectangle(img, box[:2], box[2:], (0, 0, 0), 1)
    for v in (0.0, 0.5, 1.0):
        x = int(box[0] + v * (box[2] - box[0]))
        y = int(box[3] - v * (box[3] - box[1]))
        cv2.putText(img, f"{v:.1f}", (x - 8, box[3] + 14), FONT, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, f"{v:.1f}", (box[0] - 28, y + 4), FONT, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, title, (box[0], 14), FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, xlabel, (box[0] + 60, size - 12), FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, ylabel, (box[0] + 6, box[1] + 14), FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    to_px = lambda x, y: (int(round(box[0] + x * (box[2] - box[0]))), int(round(box[3] - y * (box[3] - box[1]))))  # noqa: E731
    return img, to_px


def draw_curve(curves: list[tuple[np.ndarray, np.ndarray, str]], title: str, xlabel: str, ylabel: str,
               path: str | Path, diagonal: bool = True) -> None:
    """Curves in the unit square (x, y, label), one colour each, written as PNG."""
    img, to_px = _canvas(title, xlabel, ylabel)
    if diagonal:
        cv2.line(img, to_px(0, 0), to_px(1, 1), GREY, 1, cv2.LINE_AA)
    for i, (x, y, label) in enumerate(curves):
        points = np.array([to_px(a, b) for a, b in zip(x, y)], np.int32)
        colour = COLOURS[i % len(COLOURS)]
        cv2.polylines(img, [points], False, colour, 2, cv2.LINE_AA)
        cv2.putText(img, label, to_px(0.45, 0.08 + 0.07 * i), FONT, 0.4, colour, 1, cv2.LINE_AA)
    cv2.imwrite(str(path), img)


def draw_reliability(bins: dict[str, np.ndarray], path: str | Path, label: str = "") -> None:
    """Share of anomalous images per score bin against the bin's mean score, with the diagonal."""
    img, to_px = _canvas(f"reliability {label}".strip(), "mean score in bin", "share anomalous")
    cv2.line(img, to_px(0, 0), to_px(1, 1), GREY, 1, cv2.LINE_AA)
    n = len(bins["count"])
    for b in range(n):
        if bins["count"][b] == 0:
            continue
        cv2.rectangle(img, to_px(b / n, 0), to_px((b + 1) / n, float(bins["accuracy"][b])), COLOURS[0], -1)
        cv2.circle(img, to_px(float(bins["confidence"][b]), float(bins["accuracy"][b])), 3, (0, 0, 0), -1)
    cv2.imwrite(str(path), img)
