"""Multispectral rasters: the bands shown as RGB, their scaling across scenes and nodata chips left out.

Scenes are generated uint16 Cloud-Optimized GeoTIFFs (rasterio's COG driver) whose pixels the tests know, so a
chip's RGB is checked against the values computed here by hand."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from rsitr.cli import main
from rsitr.index import ArchiveIndex, BuildOptions, IndexCompatibilityError
from rsitr.index.archive import BandError, Rendering, open_scene
from rsitr.index.indexer import IndexSettings, IndexSetupError
from rsitr.index.store import MetadataStore
from rsitr.index.tiling import Window, chip_windows
from rsitr.models import TINY_MODEL
from support.errors import assert_user_error
from support.index import tiny_encoder, write_cog

S2_DESCRIPTIONS = ("B02 blue", "B03 green", "B04 red", "B08 nir")
CHIPS = {"chip_size": 128, "chip_overlap": 0, "tile_larger_than": 256}
"""A 512 px scene in 4 x 4 chips of 128 px, edge to edge."""


def reflectance(seed: int, size: int = 512, bands: int = 4, low: int = 100, high: int = 3000) -> np.ndarray:
    """``[bands, size, size]`` uint16 values drawn from ``[low, high)``; each band differs."""
    return np.random.default_rng(seed).integers(low, high, (bands, size, size), dtype=np.uint16)


def ranged(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """What ``range LOW HIGH`` makes of ``values``: 0-255, truncated to 8 bits as the reader does."""
    return np.clip((values.astype(np.float64) - low) / (high - low) * 255.0, 0, 255).astype(np.uint8)


def rgb(scene, window: Window) -> np.ndarray:
    """A window's RGB as ``[3, rows, columns]``."""
    return np.asarray(scene.chip(window)[0]).transpose(2, 0, 1)


WHOLE = Window(0, 0, 64, 64)


@pytest.mark.parametrize("descriptions, colorinterp, expected", [
    (S2_DESCRIPTIONS, (), [2, 1, 0]),  # descriptions name the colours
    (("Blue", "Green", "Red", "NIR"), (), [2, 1, 0]),
    ((), ("blue", "green", "red", "undefined"), [2, 1, 0]),  # the colour interpretation does
    (("B01", "B02", "B03", "B04"), (), [0, 1, 2]),  # nothing names them: the first three
])
def test_default_bands_are_the_ones_the_file_calls_red_green_blue(tmp_path, descriptions, colorinterp, expected):
    pixels = reflectance(1, 64)
    write_cog(tmp_path / "scene.tif", pixels, descriptions=descriptions, colorinterp=colorinterp)
    with open_scene(tmp_path / "scene.tif", rendering=Rendering(scale=(0, 3000))) as scene:
        np.testing.assert_array_equal(rgb(scene, WHOLE), ranged(pixels[expected], 0, 3000))


@pytest.mark.parametrize("bands, expected", [
    ("4,3,2", [3, 2, 1]), ("B08,B04,B03", [3, 2, 1]), ("b08 nir,red,green", [3, 2, 1]), ("nir", [3, 3, 3]),
])
def test_bands_chosen_by_index_or_name(tmp_path, bands, expected):
    pixels = reflectance(2, 64)
    write_cog(tmp_path / "scene.tif", pixels, descriptions=S2_DESCRIPTIONS)
    with open_scene(tmp_path / "scene.tif", rendering=Rendering.parse(bands, "range 0 3000")) as scene:
        np.testing.assert_array_equal(rgb(scene, WHOLE), ranged(pixels[expected], 0, 3000))


def test_a_band_the_file_lacks_is_refused_naming_its_bands(tmp_path):
    write_cog(tmp_path / "scene.tif", reflectance(3, 64), descriptions=S2_DESCRIPTIONS)
    with pytest.raises(BandError, match=r"no band 'B05' among its 4 band\(s\): 1 'B02 blue', .* 4 'B08 nir'"):
        with open_scene(tmp_path / "scene.tif", rendering=Rendering.parse("B05,B04,B03", "percentile")):
            pass


@pytest.mark.parametrize("settings, fragment", [
    ({"bands": "1,2"}, "1 band (shown as grey) or 3 bands"), ({"bands": "0,1,2"}, "start at 1"),
    ({"scale": "range 3000 0"}, "LOW < HIGH"), ({"scale": "minmax"}, "'percentile', 'statistics' or 'range LOW HIGH'"),
    ({"scale": "range a b"}, "two numbers"), ({"max_nodata": 1.5}, "`max_nodata`"),
])
def test_malformed_choices_are_refused(settings, fragment):
    with pytest.raises(IndexSetupError) as refused:
        IndexSettings(**settings)
    assert fragment in str(refused.value)


def test_a_fixed_range_gives_the_same_reflectance_the_same_rgb_in_every_scene(tmp_path):
    # The same field (top-left 64 px) in a dark scene and in a bright one; the rest of each scene differs.
    field = reflectance(4, 64)
    dark, bright = reflectance(5, 256, high=1500), reflectance(6, 256, low=1500, high=9000)
    for name, scene in (("dark.tif", dark), ("bright.tif", bright)):
        scene[:, :64, :64] = field
        write_cog(tmp_path / name, scene, descriptions=S2_DESCRIPTIONS)

    def field_rgb(name: str, scale: str) -> np.ndarray:
        with open_scene(tmp_path / name, rendering=Rendering.parse(None, scale)) as scene:
            return rgb(scene, WHOLE)

    np.testing.assert_array_equal(field_rgb("dark.tif", "range 0 3000"), field_rgb("bright.tif", "range 0 3000"))
    np.testing.assert_array_equal(field_rgb("dark.tif", "range 0 3000"), ranged(field[[2, 1, 0]], 0, 3000))
    # each scene's own percentiles do not: the same field is brighter in the dark scene
    assert field_rgb("dark.tif", "percentile").mean() > field_rgb("bright.tif", "percentile").mean() + 50


def test_percentiles_are_measured_on_valid_pixels_only(tmp_path):
    pixels = reflectance(7, 256, low=1000, high=2000)
    bordered = pixels.copy()
    bordered[:, :, :128] = 0  # half the scene is the nodata border
    write_cog(tmp_path / "whole.tif", pixels, nodata=0)
    write_cog(tmp_path / "bordered.tif", bordered, nodata=0)
    inside = Window(128, 0, 128, 128)
    with open_scene(tmp_path / "whole.tif") as whole, open_scene(tmp_path / "bordered.tif") as half:
        # the same value distribution: stretches within a few grey levels (a 512-px decimated sample each)
        assert np.abs(rgb(whole, inside).astype(int) - rgb(half, inside).astype(int)).max() <= 6


@pytest.mark.parametrize("kind", ["nodata", "mask", "alpha"])
def test_the_nodata_fraction_of_a_chip_comes_from_the_value_the_mask_or_alpha(tmp_path, kind):
    pixels = reflectance(8, 256)
    valid = np.ones((256, 256), bool)
    valid[:, :96] = False  # a border 96 px wide
    if kind == "nodata":
        pixels[:, ~valid] = 0
        write_cog(tmp_path / "scene.tif", pixels, nodata=0)
    elif kind == "mask":
        write_cog(tmp_path / "scene.tif", pixels, mask=valid)
    else:
        pixels[3] = np.where(valid, 65535, 0)
        write_cog(tmp_path / "scene.tif", pixels, colorinterp=("red", "green", "blue", "alpha"))
    with open_scene(tmp_path / "scene.tif") as scene:
        for window, fraction in ((Window(0, 0, 128, 128), 0.75), (Window(64, 0, 128, 128), 0.25),
                                 (Window(128, 0, 128, 128), 0.0)):
            image, nodata = scene.chip(window)
            assert nodata == pytest.approx(fraction, abs=1e-9)
            assert not np.asarray(image)[:, :max(0, 96 - window.x)].any()  # nodata is black


def _bordered_archive(root, border: int = 200):
    """Two 512 px scenes with nodata (0) ``border`` px wide on the left, their windows (128 px chips) and those over
    half nodata (x = 0: all of it, x = 128: 56 %)."""
    root.mkdir()
    for seed in (10, 11):
        pixels = reflectance(seed)
        pixels[:, :, :border] = 0
        write_cog(root / f"s2_{seed}.tif", pixels, nodata=0, descriptions=S2_DESCRIPTIONS)
    windows = chip_windows(512, 512, 128, 0, 256)
    over_half = [w for w in windows if max(0, min(border - w.x, w.width)) / w.width > 0.5]
    return root, windows, over_half


def test_chips_over_the_nodata_limit_are_left_out_and_counted(tmp_path):
    root, windows, over_half = _bordered_archive(tmp_path / "archive")
    index, report = ArchiveIndex.build(tmp_path / "index", root, encoder=tiny_encoder(), progress=False,
                                       options=BuildOptions(**CHIPS))
    assert len(over_half) == 8 and report.nodata_chips == 2 * len(over_half)
    assert report.chips_encoded == index.info()["chips"] == 2 * (len(windows) - len(over_half))
    kept = {(hit.path, hit.window) for hit in index.search("fields", k=100)}
    assert not kept & {(f"s2_{seed}.tif", w) for seed in (10, 11) for w in over_half}
    assert index.info()["settings"]["max_nodata"] == 0.5
    index.close()

    everything, report = ArchiveIndex.build(tmp_path / "all", root, encoder=tiny_encoder(), progress=False,
                                            options=BuildOptions(max_nodata=1.0, **CHIPS))
    assert report.nodata_chips == 0 and everything.info()["chips"] == 2 * len(windows)
    everything.close()


def test_a_resumed_file_leaves_out_the_same_nodata_chips(tmp_path):
    root, windows, over_half = _bordered_archive(tmp_path / "archive")
    kept = len(windows) - len(over_half)
    # an interrupted run: the first scene's first 5 kept chips are committed, the file is left incomplete
    index, _ = ArchiveIndex.build(tmp_path / "index", root, encoder=tiny_encoder(), progress=False,
                                  options=BuildOptions(**CHIPS))
    index.close()
    with sqlite3.connect(tmp_path / "index" / "index.sqlite") as conn:
        (first,) = conn.execute("SELECT id FROM files WHERE path = 's2_10.tif'").fetchone()
        conn.execute("DELETE FROM chips WHERE file_id = ? AND id NOT IN (SELECT id FROM chips WHERE file_id = ? "
                     "ORDER BY id LIMIT 5)", (first, first))
        conn.execute("UPDATE files SET complete = 0 WHERE id = ?", (first,))
    index, report = ArchiveIndex.build(tmp_path / "index", root, encoder=tiny_encoder(), progress=False)
    assert report.resumed == ["s2_10.tif"] and report.chips_encoded == kept - 5
    assert report.nodata_chips == len(over_half) and index.info()["chips"] == 2 * kept
    index.close()


def test_rendering_is_recorded_and_cannot_change_in_place(tmp_path):
    root, _, _ = _bordered_archive(tmp_path / "archive")
    index, _ = ArchiveIndex.build(tmp_path / "index", root, encoder=tiny_encoder(), progress=False,
                                  options=BuildOptions(bands="B08,B04,B03", scale="range 0.0 3000", **CHIPS))
    assert {key: index.info()["settings"][key] for key in ("bands", "scale", "max_nodata")} == \
        {"bands": "B08,B04,B03", "scale": "range 0 3000", "max_nodata": 0.5}
    # a hit's picture is rendered as it was indexed: the false-colour bands in the recorded range
    hit = index.search("fields", k=1)[0]
    expected = ranged(reflectance(int(hit.path[3:5]))[[3, 2, 1]][:, hit.window.y:hit.window.y + 128,
                                                                  hit.window.x:hit.window.x + 128], 0, 3000)
    expected[:, :, :max(0, 200 - hit.window.x)] = 0
    np.testing.assert_array_equal(np.asarray(index.chip_image(index.chip(hit.chip_id))).transpose(2, 0, 1), expected)
    index.close()
    # the same choice written otherwise is the recorded one; another is refused before anything is written
    ArchiveIndex.build(tmp_path / "index", root, encoder=tiny_encoder(), progress=False,
                       options=BuildOptions(bands=" B08, B04,B03", scale="range 0 3e3"))[0].close()
    for changed in ({"bands": "B04,B03,B02"}, {"scale": "percentile"}, {"max_nodata": 0.9}):
        with pytest.raises(IndexCompatibilityError, match="cannot change in place"):
            ArchiveIndex.build(tmp_path / "index", root, encoder=tiny_encoder(), progress=False,
                               options=BuildOptions(**changed))


def test_an_index_recorded_before_nodata_was_left_out_keeps_every_chip():
    recorded = {key: value for key, value in IndexSettings().__dict__.items()
                if key not in ("bands", "scale", "max_nodata")}
    assert IndexSettings.from_record(recorded).max_nodata == 1.0
    assert IndexSettings.from_record({**recorded, "max_nodata": 0.25}).max_nodata == 0.25


def test_a_file_without_the_chosen_band_is_a_failure_of_the_run(tmp_path):
    root, windows, over_half = _bordered_archive(tmp_path / "archive")
    write_cog(root / "rgb.tif", reflectance(12, 64, bands=3))  # no band named B08
    index, report = ArchiveIndex.build(tmp_path / "index", root, encoder=tiny_encoder(), progress=False,
                                       options=BuildOptions(bands="B08,B04,B03", **CHIPS))
    assert [path for path, _ in report.failures] == ["rgb.tif"]
    assert "BandError: no band 'B08' among its 3 band(s)" in report.failures[0][1]
    assert index.info()["chips"] == 2 * (len(windows) - len(over_half))
    index.close()


def test_cli_flags_reach_the_index_and_the_summary_counts_nodata(tmp_path, capsys):
    root, windows, over_half = _bordered_archive(tmp_path / "archive")
    out = str(tmp_path / "index")
    assert main(["index", str(root), "--out", out, "--model", TINY_MODEL, "--no-progress", "--chip-size", "128",
                 "--chip-overlap", "0", "--tile-larger-than", "256", "--bands", "red,green,blue",
                 "--scale", "range", "0", "3000", "--max-nodata", "0.4"]) == 0
    # over 0.4: the windows from x = 0 (100 %) and x = 128 (56 %); each scene's 4 rows of them
    assert f"{2 * 4 * 2} left out as nodata" in capsys.readouterr().out
    settings = MetadataStore(tmp_path / "index", read_only=True).get_meta("settings")
    assert (settings["bands"], settings["scale"], settings["max_nodata"]) == ("red,green,blue", "range 0 3000", 0.4)

    code = main(["index", str(root), "--out", str(tmp_path / "other"), "--model", TINY_MODEL, "--scale", "range",
                 "3000", "0"])
    assert_user_error(code, capsys.readouterr().err, "index", "--bands / --scale: a scale range needs finite LOW < HIGH")
    assert not (tmp_path / "other").exists()
    with pytest.raises(SystemExit) as usage:
        main(["index", str(root), "--out", out, "--max-nodata", "2"])
    assert usage.value.code == 2 and "--max-nodata: must be from 0 to 1" in capsys.readouterr().err
