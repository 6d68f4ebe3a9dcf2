"""Where and when: search and find-all limited to an area (a WGS84 box or GeoJSON polygon) and to acquisition
dates (TIFF DATETIME tags recorded at index time), applied before ranking; through the library, the CLI and the API."""

from __future__ import annotations

import csv
import io
import json
import sqlite3

import pytest
from fastapi.testclient import TestClient

from rsitr.api.app import create_app
from rsitr.cli import main
from rsitr.index import ArchiveIndex
from rsitr.index.archive import acquisition_time
from rsitr.index.where import Where, WhereError, matching_chips
from support.errors import assert_user_error
from support.index import PLACED_EAST_BOX, PLACED_WEST_BOX, build_placed_index, tiny_encoder

EAST_BOX, WEST_BOX = PLACED_EAST_BOX, PLACED_WEST_BOX


@pytest.fixture(scope="module")
def placed(tmp_path_factory):
    index = build_placed_index(tmp_path_factory.mktemp("where"))
    yield index
    index.close()


def chips_of(index: ArchiveIndex, *paths: str) -> set[int]:
    return {chip_id for path in paths for chip_id in index.store.chips_of(path)}


def test_acquisition_times_are_read_in_one_form():
    assert acquisition_time("2023:01:05 10:00:00") == "2023-01-05T10:00:00+00:00"  # the TIFF tag
    assert acquisition_time("2024-05-01") == "2024-05-01T00:00:00+00:00"
    assert acquisition_time("2024-05-01T12:00:00+02:00") == "2024-05-01T10:00:00+00:00"
    assert acquisition_time("2024-05-01T10:00:00.123Z") == "2024-05-01T10:00:00+00:00"
    assert acquisition_time("sometime in May") is None


def test_the_index_records_each_images_tiff_datetime(placed):
    hits = placed.search("fields", k=200)
    acquired = {hit.path: hit.acquired for hit in hits}
    assert acquired == {"east.tif": "2023-01-05T10:00:00+00:00", "west.tif": "2024-06-01T11:30:00+00:00",
                        "nodate.tif": None, "plain.png": None}
    assert placed.chip_details(hits[0].chip_id)["acquired"] == acquired[hits[0].path]


def test_an_area_and_dates_choose_the_chips_before_ranking(placed):
    east, west, nodate = (chips_of(placed, name) for name in ("east.tif", "west.tif", "nodate.tif"))
    assert set(matching_chips(placed.store, Where.parse(bbox=EAST_BOX)).tolist()) == east | nodate
    assert set(matching_chips(placed.store, Where.parse(bbox=WEST_BOX)).tolist()) == west
    # dates leave out chips of no known date (nodate.tif, plain.png)
    assert set(matching_chips(placed.store, Where.parse(after="2024-01-01")).tolist()) == west
    assert set(matching_chips(placed.store, Where.parse(before="2024-01-01")).tolist()) == east
    assert set(matching_chips(placed.store, Where.parse(bbox=EAST_BOX, after="2024-01-01")).tolist()) == set()
    # k results come back, the best k of the area by cosine (not the area's share of an unfiltered top k)
    k = len(west) - 1
    everywhere = placed.search(like=min(east), k=k)
    assert not {hit.chip_id for hit in everywhere} <= west
    limited = placed.search(like=min(east), k=k, where=Where.parse(bbox=WEST_BOX))
    assert len(limited) == k and {hit.chip_id for hit in limited} <= west
    stored = placed.store.vectors(sorted(west))
    cosines = {chip_id: float(vector @ stored_query) for chip_id, vector in stored.items()
               for stored_query in [placed.store.vectors([min(east)])[min(east)]]}
    best = sorted(cosines, key=lambda chip_id: (-cosines[chip_id], chip_id))[:k]
    assert [hit.chip_id for hit in limited] == best
    for hit in limited:
        assert hit.global_score == pytest.approx(cosines[hit.chip_id], abs=1e-5)


def test_a_geojson_polygon_limits_by_its_shape_not_its_box(placed):
    east, nodate = chips_of(placed, "east.tif"), chips_of(placed, "nodate.tif")
    # a triangle whose box covers both tagged UTM scenes but whose area misses nodate.tif's far east
    triangle = {"type": "Polygon", "coordinates": [[[14.9, 36.0], [15.1, 36.0], [14.9, 36.3], [14.9, 36.0]]]}
    allowed = set(matching_chips(placed.store, Where.parse(area=json.dumps(triangle))).tolist())
    assert set(matching_chips(placed.store, Where.parse(bbox=(14.9, 36.0, 15.1, 36.3))).tolist()) & nodate
    assert allowed and allowed <= east and not allowed & nodate
    feature = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": triangle}]}
    assert set(matching_chips(placed.store, Where.parse(area=feature)).tolist()) == allowed


def test_find_all_scores_only_the_chips_in_the_area(placed):
    west = chips_of(placed, "west.tif")
    wanted = sorted(west)[:2]
    found = placed.find_all(positive=wanted, threshold=0.01, where=Where.parse(bbox=WEST_BOX))
    assert found.scored == len(west) and set(found.ids.tolist()) <= west


@pytest.mark.parametrize("asked, message", [
    ({"bbox": "1,2,3"}, "four numbers"),
    ({"bbox": (10, 0, 5, 1)}, "WEST < EAST"),
    ({"area": '{"type": "Point", "coordinates": [1, 2]}'}, "Polygon or MultiPolygon"),
    ({"area": "not json"}, "no GeoJSON polygon"),
    ({"after": "May"}, "ISO 8601"),
    ({"after": "2024-06-01", "before": "2024-01-01"}, "must come before"),
])
def test_areas_and_dates_that_cannot_be_read_are_refused(asked, message):
    with pytest.raises(WhereError, match=message):
        Where.parse(**asked)


def test_cli_limits_ranked_and_find_all_results_and_refuses_bad_flags_in_one_line(placed, tmp_path, capsys):
    index = str(placed.directory)
    west = chips_of(placed, "west.tif")
    assert main(["search", index, "fields", "--top-k", "3", "--bbox", *map(str, WEST_BOX), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 3 and {row["path"] for row in rows} == {"west.tif"}
    assert {row["acquired"] for row in rows} == {"2024-06-01T11:30:00+00:00"}
    (tmp_path / "area.geojson").write_text(json.dumps({"type": "Polygon", "coordinates": [[
        [-3.8, 40.3], [-3.6, 40.3], [-3.6, 40.5], [-3.8, 40.5], [-3.8, 40.3]]]}))
    assert main(["search", index, "fields", "--bbox", str(tmp_path / "area.geojson"), "--before", "2025-01-01",
                 "--format", "json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["area"] == str(tmp_path / "area.geojson") and answer["before"] == "2025-01-01"
    assert {hit["path"] for hit in answer["results"]} == {"west.tif"}
    assert main(["search", index, "--positive", *map(str, sorted(west)[:2]), "--all", "--threshold", "0.01",
                 "--after", "2024-01-01"]) == 0
    assert "chips found with a probability" in capsys.readouterr().out
    assert main(["search", index, "fields", "--after", "2024-01-01"]) == 0
    table = capsys.readouterr().out
    assert "acquired 2024-06-01T11:30:00+00:00" in table and "east.tif" not in table
    for flags, message in ((["--bbox", "1", "2", "3"], "--bbox: a box is four numbers"),
                           (["--bbox", str(tmp_path / "missing.geojson")], "--bbox"),
                           (["--after", "yesterday"], "ISO 8601")):
        code = main(["search", index, "fields", *flags])
        assert_user_error(code, capsys.readouterr().err, "search", message)


def test_api_limits_results_and_answers_400_for_a_bad_area(placed):
    client = TestClient(create_app(index=placed), base_url="http://localhost")
    bbox = ",".join(map(str, EAST_BOX))
    answer = client.get("/api/search", params={"q": "fields", "k": 50, "bbox": bbox, "before": "2024-01-01"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["bbox"] == bbox and body["before"] == "2024-01-01"
    assert {hit["path"] for hit in body["results"]} == {"east.tif"}
    assert {hit["acquired"] for hit in body["results"]} == {"2023-01-05T10:00:00+00:00"}
    assert len(body["results"]) == len(chips_of(placed, "east.tif"))
    geojson = client.get("/api/search", params={"q": "fields", "bbox": bbox, "format": "geojson"}).json()
    assert geojson["query"]["bbox"] == bbox and {f["properties"]["path"] for f in geojson["features"]} == \
        {"east.tif", "nodate.tif"}
    bad = client.get("/api/search", params={"q": "fields", "bbox": "1,2,3"})
    assert bad.status_code == 400 and "four numbers" in bad.json()["detail"]
    detail = client.get(f"/api/chips/{body['results'][0]['chip_id']}").json()
    assert detail["acquired"] == "2023-01-05T10:00:00+00:00" and detail["item_id"] is None and detail["href"] is None


def test_an_index_made_before_acquisition_times_opens_and_gets_the_column(placed, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(placed.directory, old)
    with sqlite3.connect(old / "index.sqlite") as conn:
        conn.execute("ALTER TABLE files DROP COLUMN acquired")
    index = ArchiveIndex.open(old, encoder=tiny_encoder())
    assert index.search("fields", k=3)[0].acquired is None
    assert len(index.search("fields", k=3)) == 3
    assert len(index.search(like=min(index.store.chip_ids().tolist()), k=3, where=Where.parse(after="2000-01-01"))) \
        == 0  # no image has a known date
    index.close()
    index, report = ArchiveIndex.build(old, index.root, encoder=tiny_encoder(), progress=False)
    assert report.unchanged == 4  # the column is added; what was indexed stays (dates of new files are recorded)
    with sqlite3.connect(old / "index.sqlite") as conn:
        assert "acquired" in {row[1] for row in conn.execute("PRAGMA table_info(files)")}
    index.close()
