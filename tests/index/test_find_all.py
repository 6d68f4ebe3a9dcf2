"""Find all like these (a calibrated probe over every chip), its region exports, and heat maps over a scene."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from rsitr.cli import main
from rsitr.errors import UserError
from rsitr.index import ArchiveIndex, BuildOptions, NotGeoreferencedError, SearchHit, Window
from rsitr.index.export import export_found, merge_regions
from rsitr.index.find_all import (Probe, background_ids, fit_probe, format_probability, logit, prevalence,
                                   score_batches, with_prevalence)
from support.index import CHIP_SETTINGS, GEO_CRS, GEO_ORIGIN, GEO_PIXEL, build_test_index, make_archive, \
    tiny_encoder


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def clusters(seed: int = 0, dim: int = 32, per_cluster: int = 200, clusters_: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around ``clusters_`` random centres (cosine ~0.8 to their centre), and their cluster labels."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((clusters_, dim)))
    labels = np.repeat(np.arange(clusters_), per_cluster)
    return unit(centres[labels] + 0.12 * rng.standard_normal((len(labels), dim))), labels


def test_the_probe_finds_a_cluster_from_a_few_marks_with_calibrated_probabilities():
    vectors, labels = clusters()
    ids = np.arange(len(vectors))
    wanted = ids[labels == 3][:5]
    # as ArchiveIndex.probe does: the chips nearest the prior (here the wanted centroid) stay out of the background
    likely = np.argsort(-(vectors @ vectors[wanted].mean(axis=0)))[:200]
    background = background_ids(ids, {*wanted.tolist(), *likely.tolist()}, count=500, seed=1)
    probe = fit_probe(vectors[wanted], vectors[:0], vectors[background])
    assert probe.calibrated and (probe.wanted, probe.unwanted, probe.background) == (5, 0, 500)
    found = score_batches(probe, ((ids[i:i + 128], vectors[i:i + 128]) for i in range(0, len(ids), 128)), 0.5)
    assert found.scored == len(ids)
    assert set(found.ids.tolist()) == set(ids[labels == 3].tolist())  # every one of the 200, nothing else
    probabilities = probe.probabilities(vectors)
    # confident where the clusters are clear: most of the wanted near 1, most of the rest near 0
    assert np.median(probabilities[labels == 3]) > 0.95 and np.quantile(probabilities[labels != 3], 0.99) < 0.05
    # the same probabilities as found, sorted from the most probable, ties by id
    np.testing.assert_allclose(found.probabilities, probabilities[found.ids], rtol=1e-5)
    assert np.all(np.diff(found.probabilities) <= 0)


def test_scoring_does_not_depend_on_the_batch_size():
    vectors, labels = clusters(seed=2)
    ids = np.arange(len(vectors)) * 3 + 7  # ids need not be positions
    probe = fit_probe(vectors[labels == 1][:2], vectors[labels == 2][:3], vectors[labels >= 4][::7])
    results = [score_batches(probe, ((ids[i:i + size], vectors[i:i + size]) for i in range(0, len(ids), size)), 0.3)
               for size in (1, 7, 5000)]
    for other in results[1:]:
        np.testing.assert_array_equal(other.ids, results[0].ids)
        np.testing.assert_allclose(other.probabilities, results[0].probabilities, atol=1e-6)  # float32 dot products
    assert results[0].count > 0 and logit(0.5) == 0.0


def test_one_wanted_chip_is_a_probe_without_calibration():
    vectors, labels = clusters(seed=3)
    probe = fit_probe(vectors[:1], vectors[:0], vectors[labels != 0][::4])
    assert not probe.calibrated and probe.probabilities(vectors[:1])[0] > 0.5
    with pytest.raises(ValueError, match="at least one wanted"):
        fit_probe(vectors[:0], vectors[:3], vectors[3:10])


def test_a_single_negative_is_a_probe_without_calibration():
    """Three wanted chips and one negative (an archive of four chips): no fold could train on both classes."""
    vectors, labels = clusters(seed=3)
    probe = fit_probe(vectors[labels == 0][:3], vectors[:0], vectors[labels == 1][:1])
    assert not probe.calibrated and (probe.wanted, probe.background) == (3, 1)
    assert probe.probabilities(vectors[labels == 0][:3]).min() > 0.5 > probe.probabilities(vectors[labels == 1][:1])[0]


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> ArchiveIndex:
    return build_test_index(tmp_path_factory.mktemp("find_all"))


def test_find_all_scores_every_chip_and_pages_the_found(index):
    wanted = [hit.chip_id for hit in index.search("a harbour", k=3)]
    found = index.find_all("a harbour", positive=wanted[:2], negative=wanted[2:], threshold=0.5)
    assert found.scored == index.store.chip_count() == 10
    assert found.count == len(found.ids) and np.all(found.probabilities >= 0.5)
    # ten chips of a random tiny model: the wanted ones are found, and rank above the one marked not wanted
    assert set(wanted[:2]) <= set(found.ids.tolist())
    assert max(found.ids.tolist().index(i) for i in wanted[:2]) < found.ids.tolist().index(wanted[2]) \
        if wanted[2] in found.ids else True
    everything = index.found_hits(found)
    assert [hit.chip_id for hit in everything] == found.ids.tolist()
    assert [hit.score for hit in everything] == pytest.approx(found.probabilities.tolist())
    page = index.found_hits(found, offset=1, limit=1)
    assert [hit.chip_id for hit in page] == found.ids[1:2].tolist()
    # the streamed scores are the probe's on all vectors at once, in any batch size
    ids, vectors = index.store.embeddings()
    probabilities = dict(zip(ids.tolist(), found.probe.probabilities(vectors)))
    assert [probabilities[i] for i in found.ids.tolist()] == pytest.approx(found.probabilities.tolist(), abs=1e-6)
    again = index.find_all("a harbour", positive=wanted[:2], negative=wanted[2:], batch_size=3)
    np.testing.assert_array_equal(again.ids, found.ids)


@pytest.mark.parametrize("share", [0.02, 0.1, 0.3])
def test_the_share_of_wanted_chips_is_estimated_from_even_odds_and_moves_the_bias(share):
    """Chips of two unit-variance classes 4 apart: even-odds logits are 4x (their log-likelihood ratio); EM finds
    the share of the wanted class within 0.02, and the probe moved to it gives the archive's posterior."""
    rng = np.random.default_rng(0)
    wanted = rng.random(20_000) < share
    x = np.where(wanted, 2.0, -2.0) + rng.standard_normal(20_000)
    estimated = prevalence(4 * x)
    assert abs(estimated - share) < 0.02
    probe = Probe(np.array([4.0], np.float32), 0.0, True, 3, 2, 100)
    moved = with_prevalence(probe, estimated)
    assert moved.prevalence == estimated and moved.bias == pytest.approx(logit(estimated))
    posterior = share / (share + (1 - share) * np.exp(-4 * 0.5))  # at x = 0.5 (log-likelihood ratio 2), by Bayes
    assert moved.probabilities(np.array([[0.5]], np.float32))[0] == pytest.approx(posterior, abs=0.02)
    assert prevalence(np.full(10, 20.0)) == 0.5  # capped at the probe's own even odds


def test_find_all_uses_the_archives_odds_once_calibrated(index):
    ids, vectors = index.store.embeddings()
    found = index.find_all("a harbour", positive=[1, 2], negative=[3])
    assert (found.probe.prevalence is not None) == found.probe.calibrated
    assert found.probe.prevalence is None or 0 < found.probe.prevalence <= 0.5
    np.testing.assert_allclose(found.probabilities, found.probe.probabilities(vectors)[np.searchsorted(ids, found.ids)],
                               atol=1e-6)
    assert index.find_all(positive=[1]).probe.prevalence is None  # one wanted chip: not calibrated, even odds


def test_find_all_needs_a_wanted_chip_and_a_threshold_inside_0_1(index):
    with pytest.raises(UserError, match="at least one chip marked wanted"):
        index.find_all("a harbour")
    with pytest.raises(UserError, match="between 0 and 1"):
        index.find_all(positive=[1], threshold=1.0)
    with pytest.raises(UserError, match="no chip 999"):
        index.find_all(positive=[999])


def test_find_all_on_lancedb_finds_what_faiss_finds(tmp_path):
    pytest.importorskip("lancedb")
    root = make_archive(tmp_path / "archive")
    encoder = tiny_encoder()
    indexes = [ArchiveIndex.build(tmp_path / backend, root, encoder=encoder, progress=False,
                                  options=BuildOptions(backend=backend, **CHIP_SETTINGS))[0]
               for backend in ("faiss", "lancedb")]
    faiss_found, lance_found = (index.find_all(positive=[2, 5], negative=[1], threshold=0.2, batch_size=4)
                                for index in indexes)
    assert lance_found.scored == faiss_found.scored == 10
    np.testing.assert_array_equal(lance_found.ids, faiss_found.ids)
    np.testing.assert_allclose(lance_found.probabilities, faiss_found.probabilities, atol=1e-6)


def hit(chip_id: int, path: str, x: int, y: int, score: float, geo: bool = True) -> SearchHit:
    """A 128 px chip of the test GeoTIFF (10 m pixels) at pixel ``x, y``, or of a plain image."""
    left, top = GEO_ORIGIN[0] + x * GEO_PIXEL, GEO_ORIGIN[1] - y * GEO_PIXEL
    bounds = (left, top - 128 * GEO_PIXEL, left + 128 * GEO_PIXEL, top) if geo else None
    return SearchHit(chip_id, path, Window(x, y, 128, 128), bounds, GEO_CRS if geo else None, score, score, None,
                     False)


def test_adjacent_chips_of_a_scene_merge_into_counted_regions():
    from shapely.geometry import shape

    hits = [hit(1, "a.tif", 0, 0, 0.9), hit(2, "a.tif", 96, 0, 0.8), hit(3, "a.tif", 224, 0, 0.7),  # 1-2 overlap, 3 touches 2
            hit(4, "a.tif", 1000, 1000, 0.95), hit(5, "b.tif", 0, 0, 0.6),  # far away; another scene
            hit(6, "plain.png", 0, 0, 0.55, geo=False), hit(7, "plain.png", 128, 0, 0.5, geo=False)]
    regions = merge_regions(hits)
    assert [(region["path"], region["chip_ids"]) for region in regions] == [
        ("a.tif", "4"), ("a.tif", "1 2 3"), ("b.tif", "5"), ("plain.png", "6 7")]  # by their best chip
    assert [region["region"] for region in regions] == [1, 2, 3, 4]
    strip = regions[1]
    assert strip["chips"] == 3 and (strip["left"], strip["right"]) == (GEO_ORIGIN[0], GEO_ORIGIN[0] + 352 * GEO_PIXEL)
    assert strip["max_probability"] == 0.9 and strip["mean_probability"] == pytest.approx(0.8)
    assert shape(strip["geometry"]).bounds[0] == pytest.approx(15.0, abs=0.01)  # UTM 33N's x = 500 km: 15 deg E
    assert regions[3]["geometry"] is None and (regions[3]["x"], regions[3]["width"]) == (0, 256)

    collection = json.loads(export_found(hits, "geojson", {"positive": [1]}))
    assert (collection["chips"], collection["regions"], len(collection["features"])) == (7, 4, 4)
    assert collection["features"][1]["properties"]["chips"] == 3 and collection["query"] == {"positive": [1]}
    rows = list(csv.DictReader(io.StringIO(export_found(hits, "csv"))))
    assert [row["chip_ids"] for row in rows] == ["4", "1 2 3", "5", "6 7"] and rows[1]["wkt"].startswith("POLYGON")


def test_the_score_raster_is_a_geotiff_in_the_scenes_crs_and_transform(index):
    import rasterio
    from affine import Affine
    from rasterio.io import MemoryFile

    scores = index.scene_scores("geo.tif", "a harbour")
    assert scores.kind in ("fused", "cosine") and len(scores.chip_ids) == 6  # 3 x 2 chips of 128 px, stride 96
    expected = {hit.chip_id: hit.score for hit in index.search("a harbour", k=10)}
    assert scores.scores.tolist() == pytest.approx([expected[i] for i in scores.chip_ids], abs=1e-5)
    with MemoryFile(index.score_raster(scores)) as memory, memory.open() as raster:
        assert raster.crs == rasterio.crs.CRS.from_string(GEO_CRS)
        assert raster.transform == Affine(GEO_PIXEL * 96, 0, GEO_ORIGIN[0], 0, -GEO_PIXEL * 96, GEO_ORIGIN[1])
        assert (raster.width, raster.height) == (4, 3)  # ceil(300 / 96), ceil(200 / 96)
        cells = raster.read(1)
    # chips start at x = 0, 96, 172 and y = 0, 72; cell centres lie at 48, 144, 240 and 299.5 (clipped) across, 48, 144
    # and 199.5 down
    first = dict(zip([(w.x, w.y) for w in scores.windows], scores.scores.tolist()))
    assert cells[0, 0] == pytest.approx(first[(0, 0)]) and cells[0, 1] == pytest.approx(first[(96, 0)])
    assert cells[1, 0] == pytest.approx(first[(0, 72)]) and cells[0, 2] == pytest.approx(first[(172, 0)])
    assert cells[2, 3] == pytest.approx(first[(172, 72)])  # the last cell: centre clipped into the scene
    assert not np.isnan(cells).any()  # every pixel of the scene lies in a chip

    probabilities = index.scene_scores("geo.tif", positive=[scores.chip_ids[0]], find_all=True)
    assert probabilities.kind == "probability" and 0 <= probabilities.scores.min() <= probabilities.scores.max() <= 1
    cells = probabilities.to_json()["chips"]
    assert [cell["chip_id"] for cell in cells] == scores.chip_ids and all(cell["wgs84_bounds"] for cell in cells)
    with pytest.raises(NotGeoreferencedError, match="scene0.png is not georeferenced"):
        index.scene_scores("scene0.png", "a harbour")
    with pytest.raises(FileNotFoundError, match="not an indexed image"):
        index.scene_scores("missing.tif", "a harbour")


def test_cli_finds_all_and_exports_regions(index, capsys):
    directory = str(index.directory)
    found = index.find_all("a harbour", positive=[1, 2], negative=[3], threshold=0.4)
    assert main(["search", directory, "a harbour", "--positive", "1", "2", "--negative", "3", "--all",
                 "--threshold", "0.4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [int(line.split(" chip ")[1].split()[0]) for line in lines[1:-1]] == found.ids.tolist()
    assert lines[0].split()[:2] == ["rank", "probability"]  # printed as the page prints them
    assert [line.split()[1] for line in lines[1:-1]] == [format_probability(p) for p in found.probabilities]
    assert lines[-1].startswith(f"{found.count} of 10 chips found with a probability of at least 0.4 (2 wanted, "
                                "1 not wanted")
    assert main(["search", directory, "a harbour", "--positive", "1", "2", "--all", "--format", "geojson"]) == 0
    collection = json.loads(capsys.readouterr().out)
    assert collection["query"] == {"q": "a harbour", "positive": [1, 2], "all": True, "threshold": 0.5}
    assert sum(feature["properties"]["chips"] for feature in collection["features"]) == collection["chips"]


@pytest.mark.parametrize("args, message", [
    (["--all"], "mark at least one wanted chip"),
    (["--positive", "1", "--threshold", "0.5"], "--threshold applies to --all only"),
    (["--positive", "1", "--all", "--threshold", "1.5"], "between 0 and 1"),
])
def test_cli_find_all_mistakes_are_one_error_line(index, capsys, args, message):
    assert main(["search", str(index.directory), "a harbour", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rsitr search: error: ") and message in err and len(err.splitlines()) == 1


@pytest.fixture(scope="module")
def client(index):
    from fastapi.testclient import TestClient

    from rsitr.api.app import create_app

    return TestClient(create_app(index=index), base_url="http://localhost")


def test_api_finds_all_pages_them_and_exports_every_region(client, index):
    found = index.find_all("a harbour", positive=[1, 2], negative=[3], threshold=0.3)
    params = {"q": "a harbour", "positive": [1, 2], "negative": [3], "all": "true", "threshold": 0.3, "k": 2}
    body = client.get("/api/search", params={**params, "offset": 1}).json()
    assert (body["count"], body["scored"], body["offset"], body["threshold"]) == (found.count, 10, 1, 0.3)
    assert [hit["chip_id"] for hit in body["results"]] == found.ids[1:3].tolist()
    assert [hit["score"] for hit in body["results"]] == pytest.approx(found.probabilities[1:3].tolist())
    collection = client.get("/api/search", params={**params, "format": "geojson"}).json()
    assert collection["chips"] == found.count and collection["query"]["q"] == "a harbour"
    assert sum(feature["properties"]["chips"] for feature in collection["features"]) == found.count
    rows = list(csv.DictReader(io.StringIO(client.get("/api/search", params={**params, "format": "csv"}).text)))
    assert len(rows) == collection["regions"]
    assert client.get("/api/search", params={"q": "a harbour", "all": "true"}).status_code == 400  # nothing wanted
    assert client.get("/api/search", params={**params, "threshold": 1}).status_code == 422


def test_api_heat_map_cells_and_the_geotiff_score_raster(client, index):
    import rasterio
    from rasterio.io import MemoryFile

    cells = client.get("/api/heatmap", params={"path": "geo.tif", "q": "a harbour"}).json()
    expected = index.scene_scores("geo.tif", "a harbour")
    assert [cell["chip_id"] for cell in cells["chips"]] == expected.chip_ids and cells["kind"] == expected.kind
    assert (cells["min"], cells["max"]) == pytest.approx((expected.scores.min(), expected.scores.max()))
    answer = client.get("/api/heatmap", params={"path": "geo.tif", "positive": [expected.chip_ids[0]], "all": "true",
                                                "format": "geotiff"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("image/tiff")
    assert 'filename="geo-scores.tif"' in answer.headers["content-disposition"]
    with MemoryFile(answer.content) as memory, memory.open() as raster:
        assert raster.crs == rasterio.crs.CRS.from_string(GEO_CRS) and raster.count == 1
        assert 0 <= np.nanmin(raster.read(1)) <= np.nanmax(raster.read(1)) <= 1  # probabilities
    plain = client.get("/api/heatmap", params={"path": "scene0.png", "q": "a harbour"})
    assert plain.status_code == 400 and "not georeferenced" in plain.json()["detail"]
    for path in ("missing.tif", "../secret.png", "/etc/passwd"):
        assert client.get("/api/heatmap", params={"path": path, "q": "x"}).status_code == 404, path


def test_probabilities_near_one_print_with_the_digits_that_rank_them():
    assert [format_probability(p) for p in (0.5, 0.91839, 0.99989)] == ["0.5000", "0.9184", "0.9999"]
    assert [format_probability(1 - gap) for gap in (5e-5, 3.8e-7, 3e-9)] == ["0.999950", "0.99999962", "0.9999999970"]
    assert format_probability(1.0) == format_probability(1 - 1e-13) == ">0.999999999999"


def test_found_probabilities_keep_the_ranking_of_logits_beyond_float32():
    probe = Probe(np.array([1.0], np.float32), 0.0, True, 1, 0, 0)
    found = score_batches(probe, iter([(np.arange(3), np.array([[18.0], [20.0], [22.0]], np.float32))]))
    assert found.ids.tolist() == [2, 1, 0] and np.all(np.diff(found.probabilities) < 0)  # float32 reads 1.0 thrice
