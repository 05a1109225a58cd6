"""Few-shot draws: determinism, nesting, leakage refusal, and the command."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

import dataprep as dp


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    rng = np.random.default_rng(0)
    for cls, n in (("normal", 12), ("abnormal", 4)):
        (root / cls).mkdir()
        for i in range(n):
            cv2.imwrite(str(root / cls / f"{cls}{i}.png"), rng.integers(0, 255, (64, 64), dtype=np.uint8))
    # normal3 also appears, byte for byte, as a normal test image elsewhere: a raw-data duplicate
    (root / "normal_test").mkdir()
    shutil.copy(root / "normal" / "normal3.png", root / "normal_test" / "dup_of_normal3.png")
    cv2.imwrite(str(root / "normal_test" / "t0.png"), rng.integers(0, 255, (64, 64), dtype=np.uint8))
    out = tmp_path_factory.mktemp("prepared")
    dp.prepare_dataset("folder", root, out, size=32)
    return out


def test_same_k_and_seed_same_set_and_nested_k(prepared):
    a, b = dp.draw_support(prepared, 4, seed=7), dp.draw_support(prepared, 4, seed=7)
    assert a == b and len(a["support"]) == 4 and len(set(a["support"])) == 4
    assert dp.draw_support(prepared, 4, seed=8)["support"] != a["support"]
    assert dp.draw_support(prepared, 8, seed=7)["support"][:4] == a["support"]
    records = {r["id"]: r for r in dp.read_index(prepared)}
    assert all(records[i]["split"] == "train" and records[i]["label"] == 0 for i in a["support"])
    assert a["dataset"]["name"] == "folder" and a["k"] == 4 and a["seed"] == 7


def test_leakage_check_excludes_and_refuses(prepared):
    doc = dp.draw_support(prepared, 11, seed=0)  # the whole clean pool
    assert doc["excluded_for_leakage"] == ["normal__normal3"] and "normal__normal3" not in doc["support"]
    with pytest.raises(dp.FewShotError, match="only 11 normal training images are eligible"):
        dp.draw_support(prepared, 12, seed=0)
    tampered = dict(doc, support=doc["support"][:3] + ["normal__normal3"])
    with pytest.raises(dp.LeakageError, match="same content as test image 'normal_test__dup_of_normal3'"):
        dp.verify_support(prepared, tampered)
    with pytest.raises(dp.LeakageError, match="not a normal training image"):
        dp.verify_support(prepared, dict(doc, support=["abnormal__abnormal0"]))


def test_fewshot_command_writes_the_file(prepared, tmp_path, capsys):
    from pipelines.cli import main

    target = tmp_path / "k4.json"
    assert main(["fewshot", str(prepared), "--k", "4", "--seed", "3", "--out", str(target)]) == 0
    doc = json.loads(target.read_text())
    assert doc == dp.load_support(target, prepared)
    assert doc["support"] == dp.draw_support(prepared, 4, seed=3)["support"]
    assert main(["fewshot", str(prepared), "--k", "4", "--seed", "3"]) == 0
    assert (prepared / "fewshot" / "k4_seed3.json").is_file()
    assert main(["fewshot", str(prepared), "--k", "50", "--seed", "3"]) == 1
    assert "eligible" in capsys.readouterr().err
