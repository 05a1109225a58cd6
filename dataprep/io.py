"""Reading medical image files, and writing prepared outputs atomically.

One entry point, :func:`read_image`, for DICOM (single files and series folders),
NIfTI (.nii, .nii.gz; 3D and 4D), PNG, JPEG and TIFF (8 and 16 bit). It returns an
:class:`ImageData`: the pixel array and its metadata.

Array conventions:

- 2D images: ``(H, W)``, colour converted to grey (ITU-R 601 luma).
- volumes (NIfTI, DICOM series): reoriented to the closest canonical orientation,
  RAS+, axes ``(x, y, z[, t])`` as nibabel's ``as_closest_canonical`` gives them.
- DICOM: modality LUT (rescale slope and intercept) applied; if the file carries a
  window (centre/width) it is applied with the DICOM linear VOI function and the
  result is float32 in [0, 1]; MONOCHROME1 is inverted so that bright is dense.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_SUFFIXES = (".dcm", ".dicom")


class ReadError(Exception):
    """A file that cannot be used, with the reason; ``str()`` names the file and the problem."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class WriteError(OSError):
    """Writing an output failed (disk full, read-only, no permission). Unlike a :class:`ReadError`
    it is never a skip: the run stops, and a rerun resumes once the cause is fixed."""


@dataclass
class ImageData:
    """Pixels and metadata of one file.

    Example:
        >>> data = read_image("scan.dcm")          # doctest: +SKIP
        >>> data.array.shape, data.meta["spacing"]  # doctest: +SKIP
        ((512, 512), (0.7, 0.7))
    """

    array: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def file_kind(path: str | os.PathLike) -> str | None:
    """'raster', 'nifti', 'dicom' or None from the file name (a folder is a DICOM series)."""
    p = Path(path)
    name = p.name.lower()
    if p.is_dir():
        return "dicom"
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(RASTER_SUFFIXES):
        return "raster"
    if name.endswith(DICOM_SUFFIXES):
        return "dicom"
    return None


def read_image(path: str | os.PathLike, *, apply_window: bool = True) -> ImageData:
    """Read any supported file or DICOM series folder; raise :class:`ReadError` if unusable."""
    p = Path(path)
    if not p.exists():
        raise ReadError(p, "file not found")
    kind = file_kind(p)
    if p.is_file() and p.stat().st_size == 0:
        raise ReadError(p, "zero-byte file")
    if kind == "raster":
        return _read_raster(p)
    if kind == "nifti":
        return _read_nifti(p)
    if kind == "dicom":
        return _read_dicom_series(p, apply_window) if p.is_dir() else _read_dicom(p, apply_window)
    # Extensionless files are common in DICOM exports: sniff the preamble.
    with open(p, "rb") as fh:
        head = fh.read(132)
    if head[128:132] == b"DICM":
        return _read_dicom(p, apply_window)
    raise ReadError(p, f"not an image file (unknown type '{p.suffix or p.name}')")


def _grey(arr: np.ndarray, order: str = "RGB") -> np.ndarray:
    """Colour (H, W, C) to grey with ITU-R 601 weights, keeping the integer dtype."""
    if arr.ndim != 3:
        return arr
    if arr.shape[2] == 1:
        return arr[..., 0]
    rgb = arr[..., :3].astype(np.float32)
    w = (0.299, 0.587, 0.114) if order == "RGB" else (0.114, 0.587, 0.299)
    grey = rgb[..., 0] * w[0] + rgb[..., 1] * w[1] + rgb[..., 2] * w[2]
    if np.issubdtype(arr.dtype, np.integer):
        return np.clip(np.rint(grey), 0, np.iinfo(arr.dtype).max).astype(arr.dtype)
    return grey


def _read_raster(p: Path) -> ImageData:
    buf = np.fromfile(p, dtype=np.uint8)
    name = p.name.lower()
    if name.endswith((".jpg", ".jpeg")):
        # libjpeg decodes a truncated file with a grey tail and only warns: check for the EOI marker.
        tail = buf[-64:].tobytes().rstrip(b"\x00")
        if not tail.endswith(b"\xff\xd9"):
            raise ReadError(p, "truncated JPEG (no end-of-image marker)")
    arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ReadError(p, "corrupt or truncated image (decoder failed)")
    if arr.ndim == 3:
        if arr.shape[2] == 4:
            arr = arr[..., :3]
        arr = _grey(arr, order="BGR")  # OpenCV decodes colour as BGR
    if arr.dtype not in (np.uint8, np.uint16):
        arr = arr.astype(np.float32)
    vmax = 255 if arr.dtype == np.uint8 else 65535 if arr.dtype == np.uint16 else None
    meta = {"source": str(p), "format": name.rsplit(".", 1)[-1], "spacing": (1.0, 1.0),
            "value_range": (0, vmax) if vmax else None, "dtype": str(arr.dtype)}
    return ImageData(np.ascontiguousarray(arr), meta)


def _read_nifti(p: Path) -> ImageData:
    import nibabel as nib

    try:
        img = nib.load(str(p))
        canon = nib.as_closest_canonical(img)
        arr = np.asarray(canon.dataobj, dtype=np.float32)  # applies scl_slope / scl_inter
    except Exception as exc:  # nibabel raises many types for damaged files
        raise ReadError(p, f"corrupt or truncated NIfTI ({type(exc).__name__}: {exc})") from exc
    zooms = tuple(float(z) for z in canon.header.get_zooms())
    meta = {"source": str(p), "format": "nifti", "spacing": zooms[: min(3, len(zooms))],
            "affine": canon.affine.tolist(), "orientation": "".join(nib.aff2axcodes(canon.affine)),
            "original_orientation": "".join(nib.aff2axcodes(img.affine)), "value_range": None}
    return ImageData(arr, meta)


def dicom_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 linear VOI function, mapped to [0, 1]."""
    if width <= 1:
        return (x > center - 0.5).astype(np.float32)
    y = ((x - (center - 0.5)) / (width - 1.0)) + 0.5
    return np.clip(y, 0.0, 1.0).astype(np.float32)


def _first(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value[0]) if hasattr(value, "__len__") and not isinstance(value, str) else float(value)
    except (TypeError, ValueError, IndexError):
        return None


def _dicom_values(p: Path, ds: Any, raw: np.ndarray, apply_window: bool) -> ImageData:
    """Modality LUT, window and MONOCHROME1 on an already decoded pixel array."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if int(ds.get("SamplesPerPixel", 1) or 1) > 1:
        raw = _grey(raw, order="RGB")
    slope = _first(ds.get("RescaleSlope")) or 1.0
    intercept = _first(ds.get("RescaleIntercept")) or 0.0
    x = raw.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    windowed = apply_window and center is not None and width is not None and width > 0
    if windowed:
        x = dicom_window(x, center, width)
        if photometric == "MONOCHROME1":
            x = 1.0 - x
        value_range: tuple[float, float] | None = (0.0, 1.0)
    else:
        if photometric == "MONOCHROME1":
            x = (float(x.max()) + float(x.min())) - x
        value_range = None
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing") or (1.0, 1.0)
    meta = {"source": str(p), "format": "dicom", "spacing": tuple(float(s) for s in spacing),
            "photometric": photometric, "rescale": (slope, intercept),
            "window": (center, width) if windowed else None, "value_range": value_range,
            "modality": str(ds.get("Modality", ""))}
    return ImageData(x.astype(np.float32), meta)


def _read_dicom(p: Path, apply_window: bool) -> ImageData:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(p))
    except InvalidDicomError as exc:
        raise ReadError(p, "not a DICOM file") from exc
    except Exception as exc:
        raise ReadError(p, f"corrupt or truncated DICOM ({type(exc).__name__}: {exc})") from exc
    if "PixelData" not in ds:
        raise ReadError(p, "DICOM file has no pixel data")
    try:
        raw = ds.pixel_array
    except Exception as exc:
        raise ReadError(p, f"cannot decode DICOM pixel data ({type(exc).__name__}: {exc})") from exc
    return _dicom_values(p, ds, raw, apply_window)


def _read_dicom_series(p: Path, apply_window: bool) -> ImageData:
    """A folder of slices -> canonical (RAS) volume, via SimpleITK/GDCM for the geometry."""
    import nibabel as nib
    import pydicom
    import SimpleITK as sitk

    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(p))
    if not ids:
        raise ReadError(p, "folder holds no DICOM series")
    # Several series in one folder: take the one with most slices, deterministically.
    files = max((sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(p), s) for s in sorted(ids)), key=len)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        img = reader.Execute()  # GDCM applies rescale slope / intercept
    except RuntimeError as exc:
        raise ReadError(p, f"cannot read DICOM series ({exc})") from exc
    zyx = sitk.GetArrayFromImage(img).astype(np.float32)
    xyz = np.transpose(zyx, (2, 1, 0))
    direction = np.array(img.GetDirection(), dtype=float).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.array(img.GetSpacing(), dtype=float)
    lps[:3, 3] = img.GetOrigin()
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # ITK world is LPS, nibabel's is RAS
    canon = nib.as_closest_canonical(nib.Nifti1Image(xyz, ras))
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    # Rescale is already applied, so pass a header without it and the modality-unit pixels.
    data = np.asarray(canon.dataobj, dtype=np.float32)
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    out = _dicom_values(p, ds, data, apply_window)
    out.meta.update({"spacing": tuple(float(z) for z in canon.header.get_zooms()[:3]),
                     "affine": canon.affine.tolist(), "orientation": "RAS", "slices": len(files)})
    return out


# ---------------------------------------------------------------- writing


def to_uint16(image01: np.ndarray) -> np.ndarray:
    """Float in [0, 1] -> the 16-bit pixels that prepared PNGs store."""
    return np.rint(np.clip(image01, 0.0, 1.0) * 65535.0).astype(np.uint16)


def content_hash(pixels: np.ndarray) -> str:
    """sha256 of the prepared pixel bytes (C order, little endian), as 'sha256:<hex>'."""
    arr = np.ascontiguousarray(pixels)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return "sha256:" + hashlib.sha256(arr.tobytes()).hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same folder, then os.replace: readers never see half a file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise WriteError(exc.errno, exc.strerror or str(exc), str(path)) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise WriteError(exc.errno, exc.strerror or str(exc), str(path)) from None
        raise


# zlib level 0 (stored): encoding is 3x faster than level 1 and, for 224 px 16-bit images
# with texture, level 1 saved under 5 %; prepare is encode-bound, disk is cheap.
PNG_COMPRESSION = 0


def write_png(path: str | os.PathLike, pixels: np.ndarray) -> None:
    """Write a 2D uint8 or uint16 array as PNG, atomically."""
    ok, buf = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, buf.tobytes())


def read_png(path: str | os.PathLike) -> np.ndarray:
    """Read a prepared PNG unchanged (uint8 or uint16)."""
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ReadError(path, "cannot read prepared PNG")
    return arr
