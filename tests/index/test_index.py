"""Indexing an archive and searching it: planted matches, brute-force agreement, incremental updates,
interrupted runs, GeoTIFF bounds, unreadable files, model refusal and the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rsitr.cli import main
from rsitr.index import ArchiveIndex, BuildOptions, IndexCompatibilityError, IndexSettings, IndexSetupError
from rsitr.inference.encoder import Encoder
from rsitr.models import TINY_MODEL
from rsitr.similarity import fuse, global_similarity, local_similarity
from support.index import CHIP_SETTINGS, GEO_CRS, GEO_ORIGIN, GEO_PIXEL, make_archive, noise, tiny_encoder


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return tiny_encoder()


@pytest.fixture(scope="module")
def built(tmp_path_factory, encoder) -> tuple[ArchiveIndex, Path]:
    base = tmp_path_factory.mktemp("built")
    root = make_archive(base / "archive")
    index, _ = ArchiveIndex.build(base / "index", root, encoder=encoder, progress=False,
                                  options=BuildOptions(batch_size=4, **CHIP_SETTINGS))
    return index, root


def index_content(index_dir: Path) -> dict[tuple, tuple[int, bytes, bytes | None]]:
    """Chip id, embedding and tokens per (path, window), read straight from the database."""
    with sqlite3.connect(index_dir / "index.sqlite") as conn:
        rows = conn.execute("SELECT files.path, x, y, chips.width, chips.height, chips.id, embedding, tokens "
                            "FROM chips JOIN files ON files.id = chips.file_id WHERE files.complete = 1").fetchall()
    return {tuple(row[:5]): tuple(row[5:]) for row in rows}


def assert_same_vectors(first: dict, second: dict) -> None:
    """Same chips with the same vectors, up to float noise of different batch compositions."""
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_allclose(np.frombuffer(first[key][1], np.float32), np.frombuffer(second[key][1], np.float32),
                                   atol=1e-5)
        np.testing.assert_allclose(np.frombuffer(first[key][2], np.float16), np.frombuffer(second[key][2], np.float16),
                                   atol=2e-3)


def read_chip(root: Path, path: str, x: int, y: int, width: int, height: int) -> Image.Image:
    if path.endswith(".tif"):
        import rasterio
        from rasterio.windows import Window

        with rasterio.open(root / path) as dataset:
            return Image.fromarray(dataset.read(window=Window(x, y, width, height)).transpose(1, 2, 0))
    return Image.open(root / path).convert("RGB").crop((x, y, x + width, y + height))


def test_archive_is_chipped_as_configured(built):
    index, _ = built
    content = index_content(index.directory)
    # 4 small scenes (1 chip each) + the 300 x 200 GeoTIFF (3 x 2 chips); the broken file is skipped.
    assert sorted({key[0] for key in content}) == ["geo.tif", "scene0.png", "scene1.png", "scene2.png",
                                                   "sub/scene3.png"]
    assert len(content) == 4 + 6
    assert content[("scene1.png", 0, 0, 64, 48)] is not None
    assert [path for path, _ in index.store.failures()] == ["broken.jpg"]


def test_image_query_returns_the_planted_copy_first(built, tmp_path):
    index, root = built
    noise(2, 64, 48).save(tmp_path / "query.png")  # the same pixels as scene2.png, outside the archive
    hits = index.search_image(tmp_path / "query.png", k=3)
    assert hits[0].path == "scene2.png"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].score > hits[1].score
    chip_hits = index.search_image(read_chip(root, "geo.tif", 172, 72, 128, 128), k=1)
    assert (chip_hits[0].path, chip_hits[0].window.x, chip_hits[0].window.y) == ("geo.tif", 172, 72)


def test_text_search_equals_brute_force_ranking_with_the_model(built, encoder):
    index, root = built
    content = index_content(index.directory)
    keys = sorted(content, key=lambda key: content[key][0])
    ids = [content[key][0] for key in keys]
    model, query = encoder.model, "a dense residential area next to a river"
    with torch.no_grad():
        images = model.encode_image(torch.stack([model.preprocess_val(read_chip(root, *key)) for key in keys]))
        text = model.encode_text(model.tokenize([query]))
        global_ = global_similarity(images.global_, text.global_)[:, 0]
        fused = fuse(global_, local_similarity(images.tokens, text.tokens, text.mask)[:, 0],
                     encoder.recipe.global_weight, encoder.recipe.local_weight)

    reranked = index.search(query, k=len(ids), candidates=len(ids))
    expected = sorted(range(len(ids)), key=lambda i: -float(fused[i]))
    assert [hit.chip_id for hit in reranked] == [ids[i] for i in expected]
    np.testing.assert_allclose([hit.score for hit in reranked], fused[expected].numpy(), atol=2e-3)

    plain = index.search(query, k=3, rerank=False)
    expected_global = sorted(range(len(ids)), key=lambda i: -float(global_[i]))[:3]
    assert [hit.chip_id for hit in plain] == [ids[i] for i in expected_global]
    assert all(hit.local_score is None and hit.score == hit.global_score for hit in plain)


def test_geotiff_chips_carry_bounds_and_crs(built):
    index, _ = built
    hits = {(h.window.x, h.window.y): h for h in index.search("fields", k=100, rerank=False)
            if h.path == "geo.tif"}
    assert sorted(hits) == [(0, 0), (0, 72), (96, 0), (96, 72), (172, 0), (172, 72)]
    # Chip at column 96, row 72 of a 10 m grid whose top-left is (500000, 4000000), 128 px = 1280 m wide.
    chip = hits[(96, 72)]
    assert chip.crs == GEO_CRS
    assert chip.bounds == pytest.approx((500_960.0, 3_998_000.0, 502_240.0, 3_999_280.0))
    for (x, y), hit in hits.items():
        left, top = GEO_ORIGIN[0] + x * GEO_PIXEL, GEO_ORIGIN[1] - y * GEO_PIXEL
        assert hit.bounds == pytest.approx((left, top - 128 * GEO_PIXEL, left + 128 * GEO_PIXEL, top))
    assert all(h.bounds is None and h.crs is None for h in index.search("fields", k=100) if h.path != "geo.tif")


def test_incremental_update_adds_changes_and_removes_files(tmp_path, encoder):
    root = make_archive(tmp_path / "archive", geotiff=False)
    index, report = ArchiveIndex.build(tmp_path / "index", root, encoder=encoder, progress=False,
                                       options=BuildOptions(**CHIP_SETTINGS))
    assert (report.new, report.chips_encoded) == (["broken.jpg", "scene0.png", "scene1.png", "scene2.png",
                                                   "sub/scene3.png"], 4)
    before = index_content(tmp_path / "index")

    noise(10, 64, 48).save(root / "added.png")
    noise(11, 64, 48).save(root / "scene1.png")                     # changed content
    (root / "sub" / "scene3.png").unlink()                          # deleted
    os.utime(root / "scene0.png", ns=(1, 1))                        # touched, same content
    index, report = ArchiveIndex.build(tmp_path / "index", root, encoder=encoder, progress=False)
    assert report.new == ["added.png"] and report.retried == ["broken.jpg"]  # a failed file is not new again
    assert (report.changed, report.removed, report.unchanged) == (["scene1.png"], ["sub/scene3.png"], 2)
    assert report.chips_encoded == 2
    after = index_content(tmp_path / "index")
    assert sorted(key[0] for key in after) == ["added.png", "scene0.png", "scene1.png", "scene2.png"]
    assert after[("scene0.png", 0, 0, 64, 48)] == before[("scene0.png", 0, 0, 64, 48)]
    assert after[("scene1.png", 0, 0, 64, 48)][1] != before[("scene1.png", 0, 0, 64, 48)][1]
    assert index.search_image(noise(11, 64, 48), k=1)[0].path == "scene1.png"
    assert "sub/scene3.png" not in {hit.path for hit in index.search_image(noise(3, 64, 48), k=10)}
    assert index._vectors.count() == 4

    fresh, _ = ArchiveIndex.build(tmp_path / "fresh", root, encoder=encoder, progress=False,
                                  options=BuildOptions(**CHIP_SETTINGS))
    assert_same_vectors(index_content(tmp_path / "fresh"), after)


_KILLED_RUN = """
import os, sys
from rsitr.index import ArchiveIndex, BuildOptions
from rsitr.index.store import MetadataStore

commit, batches = MetadataStore.add_chips, []

def commit_then_die(self, chips, completed):
    commit(self, chips, completed)
    batches.append(len(chips))
    if len(batches) == int(sys.argv[3]):
        os._exit(3)  # like SIGKILL: no cleanup, no atexit

MetadataStore.add_chips = commit_then_die
ArchiveIndex.build(sys.argv[1], sys.argv[2], "rsitr-tiny-ViT", progress=False,
                   options=BuildOptions(batch_size=4, chip_size=128, chip_overlap=32, tile_larger_than=256,
                                        precision="fp32"))
"""


def test_killed_run_resumes_to_the_same_index(tmp_path, encoder):
    root = make_archive(tmp_path / "archive")
    # Chips in order: geo.tif (6), scene0..2, sub/scene3; in batches of 4 a kill after batch 1 leaves geo.tif half done.
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(_KILLED_RUN), str(tmp_path / "resumed"), str(root),
                             "1"], capture_output=True, text=True, timeout=120)
    assert killed.returncode == 3, killed.stderr
    with sqlite3.connect(tmp_path / "resumed" / "index.sqlite") as conn:
        assert conn.execute("SELECT path, complete FROM files").fetchall() == [("geo.tif", 0)]
        assert conn.execute("SELECT COUNT(*) FROM chips").fetchone() == (4,)

    _, report = ArchiveIndex.build(tmp_path / "resumed", root, encoder=encoder, progress=False)
    assert report.resumed == ["geo.tif"] and report.chips_encoded == 2 + 4
    ArchiveIndex.build(tmp_path / "straight", root, encoder=encoder, progress=False,
                       options=BuildOptions(batch_size=4, **CHIP_SETTINGS))
    resumed, straight = index_content(tmp_path / "resumed"), index_content(tmp_path / "straight")
    assert len(straight) == 10
    assert {key: value[0] for key, value in resumed.items()} == {key: value[0] for key, value in straight.items()}
    assert_same_vectors(resumed, straight)


def test_unreadable_images_are_listed_not_fatal(tmp_path, encoder, capsys):
    root = make_archive(tmp_path / "archive", geotiff=False)
    (root / "truncated.png").write_bytes((root / "scene0.png").read_bytes()[:200])
    assert main(["index", str(root), "--out", str(tmp_path / "index"), "--model", TINY_MODEL,
                 "--no-progress", "--chip-size", "128"]) == 0
    out = capsys.readouterr().out
    assert "skipped 2 unreadable image(s)" in out and "broken.jpg" in out and "truncated.png" in out
    index = ArchiveIndex.open(tmp_path / "index", encoder=encoder)
    assert [path for path, _ in index.store.failures()] == ["broken.jpg", "truncated.png"]
    assert index.info()["chips"] == 4


def test_another_model_or_other_chip_settings_are_refused(built, tmp_path, capsys):
    index, root = built
    with pytest.raises(IndexCompatibilityError, match="rsitr-tiny-ViT.*fingerprint.*not comparable"):
        ArchiveIndex.open(index.directory, encoder=tiny_encoder(seed=1))
    with pytest.raises(IndexCompatibilityError, match="chip_size=128, not 64"):
        ArchiveIndex.build(index.directory, root, encoder=index.encoder, progress=False,
                           options=BuildOptions(chip_size=64))

    checkpoint = tmp_path / "other.pt"
    other = tiny_encoder(seed=1).model
    torch.save(other.clip.state_dict(), checkpoint)  # an OpenCLIP checkpoint of differently seeded weights
    assert main(["index", str(root), "--out", str(index.directory), "--model", TINY_MODEL,
                 "--pretrained", str(checkpoint), "--no-progress"]) == 2
    assert f"not --model {TINY_MODEL} --pretrained {checkpoint}; " in capsys.readouterr().err  # before it loads


@pytest.mark.parametrize("index_type", ["ivf", "hnsw"])
def test_approximate_index_types_find_the_planted_copy(built, tmp_path, index_type):
    index, root = built
    copy = tmp_path / "index"
    shutil.copytree(index.directory, copy)
    switched, report = ArchiveIndex.build(copy, root, encoder=index.encoder, progress=False,
                                          options=BuildOptions(index_type=index_type))
    assert report.chips_encoded == 0 and switched.settings.index_type == index_type
    assert switched.search_image(noise(1, 64, 48), k=1)[0].path == "scene1.png"
    reopened = ArchiveIndex.open(copy, encoder=index.encoder)
    assert type(reopened._vectors.index.index).__name__ != "IndexFlatIP"  # FaissVectors, its IndexIDMap2
    assert reopened.search_image(noise(0, 64, 48), k=1)[0].path == "scene0.png"


def test_cli_search_prints_json_and_table(built, tmp_path, capsys):
    index, root = built
    noise(0, 64, 48).save(tmp_path / "query.png")
    assert main(["search", str(index.directory), "--image", str(tmp_path / "query.png"), "--top-k", "2", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert len(results) == 2 and results[0]["path"] == "scene0.png"
    assert results[0]["window"] == {"x": 0, "y": 0, "width": 64, "height": 48}

    assert main(["search", str(index.directory), "a harbour", "--top-k", "3"]) == 0
    header, *lines = capsys.readouterr().out.strip().splitlines()
    expected = index.search("a harbour", k=3)
    assert header.split() == ["rank", "score", "file", "[window]", "chip"]  # the table says what its columns are
    assert [line.split()[2] for line in lines] == [hit.path for hit in expected]

    assert main(["search", str(index.directory)]) == 2
    assert "either a text query or --image" in capsys.readouterr().err
    assert main(["search", str(tmp_path / "nowhere"), "x"]) == 2
    assert "nowhere not found" in capsys.readouterr().err


def test_without_local_tokens_text_search_ranks_by_global_cosine(tmp_path, encoder):
    root = make_archive(tmp_path / "archive", geotiff=False)
    index, _ = ArchiveIndex.build(tmp_path / "index", root, encoder=encoder, progress=False,
                                  options=BuildOptions(store_local_tokens=False, **CHIP_SETTINGS))
    assert all(tokens is None for _, _, tokens in index_content(tmp_path / "index").values())
    hits = index.search("a harbour", k=4)
    assert all(hit.local_score is None and hit.score == hit.global_score for hit in hits)
    assert [hit.chip_id for hit in hits] == [hit.chip_id for hit in index.search("a harbour", k=4, rerank=False)]


@pytest.mark.parametrize("forced", [None, True, False])
def test_a_new_index_keeps_local_tokens_only_when_its_model_re_ranks_with_them(tmp_path, forced):
    """Left unsaid, patch tokens are stored for a model whose recipe re-ranks locally and left out for one that ranks
    by its global cosine (most of an index's bytes); --store-local-tokens / --no-local-tokens force either way; an
    update keeps what the index recorded."""
    import dataclasses

    for local in (True, False):
        encoder = tiny_encoder()
        encoder.recipe = dataclasses.replace(encoder.recipe, local=local)
        root = make_archive(tmp_path / f"archive-{local}", geotiff=False)
        out = tmp_path / f"index-{local}-{forced}"
        index, _ = ArchiveIndex.build(out, root, encoder=encoder, progress=False,
                                      options=BuildOptions(store_local_tokens=forced, **CHIP_SETTINGS))
        kept = local if forced is None else forced
        assert index.settings.store_local_tokens is kept
        assert all((tokens is not None) is kept for _, _, tokens in index_content(out).values())
        assert index.info()["local_rerank"] is (kept and local)
        noise(21, 64, 48).save(root / "late.png")
        index, report = ArchiveIndex.build(out, root, encoder=encoder, progress=False)
        assert report.new == ["late.png"] and index.settings.store_local_tokens is kept
        assert all((tokens is not None) is kept for _, _, tokens in index_content(out).values())


def test_an_open_index_picks_up_a_finished_update(tmp_path, encoder):
    root = make_archive(tmp_path / "archive", geotiff=False)
    ArchiveIndex.build(tmp_path / "index", root, encoder=encoder, progress=False, options=BuildOptions(**CHIP_SETTINGS))
    serving = ArchiveIndex.open(tmp_path / "index", encoder=encoder)
    noise(20, 64, 48).save(root / "late.png")
    ArchiveIndex.build(tmp_path / "index", root, encoder=encoder, progress=False)
    assert serving.search_image(noise(20, 64, 48), k=1)[0].path == "late.png"


def test_an_index_encoded_by_a_chip_encoder_equals_the_embedded_one(tmp_path, encoder):
    """The ingest path of `rsitr index --engine ray` (chips encoded elsewhere by :func:`encode_files`, handed back
    file by file) builds the embedded path's index: the same chips, ids, vectors, tokens and top-10."""
    from rsitr.index.indexer import encode_files
    from support.index import assert_same_index

    calls = []

    def chip_encoder(encoder, root, settings, files, batch_size):
        calls.append([f.path for f in files])
        return encode_files(encoder, root, settings, [f.path for f in files], batch_size)

    archive = make_archive(tmp_path / "archive")
    local, local_report = ArchiveIndex.build(tmp_path / "local", archive, encoder=encoder, progress=False,
                                             options=BuildOptions(batch_size=4, **CHIP_SETTINGS))
    remote, remote_report = ArchiveIndex.build(tmp_path / "remote", archive, encoder=encoder, progress=False,
                                               chip_encoder=chip_encoder,
                                               options=BuildOptions(batch_size=4, **CHIP_SETTINGS))
    assert calls == [["broken.jpg", "geo.tif", "scene0.png", "scene1.png", "scene2.png", "sub/scene3.png"]]
    assert (remote_report.new, remote_report.chips_encoded, remote_report.failures) == \
        (local_report.new, local_report.chips_encoded, local_report.failures)
    assert_same_index(local, remote)
    # Incremental like the embedded path: an unchanged archive asks for nothing; a new file only for it.
    noise(7, 64, 48).save(archive / "added.png")
    _, report = ArchiveIndex.build(tmp_path / "remote", archive, encoder=encoder, progress=False,
                                   chip_encoder=chip_encoder)
    assert calls[-1] == ["added.png", "broken.jpg"] and report.new == ["added.png"] and report.chips_encoded == 1
    assert report.retried == ["broken.jpg"]


def test_build_options_are_one_checked_value_of_what_build_is_asked_for():
    options = BuildOptions(scale="range 0.0 3000", orientations=4, batch_size=8)
    requested = options.requested()
    assert requested["scale"] == "range 0 3000" and requested["orientations"] == 4  # the forms an index records
    assert requested["chip_size"] is None and "batch_size" not in requested  # not asked: the record's or default
    assert options.settings().chip_size == IndexSettings().chip_size
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.chip_size = 64  # type: ignore[misc]
    for bad, message in (({"batch_size": 0}, "batch size must be at least 1"),
                         ({"chip_overlap": 300}, "`chip_overlap` must be"), ({"max_nodata": 2.0}, "`max_nodata`")):
        with pytest.raises(IndexSetupError, match=message):
            BuildOptions(**bad)
