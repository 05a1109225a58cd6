"""Indexers and ``prepare`` on raw trees built here in each layout, with bad files among them."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest

import dataprep as dp
from dataprep import prepare as prep


def _img(path: Path, h: int = 120, w: int = 100, seed: int = 0, value: int = 150) -> Path:
    yy, xx = np.mgrid[:h, :w]
    head = ((yy - h / 2) / (0.4 * h)) ** 2 + ((xx - w / 2) / (0.4 * w)) ** 2 <= 1
    img = np.where(head, value, 0) + np.random.default_rng(seed).integers(0, 40, (h, w))
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img.astype(np.uint8))
    return path


def _mask(path: Path, h: int = 120, w: int = 100, box: tuple[int, int, int, int] = (40, 60, 30, 50)) -> Path:
    m = np.zeros((h, w), np.uint8)
    m[box[0]:box[1], box[2]:box[3]] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), m)
    return path


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]


def _skips(out: Path) -> dict[str, str]:
    return {Path(s["path"]).name: s["reason"] for s in map(json.loads, (out / "skipped.jsonl").read_text().splitlines())}


def _brainmri_tree(root: Path, n_no: int = 9, n_yes: int = 7) -> Path:
    base = root / "brain_tumor_dataset"  # downloads wrap the folders once more
    for i in range(n_no):
        _img(base / "no" / f"No{i}.jpg", seed=i)
    for i in range(n_yes):
        _img(base / "yes" / f"Y{i}.JPG", seed=100 + i)
    (base / "no" / "readme.txt").write_text("not an image")
    (base / "yes" / "empty.jpg").write_bytes(b"")
    raw = (base / "yes" / "Y0.JPG").read_bytes()
    (base / "yes" / "cut.jpg").write_bytes(raw[: len(raw) // 3])
    vol = np.zeros((8, 8, 8), np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), base / "yes" / "volume.nii.gz")  # 3D in a 2D dataset
    return root


def test_brainmri_counts_splits_and_skips(tmp_path):
    out = tmp_path / "out"
    card = dp.prepare_dataset("brainmri", _brainmri_tree(tmp_path / "raw"), out)
    c = card["counts"]
    assert c["total"] == 9 + 7
    assert (c["train"]["normal"] + c["test"]["normal"], c["test"]["abnormal"], c["train"]["abnormal"]) == (9, 7, 0)
    assert c["test"]["normal"] == round(9 * 65 / 98)
    skips = _skips(out)
    assert set(skips) == {"readme.txt", "empty.jpg", "cut.jpg", "volume.nii.gz"}
    assert "zero-byte" in skips["empty.jpg"] and "truncated" in skips["cut.jpg"]
    assert "dimensionality" in skips["volume.nii.gz"] and "not an image" in skips["readme.txt"]
    assert card["skipped"]["count"] == 4
    recs = _records(out)
    assert len(recs) == 16 and len({r["id"] for r in recs}) == 16
    r = recs[0]
    assert set(r) >= {"id", "split", "label", "mask", "foreground", "source", "sha256", "image"}
    pixels = dp.read_png(out / r["image"])
    assert pixels.dtype == np.uint16 and pixels.shape == (224, 224)
    assert dp.content_hash(pixels) == r["sha256"]
    assert (tmp_path / "raw" / r["source"]).is_file()
    fg = dp.read_png(out / r["foreground"])
    assert fg.dtype == np.uint8 and set(np.unique(fg)) <= {0, 255} and fg.any()


def test_busi_mask_union_and_bad_masks(tmp_path):
    raw = tmp_path / "Dataset_BUSI_with_GT"
    for cls, n in (("normal", 4), ("benign", 3), ("malignant", 2)):
        for i in range(1, n + 1):
            _img(raw / cls / f"{cls} ({i}).png", seed=i)
            _mask(raw / cls / f"{cls} ({i})_mask.png", box=(40, 60, 30, 50) if cls != "normal" else (0, 0, 0, 0))
    _mask(raw / "benign" / "benign (1)_mask_1.png", box=(80, 100, 60, 80))  # second lesion: union
    _mask(raw / "benign" / "benign (9)_mask.png")  # mask with no image
    _mask(raw / "malignant" / "malignant (2)_mask_1.png", h=60, w=50)  # size differs from its image
    out = tmp_path / "out"
    card = dp.prepare_dataset("busi", raw, out)
    assert card["counts"]["test"]["abnormal"] == 3 + 2 - 1  # malignant (2) skipped for its bad mask
    assert card["counts"]["train"]["normal"] + card["counts"]["test"]["normal"] == 4
    skips = _skips(out)
    assert "mask without image" in skips["benign (9)_mask.png"]
    assert "mask size differs" in skips["malignant (2)_mask_1.png"]
    rec = next(r for r in _records(out) if r["id"] == "benign__benign_1")
    assert len(rec["mask_sources"]) == 2
    mask = dp.read_png(out / rec["mask"]) > 0
    rows = np.nonzero(mask.any(axis=1))[0]
    # the scan region is cropped first, then the longer side goes to 224 (centred padding)
    top, bottom, left, right = dp.UltrasoundFrameCrop().box(dp.read_image(raw / "benign" / "benign (1).png").array)
    scale = 224 / max(bottom - top, right - left)
    pad = (224 - round((bottom - top) * scale)) // 2
    assert rows.min() == pytest.approx(pad + (40 - top) * scale, abs=2)
    assert rows.max() == pytest.approx(pad + (100 - top) * scale, abs=2)  # two row bands: 40-60 and 80-100
    assert not mask[round(pad + (70 - top) * scale)].any()  # the gap between the lesions stays empty
    normal = next(r for r in _records(out) if r["label"] == 0)
    assert normal["mask"] is not None and not dp.read_png(out / normal["mask"]).any()


def _chexpert_tree(root: Path) -> Path:
    cols = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Cardiomegaly", "Edema",
            "Support Devices"]
    rows = {
        "train": [("p1/study1/view1_frontal", "Frontal", "1.0", "", "", "1.0"),  # normal (devices allowed)
                  ("p2/study1/view1_frontal", "Frontal", "", "1.0", "-1.0", ""),  # abnormal
                  ("p3/study1/view1_frontal", "Frontal", "", "-1.0", "", ""),  # uncertain only
                  ("p4/study1/view2_lateral", "Lateral", "1.0", "", "", ""),  # lateral
                  ("p5/study1/view1_frontal", "Frontal", "", "", "", ""),  # unlabelled
                  ("p6/study1/view1_frontal", "Frontal", "1.0", "", "", "")],  # image missing on disk
        "valid": [("p7/study1/view1_frontal", "Frontal", "1.0", "0.0", "", ""),
                  ("p8/study1/view1_frontal", "Frontal", "", "", "1.0", "")],
    }
    base = root / "CheXpert-v1.0-small"
    for split, entries in rows.items():
        lines = [",".join(cols)]
        for i, (rel, view, nf, card, edema, dev) in enumerate(entries):
            path = f"CheXpert-v1.0-small/{split}/{rel}.jpg"
            if "p6" not in rel:
                _img(root / path, seed=i + (10 if split == "valid" else 0))
            lines.append(",".join([path, "Female", "50", view, "AP", nf, card, edema, dev]))
        (base / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return base


def test_chexpert_label_policy(tmp_path):
    base = _chexpert_tree(tmp_path)
    idx = dp.index_chexpert(base)
    labels = {u.uid.split("__")[1]: (u.split, u.label) for u in idx.units}
    assert labels == {"p1": ("train", 0), "p2": ("train", 1), "p7": ("test", 0), "p8": ("test", 1)}
    assert idx.excluded == {"lateral view": 1, "uncertain (train.csv)": 1, "unlabelled (train.csv)": 1}
    assert [Path(s.path).name for s in idx.skipped] == ["view1_frontal.jpg"] and "missing" in idx.skipped[0].reason
    ones = {u.uid.split("__")[1]: u.label for u in dp.index_chexpert(base, uncertain="ones").units}
    assert ones["p3"] == 1
    zeros = dp.index_chexpert(base, uncertain="zeros")
    assert "p3" not in {u.uid.split("__")[1] for u in zeros.units}  # no 'No Finding': still unlabelled
    out = tmp_path / "out"
    card = dp.prepare_dataset("chexpert", base, out, options={"clahe": True})
    assert card["counts"]["train"]["normal"] == 1 and card["counts"]["test"]["total"] == 2
    assert card["excluded"]["lateral view"] == 1


def _brats_tree(root: Path, n_cases: int = 4) -> Path:
    from nilearn.datasets import load_mni152_template

    mni = load_mni152_template(resolution=2)
    vol = np.asarray(mni.dataobj, dtype=np.float32)
    for c in range(n_cases):
        case = f"BraTS20_Training_{c:03d}"
        folder = root / case
        folder.mkdir(parents=True)
        seg = np.zeros(vol.shape, np.uint8)
        seg[40:50, 50:60, 40 + c:44 + c] = 1
        nib.save(nib.Nifti1Image(vol * (1 + 0.1 * c), mni.affine), folder / f"{case}_flair.nii.gz")
        nib.save(nib.Nifti1Image(seg, mni.affine), folder / f"{case}_seg.nii.gz")
        nib.save(nib.Nifti1Image(vol, mni.affine), folder / f"{case}_t1.nii.gz")  # other sequence: unused
    (root / "extra").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), mni.affine), root / "extra" / "Lone_seg.nii.gz")
    (root / "name_mapping.csv").write_text("a,b\n")
    return root


def test_brats_slices_and_tumour_masks(tmp_path):
    from nilearn.datasets import load_mni152_template

    raw = _brats_tree(tmp_path / "raw")
    out = tmp_path / "out"
    card = dp.prepare_dataset("brats", raw, out, workers=2, options={"min_brain_fraction": 0.2})
    vol = np.asarray(load_mni152_template(resolution=2).dataobj, dtype=np.float32)
    per_case = int(((vol != 0).mean(axis=(0, 1)) >= 0.2).sum())
    assert card["counts"]["total"] == 4 * per_case
    recs = _records(out)
    assert sum(r["label"] for r in recs) == 4 * 4  # four tumour slices per case
    for r in recs:
        assert bool(dp.read_png(out / r["mask"]).any()) == bool(r["label"])
    cases = {r["id"].rsplit("_z", 1)[0]: r["split"] for r in recs}
    assert sorted(cases.values()) == ["test", "test", "train", "train"]  # split by case, never by slice
    skips = _skips(out)
    assert "mask without image" in skips["Lone_seg.nii.gz"] and "name_mapping.csv" in skips


def test_mediclip_mvfa_and_folder_layouts(tmp_path):
    mc = tmp_path / "mediclip" / "busi"
    _img(mc / "images/train/normal/normal_0.jpg", seed=1)
    _img(mc / "images/test/normal/normal_1.jpg", seed=2)
    _img(mc / "images/test/abnormal/benign_0.jpg", seed=3)
    _mask(mc / "images/test/ground_true/benign_mask_0.jpg")
    _img(mc / "images/test/abnormal/stray.jpg", seed=4)  # on disk, not listed
    (mc / "samples").mkdir(parents=True)
    (mc / "samples/train.json").write_text(json.dumps({"filename": "train/normal/normal_0.jpg", "label": 0}) + "\n")
    (mc / "samples/test.json").write_text("\n".join(json.dumps(e) for e in [
        {"filename": "test/normal/normal_1.jpg", "label": 0, "clsname": "busi"},
        {"filename": "test/abnormal/benign_0.jpg", "label": 1, "mask": "test/ground_true/benign_mask_0.jpg"},
        {"filename": "test/abnormal/gone.jpg", "label": 1}]) + "\n")
    card = dp.prepare_dataset("mediclip", mc, tmp_path / "o1")
    assert card["counts"]["train"]["normal"] == 1 and card["counts"]["test"]["abnormal"] == 1
    assert card["counts"]["test"]["with_mask"] == 1
    assert set(_skips(tmp_path / "o1")) == {"stray.jpg", "gone.jpg"}
    assert _records(tmp_path / "o1")[0]["modality"] == "breast_us"

    mv = tmp_path / "mvfa" / "Liver_AD"
    for split in ("valid", "test"):
        _img(mv / split / "good/img/a.png", seed=5 if split == "valid" else 6)
        _img(mv / split / "Ungood/img/b.png", seed=7 if split == "valid" else 8)
        _mask(mv / split / "Ungood/anomaly_mask/b.png")
    _mask(mv / "test/Ungood/anomaly_mask/orphan.png")
    card = dp.prepare_dataset("mvfa", mv.parent, tmp_path / "o2")
    assert card["counts"]["train"] == {"normal": 1, "abnormal": 1, "with_mask": 1, "total": 2}
    assert card["counts"]["test"]["total"] == 2 and "orphan.png" in _skips(tmp_path / "o2")

    fo = tmp_path / "folder"
    for i in range(5):
        _img(fo / "normal" / f"n{i}.png", seed=20 + i)
    for i in range(3):
        _img(fo / "abnormal" / f"a{i}.png", seed=30 + i)
        _mask(fo / "mask" / f"a{i}.png")
    _mask(fo / "mask" / "zz.png")
    card = dp.prepare_dataset("folder", fo, tmp_path / "o3", options={"test_fraction": 0.4})
    assert card["counts"]["test"] == {"normal": 2, "abnormal": 3, "with_mask": 3, "total": 5}
    assert card["counts"]["train"]["normal"] == 3 and "zz.png" in _skips(tmp_path / "o3")


def test_resume_after_interruption_does_not_redo_or_duplicate(tmp_path, monkeypatch):
    raw = _brainmri_tree(tmp_path / "raw")
    out = tmp_path / "out"
    real = prep.process_unit
    calls: list[str] = []

    def flaky(unit, o, size):
        if len(calls) == 5:
            raise KeyboardInterrupt  # the user pressed Ctrl-C mid-run
        calls.append(unit.uid)
        return real(unit, o, size)

    monkeypatch.setattr(prep, "process_unit", flaky)
    with pytest.raises(KeyboardInterrupt):
        dp.prepare_dataset("brainmri", raw, out)
    assert not (out / "index.jsonl").exists() and len(list((out / "items").glob("*.json"))) == 5
    first = set(calls)
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "images").glob("*.png")}
    calls.clear()
    monkeypatch.setattr(prep, "process_unit", real)
    seen: list[str] = []
    monkeypatch.setattr(prep, "process_unit", lambda u, o, s: (seen.append(u.uid), real(u, o, s))[1])
    card = dp.prepare_dataset("brainmri", raw, out)
    assert not first & set(seen) and len(first) + len(seen) == 16 + 3  # 16 images + 3 unreadable units
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    recs = _records(out)
    assert len(recs) == card["counts"]["total"] == 16 and len({r["id"] for r in recs}) == 16
    # a third run has nothing to do and changes nothing
    seen.clear()
    assert dp.prepare_dataset("brainmri", raw, out)["counts"] == card["counts"] and not seen
    with pytest.raises(dp.PrepareError, match="other settings"):
        dp.prepare_dataset("brainmri", raw, out, size=128)


def test_strict_and_nothing_usable(tmp_path):
    raw = _brainmri_tree(tmp_path / "raw")
    with pytest.raises(dp.PrepareError, match="--strict: 4 files skipped"):
        dp.prepare_dataset("brainmri", raw, tmp_path / "strict", strict=True)
    assert (tmp_path / "strict" / "skipped.jsonl").is_file()  # the report is written before failing
    bad = tmp_path / "bad"
    for cls in ("no", "yes"):
        (bad / cls).mkdir(parents=True)
        (bad / cls / "x.jpg").write_bytes(b"")
    with pytest.raises(dp.PrepareError, match="nothing usable remains"):
        dp.prepare_dataset("brainmri", bad, tmp_path / "o")


def test_cli_prepare(tmp_path, capsys):
    from pipelines.cli import main

    raw = _brainmri_tree(tmp_path / "raw", n_no=4, n_yes=3)
    assert main(["prepare", "brainmri", "--root", str(raw), "--out", str(tmp_path / "o"), "--size", "64",
                 "--workers", "2", "-o", "test_fraction=0.5"]) == 0
    assert "prepared 7 images" in capsys.readouterr().out
    assert dp.read_png(tmp_path / "o" / _records(tmp_path / "o")[0]["image"]).shape == (64, 64)
    assert main(["prepare", "brainmri", "--root", str(raw), "--out", str(tmp_path / "s"), "--strict"]) == 1
    assert "--strict" in capsys.readouterr().err
    assert main(["prepare", "busi", "--root", str(raw), "--out", str(tmp_path / "b")]) == 1
    assert "normal/, benign/, malignant/" in capsys.readouterr().err
