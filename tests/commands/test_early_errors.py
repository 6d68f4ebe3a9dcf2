"""Errors that need no model are found before torch and the model load; an update of an unchanged archive answers
without them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rsitr.cli import main
from rsitr.index.freshness import unchanged
from support import REPO
from support.errors import assert_refused_without_torch, assert_user_error
from support.index import build_test_index, noise

NO_SETTINGS = dict.fromkeys(("chip_size", "chip_overlap", "tile_larger_than", "index_type", "store_local_tokens",
                             "backend", "vector_uri", "max_pixels", "max_chips_per_file"))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("early")
    build_test_index(base).close()
    return base / "index", base / "archive"


def test_wrong_chips_images_and_data_are_refused_before_torch_loads(built, tmp_path):
    index, archive = built
    (tmp_path / "flat").mkdir()
    noise(1, 32, 32).save(tmp_path / "flat" / "a.png")
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({"images": [{"filename": "x.jpg", "split": "test",
                                                "sentences": [{"raw": "a forest"}]}]}))
    assert_refused_without_torch([
        (["search", str(index), "--like", "99999"], "no chip 99999 in this index"),
        (["search", str(index), "--like", "0"], "no chip 0 in this index"),
        (["search", str(index), "--image", str(REPO / "README.md")], "unsupported image type '.md'"),
        (["search", str(index), "--image", str(archive / "broken.jpg")], "broken.jpg"),
        (["search", str(index), "trees", "--positive", "scene0.png", "nothing.png"], "nothing.png is no indexed image"),
        (["search", str(index), "--list", "nothing*"], "no indexed image matches 'nothing*'"),
        (["eval", "--data", str(captions), "--images", str(tmp_path / "flat")], "image file not found"),
        (["classify", str(tmp_path / "flat")], "has no class sub-folders"),
    ])


def test_an_update_of_an_unchanged_archive_loads_no_model(built):
    index, archive = built
    script = ("import json, sys; from rsitr.cli import main; code = main(json.loads(sys.argv[1])); "
              "print(json.dumps([code, 'torch' in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", script, json.dumps(["index", str(archive), "--out", str(index)])],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = done.stdout.splitlines()
    assert json.loads(lines[-1]) == [0, False], done.stderr
    from rsitr.index.store import MetadataStore

    chips = MetadataStore(index, read_only=True).chip_count()
    assert lines[0] == f"{index}: {chips} chips from 5 files (new 0, changed 0, resumed 0, removed 0, unchanged 5; " \
                       f"0 chips encoded)"
    assert lines[1:3] == ["skipped 1 unreadable image(s):", lines[2]] and lines[2].startswith("  broken.jpg: ")


def test_anything_to_do_is_left_to_the_full_update(built, tmp_path):
    index, archive = built
    assert unchanged(index, archive, NO_SETTINGS) is not None
    assert unchanged(index, archive, {**NO_SETTINGS, "chip_size": 128}) is not None  # as recorded
    assert unchanged(index, archive, {**NO_SETTINGS, "chip_size": 64}) is None
    assert unchanged(index, archive, {**NO_SETTINGS, "index_type": "hnsw"}) is None
    assert unchanged(index, tmp_path, NO_SETTINGS) is None  # another folder
    scene = archive / "scene0.png"
    stat = scene.stat()
    os.utime(scene, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    try:
        assert unchanged(index, archive, NO_SETTINGS) is None  # touched: its hash decides, in the full update
    finally:
        os.utime(scene, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    broken = (archive / "broken.jpg").read_bytes()
    noise(5, 32, 32).save(archive / "broken.jpg", format="JPEG")  # the failed file reads now
    try:
        assert unchanged(index, archive, NO_SETTINGS) is None
    finally:
        (archive / "broken.jpg").write_bytes(broken)
    noise(6, 32, 32).save(archive / "late.png")
    try:
        assert unchanged(index, archive, NO_SETTINGS) is None
    finally:
        (archive / "late.png").unlink()
    assert unchanged(index, archive, NO_SETTINGS) is not None


def test_another_model_for_an_index_offers_another_out_or_rebuild(built, capsys):
    index, archive = built
    code = main(["index", str(archive), "--out", str(index), "--pretrained", "rsitr-small-rsicd"])
    err = capsys.readouterr().err
    assert_user_error(code, err, "index", "not --pretrained rsitr-small-rsicd", "leave out --model and --pretrained",
                      "another --out", "--rebuild")
    assert "--checkpoint" not in err
