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


def test_with_the_block_cache_capped_a_scene_is_fetched_about_once(tmp_path, request, monkeypatch):
    """GDAL's block cache capped (in bytes, as rasterio hands it over) just above the blocks under a row of chips
    (4 bands x 8 columns x 2 rows of 256 px uint16 tiles: 8 MiB against 9): read in the order of the COG's tiles,
    row by row, each tile comes once. Capped below it (6 MiB), the same order fetches tiles again: the cap is real."""
    if in_a_fresh_process(request):
        return
    from rsitr.index import archive

    write_cog(tmp_path / "wide.tif", scene_pixels(4, 2048), nodata=0, descriptions=S2_DESCRIPTIONS)
    size = (tmp_path / "wide.tif").stat().st_size
    windows = chip_windows(2048, 2048, 224, 32, 512)
    served = {}
    for cap in (9, 6):
        monkeypatch.setattr(archive, "SCENE_BLOCK_CACHE_MB", cap)
        with RangeServer(tmp_path) as server:
            with open_scene(f"{server.url}/wide.tif", rendering=Rendering(scale=(0, 3000))) as scene:
                if cap == 9:
                    assert scene.read_order(windows) == windows  # the row of chips fits: row-major
                for window in windows:
                    scene.chip(window)
            served[cap] = server.served["wide.tif"]
    assert served[9] <= 1.1 * size, (served, size)
    assert served[6] > 1.2 * size, (served, size)


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
    with pytest.raises(ListingError, match="`asset='visual'`"):
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


def test_three_single_band_assets_are_stacked_as_red_green_blue(tmp_path, served):
    """Sentinel-2 as Earth Search lists it: one single-band COG per band. ``--asset red,green,blue`` (or the keys
    ``B04,B03,B02``) reads them as one raster, by windows over HTTP; the chip keeps its item, datetime and URLs. Assets
    on different grids are refused in one line (a failure of that item)."""
    from datetime import datetime, timezone

    import pystac

    server, folder, _ = served
    pixels = scene_pixels(6)
    for band, name in enumerate(("B02", "B03", "B04", "B08")):
        write_cog(folder / f"T6_{name}.tif", pixels[band:band + 1], nodata=0)
    write_cog(folder / "T7_B04.tif", scene_pixels(6, 512)[2:3], nodata=0)  # a coarser grid
    items = []
    for item_id, red in (("T6", "T6_B04"), ("T7", "T7_B04")):
        item = pystac.Item(item_id, {"type": "Point", "coordinates": [15.0, 36.1]}, [15.0, 36.1, 15.1, 36.2],
                           datetime(2024, 6, 1, 10, tzinfo=timezone.utc), {})
        for key, common, file in (("B04", "red", red), ("B03", "green", "T6_B03"), ("B02", "blue", "T6_B02")):
            asset = pystac.Asset(f"{server.url}/{file}.tif", media_type=pystac.MediaType.COG)
            item.add_asset(key, asset)
            item.add_asset(common, asset.clone())
        items.append(item)
    pystac.ItemCollection(items).save_object(dest_href=str(tmp_path / "bands.json"))
    hrefs = " ".join(f"{server.url}/T6_{name}.tif" for name in ("B04", "B03", "B02"))
    assert open_archive(tmp_path / "bands.json", "B04,B03,B02").files["T6"].href == hrefs

    served_before = dict(server.served)
    index, report = ArchiveIndex.build(tmp_path / "index", tmp_path / "bands.json", encoder=tiny_encoder(),
                                       progress=False,
                                       options=BuildOptions(scale="range 0 3000", asset="red,green,blue", **TILES))
    [(path, error)] = report.failures
    assert path == "T7" and "\n" not in error and "not on one grid" in error and "T7_B04.tif 512 x 512" in error
    for name in ("B04", "B03", "B02"):
        size = (folder / f"T6_{name}.tif").stat().st_size
        assert server.served[f"T6_{name}.tif"] - served_before.get(f"T6_{name}.tif", 0) <= 1.1 * size
    assert "T6_B08.tif" not in server.served
    window = Window(384, 384, 224, 224)
    chip = next(c for c in index.store.chips(index.store.chips_of("T6")).values() if c.window == window)
    expected = np.clip(pixels[[2, 1, 0], 384:608, 384:608] / 3000 * 255, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(index.chip_image(chip)).transpose(2, 0, 1), expected)
    hit = index.search("fields", k=1)[0]
    assert (hit.item_id, hit.acquired, hit.href) == ("T6", "2024-06-01T10:00:00+00:00", hrefs)
    assert index.chip_details(hit.chip_id)["href"] == hrefs and hit.bounds is not None
    assert report.nodata_chips > 0  # the stack's nodata border, from each asset's nodata value
    from rasterio.io import MemoryFile

    # the score raster opens the scene as indexing did (the stack's VRT over HTTP), for the scene's grid
    with MemoryFile(index.score_raster(index.scene_scores("T6", "fields"))) as memory, memory.open() as raster:
        stride = TILES["chip_size"] - TILES["chip_overlap"]
        assert (raster.width, raster.height) == (-(-SIZE // stride),) * 2 and raster.crs is not None
        assert not np.isnan(raster.read(1)).all()
    index.close()
    with pytest.raises(ListingError, match="three single-band assets"):
        open_archive(tmp_path / "bands.json", "red,green")


EO_BANDS = (("B02", "blue"), ("B03", "green"), ("B04", "red"), ("B08", "nir"))


def _described_items(server, folder, tmp_path, scenes: dict[str, np.ndarray], statistics: list[dict]):
    """An ItemCollection of ``scenes`` written as 4-band COGs without band descriptions, each asset ``bands`` naming
    them in ``eo:bands`` (B02 blue ... B08 nir) and giving ``statistics`` in ``raster:bands``, as pystac writes
    them."""
    from datetime import datetime, timezone

    import pystac
    from pystac.extensions.eo import Band, EOExtension
    from pystac.extensions.raster import RasterBand, RasterExtension, Statistics

    items = []
    for name, pixels in scenes.items():
        write_cog(folder / f"{name}.tif", pixels, nodata=0)
        item = pystac.Item(name, {"type": "Point", "coordinates": [15.0, 36.1]}, [15.0, 36.1, 15.1, 36.2],
                           datetime(2024, 7, 1, tzinfo=timezone.utc), {})
        asset = pystac.Asset(f"{server.url}/{name}.tif", media_type=pystac.MediaType.COG)
        item.add_asset("bands", asset)
        EOExtension.ext(asset, add_if_missing=True).apply(
            bands=[Band.create(name=band, common_name=common) for band, common in EO_BANDS])
        RasterExtension.ext(asset, add_if_missing=True).apply(
            [RasterBand.create(nodata=0, data_type="uint16", statistics=Statistics.create(**stats))
             for stats in statistics])
        items.append(item)
    pystac.ItemCollection(items).save_object(dest_href=str(tmp_path / "described.json"))
    return tmp_path / "described.json"


def test_statistics_range_is_mean_plus_minus_two_stddev_within_minimum_and_maximum():
    from rsitr.index.archive import statistics_range

    assert statistics_range(0, 10_000, 1_500, 400) == (700.0, 2_300.0)
    assert statistics_range(1_000, 10_000, 1_500, 400) == (1_000.0, 2_300.0)  # within the minimum
    assert statistics_range(None, None, 1_500, 400) == (700.0, 2_300.0)
    assert statistics_range(10, 4_000, None, None) == (10.0, 4_000.0)  # no mean or stddev: the extremes
    assert statistics_range(10, None, 1_500, None) is None and statistics_range(5, 5, None, None) is None


def test_stac_statistics_give_the_same_reflectance_the_same_rgb_in_every_scene(tmp_path, served):
    """Two scenes of one collection share their raster:bands statistics; the second has a bright cloud, so its own
    percentiles differ. Indexed without --scale, both are scaled by the statistics (recorded as the index's
    scale): a field outside the cloud comes out the same RGB in both. The default bands are those eo:bands call
    red, green and blue (the files describe none), and --bands names eo:bands."""
    server, folder, _ = served
    clear = scene_pixels(7, 640)
    cloudy = clear.copy()
    cloudy[:, 400:, 300:] = 9_000
    valid = clear[:, clear[0] > 0].astype(np.float64)
    statistics = [{"minimum": float(band.min()), "maximum": float(band.max()), "mean": float(band.mean()),
                   "stddev": float(band.std())} for band in valid]
    listing = _described_items(server, folder, tmp_path, {"clear": clear, "cloudy": cloudy}, statistics)
    archive = open_archive(listing, "bands")
    assert archive.files["clear"].names == EO_BANDS
    low = np.array([max(s["mean"] - 2 * s["stddev"], s["minimum"]) for s in statistics])
    high = np.array([min(s["mean"] + 2 * s["stddev"], s["maximum"]) for s in statistics])
    assert archive.files["cloudy"].ranges == tuple(zip(low, high))

    index, report = ArchiveIndex.build(tmp_path / "index", listing, encoder=tiny_encoder(), progress=False,
                                       options=BuildOptions(asset="bands", **TILES))
    assert report.failures == [] and index.info()["settings"]["scale"] == "statistics"
    assert index.info()["settings"]["bands"] is None
    window = Window(192, 0, 224, 224)  # a field the cloud does not reach
    chips = {name: next(c for c in index.store.chips(index.store.chips_of(name)).values() if c.window == window)
             for name in ("clear", "cloudy")}
    images = {name: np.asarray(index.chip_image(chip)).transpose(2, 0, 1).astype(np.float64)
              for name, chip in chips.items()}
    np.testing.assert_array_equal(images["clear"], images["cloudy"])
    field = clear[:, 0:224, 192:416].astype(np.float64)

    def expected(bands: list[int]) -> np.ndarray:
        return np.clip((field[bands] - low[bands, None, None]) / (high - low)[bands, None, None] * 255, 0, 255)

    assert np.abs(images["clear"] - expected([2, 1, 0])).max() <= 1.0  # red, green, blue by common_name; truncation
    assert images["clear"].std() > 10  # not flat: the statistics' range spans the field
    # each file's own percentiles would not agree: the cloud moves the cloudy scene's 98th
    percentile = [_read(server, name, window).astype(np.int16) for name in ("clear", "cloudy")]
    assert np.abs(percentile[0] - percentile[1]).max() > 20
    index.close()

    for bands, shown in (("B08,B04,B03", [3, 2, 1]), ("nir,red,green", [3, 2, 1]), ("red,green,blue", [2, 1, 0])):
        other, report = ArchiveIndex.build(tmp_path / f"index-{bands}", listing, encoder=tiny_encoder(),
                                           progress=False,
                                           options=BuildOptions(asset="bands", bands=bands, scale="statistics",
                                                                **TILES))
        assert report.failures == [] and other.info()["settings"]["bands"] == bands
        chip = next(c for c in other.store.chips(other.store.chips_of("cloudy")).values() if c.window == window)
        image = np.asarray(other.chip_image(chip)).transpose(2, 0, 1).astype(np.float64)
        assert np.abs(image - expected(shown)).max() <= 1.0, bands
        other.close()


def _read(server, name: str, window: Window) -> np.ndarray:
    """A window of a served scene as its own percentiles render it (a plain GeoTIFF, no listing)."""
    with open_scene(f"{server.url}/{name}.tif", rendering=Rendering.parse("3,2,1", "percentile")) as scene:
        return np.asarray(scene.read(window))


def test_cli_refuses_a_band_the_asset_does_not_name_and_statistics_it_lacks_in_one_line(tmp_path, served, capsys):
    server, folder, urls = served
    pixels = scene_pixels(8, 640)
    stats = [{"minimum": 1.0, "maximum": 3_000.0}] * 3 + [{"minimum": 1.0}]  # no range for B08
    listing = _described_items(server, folder, tmp_path, {"partial": pixels}, stats)
    out = tmp_path / "index"
    code = main(["index", str(listing), "--asset", "bands", "--bands", "B05,B04,B03", "--out", str(out),
                 "--model", TINY_MODEL])
    assert_user_error(code, capsys.readouterr().err, "index", "--bands 'B05': no such band in STAC item 'partial'",
                      "its eo:bands: 1 B02 (blue), 2 B03 (green), 3 B04 (red), 4 B08 (nir)")
    assert not out.exists()
    for listed, asset in ((listing, "bands"), (urls, None)):
        code = main(["index", str(listed), *(["--asset", asset] if asset else []), "--scale", "statistics",
                     "--out", str(out), "--model", TINY_MODEL])
        assert_user_error(code, capsys.readouterr().err, "index", "--scale statistics scales by STAC raster:bands")
        assert not out.exists()
    # without --scale, an asset whose statistics leave a band without a range is scaled by percentiles
    assert main(["index", str(listing), "--asset", "bands", "--out", str(out), "--model", TINY_MODEL,
                 "--no-progress", "--chip-size", "224", "--tile-larger-than", "512"]) == 0
    capsys.readouterr()
    index = ArchiveIndex.open(out, encoder=tiny_encoder())
    assert index.info()["settings"]["scale"] == "percentile"
    index.close()


def test_a_raster_without_statistics_in_an_index_scaled_by_them_is_a_failure_of_its_own(tmp_path, served):
    """A raster whose asset gives no statistics for a shown band, met by an index recorded as ``statistics`` (an
    update adding such an item), raises the one-line BandError the reader records as that file's failure; bands not
    shown need none."""
    from rsitr.index.archive import BandError, RemoteFile

    server, _, _ = served
    rendering = Rendering.parse(None, "statistics")
    with pytest.raises(BandError, match=r"^band 3 has no raster:bands statistics .* \(`scale='statistics'`\)$"):
        with open_scene(f"{server.url}/scene1.tif", rendering=rendering.for_file(RemoteFile("scene1"))):
            pass
    ranges = ((0.0, 2_000.0), (500.0, 1_500.0), (0.0, 1_000.0), None)  # only the shown bands need a range
    with open_scene(f"{server.url}/scene1.tif",
                    rendering=rendering.for_file(RemoteFile("scene1", ranges=ranges))) as scene:
        shown = np.asarray(scene.read(Window(384, 384, 64, 64))).transpose(2, 0, 1).astype(np.float64)
    stored = scene_pixels(1)[:, 384:448, 384:448].astype(np.float64)  # described B02 blue .. B04 red: shown 3, 2, 1
    expected = [np.clip((stored[band] - low) / (high - low) * 255, 0, 255) for band, (low, high) in
                ((2, ranges[2]), (1, ranges[1]), (0, ranges[0]))]
    assert np.abs(shown - np.stack(expected)).max() <= 1.0
