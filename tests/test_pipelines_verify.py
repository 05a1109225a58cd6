"""`fmclip verify`: a clean store passes; every kind of damage is reported as damage, without a
traceback, and --repair remakes exactly the damaged shards."""
from __future__ import annotations

import json
import subprocess

import pytest
import zarr
from cache_helpers import assert_same, gen

from pipelines import cli
from pipelines.cache import file_checksums, mark_done, shard_keys


def test_verify_passes_then_names_the_corrupted_shard(reference, tmp_path, capsys):
    from pipelines.cli import main

    assert main(["verify", str(reference), "--replay", "24"]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.zarr"
    subprocess.run(["cp", "-r", str(reference), str(bad)], check=True)
    shard_file = bad / "images" / "c" / "1" / "0" / "0"
    raw = bytearray(shard_file.read_bytes())
    raw[len(raw) // 3] ^= 0xFF  # inside one chunk of shard 1
    shard_file.write_bytes(bytes(raw))
    assert main(["verify", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "shard 1 " in out and "images/c/1/0/0" in out
    assert "shard 0" not in out and "shard 2" not in out


def test_verify_regenerates_and_catches_a_changed_sample(reference, tmp_path, capsys):
    bad = tmp_path / "changed.zarr"
    subprocess.run(["cp", "-r", str(reference), str(bad)], check=True)
    group = zarr.open_group(str(bad), mode="r+")
    images = group["images"][16:24]
    images[3] = 255 - images[3]
    group["images"][16:24] = images  # a whole-shard write, then a fresh checksum: only replay can tell
    mark_done(bad, 2, 16, 24, file_checksums(bad, 2))
    assert cli.main(["verify", str(bad), "--replay", "24"]) == 1
    out = capsys.readouterr().out
    assert "sample 19 (shard 2)" in out and "sample 18" not in out


def test_verify_from_another_working_folder_finds_the_sources(images, tmp_path, monkeypatch, capsys):
    # generate with a relative --data: the sources must still be found when verify runs elsewhere
    monkeypatch.chdir(images.parent)
    out = tmp_path / "rel.zarr"
    assert gen(images.relative_to(images.parent), out, "--workers", "1", samples=8) == 0
    monkeypatch.chdir(tmp_path)
    assert cli.main(["verify", str(out), "--replay", "4", "--no-progress"]) == 0, capsys.readouterr()


@pytest.mark.parametrize("damage", ["garbage marker", "marker range", "marker without checksums", "deleted file",
                                    "flipped byte", "swapped files"])
def test_verify_reports_each_kind_of_damage_and_repair_remakes_exactly_those_shards(reference, tmp_path, capsys,
                                                                                     damage):
    bad = tmp_path / "bad.zarr"
    subprocess.run(["cp", "-r", str(reference), str(bad)], check=True)
    marker = bad / "_done" / "000001.json"
    if damage == "garbage marker":
        marker.write_bytes(b"\x00{not json")
    elif damage == "marker range":
        marker.write_text(json.dumps({**json.loads(marker.read_text()), "start": 0, "stop": 3}))
    elif damage == "marker without checksums":
        marker.write_text(json.dumps({"shard": 1, "start": 8, "stop": 16}))
    elif damage == "deleted file":
        (bad / "labels" / "c" / "1").unlink()
    elif damage == "flipped byte":
        f = bad / "masks" / "c" / "1" / "0" / "0"
        raw = bytearray(f.read_bytes())
        raw[10] ^= 1
        f.write_bytes(bytes(raw))
    else:
        a, b = bad / "images" / "c" / "1" / "0" / "0", bad / "images" / "c" / "2" / "0" / "0"
        data_a, data_b = a.read_bytes(), b.read_bytes()
        a.write_bytes(data_b)
        b.write_bytes(data_a)
    assert cli.main(["verify", str(bad), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "shard 1 " in captured.out and "shard 0 " not in captured.out and "Traceback" not in captured.err
    assert "--repair" in captured.err
    before = {k: (bad / k).stat().st_mtime_ns for k in shard_keys(0)}
    assert cli.main(["verify", str(bad), "--repair", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "remade" in out and "OK" in out
    assert_same(bad, reference)
    assert {k: (bad / k).stat().st_mtime_ns for k in shard_keys(0)} == before  # an undamaged shard is left alone


def test_verify_of_a_cache_without_its_metadata_is_damage_not_a_crash(reference, tmp_path, capsys):
    bad = tmp_path / "bad.zarr"
    subprocess.run(["cp", "-r", str(reference), str(bad)], check=True)
    (bad / "sources.json").unlink()
    assert cli.main(["verify", str(bad), "--no-progress"]) == 1
    assert "sources.json" in capsys.readouterr().out
    (bad / "zarr.json").unlink()
    assert cli.main(["verify", str(bad), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "DAMAGED" in err and "zarr.json" in err and "Traceback" not in err
