"""Nothing silently wrong: non-finite and constant images are reported, never prepared as black images;
a slice of a volume with NaN is reported and its neighbours come out right; bad options are refused."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
from test_dataprep_datasets import _brats_tree, _records, _skips

import dataprep as dp
from pipelines import cli


def _classes(root: Path, counts: dict[str, int], seed: int) -> Path:
    """Class folders of random grey 32 x 32 PNGs: ``{"normal": 6, "abnormal": 2}``."""
    rng = np.random.default_rng(seed)
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(root / cls / f"{cls[0]}{i}.png"), rng.integers(30, 220, (32, 32), dtype=np.uint8))
    return root


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for name in ("normal", "abnormal"):
        (root / name).mkdir(parents=True)
    for i in range(4):
        cv2.imwrite(str(root / "normal" / f"n{i}.png"), rng.integers(30, 220, (32, 32), dtype=np.uint8))
    cv2.imwrite(str(root / "abnormal" / "a0.png"), rng.integers(30, 220, (32, 32), dtype=np.uint8))
    nan = rng.random((32, 32)).astype(np.float32)
    nan[3, 4] = np.nan
    cv2.imwrite(str(root / "normal" / "nan.tif"), nan)
    inf = rng.random((32, 32)).astype(np.float32)
    inf[0, 0] = np.inf
    cv2.imwrite(str(root / "normal" / "inf.tif"), inf)
    cv2.imwrite(str(root / "normal" / "black.png"), np.zeros((32, 32), np.uint8))
    return root


def test_non_finite_and_constant_images_are_reported_not_prepared(tmp_path):
    out = tmp_path / "out"
    dp.prepare_dataset("folder", _folder(tmp_path / "raw"), out, size=16)
    ids = {r["id"] for r in _records(out)}
    skips = _skips(out)
    assert skips["nan.tif"] == "non-finite values (NaN or infinity)" == skips["inf.tif"]
    assert skips["black.png"] == "constant image after preprocessing (no content)"
    assert not any(name in i for i in ids for name in ("nan", "inf", "black"))
    for r in _records(out):  # what was prepared has content
        assert np.ptp(dp.read_png(out / r["image"])) > 0


def test_a_volume_slice_with_nan_is_reported_and_the_others_are_right(tmp_path):
    raw = _brats_tree(tmp_path / "raw", n_cases=1)
    dp.prepare_dataset("brats", raw, tmp_path / "clean", options={"min_brain_fraction": 0.2, "test_fraction": 0})
    flair = next(raw.rglob("*_flair.nii.gz"))
    image = nib.load(flair)
    vol = np.asarray(image.dataobj, np.float32)
    z = int(np.argmax((vol != 0).mean(axis=(0, 1))))  # a slice through the brain
    vol[10, 10, z] = np.nan
    nib.save(nib.Nifti1Image(vol, image.affine), flair)
    dp.prepare_dataset("brats", raw, tmp_path / "nan", options={"min_brain_fraction": 0.2, "test_fraction": 0})
    assert _skips(tmp_path / "nan")[flair.name] == f"slice {z}: non-finite values (NaN or infinity)"
    before = {r["id"]: r for r in _records(tmp_path / "clean")}
    after = {r["id"]: r for r in _records(tmp_path / "nan")}
    assert set(before) - set(after) == {f"{flair.name.split('_flair')[0]}_z{z:03d}"}
    for item, r in after.items():  # one NaN voxel, counted as 0, leaves the volume's normalisation as it was
        a = dp.read_png(tmp_path / "nan" / r["image"]).astype(int)
        b = dp.read_png(tmp_path / "clean" / before[item]["image"]).astype(int)
        assert np.abs(a - b).max() <= 65535 * 0.01, item


def test_generate_names_a_non_finite_source_file(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "ok.png"), np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8))
    cv2.imwrite(str(folder / "bad.tif"), np.full((32, 32), np.nan, np.float32))
    assert cli.main(["generate", "--data", str(folder), "--out", str(tmp_path / "c.zarr"), "--samples", "4",
                     "--seed", "0", "--size", "32", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.tif: non-finite values" in err


@pytest.mark.parametrize("value", [2, -0.5, "half"])
def test_a_test_fraction_outside_zero_to_one_is_refused(tmp_path, value):
    with pytest.raises(dp.PrepareError, match="test_fraction must"):
        dp.prepare_dataset("folder", _folder(tmp_path / "raw"), tmp_path / "out", size=16,
                           options={"test_fraction": value})
    assert json.loads((tmp_path / "out" / "prepare.json").read_text())["options"]["test_fraction"] == value


def test_odd_entries_and_tiny_images_get_skip_entries(tmp_path):
    raw = tmp_path / "raw"
    _folder(raw)
    (raw / "normal" / "folder.png").mkdir()
    (raw / "normal" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (raw / "normal" / "loop.png").symlink_to(raw / "normal" / "loop.png")
    cv2.imwrite(str(raw / "normal" / "dot.png"), np.full((1, 1), 128, np.uint8))
    cv2.imwrite(str(raw / "normal" / "line.png"), np.full((1, 500), 128, np.uint8))
    dp.prepare_dataset("folder", raw, tmp_path / "out", size=16)
    skips = _skips(tmp_path / "out")
    assert skips["folder.png"] == "a folder named like an image"
    assert skips["gone.png"] == "dangling symbolic link" and skips["loop.png"] == "symbolic link loop"
    assert skips["dot.png"].startswith("too small") and skips["line.png"].startswith("too small")


def test_listed_paths_stay_inside_the_dataset(tmp_path):
    """MediCLIP's listings and a prepared index.jsonl cannot send a reader outside their root."""
    secret = tmp_path / "secret.png"
    cv2.imwrite(str(secret), np.full((32, 32), 99, np.uint8))
    mc = tmp_path / "mediclip"
    (mc / "images" / "train").mkdir(parents=True)
    (mc / "samples").mkdir()
    cv2.imwrite(str(mc / "images" / "train" / "ok.png"), np.random.default_rng(0).integers(0, 255, (32, 32), np.uint8))
    lines = [{"filename": "train/ok.png", "label": 0}, {"filename": "../../secret.png", "label": 0},
             {"filename": str(secret), "label": 0}]
    (mc / "samples" / "train.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (mc / "samples" / "test.json").write_text("")
    out = tmp_path / "out"
    dp.prepare_dataset("mediclip", mc, out, size=16)
    assert [r["source"] for r in _records(out)] == ["images/train/ok.png"]
    reasons = [json.loads(line)["reason"] for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert sum(r.startswith("path outside the dataset's images/") for r in reasons) == 2
    index = (out / "index.jsonl").read_text().replace('"images/', '"../../')
    (out / "index.jsonl").write_text(index)
    with pytest.raises(dp.PrepareError, match="outside the dataset"):
        dp.read_index(out)


def test_masks_are_binarised_by_the_stated_rule_and_full_masks_reported(tmp_path):
    raw = tmp_path / "raw"
    rng = np.random.default_rng(5)
    for i in range(4):
        (raw / "normal").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(raw / "normal" / f"n{i}.png"), rng.integers(30, 220, (64, 64), dtype=np.uint8))
    (raw / "abnormal").mkdir()
    (raw / "mask").mkdir()
    lesion = np.zeros((64, 64), np.uint8)
    cv2.circle(lesion, (30, 34), 12, 255, -1)
    for name in ("jpeg", "zero_one", "labels", "full"):
        cv2.imwrite(str(raw / "abnormal" / f"{name}.png"), rng.integers(30, 220, (64, 64), dtype=np.uint8))
    cv2.imwrite(str(raw / "mask" / "jpeg.jpg"), lesion, [cv2.IMWRITE_JPEG_QUALITY, 30])  # ringing around the edge
    cv2.imwrite(str(raw / "mask" / "zero_one.png"), lesion // 255)  # 0/1, dark to the eye
    labels = (lesion // 255).copy()
    labels[30:34, 20:40] *= 4  # a label map: 0, 1, 4
    cv2.imwrite(str(raw / "mask" / "labels.png"), labels)
    cv2.imwrite(str(raw / "mask" / "full.png"), np.full((64, 64), 255, np.uint8))
    out = tmp_path / "out"
    dp.prepare_dataset("folder", raw, out, size=64)
    masks = {r["id"]: dp.read_png(out / r["mask"]) > 0 for r in _records(out) if r.get("mask")}
    truth = lesion > 0
    ringing = cv2.imdecode(cv2.imencode(".jpg", lesion, [cv2.IMWRITE_JPEG_QUALITY, 30])[1], cv2.IMREAD_GRAYSCALE)
    assert ((ringing > 0) & ~truth).sum() > 20  # the file really rings: "> 0" would have grown the lesion
    for name in ("jpeg", "zero_one", "labels"):
        mask = masks[f"abnormal__{name}"]
        assert (mask ^ truth).sum() <= 0.05 * truth.sum(), name  # the lesion, not its ringing or nothing
    assert _skips(out)["full.png"].startswith("mask covers the whole image")
    assert "abnormal__full" not in {r["id"] for r in _records(out)}
    assert "label-map" in json.loads((out / "card.json").read_text())["mask_rule"]


def test_one_image_in_both_mediclip_splits_and_copies_across_splits_are_reported(tmp_path):
    mc = tmp_path / "mediclip"
    rng = np.random.default_rng(9)
    for name in ("a", "b", "c"):
        (mc / "images" / "train").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(mc / "images" / "train" / f"{name}.png"), rng.integers(30, 220, (32, 32), dtype=np.uint8))
    (mc / "images" / "test").mkdir()
    cv2.imwrite(str(mc / "images" / "test" / "copy_of_c.png"), cv2.imread(str(mc / "images" / "train" / "c.png")))
    cv2.imwrite(str(mc / "images" / "test" / "t.png"), rng.integers(30, 220, (32, 32), dtype=np.uint8))
    (mc / "samples").mkdir()
    train = [{"filename": f"train/{n}.png", "label": 0} for n in ("a", "b", "c", "b")]  # b twice
    test = [{"filename": "train/a.png", "label": 0}, {"filename": "test/copy_of_c.png", "label": 0},
            {"filename": "test/t.png", "label": 1}]
    (mc / "samples" / "train.json").write_text("".join(json.dumps(x) + "\n" for x in train))
    (mc / "samples" / "test.json").write_text("".join(json.dumps(x) + "\n" for x in test))
    out = tmp_path / "out"
    card = dp.prepare_dataset("mediclip", mc, out, size=16)
    records = {r["id"]: r for r in _records(out)}
    assert records["train__a"]["split"] == "test"  # in both listings: test only, one record
    assert sorted(r["split"] for r in records.values()) == ["test", "test", "test", "train", "train"]
    reasons = [json.loads(line)["reason"] for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert any(r.startswith("listed in samples/train.json and samples/test.json") for r in reasons)
    assert any(r.startswith("listed twice in samples/train.json") for r in reasons)
    assert card["duplicates_across_splits"]["pairs"] == [["train__c", "test__copy_of_c"]]
    doc = dp.draw_support(out, 1, 0)  # the leakage check sees the copy
    assert doc["support"] == ["train__b"] and doc["excluded_for_leakage"] == ["train__c"]


def test_a_full_disk_stops_prepare_and_the_rerun_loses_nothing(tmp_path, monkeypatch, capsys):
    import errno
    import os

    from dataprep import io as dio

    raw = _classes(tmp_path / "raw", {"normal": 6, "abnormal": 2}, seed=11)
    real_fdopen, calls = os.fdopen, []

    def full_after_ten(fd, *args, **kwargs):
        calls.append(fd)
        if len(calls) > 10:
            os.close(fd)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fdopen(fd, *args, **kwargs)

    monkeypatch.setattr(dio.os, "fdopen", full_after_ten)
    out = tmp_path / "out"
    with pytest.raises(dp.PrepareError, match="No space left on device.*rerun the same command"):
        dp.prepare_dataset("folder", raw, out, size=16)
    items = list((out / "items").glob("*.json"))
    assert all(not json.loads(p.read_text())["skipped"] for p in items)  # a write error is never a skip
    assert not list(out.rglob(".*.tmp"))
    monkeypatch.setattr(dio.os, "fdopen", real_fdopen)
    card = dp.prepare_dataset("folder", raw, out, size=16)  # the rerun resumes
    assert card["counts"]["total"] == 8 and card["skipped"]["count"] == 0
    # and the command line says it in one line
    monkeypatch.setattr(dio.os, "fdopen", full_after_ten)
    calls.clear()
    calls.extend([0] * 10)
    code = cli.main(["prepare", "folder", "--root", str(raw), "--out", str(tmp_path / "out2"), "--size", "16"])
    err = capsys.readouterr().err
    assert code == 1 and "No space left on device" in err and "Traceback" not in err


def test_a_failed_prepare_does_not_block_the_corrected_rerun(tmp_path, capsys):
    raw = _classes(tmp_path / "raw", {"good": 4, "bad": 2}, seed=2)
    out = tmp_path / "out"
    assert cli.main(["prepare", "folder", "--root", str(raw), "--out", str(out), "--size", "16"]) == 1
    err = capsys.readouterr().err
    assert "-o normal_dir=NAME" in err and "good/" in err  # says which option names the folder
    assert cli.main(["prepare", "folder", "--root", str(raw), "--out", str(out), "--size", "16",
                     "-o", "normal_dir=good", "-o", "abnormal_dir=bad"]) == 0
    assert len(_records(out)) == 6
    # finished work still refuses other settings
    assert cli.main(["prepare", "folder", "--root", str(raw), "--out", str(out), "--size", "32",
                     "-o", "normal_dir=good", "-o", "abnormal_dir=bad"]) == 1
    assert "other settings" in capsys.readouterr().err
