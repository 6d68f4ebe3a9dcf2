"""The web service through FastAPI's TestClient: search, thumbnails, upload limits and path checks."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from rsitr.api.app import create_app
from rsitr.index import ArchiveIndex
from test_index_support import CHIP_SETTINGS, GEO_CRS, make_archive, noise, tiny_encoder

MAX_UPLOAD = 4000


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> ArchiveIndex:
    base = tmp_path_factory.mktemp("api")
    root = make_archive(base / "archive")
    (base / "secret.png").write_bytes(b"outside the archive")
    (root / "escape.png").symlink_to(base / "secret.png")
    index, _ = ArchiveIndex.build(base / "index", root, encoder=tiny_encoder(), progress=False, **CHIP_SETTINGS)
    return index


@pytest.fixture(scope="module")
def client(index) -> TestClient:
    return TestClient(create_app(index=index, max_upload_bytes=MAX_UPLOAD))


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


def test_text_search_matches_the_python_api(client, index):
    body = client.get("/api/search", params={"q": "storage tanks", "k": 4}).json()
    expected = index.search_text("storage tanks", k=4)
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


def test_exact_copy_upload_ranks_first(index):
    image = noise(2, 64, 48)
    client = TestClient(create_app(index=index, max_upload_bytes=len(png_bytes(image))))
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
    geo_hit = next(hit for hit in index.search_text("x", k=20, rerank=False) if hit.path == "geo.tif")
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
    other_id = next(hit.chip_id for hit in index.search_text("x", k=20) if hit.path == "geo.tif" and
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
        assert client.get("/api/files/preview", params={"path": path}).status_code == 400, path
    assert client.get("/api/files/preview", params={"path": "escape.png"}).status_code == 400  # symlink out
    assert client.get("/api/files/preview", params={"path": "broken.jpg"}).status_code == 404  # not indexed
    assert client.get("/api/files/preview", params={"path": "missing.png"}).status_code == 404


def test_serve_command_reports_a_missing_index(tmp_path, capsys):
    from rsitr.cli import main

    assert main(["serve", str(tmp_path / "nowhere"), "--port", "0"]) == 2
    assert "not an rsitr index" in capsys.readouterr().err
