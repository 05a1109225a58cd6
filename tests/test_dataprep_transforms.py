"""Array / dictionary transforms and the modality pipelines: values, not only shapes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import dataprep as dp


def test_resize_keeps_aspect_with_centred_padding():
    img = np.ones((1, 100, 50), np.float32)
    out = dp.ResizeKeepAspect(224)(img)
    assert out.shape == (1, 224, 224) and out.dtype == np.float32
    cols = np.nonzero(out[0].any(axis=0))[0]
    assert (cols.min(), cols.max()) == (56, 167)  # 112 columns of content, 56 of padding each side
    assert np.all(out[0, :, 56:168] == 1.0) and out[0, :, :56].sum() == 0


def test_mask_resize_never_loses_a_small_lesion():
    mask = np.zeros((1, 1000, 1000), np.float32)
    mask[0, 500, 501] = 1.0  # one pixel: nearest sampling would miss it
    out = dp.ResizeKeepAspect(224, "mask")(mask)
    assert set(np.unique(out)) == {0.0, 1.0} and 1 <= out.sum() <= 4


def test_percentile_normalisation_values():
    x = np.arange(1000, dtype=np.float32).reshape(1, 20, 50)
    out = dp.PercentileNormalize(1.0, 99.0)(x)
    lo, hi = np.percentile(x, (1.0, 99.0))
    np.testing.assert_allclose(out, np.clip((x - lo) / (hi - lo), 0, 1), atol=1e-6)
    # integer images take the exact histogram path: same answer within one grey level
    x8 = (np.arange(10000) % 256).astype(np.uint8).reshape(1, 100, 100)
    out8 = dp.PercentileNormalize(1.0, 99.0)(x8)
    lo8, hi8 = np.percentile(x8, (1.0, 99.0))
    np.testing.assert_allclose(out8, np.clip((x8 - lo8) / (hi8 - lo8), 0, 1), atol=1.0 / 200)


def test_scale_to_unit_and_grey_accept_torch():
    t = torch.full((3, 4, 4), 255, dtype=torch.uint8)
    grey = dp.EnsureGrey()(t)
    assert grey.shape == (1, 4, 4)
    np.testing.assert_allclose(dp.ScaleIntensityToUnit()(grey.astype(np.uint8)), 1.0)
    np.testing.assert_allclose(dp.ScaleIntensityToUnit()(np.array([[[-1000.0, 1000.0]]])), [[[0.0, 1.0]]])


def test_dict_aliases_follow_monai():
    assert dp.ResizeKeepAspectD is dp.ResizeKeepAspectd is dp.ResizeKeepAspectDict
    assert dp.EnsureGreyD is dp.EnsureGreyDict is dp.EnsureGreyd
    d = dp.ResizeKeepAspectd(size=32)({"image": np.random.rand(1, 64, 32).astype(np.float32),
                                        "gt_mask": np.ones((1, 64, 32), np.float32), "gt_label": 1})
    assert d["gt_label"] == 1 and set(np.unique(d["gt_mask"])) == {0.0, 1.0}
    assert d["gt_mask"].sum() == 32 * 16
    with pytest.raises(ValueError, match="differ in size"):
        dp.ResizeKeepAspectd(size=32)({"image": np.zeros((1, 10, 10)), "gt_mask": np.zeros((1, 12, 10))})


def _phantom(h: int = 300, w: int = 260, seed: int = 0) -> np.ndarray:
    """A bright ellipse ('head') on black with noise, uint8 channel-first."""
    yy, xx = np.mgrid[:h, :w]
    head = ((yy - h / 2) / (0.4 * h)) ** 2 + ((xx - w / 2) / (0.4 * w)) ** 2 <= 1
    img = np.where(head, 150, 0) + np.random.default_rng(seed).integers(0, 20, (h, w))
    return img.astype(np.uint8)[None]


@pytest.mark.parametrize("modality", ["brain_mri", "breast_us", "chest_xray", "generic"])
def test_modality_pipelines_contract(modality):
    img = _phantom()
    mask = np.zeros_like(img, dtype=np.float32)
    mask[0, 140:160, 120:140] = 1
    out = dp.modality_pipeline(modality)({"image": img, "gt_mask": mask, "gt_label": 1})
    for key in ("image", "gt_mask", "foreground"):
        assert out[key].shape == (1, 224, 224) and out[key].dtype == np.float32, key
    assert 0.0 <= out["image"].min() and out["image"].max() <= 1.0
    assert out["gt_mask"].sum() > 0 and out["gt_label"] == 1
    arr = dp.modality_array_pipeline(modality)(img)
    assert arr.shape == (1, 224, 224) and arr.dtype == np.float32


def test_brain_foreground_finds_the_head():
    out = dp.modality_pipeline("brain_mri")({"image": _phantom()})
    fg = out["foreground"][0] > 0
    # the ellipse covers pi * 0.4 * 0.4 of its 300x260 box; at 224 px the box is 224x194
    expected = np.pi * 0.16 * 224 * 194
    assert abs(fg.sum() - expected) / expected < 0.1
    assert fg[112, 112] and not fg[0, 0]


def test_ultrasound_crop_removes_frame_and_text():
    img = np.zeros((1, 200, 300), np.uint8)
    img[0, 40:180, 60:260] = 120  # scan region
    img[0, 5:8, 5:80] = 255  # burnt-in text line: thin, must not widen the crop
    crop = dp.UltrasoundFrameCrop()
    assert crop.box(img) == (40, 180, 60, 260)


def test_lung_mask_on_a_chest_phantom():
    h = w = 256
    yy, xx = np.mgrid[:h, :w]
    img = np.full((h, w), 0.05, np.float32)  # outside air
    body = (np.abs(xx - 128) < 110) & (yy > 10)
    img[body] = 0.8
    for cx in (80, 176):  # two dark lungs inside the bright body
        img[((yy - 120) / 70.0) ** 2 + ((xx - cx) / 35.0) ** 2 <= 1] = 0.2
    lungs = dp.LungFieldMask()(img[None])[0] > 0
    truth = np.zeros_like(lungs)
    for cx in (80, 176):
        truth |= ((yy - 120) / 70.0) ** 2 + ((xx - cx) / 35.0) ** 2 <= 1
    dice = 2 * (lungs & truth).sum() / (lungs.sum() + truth.sum())
    assert dice > 0.9


def test_volume_to_slices_on_mni():
    from nilearn.datasets import load_mni152_template

    vol = np.asarray(load_mni152_template(resolution=2).dataobj, dtype=np.float32)
    seg = np.zeros(vol.shape, np.uint8)
    seg[40:50, 50:60, 45:50] = 2
    slices = list(dp.volume_to_slices(vol, seg, min_brain_fraction=0.2))
    fractions = (vol != 0).mean(axis=(0, 1))
    assert [s.index for s in slices] == list(np.nonzero(fractions >= 0.2)[0])
    tumour = {s.index for s in slices if s.gt_mask.any()}
    assert tumour == {45, 46, 47, 48, 49}
    s = next(s for s in slices if s.index == 47)
    np.testing.assert_array_equal(s.gt_mask[0], np.rot90(seg[:, :, 47] > 0))
    assert s.image.min() >= 0 and s.image.max() <= 1 and s.image.shape == (1, vol.shape[1], vol.shape[0])
