"""Readers against real files that installed packages ship (pydicom test DICOMs, nilearn's MNI152)."""
from __future__ import annotations

import shutil

import cv2
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut, apply_windowing

from dataprep import ReadError, content_hash, read_image


def _voi_range(ds: pydicom.Dataset) -> tuple[float, float]:
    """pydicom's windowing output range: the stored bit depth, signed or unsigned, through the
    modality rescale (pydicom windows in modality units)."""
    bits = int(ds.BitsStored)
    if int(ds.PixelRepresentation) == 1:
        lo, hi = -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    else:
        lo, hi = 0.0, 2.0**bits - 1
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    return lo * slope + intercept, hi * slope + intercept


def test_dicom_rescale_matches_pydicom_modality_lut():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    assert float(ds.RescaleIntercept) == -1024.0  # the file exercises the intercept
    expected = apply_modality_lut(ds.pixel_array, ds)
    data = read_image(path)  # CT_small carries no window: values stay in Hounsfield units
    assert data.meta["window"] is None
    np.testing.assert_allclose(data.array, expected, atol=1e-3)
    assert data.meta["spacing"] == pytest.approx((0.661468, 0.661468))


def test_dicom_window_matches_pydicom_windowing():
    path = get_testdata_file("MR_small.dcm")
    ds = pydicom.dcmread(path)
    lo, hi = _voi_range(ds)
    expected = (apply_windowing(apply_modality_lut(ds.pixel_array, ds), ds) - lo) / (hi - lo)
    data = read_image(path)
    assert data.meta["window"] == (600.0, 1600.0)
    assert data.array.dtype == np.float32 and 0.0 <= data.array.min() and data.array.max() <= 1.0
    np.testing.assert_allclose(data.array, expected, atol=1e-4)


def _as_monochrome1(tmp_path, name: str, window: tuple[float, float] | None):
    ds = pydicom.dcmread(get_testdata_file(name))
    ds.PhotometricInterpretation = "MONOCHROME1"
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    out = tmp_path / f"mono1_{name}"
    ds.save_as(out)
    return out, ds


def test_monochrome1_is_inverted_against_pydicom(tmp_path):
    # Windowed: the inverted window output, i.e. 1 - (pydicom's MONOCHROME2 windowing, scaled).
    path, ds = _as_monochrome1(tmp_path, "CT_small.dcm", (40.0, 400.0))
    ref = apply_modality_lut(ds.pixel_array, ds)
    lo, hi = _voi_range(ds)
    ds2 = pydicom.dcmread(path)
    ds2.PhotometricInterpretation = "MONOCHROME2"
    windowed = (apply_windowing(ref, ds2) - lo) / (hi - lo)
    data = read_image(path)
    assert data.meta["photometric"] == "MONOCHROME1"
    np.testing.assert_allclose(data.array, 1.0 - windowed, atol=1e-4)
    # Without a window: HU mirrored about the range, so the brightest stored value becomes the darkest.
    plain, ds3 = _as_monochrome1(tmp_path, "CT_small.dcm", None)
    hu = apply_modality_lut(ds3.pixel_array, ds3).astype(np.float32)
    np.testing.assert_allclose(read_image(plain).array, hu.max() + hu.min() - hu, atol=1e-3)
    # read_image(..., apply_window=False) also leaves a windowed file in modality units.
    assert read_image(path, apply_window=False).meta["window"] is None


def test_dicom_series_folder_is_canonical_volume(tmp_path):
    src = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    folder = tmp_path / "series"
    folder.mkdir()
    for k in range(3):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.ImagePositionPatient = [-158.1, -179.0, -75.7 + 5.0 * k]
        ds.InstanceNumber = k + 1
        ds.SOPInstanceUID = f"{src.SOPInstanceUID}.{k + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PixelData = (ds.pixel_array + np.int16(k)).astype(np.int16).tobytes()
        ds.save_as(folder / f"slice{2 - k}.dcm")  # file names in reverse: order must come from geometry
    data = read_image(folder)
    hu = apply_modality_lut(src.pixel_array, src)
    assert data.array.shape == (128, 128, 3) and data.meta["orientation"] == "RAS"
    for k in range(3):
        # DICOM rows run posterior, columns left (LPS); canonical RAS flips both and is (x, y).
        np.testing.assert_allclose(data.array[:, :, k], (hu + k)[::-1, ::-1].T, atol=1e-3)


def test_dicom_truncated_and_non_dicom_are_read_errors(tmp_path):
    with pytest.raises(ReadError, match="MR_truncated"):
        read_image(get_testdata_file("MR_truncated.dcm"))
    fake = tmp_path / "fake.dcm"
    fake.write_text("not dicom at all")
    with pytest.raises(ReadError, match="fake.dcm"):
        read_image(fake)


@pytest.fixture(scope="module")
def mni():
    from nilearn.datasets import load_mni152_template

    return load_mni152_template(resolution=2)


def test_nifti_is_reoriented_to_ras(tmp_path, mni):
    data = np.asarray(mni.dataobj, dtype=np.float32)
    # Store it in LPS order (x and y flipped, affine to match): the reader must undo that.
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    shape = np.array(data.shape[:3])
    lps_affine = mni.affine @ np.array([[-1, 0, 0, shape[0] - 1], [0, -1, 0, shape[1] - 1],
                                        [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    assert nib.aff2axcodes(lps_affine) == ("L", "P", "S") and flip is not None
    path = tmp_path / "mni_lps.nii.gz"
    nib.save(nib.Nifti1Image(data[::-1, ::-1, :].copy(), lps_affine), path)
    out = read_image(path)
    assert out.meta["orientation"] == "RAS" and out.meta["original_orientation"] == "LPS"
    np.testing.assert_array_equal(out.array, data)
    np.testing.assert_allclose(np.array(out.meta["affine"]), mni.affine)


def test_nifti_4d(tmp_path, mni):
    data = np.asarray(mni.dataobj, dtype=np.float32)
    path = tmp_path / "four.nii"
    nib.save(nib.Nifti1Image(np.stack([data, 2 * data], axis=-1), mni.affine), path)
    out = read_image(path)
    assert out.array.shape == data.shape + (2,)
    np.testing.assert_array_equal(out.array[..., 1], 2 * data)


def test_raster_bit_depths_and_colour(tmp_path):
    grey16 = (np.arange(64 * 48, dtype=np.uint32).reshape(64, 48) * 21).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "a.png"), grey16)
    cv2.imwrite(str(tmp_path / "a.tif"), grey16)
    for name in ("a.png", "a.tif"):
        out = read_image(tmp_path / name)
        assert out.array.dtype == np.uint16 and out.meta["value_range"] == (0, 65535)
        np.testing.assert_array_equal(out.array, grey16)
    bgr = np.zeros((10, 12, 3), np.uint8)
    bgr[..., 2] = 200  # pure red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    assert int(read_image(tmp_path / "red.png").array[0, 0]) == round(0.299 * 200)


def test_bad_raster_files(tmp_path):
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "notes.txt").write_text("hello")
    ok = np.full((40, 40), 128, np.uint8)
    cv2.imwrite(str(tmp_path / "ok.jpg"), ok)
    raw = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(raw[: len(raw) // 2])
    expected = {"zero.png": "zero-byte", "junk.png": "corrupt", "notes.txt": "not an image", "cut.jpg": "truncated"}
    for name, reason in expected.items():
        with pytest.raises(ReadError, match=reason):
            read_image(tmp_path / name)
    shutil.copy(tmp_path / "ok.jpg", tmp_path / "copy.jpg")
    assert content_hash(read_image(tmp_path / "copy.jpg").array) == content_hash(read_image(tmp_path / "ok.jpg").array)
