"""Remote rasters: Cloud-Optimized GeoTIFFs served over HTTP by a local server with Range support (which counts
the bytes it serves), listed by a text file of URLs or by STAC items written with pystac."""

from __future__ import annotations

import csv
import io
import os
import sqlite3

import numpy as np
import pytest

from rsitr.cli import main
from rsitr.index import ArchiveIndex, BuildOptions
from rsitr.index.archive import Rendering, open_scene
from rsitr.index.export import export
from rsitr.index.sources import ListingError, open_archive
from rsitr.index.tiling import Window, chip_windows
from rsitr.index.where import Where
from rsitr.models import TINY_MODEL
from support.errors import assert_user_error
from support.http import RangeServer
from support.index import tiny_encoder, write_cog

S2_DESCRIPTIONS = ("B02 blue", "B03 green", "B04 red", "B08 nir")
SIZE, BORDER = 1024, 150
TILES = {"chip_size": 224, "chip_overlap": 32, "tile_larger_than": 512}


def scene_pixels(seed: int, size: int = SIZE) -> np.ndarray:
    """A smooth 4-band uint16 scene (it compresses as imagery does) with a nodata (0) border on the left."""
    rows, columns = np.mgrid[0:size, 0:size]
    bands = [1000 + 800 * np.sin(rows / (40 + 7 * band) + seed) * np.cos(columns / (55 + 5 * band))
             for band in range(4)]
    pixels = np.stack(bands).astype(np.uint16)
    pixels[:, :, :BORDER] = 0
    return pixels


def in_a_fresh_process(request) -> bool:
    """Run this test again in a new interpreter and report its outcome there (True: the caller returns at once).

    The byte counts are a new process's, as a user's `rsitr index` is: in a long test session, GDAL state left by
    earlier tests' rasters (not found yet) made a remote raster's tiles be fetched again, several times over."""
    if os.environ.get("RSITR_FRESH_PROCESS") == "1":
        return False
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", request.node.nodeid],
                          cwd=request.config.rootpath, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "RSITR_FRESH_PROCESS": "1", "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    return True


@pytest.fixture
def served(tmp_path):
    """Two COGs (256 px tiles) in ``cogs/``, served; a listing of their URLs in ``urls.txt``."""
    folder = tmp_path / "cogs"
    folder.mkdir()
    for seed in (1, 2):
        write_cog(folder / f"scene{seed}.tif", scene_pixels(seed), nodata=0, descriptions=S2_DESCRIPTIONS)
    with RangeServer(folder) as server:
        (tmp_path / "urls.txt").write_text("".join(f"{server.url}/scene{seed}.tif\n" for seed in (1, 2)))
        yield server, folder, tmp_path / "urls.txt"


def build(tmp_path, listing, **options):
    return ArchiveIndex.build(tmp_path / "index", listing, encoder=tiny_encoder(), progress=False,
                              options=BuildOptions(scale="range 0 3000", **TILES, **options))


def test_a_chip_of_a_remote_cog_is_read_by_range_requests(tmp_path, request):
    if in_a_fresh_process(request):
        return
    pixels = scene_pixels(3, 2048)
    write_cog(tmp_path / "big.tif", pixels, nodata=0, descriptions=S2_DESCRIPTIONS)
    size = (tmp_path / "big.tif").stat().st_size
    with RangeServer(tmp_path) as server:
        with open_scene(f"{server.url}/big.tif", rendering=Rendering(scale=(0, 3000))) as scene:
            image, nodata = scene.chip(Window(1000, 1000, 224, 224))
    expected = np.clip(pixels[[2, 1, 0], 1000:1224, 1000:1224] / 3000 * 255, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(image).transpose(2, 0, 1), expected)
    assert nodata == 0.0
    # the header and the 2 x 2 tiles of 256 px under the chip, not the file
    assert served_total(server) < 0.1 * size, (served_total(server), size)


def served_total(server) -> int:
    return sum(server.served.values())


def test_indexing_a_listing_reads_each_byte_about_once_and_leaves_out_nodata(tmp_path, served, request):
    if in_a_fresh_process(request):
        return
    server, folder, listing = served
    index, report = build(tmp_path, listing)
    windows = chip_windows(SIZE, SIZE, 224, 32, 512)
    over_half = [w for w in windows if max(0, min(BORDER - w.x, w.width)) / w.width > 0.5]
    assert report.failures == [] and report.nodata_chips == 2 * len(over_half) > 0
    assert index.info()["chips"] == 2 * (len(windows) - len(over_half))
    paths = sorted(index.store.files())
    assert paths == [f"{server.url}/scene{seed}.tif" for seed in (1, 2)]
    for seed in (1, 2):
        size = (folder / f"scene{seed}.tif").stat().st_size
        assert server.served[f"scene{seed}.tif"] <= 1.1 * size, (server.served, size)
    # a hit's picture is read from the server as indexed: the chip's tiles only
    before = served_total(server)
    hit = index.search("fields", k=1)[0]
    image = index.chip_image(index.chip(hit.chip_id), 128)
    assert image.size == (128, 128) and not hit.stale
    assert served_total(server) - before < 0.25 * (folder / "scene1.tif").stat().st_size
    index.close()


def test_an_update_rereads_only_what_changed(tmp_path, served):
    server, folder, listing = served
    build(tmp_path, listing)[0].close()
    before = dict(server.served)
    index, report = build(tmp_path, listing)
    assert report.unchanged == 2 and report.chips_encoded == 0 and server.served == before  # HEAD requests only
    index.close()
    write_cog(folder / "scene2.tif", scene_pixels(7), nodata=0, descriptions=S2_DESCRIPTIONS)  # a new version
    os.utime(folder / "scene2.tif", ns=(10**18, 10**18))
    index, report = build(tmp_path, listing)
    assert report.changed == [f"{server.url}/scene2.tif"] and report.unchanged == 1
    assert server.served["scene1.tif"] == before["scene1.tif"] and server.served["scene2.tif"] > before["scene2.tif"]
    index.close()


def test_a_server_going_down_mid_run_loses_nothing_indexed(tmp_path, served):
    server, folder, listing = served
    build(tmp_path / "clean", listing)[0].close()
    whole = served_total(server)
    server.served.clear()
    server.fail_after = int(whole * 0.7)  # during the second scene
    index, report = build(tmp_path, listing)
    [(path, error)] = report.failures
    assert path.endswith("scene2.tif") and "\n" not in error
    assert error == "the server failed while it was read: HTTP 503 Service Unavailable; the next run resumes it"
    with sqlite3.connect(tmp_path / "index" / "index.sqlite") as conn:
        rows = dict(conn.execute("SELECT path, complete FROM files"))
        kept = conn.execute("SELECT COUNT(*) FROM chips").fetchone()[0]
    assert rows[f"{server.url}/scene1.tif"] == 1 and rows[path] == 0  # the second scene's committed chips stay
    index.close()

    # the server still down: an update keeps everything and names the files it could not reach
    index, report = build(tmp_path, listing)
    assert len(report.failures) == 2 and report.removed == [] and index.info()["chips"] == kept
    index.close()

    server.failing, server.fail_after = False, None
    index, report = build(tmp_path, listing)
    assert report.resumed == [path] and report.failures == [] and index.info()["failures"] == 0
    clean = ArchiveIndex.open(tmp_path / "clean" / "index", encoder=tiny_encoder())
    assert index.info()["chips"] == clean.info()["chips"]
    assert {(c.path, c.window) for c in index.store.chips(index.store.chip_ids().tolist()).values()} == \
        {(c.path, c.window) for c in clean.store.chips(clean.store.chip_ids().tolist()).values()}
    index.close()
    clean.close()


def _stac_items(server, tmp_path, asset: str = "visual"):
    """An ItemCollection (as pystac-client saves a search) of the two served scenes, and a catalog holding them."""
    from datetime import datetime, timezone

    import pystac

    items = []
    for seed in (1, 2):
        item = pystac.Item(f"S2_T33_{seed}", {"type": "Point", "coordinates": [15.0, 36.1]},
                           [15.0, 36.1, 15.1, 36.2], datetime(2024, 5, seed, 10, 0, tzinfo=timezone.utc), {})
        item.add_asset(asset, pystac.Asset(f"{server.url}/scene{seed}.tif", media_type=pystac.MediaType.COG))
        items.append(item)
    pystac.ItemCollection(items).save_object(dest_href=str(tmp_path / "search.json"))
    catalog = pystac.Catalog("archive", "two scenes")
    catalog.add_items([item.clone() for item in items])
    catalog.normalize_and_save(str(tmp_path / "catalog"), pystac.CatalogType.SELF_CONTAINED)
    return tmp_path / "search.json", tmp_path / "catalog" / "catalog.json"


def test_stac_item_collections_and_catalogs_are_read_by_pystac(tmp_path, served):
    server, _, _ = served
    search, catalog = _stac_items(server, tmp_path)
    for listing in (search, catalog):
        archive = open_archive(listing, "visual")
        assert sorted(archive.files) == ["S2_T33_1", "S2_T33_2"]
        assert archive.source("S2_T33_2") == f"{server.url}/scene2.tif"
        assert archive.files["S2_T33_1"].datetime == "2024-05-01T10:00:00+00:00"
    index, report = build(tmp_path, search, asset="visual")
    assert sorted(index.store.files()) == ["S2_T33_1", "S2_T33_2"] and report.failures == []
    assert index.info()["settings"]["asset"] == "visual" and index.info()["root"] == "search.json"
    hit = index.search("fields", k=1)[0]
    assert hit.path.startswith("S2_T33_") and hit.bounds is not None and not hit.stale
    # each chip keeps its item, the item's datetime and the asset's URL: in hits, exports and details
    hits = index.search("fields", k=100)
    assert {(h.path, h.item_id, h.acquired, h.href) for h in hits} == {
        (f"S2_T33_{seed}", f"S2_T33_{seed}", f"2024-05-0{seed}T10:00:00+00:00", f"{server.url}/scene{seed}.tif")
        for seed in (1, 2)}
    rows = list(csv.DictReader(io.StringIO(export(hits[:3], "csv"))))
    assert [(row["item_id"], row["href"]) for row in rows] == [(h.item_id, h.href) for h in hits[:3]]
    assert index.chip_details(hit.chip_id)["href"] == hit.href
    later = index.search("fields", 100, where=Where.parse(after="2024-05-02"))
    assert {h.item_id for h in later} == {"S2_T33_2"} and len(later) == sum(h.item_id == "S2_T33_2" for h in hits)
    index.close()
    with pytest.raises(ListingError, match=r"no asset 'B04'; its assets: visual"):
        open_archive(search, "B04")
    with pytest.raises(ListingError, match="--asset visual"):
        open_archive(search)


def test_raster_bands_scale_and_offset_give_the_same_reflectance_the_same_rgb(tmp_path, served):
    """Two scenes store the same reflectance with different offsets (as Sentinel-2 L2A before and after processing
    baseline 04.00: DN = reflectance x 10,000, then + 1,000); their items' raster:bands say so. A scale range in
    reflectance renders both alike; without raster:bands the range is in stored values."""
    from datetime import datetime, timezone

    import pystac
    from pystac.extensions.raster import RasterBand, RasterExtension

    server, folder, _ = served
    reflectance = scene_pixels(5).astype(np.float64) / 10_000  # 0.02 to 0.18, a nodata border of 0
    valid = reflectance > 0
    for name, offset in (("old", 0.0), ("new", -0.1)):
        stored = np.where(valid, np.round((reflectance - offset) * 10_000), 0).astype(np.uint16)
        write_cog(folder / f"{name}.tif", stored, nodata=0, descriptions=S2_DESCRIPTIONS)
    items = []
    for name, offset in (("old", 0.0), ("new", -0.1)):
        item = pystac.Item(name, {"type": "Point", "coordinates": [15.0, 36.1]}, [15.0, 36.1, 15.1, 36.2],
                           datetime(2024, 5, 1, tzinfo=timezone.utc), {})
        asset = pystac.Asset(f"{server.url}/{name}.tif", media_type=pystac.MediaType.COG)
        item.add_asset("reflectance", asset)
        RasterExtension.ext(asset, add_if_missing=True).apply([RasterBand.create(scale=0.0001, offset=offset)
                                                                for _ in S2_DESCRIPTIONS])
        items.append(item)
    pystac.ItemCollection(items).save_object(dest_href=str(tmp_path / "items.json"))
    assert open_archive(tmp_path / "items.json", "reflectance").files["new"].units == ((0.0001, -0.1),) * 4
    index, report = ArchiveIndex.build(tmp_path / "index", tmp_path / "items.json", encoder=tiny_encoder(),
                                       progress=False,
                                       options=BuildOptions(scale="range 0 0.3", asset="reflectance", **TILES))
    assert report.failures == []
    window = Window(384, 384, 224, 224)
    chips = {name: next(c for c in index.store.chips(index.store.chips_of(name)).values() if c.window == window)
             for name in ("old", "new")}
    old, new = (np.asarray(index.chip_image(chips[name]), dtype=np.int16) for name in ("old", "new"))
    assert np.abs(old - new).max() <= 1  # rounding of the stored values only
    expected = np.clip(reflectance[[2, 1, 0], 384:608, 384:608] / 0.3 * 255, 0, 255).transpose(1, 2, 0)
    assert np.abs(old - expected).max() <= 1.5
    assert old.mean() > 20  # not black: the range is in reflectance, not in stored values
    index.close()


def test_cli_indexes_a_stac_listing_and_refuses_a_bad_one_in_one_line(tmp_path, served, capsys):
    server, _, _ = served
    search, _ = _stac_items(server, tmp_path)
    out = str(tmp_path / "index")
    assert main(["index", str(search), "--asset", "visual", "--out", out, "--model", TINY_MODEL, "--no-progress",
                 "--chip-size", "224", "--tile-larger-than", "512", "--scale", "range", "0", "3000"]) == 0
    assert "from 2 files" in capsys.readouterr().out
    code = main(["index", str(search), "--asset", "red", "--out", str(tmp_path / "other"), "--model", TINY_MODEL])
    assert_user_error(code, capsys.readouterr().err, "index", "STAC item 'S2_T33_1' has no asset 'red'")
    assert not (tmp_path / "other").exists()
    (tmp_path / "notes.json").write_text('{"hello": 1}')
    code = main(["index", str(tmp_path / "notes.json"), "--asset", "visual", "--out", str(tmp_path / "other"),
                 "--model", TINY_MODEL])
    assert_user_error(code, capsys.readouterr().err, "index", "is no STAC catalog, collection, item or item collection")
