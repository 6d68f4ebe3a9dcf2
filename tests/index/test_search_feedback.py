"""More like this, relevance feedback (Rocchio) and exports (GeoJSON in WGS84, CSV) of search results."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from rsitr.cli import main
from rsitr.errors import RsitrWarning
from rsitr.index import ArchiveIndex, UnknownChipError
from rsitr.index.export import CSV_COLUMNS, to_geojson, wgs84_bounds
from rsitr.index.feedback import RocchioWeights, rocchio
from support.index import GEO_CRS, GEO_ORIGIN, GEO_PIXEL, build_test_index


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> ArchiveIndex:
    return build_test_index(tmp_path_factory.mktemp("feedback"))


def brute_force(index: ArchiveIndex, vector: np.ndarray) -> list[int]:
    ids, vectors = index.store.embeddings()
    scores = vectors @ vector
    return [int(ids[i]) for i in sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))]


def test_rocchio_by_hand():
    query, wanted, unwanted = np.array([2.0, 0.0]), np.array([[0.0, 3.0]]), np.array([[1.0, 0.0]])
    expected = np.array([1 - 0.15, 0.75]) / np.hypot(1 - 0.15, 0.75)  # alpha q + beta wanted - gamma unwanted
    np.testing.assert_allclose(rocchio(query, wanted, unwanted), expected, rtol=1e-6)
    np.testing.assert_allclose(rocchio(query, wanted[:0], unwanted[:0]), [1.0, 0.0])
    # marks alone: the centroid of the (normalised) wanted vectors
    np.testing.assert_allclose(rocchio(None, np.array([[5.0, 0.0], [0.0, 1.0]]), unwanted[:0]),
                               [2 ** -0.5, 2 ** -0.5], rtol=1e-6)
    np.testing.assert_allclose(rocchio(query, wanted, unwanted, RocchioWeights(0, 1, 0)), [0.0, 1.0], atol=1e-7)
    with pytest.raises(ValueError, match="at least one wanted"):
        rocchio(None, wanted[:0], unwanted)


def test_more_like_this_uses_the_stored_vector_without_encoding(index, monkeypatch):
    def refuse(*_):
        raise AssertionError("nothing should be encoded")

    monkeypatch.setattr(index.encoder, "encode_text", refuse)
    monkeypatch.setattr(index.encoder, "encode_images", refuse)
    ids, vectors = index.store.embeddings()
    seed = int(ids[3])
    hits = index.search(like=seed, k=len(ids))
    assert [hit.chip_id for hit in hits] == brute_force(index, vectors[3])
    assert hits[0].chip_id == seed and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_feedback_ranks_by_the_rocchio_vector(index):
    text = index.encoder.encode_text("a harbour").embedding
    plain = [hit.chip_id for hit in index.search("a harbour", k=10, rerank=False)]
    wanted, unwanted = plain[-1], plain[0]  # mark the last wanted and the first not wanted
    vectors = index.store.vectors([wanted, unwanted])
    refined = rocchio(text, vectors[wanted][None], vectors[unwanted][None])
    hits = index.search("a harbour", k=9, positive=[wanted], negative=[unwanted], rerank=False)
    assert [hit.chip_id for hit in hits] == [i for i in brute_force(index, refined) if i != unwanted]
    assert [hit.chip_id for hit in hits] != plain[1:] and unwanted not in [hit.chip_id for hit in hits]
    assert hits.removed == 1  # the unwanted chip still ranked among the 9 (of 10 chips) and was left out
    assert index.search(k=1, positive=[wanted])[0].chip_id == wanted  # marks alone: the wanted chip is the query
    reranked = index.search("a harbour", k=10, positive=[wanted], negative=[unwanted])
    assert all(hit.local_score is not None for hit in reranked)
    assert sorted(hit.global_score for hit in reranked) == pytest.approx(sorted(hit.global_score for hit in hits))


def test_not_wanted_chips_are_removed_and_counted(index):
    plain = [hit.chip_id for hit in index.search(like=1, k=10)]
    # chips 2nd and 4th in the ranking are not wanted, and so is the last one: with k = 5, two ranked among
    # the first five shown and are removed, the next chips take their places
    unwanted = [plain[1], plain[3], plain[-1]]
    expected_vector = rocchio(index.store.vectors([1])[1], np.zeros((0, index.encoder.dim)),
                              np.stack([index.store.vectors(unwanted)[i] for i in unwanted]))
    hits = index.search(like=1, k=5, negative=unwanted)
    ranking = brute_force(index, expected_vector)  # all 10 chips, the unwanted ones included
    shown = [i for i in ranking if i not in unwanted][:5]
    assert [hit.chip_id for hit in hits] == shown
    assert hits.removed == sum(i in unwanted for i in ranking[:ranking.index(shown[-1])]) >= 1
    assert index.search(like=1, k=10, negative=unwanted).removed == 3  # all 10 chips: every unwanted one ranked
    assert len(index.search(like=1, k=10, negative=unwanted)) == 7
    assert index.search(like=1, k=5).removed == 0
    kept = index.search(like=1, k=10, negative=unwanted, remove_unwanted=False)  # only the vector moves
    assert [hit.chip_id for hit in kept] == ranking and kept.removed == 0


def test_a_query_image_embedding_searches_like_the_image(index):
    from support.index import noise

    image = noise(2, 64, 48)
    vector = index.embed_image(image)
    assert vector.shape == (index.encoder.dim,) and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    by_image = index.search_image(image, k=10)
    assert [hit.chip_id for hit in index.search(vector=vector, k=10)] == [hit.chip_id for hit in by_image]
    assert [hit.chip_id for hit in by_image] == brute_force(index, vector)
    assert all(hit.local_score is None for hit in by_image)  # image queries rank by global cosine
    wanted, unwanted = by_image[3].chip_id, by_image[1].chip_id
    vectors = index.store.vectors([wanted, unwanted])
    refined = index.search(vector=vector, k=9, positive=[wanted], negative=[unwanted])
    expected = rocchio(vector, vectors[wanted][None], vectors[unwanted][None])
    assert [hit.chip_id for hit in refined] == [i for i in brute_force(index, expected) if i != unwanted]
    with pytest.raises(ValueError, match="not both"):
        index.search("a harbour", vector=vector)
    with pytest.warns(RsitrWarning, match="image is deprecated: it is now vector"):  # yesterday's keyword
        assert [hit.chip_id for hit in index.search(image=vector, k=10)] == [hit.chip_id for hit in by_image]


def test_info_names_the_index_and_counts_files_still_being_indexed(tmp_path):
    index = build_test_index(tmp_path)
    info = index.info()
    assert (info["name"], info["files"], info["incomplete_files"]) == ("index", 5, 0)
    index.store.add_file("new.png", 1, 1, "0" * 64, 64, 48, None)  # registered, not encoded yet: a run under way
    assert (index.info()["files"], index.info()["incomplete_files"]) == (6, 1)


def test_unknown_or_conflicting_requests_are_user_errors(index):
    with pytest.raises(UnknownChipError, match="no chip 999"):
        index.search("a harbour", positive=[999])
    with pytest.raises(UnknownChipError, match="no chip 998"):
        index.search(like=998)
    with pytest.raises(ValueError, match="not both"):
        index.search("a harbour", like=1)
    with pytest.raises(ValueError, match="nothing to search for"):
        index.search(negative=[1])


def test_geojson_has_wgs84_footprints_and_flat_properties(index, tmp_path):
    hits = index.search("a harbour", k=10)
    collection = json.loads(json.dumps(to_geojson(hits, {"q": "a harbour"})))
    features = collection["features"]
    assert collection["type"] == "FeatureCollection" and "crs" not in collection and len(features) == 10
    geo = [feature for feature in features if feature["geometry"] is not None]
    assert len(geo) == 6 and all(feature["properties"]["path"] == "geo.tif" for feature in geo)
    for rank, feature in enumerate(features, 1):
        assert feature["type"] == "Feature" and feature["properties"]["rank"] == rank
        assert list(feature["properties"]) == list(CSV_COLUMNS)
    for feature in geo:
        ring = feature["geometry"]["coordinates"][0]
        assert feature["geometry"]["type"] == "Polygon" and len(ring) == 5 and ring[0] == ring[-1]
        area2 = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:]))
        assert area2 > 0  # RFC 7946: exterior rings counter-clockwise
        assert all(14 < lon < 17 and 35 < lat < 37 for lon, lat in ring)  # UTM 33N, 4000 km north
    # hand check: easting 500 000 is the zone's central meridian, 15 degrees east
    left_chip = next(f for f in geo if f["properties"]["x"] == 0)
    assert left_chip["properties"]["lon_min"] == pytest.approx(15.0, abs=1e-9)
    assert left_chip["properties"]["left"] == GEO_ORIGIN[0] and left_chip["properties"]["crs"] == GEO_CRS
    top_chip = next(f for f in geo if f["properties"]["y"] == 0)
    assert top_chip["properties"]["top"] == GEO_ORIGIN[1]
    assert wgs84_bounds((GEO_ORIGIN[0], 0.0, GEO_ORIGIN[0] + GEO_PIXEL, 0.0), GEO_CRS)[1] == pytest.approx(0.0)

    pyogrio = pytest.importorskip("pyogrio", reason="pyogrio is not installed: the schema checks above must do")
    path = tmp_path / "hits.geojson"
    path.write_text(json.dumps(collection))
    meta = pyogrio.read_info(path)  # GDAL's GeoJSON driver, as QGIS reads it
    assert meta["features"] == 10 and meta["geometry_type"] == "Polygon" and "4326" in meta["crs"]
    assert list(meta["fields"]) == list(CSV_COLUMNS)


def test_cli_like_feedback_and_formats(index, capsys):
    directory = str(index.directory)
    seed = index.search("a harbour", k=1)[0].chip_id
    assert main(["search", directory, "--like", str(seed), "--top-k", "3", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["like"] == seed and printed["count"] == 3  # one object, as --all prints it
    assert [hit["chip_id"] for hit in printed["results"]] == [hit.chip_id for hit in index.search(like=seed, k=3)]

    args = ["search", directory, "a harbour", "--top-k", "10", "--positive", "1", "2", "--negative", "3"]
    assert main([*args, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    expected = index.search("a harbour", k=10, positive=[1, 2], negative=[3])
    assert [int(row["chip_id"]) for row in rows] == [hit.chip_id for hit in expected]
    assert [row["rank"] for row in rows] == [str(rank) for rank in range(1, 10)]  # 10 chips, 1 not wanted

    assert main([*args, "--format", "geojson"]) == 0
    collection = json.loads(capsys.readouterr().out)
    assert collection["query"] == {"q": "a harbour", "positive": [1, 2], "negative": [3]}
    assert sum(feature["geometry"] is not None for feature in collection["features"]) == 5  # chip 3 is a GeoTIFF's

    assert main(["search", directory, "--like", "999"]) == 2
    assert "no chip 999" in capsys.readouterr().err


def test_cli_table_prints_bounds_with_every_digit(tmp_path, capsys):
    from support.index import build_far_index

    index = build_far_index(tmp_path)
    hits = index.search("a field", k=3)
    assert main(["search", str(index.directory), "a field", "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]  # under the header
    assert len(lines) == 3 and sum(hit.bounds is not None for hit in hits) == 2
    for line, hit in zip(lines, hits):
        if hit.bounds is None:
            assert "bounds" not in line
            continue
        printed = line.split("  bounds ")[1]
        assert printed.endswith(" EPSG:32633")
        assert [float(value) for value in printed.split()[0].split(",")] == list(hit.bounds)  # not rounded
    assert "412345.678," in "\n".join(lines) or "482345.678," in "\n".join(lines)


def test_api_like_feedback_export_and_declared_statuses(index):
    from fastapi.testclient import TestClient

    from rsitr.api.app import create_app

    client = TestClient(create_app(index=index), base_url="http://localhost")
    body = client.get("/api/search", params={"like": 4, "k": 3}).json()
    assert [hit["chip_id"] for hit in body["results"]] == [hit.chip_id for hit in index.search(like=4, k=3)]
    params = {"q": "a harbour", "k": 10, "positive": [1, 2], "negative": [3]}
    body = client.get("/api/search", params=params).json()
    expected = index.search("a harbour", k=10, positive=[1, 2], negative=[3])
    assert [hit["chip_id"] for hit in body["results"]] == [hit.chip_id for hit in expected]
    assert body["removed"] == expected.removed == 1 and 3 not in [hit["chip_id"] for hit in body["results"]]
    geo = [hit for hit in body["results"] if hit["bounds"]]
    assert geo and all(hit["wgs84_bounds"][0] >= 15.0 - 1e-9 for hit in geo)

    download = client.get("/api/search", params={**params, "format": "geojson"})
    assert download.status_code == 200 and download.headers["content-type"] == "application/geo+json"
    assert "attachment" in download.headers["content-disposition"]
    assert [f["id"] for f in download.json()["features"]] == [hit.chip_id for hit in expected]
    table = client.get("/api/search", params={**params, "format": "csv"})
    assert table.headers["content-type"].startswith("text/csv") and len(table.text.splitlines()) == 1 + 9

    assert client.get("/api/search", params={"like": 999}).status_code == 404
    assert client.get("/api/search", params={"q": "x", "positive": 999}).status_code == 404
    assert client.get("/api/search", params={"q": "x", "like": 1}).status_code == 400
    assert client.get("/api/search").status_code == 400
    assert client.get("/api/search", params={"q": "x", "format": "shp"}).status_code == 422
    chip = client.get("/api/chips/4").json()
    assert chip["scene"] == {"width": 300, "height": 200} and chip["path"] == "geo.tif" and chip["wgs84_bounds"]
    assert not any(str(value).startswith("/") and "thumbnail" not in key for key, value in chip.items())
    responses = client.get("/openapi.json").json()["paths"]["/api/search"]["get"]["responses"]
    assert {"200", "400", "404", "422"} <= set(responses)
    assert {"application/json", "application/geo+json", "text/csv"} <= set(responses["200"]["content"])
