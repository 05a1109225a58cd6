"""MVTec AD's layout, and the recognition of known layouts that keeps a downloaded dataset from being
read as a plain image folder."""
from __future__ import annotations

from pathlib import Path

import pytest
from test_dataprep_datasets import _img, _mask, _records, _skips

import dataprep as dp


def _mvtec_tree(root: Path) -> Path:
    cat = root / "mvtec" / "bottle"
    for i in range(4):
        _img(cat / "train/good" / f"{i:03d}.png", seed=40 + i)
    _img(cat / "test/good/000.png", seed=50)
    for i in range(2):
        _img(cat / "test/broken_large" / f"{i:03d}.png", seed=60 + i)
        _mask(cat / "ground_truth/broken_large" / f"{i:03d}_mask.png")
    _mask(cat / "ground_truth/broken_large/009_mask.png")  # no image
    return cat


def test_mvtec_layout_splits_labels_and_masks(tmp_path):
    cat = _mvtec_tree(tmp_path)
    card = dp.prepare_dataset("mvtec", cat.parent, tmp_path / "out")  # a folder of categories
    assert card["counts"]["train"] == {"normal": 4, "abnormal": 0, "with_mask": 0, "total": 4}
    assert card["counts"]["test"] == {"normal": 1, "abnormal": 2, "with_mask": 2, "total": 3}
    records = {r["id"]: r for r in _records(tmp_path / "out")}
    assert records["bottle__test__broken_large__001"]["label"] == 1
    assert records["bottle__test__good__000"]["label"] == 0 and records["bottle__train__good__003"]["split"] == "train"
    assert "009_mask.png" in _skips(tmp_path / "out")
    with pytest.raises(dp.indexing.LayoutError, match="no category cable"):
        dp.index_mvtec(cat.parent, category="cable")


def test_layouts_are_recognised(tmp_path):
    cat = _mvtec_tree(tmp_path)
    assert dp.detect_layout(cat.parent) == ("mvtec", cat)
    mv = tmp_path / "mvfa" / "Liver_AD"
    _img(mv / "test/good/img/a.png")
    assert dp.detect_layout(tmp_path / "mvfa") == ("mvfa", mv)
    plain = tmp_path / "plain"
    _img(plain / "a.png")
    _img(plain / "sub" / "b.png")
    assert dp.detect_layout(plain) is None
    _mask(plain / "sub" / "masks" / "b.png")
    assert dp.detect_layout(plain) == ("unknown", plain / "sub" / "masks")
