"""The web service through FastAPI's TestClient: search, thumbnails, upload limits and path checks."""

from __future__ import annotations

import hashlib
import io
import re
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from rsitr.api.app import create_app
from rsitr.index import ArchiveIndex, BuildOptions
from rsitr.api.query_images import QueryImages, UnknownQueryImageError
from support.index import CHIP_SETTINGS, GEO_CRS, make_archive, noise, tiny_encoder

MAX_UPLOAD = 4000


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> ArchiveIndex:
    base = tmp_path_factory.mktemp("api")
    root = make_archive(base / "archive")
    (base / "secret.png").write_bytes(b"outside the archive")
    (root / "escape.png").symlink_to(base / "secret.png")
    index, _ = ArchiveIndex.build(base / "index", root, encoder=tiny_encoder(), progress=False,
                                  options=BuildOptions(**CHIP_SETTINGS))
    return index


@pytest.fixture(scope="module")
def client(index) -> TestClient:
    return TestClient(create_app(index=index, max_upload_bytes=MAX_UPLOAD), base_url="http://localhost")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_page_and_info(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="query"' in page.text and "/api/search" in page.text
    info = client.get("/api/info").json()
    assert (info["chips"], info["files"], info["failures"], info["max_upload_bytes"]) == (10, 5, 1, MAX_UPLOAD)


def test_a_basemap_template_is_checked_and_named_in_the_info(index, tmp_path, capsys):
    from rsitr.cli import main
    from rsitr.errors import UserError
    from support.errors import assert_user_error

    assert TestClient(create_app(index=index), base_url="http://localhost").get("/api/info").json()["basemap"] is None
    template = "https://tiles.example.org/{z}/{x}/{y}.png"
    served = TestClient(create_app(index=index, basemap=template), base_url="http://localhost")
    assert served.get("/api/info").json()["basemap"] == template
    with pytest.raises(UserError, match=r"lacks \{x\}, \{y\}"):
        create_app(index=index, basemap="https://tiles.example.org/{z}.png")
    code = main(["serve", str(index.directory), "--port", "0", "--basemap", "ftp://tiles/{z}/{x}/{y}.png"])
    assert_user_error(code, capsys.readouterr().err, "serve", "a basemap is an http(s) tile URL template")


def test_text_search_matches_the_python_api(client, index):
    body = client.get("/api/search", params={"q": "storage tanks", "k": 4}).json()
    expected = index.search("storage tanks", k=4)
    assert [hit["chip_id"] for hit in body["results"]] == [hit.chip_id for hit in expected]
    assert body["results"][0]["thumbnail"] == f"/api/chips/{expected[0].chip_id}/thumbnail"
    assert client.get("/api/search", params={"q": " \x1c "}).status_code == 422  # whitespace only: the schema says so
    assert client.get("/api/search", params={"q": "x", "k": 0}).status_code == 422


def test_image_upload_returns_k_hits_with_scores_in_order(client):
    response = client.post("/api/search/image", files={"file": ("q.png", png_bytes(noise(7, 32, 24)), "image/png")},
                           data={"k": "3"})
    assert response.status_code == 200
    scores = [hit["score"] for hit in response.json()["results"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)


def test_an_uploaded_image_gets_an_id_that_searches_refines_exports_and_shows_it(client, index):
    data = png_bytes(noise(7, 32, 24))
    upload = client.post("/api/search/image", files={"file": ("q.png", data, "image/png")}, data={"k": "5"}).json()
    image_id = upload["image"]
    assert image_id == hashlib.sha256(data).hexdigest()[:16]
    again = client.get("/api/search", params={"image": image_id, "k": 5}).json()
    assert again["results"] == upload["results"] and again["image"] == image_id and again["removed"] == 0
    ids = [hit["chip_id"] for hit in again["results"]]
    refined = client.get("/api/search", params={"image": image_id, "k": 5, "positive": ids[2], "negative": ids[0]})
    expected = index.search(vector=index.embed_image(noise(7, 32, 24)), k=5, positive=[ids[2]], negative=[ids[0]])
    assert [hit["chip_id"] for hit in refined.json()["results"]] == [hit.chip_id for hit in expected]
    assert ids[0] not in [hit["chip_id"] for hit in refined.json()["results"]]
    geojson = client.get("/api/search", params={"image": image_id, "k": 5, "format": "geojson"}).json()
    assert [feature["id"] for feature in geojson["features"]] == ids and geojson["query"]["image"] == image_id
    shown = client.get(f"/api/query-images/{image_id}")
    assert shown.status_code == 200 and shown.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(shown.content)).size == (32, 24)  # small images are not enlarged

    for url, params in [("/api/search", {"image": "0123456789abcdef"}), ("/api/query-images/0123456789abcdef", {})]:
        response = client.get(url, params=params)
        assert response.status_code == 404
        assert response.json()["detail"].startswith("no query image 0123456789abcdef on this server")
    assert client.get("/api/search", params={"image": "../../etc"}).status_code == 422
    assert client.get("/api/search", params={"image": image_id, "q": "x"}).status_code == 400


def test_query_images_are_bounded_in_count_and_age():
    now = [0.0]
    store = QueryImages(capacity=2, max_age_s=60, clock=lambda: now[0])
    vector = np.ones(4, np.float32)
    first, second = store.add(b"a", vector, b"jpeg-a"), store.add(b"b", vector, b"jpeg-b")
    assert store.get(first).jpeg == b"jpeg-a"  # now the most recently used
    third = store.add(b"c", vector, b"jpeg-c")  # over capacity: the least recently used (second) goes
    assert len(store) == 2 and store.get(first) and store.get(third)
    with pytest.raises(UnknownQueryImageError, match="the last 2 of them"):
        store.get(second)
    now[0] = 59.0
    assert store.get(first).jpeg == b"jpeg-a"
    now[0] = 60.0  # a minute after it was uploaded, it is forgotten, used or not
    with pytest.raises(UnknownQueryImageError, match="kept for 1 minutes"):
        store.get(first)
    assert len(store) == 0  # the other one too
    assert store.add(b"a", vector, b"jpeg-a") == first and len(store) == 1  # uploading it again brings it back


def test_api_docs_are_served_from_local_assets(client):
    page = client.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?["']([^"']+)["']""", page.text)
    urls = [url for pair in assets for url in pair if url]
    assert sorted(urls) == ["/openapi.json", "/static/vendor/swagger-ui/favicon-32x32.png",
                            "/static/vendor/swagger-ui/swagger-ui-bundle.js",
                            "/static/vendor/swagger-ui/swagger-ui.css"]
    assert "validatorUrl" in page.text and "https://" not in page.text.replace("https://fastapi.tiangolo.com", "")
    for url in urls:
        assert client.get(url).status_code == 200, url
    assert client.get("/redoc").status_code == 404  # ReDoc would load its script from a CDN


def test_exact_copy_upload_ranks_first(index):
    image = noise(2, 64, 48)
    client = TestClient(create_app(index=index, max_upload_bytes=len(png_bytes(image))), base_url="http://localhost")
    hits = client.post("/api/search/image", files={"file": ("copy.png", png_bytes(image), "image/png")}).json()
    assert hits["results"][0]["path"] == "scene2.png"
    assert hits["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("size", [64, 400])  # caught in the handler, and by Content-Length before parsing
def test_oversized_upload_is_refused_with_413(client, size):
    data = png_bytes(noise(5, size, size))
    assert len(data) > MAX_UPLOAD
    response = client.post("/api/search/image", files={"file": ("big.png", data, "image/png")})
    assert response.status_code == 413
    assert str(MAX_UPLOAD) in response.json()["detail"]


def test_non_image_upload_is_refused_with_415_whatever_its_name(client):
    response = client.post("/api/search/image", files={"file": ("photo.png", b"GIF89a but not really", "image/png")})
    assert response.status_code == 415


def test_chip_metadata_and_thumbnail(client, index):
    geo_hit = next(hit for hit in index.search("x", k=20, rerank=False) if hit.path == "geo.tif")
    chip = client.get(f"/api/chips/{geo_hit.chip_id}").json()
    assert chip["crs"] == GEO_CRS and chip["bounds"] == pytest.approx(list(geo_hit.bounds))
    assert client.get(f"/api/chips/{geo_hit.chip_id}/thumbnail", params={"size": 64}).headers["content-type"] == \
        "image/jpeg"
    response = client.get(f"/api/chips/{geo_hit.chip_id}/thumbnail", params={"size": 128})
    thumbnail = Image.open(io.BytesIO(response.content))
    assert thumbnail.size == (128, 128)

    def luma_correlation(chip_id: int) -> float:
        chip = index.chip_image(index.chip(chip_id))
        return float(np.corrcoef(np.ravel(thumbnail.convert("L")), np.ravel(chip.convert("L")))[0, 1])

    # Full size, so it is the chip's pixels up to JPEG loss; another chip of the (noise) scene is uncorrelated.
    other_id = next(hit.chip_id for hit in index.search("x", k=20) if hit.path == "geo.tif" and
                    hit.chip_id != geo_hit.chip_id)
    assert luma_correlation(geo_hit.chip_id) > 0.8
    assert abs(luma_correlation(other_id)) < 0.2
    assert client.get(f"/api/chips/{geo_hit.chip_id}/thumbnail", params={"size": 128}).content == response.content
    assert client.get("/api/chips/999999").status_code == 404
    assert client.get("/api/chips/999999/thumbnail").status_code == 404


def test_file_preview_never_leaves_the_archive(client, index):
    ok = client.get("/api/files/preview", params={"path": "sub/scene3.png", "size": 32})
    assert ok.status_code == 200 and Image.open(io.BytesIO(ok.content)).size == (32, 24)
    for path in ["../secret.png", "sub/../../secret.png", "/etc/passwd", str(Path(index.root) / "scene0.png")]:
        response = client.get("/api/files/preview", params={"path": path})
        assert response.status_code == 404 and "not a relative path inside the archive" in response.json()["detail"]
    escape = client.get("/api/files/preview", params={"path": "escape.png"})  # a symlink out
    assert escape.status_code == 404 and "resolves outside the archive" in escape.json()["detail"]
    assert client.get("/api/files/preview", params={"path": "broken.jpg"}).status_code == 404  # not indexed
    assert client.get("/api/files/preview", params={"path": "missing.png"}).status_code == 404


def test_serve_command_reports_a_missing_index(tmp_path, capsys):
    from rsitr.cli import main

    assert main(["serve", str(tmp_path / "nowhere"), "--port", "0"]) == 2
    assert "nowhere not found" in capsys.readouterr().err
    (tmp_path / "folder").mkdir()
    assert main(["serve", str(tmp_path / "folder"), "--port", "0"]) == 2
    assert "not an rsitr index" in capsys.readouterr().err


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny real PNG whose IHDR (with a correct CRC) claims ``width x height``: decoding it would fail, so
    only a check made from the header, before decoding, can answer it."""
    data = bytearray(png_bytes(noise(1, 8, 8)))
    ihdr = data[12:29]  # chunk type + 13 bytes of data
    ihdr[4:12] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[12:29] = ihdr
    data[29:33] = zlib.crc32(bytes(ihdr)).to_bytes(4, "big")
    return bytes(data)


@pytest.mark.parametrize("width", [5_000, 13_000, 100_000])  # over the limit; the largest also over PIL's own bomb limit
def test_images_over_the_pixel_limit_are_refused_from_the_header(index, width):
    client = TestClient(create_app(index=index, max_pixels=1_000_000), base_url="http://localhost")
    response = client.post("/api/search/image", files={"file": ("bomb.png", png_header_claiming(width, width),
                                                                "image/png")})
    assert response.status_code == 413
    assert "bomb.png" in response.json()["detail"] and "\n" not in response.json()["detail"]
    small = client.post("/api/search/image", files={"file": ("ok.png", png_bytes(noise(7, 32, 24)), "image/png")})
    assert small.status_code == 200


def test_concurrent_image_encodings_are_bounded(index, monkeypatch):
    active, peak, lock = [0], [0], threading.Lock()
    original = index.embed_image

    def slow_embed(image, *args, **kwargs):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.2)
        with lock:
            active[0] -= 1
        return original(image, *args, **kwargs)

    monkeypatch.setattr(index, "embed_image", slow_embed)
    app = create_app(index=index, max_concurrent_images=2)

    def upload(seed: int) -> int:
        files = {"file": ("q.png", png_bytes(noise(seed, 32, 24)), "image/png")}
        return TestClient(app, base_url="http://localhost").post("/api/search/image", files=files).status_code

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(upload, range(6))) == [200] * 6
    assert peak[0] == 2


def test_client_input_never_gets_a_server_error(client):
    assert client.get("/api/files/preview", params={"path": "\0"}).status_code == 404
    assert client.get("/api/files/preview", params={"path": "scene0.png\0.txt"}).status_code == 404
    assert client.get("/api/files/preview", params={"path": "x" * 5000}).status_code == 422
    for chip_id in ["99999999999999999999", str(2**63), "-1"]:
        response = client.get(f"/api/chips/{chip_id}")
        assert response.status_code == 404 and chip_id in response.json()["detail"]
        assert client.get(f"/api/chips/{chip_id}/thumbnail").status_code == 404


def test_deleted_or_replaced_sources_answer_404_with_the_reason(tmp_path):
    root = make_archive(tmp_path / "archive", geotiff=False)
    index, _ = ArchiveIndex.build(tmp_path / "index", root, encoder=tiny_encoder(), progress=False,
                                  options=BuildOptions(**CHIP_SETTINGS))
    client = TestClient(create_app(index=index), base_url="http://localhost")
    chips = {hit.path: hit.chip_id for hit in index.search("x", k=20, rerank=False)}
    (root / "scene0.png").unlink()
    noise(9, 20, 20).save(root / "scene1.png")  # replaced by a smaller image: the chip window no longer fits
    for path, reason in [("scene0.png", "deleted"), ("scene1.png", "replaced")]:
        for url, params in [(f"/api/chips/{chips[path]}/thumbnail", {}), ("/api/files/preview", {"path": path})]:
            response = client.get(url, params=params)
            assert response.status_code == 404, (url, path)
            assert reason in response.json()["detail"] and path in response.json()["detail"]
    assert client.get(f"/api/chips/{chips['scene2.png']}/thumbnail").status_code == 200


def test_no_response_names_a_server_path(client, index):
    root = str(Path(index.root).resolve())
    assert client.get("/api/info").json()["root"] == Path(root).name
    responses = [client.get("/api/info"), client.get("/api/search", params={"q": "tanks", "k": 20}),
                 client.get("/api/files/preview", params={"path": "escape.png"}),
                 client.get("/api/files/preview", params={"path": "missing.png"}),
                 client.get("/api/files/preview", params={"path": "/etc/passwd"})]
    for response in responses:
        assert root not in response.text and str(Path(root).parent) not in response.text, response.request.url
