"""The hostile suite: what an attacker or a careless user tries, with generated files and loopback only.

Each test keeps one break of issue 22 fixed: decompression bombs in TIFF tiles and strips, chunked bodies
without a Content-Length, forged Host headers, corrupt or full index files, bad caption files, training
interrupted before its first checkpoint, a moved images folder and stale search results.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rsitr.api.app import create_app, host_name
from rsitr.index import ArchiveIndex
from rsitr.index.archive import ImageTooLargeError, decode_image, open_scene
from test_index_support import CHIP_SETTINGS, declared_tiff, make_archive, tiny_encoder

MAX_UPLOAD = 4000
TILE_BOMBS = {"one 32768 x 32768 tile": {"tile": (32768, 32768)},
              "three 16-bit bands in 8192 x 8192 tiles": {"tile": (8192, 8192), "samples": 3, "bits": 16},
              "a 6000 x 6000 strip of 16-bit RGBA": {"rows_per_strip": 6000, "samples": 4, "bits": 16}}


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> ArchiveIndex:
    base = tmp_path_factory.mktemp("hostile")
    root = make_archive(base / "archive")
    index, _ = ArchiveIndex.build(base / "index", root, encoder=tiny_encoder(), progress=False, **CHIP_SETTINGS)
    return index


@pytest.fixture(scope="module")
def client(index) -> TestClient:
    return TestClient(create_app(index=index, max_upload_bytes=MAX_UPLOAD), base_url="http://localhost")


def bomb(name: str) -> bytes:
    settings = TILE_BOMBS[name]
    side = 6000 if "rows_per_strip" in settings else 64
    return declared_tiff(side, side, **settings)


# -- decompression bombs ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TILE_BOMBS)
def test_a_tiff_declaring_a_huge_tile_or_strip_is_refused_413_from_its_header(client, name):
    data = bomb(name)
    assert len(data) < 200
    with pytest.raises(ImageTooLargeError, match="declares a .* over the decoding limit"):
        decode_image(data, "bomb.tif", 40_000_000)
    answer = client.post("/api/search/image", files={"file": ("bomb.tif", data, "image/tiff")})
    assert answer.status_code == 413 and "decoding limit" in answer.json()["detail"]


@pytest.mark.parametrize("name", TILE_BOMBS)
def test_a_tiff_bomb_in_the_archive_is_refused_by_rasterio_too(tmp_path, name):
    path = tmp_path / "bomb.tif"
    path.write_bytes(bomb(name))
    with pytest.raises(ImageTooLargeError, match="block"):
        with open_scene(path):
            pass


def test_refusing_a_tile_bomb_allocates_nothing(tmp_path):
    # The peak resident size of a fresh process, before and after decoding a 1 GiB tile bomb (the break cost 1 GB).
    path = tmp_path / "bomb.tif"
    path.write_bytes(bomb("one 32768 x 32768 tile"))
    script = (f"import resource; from rsitr.index.archive import decode_image, ImageTooLargeError\n"
              f"before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              f"try: decode_image(open({str(path)!r}, 'rb').read(), 'bomb.tif', 40_000_000)\n"
              f"except ImageTooLargeError: pass\n"
              f"print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)")
    grown_mib = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                                   cwd=Path(__file__).parent.parent).stdout)
    assert grown_mib < 50


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_ordinary_tiled_tiffs_still_decode(tmp_path):
    import numpy as np
    import rasterio

    path = tmp_path / "tiled.tif"
    with rasterio.open(path, "w", driver="GTiff", width=300, height=200, count=3, dtype="uint8", tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate") as dataset:
        dataset.write((np.arange(3 * 200 * 300) % 251).astype(np.uint8).reshape(3, 200, 300))
    with open_scene(path, 40_000_000) as scene:
        assert (scene.width, scene.height) == (300, 200)
    assert decode_image(path.read_bytes(), "tiled.tif", 40_000_000).size == (300, 200)


# -- request bodies ---------------------------------------------------------------------------------------
class _BytesRead:
    """ASGI wrapper counting the request body bytes the app took from the server."""

    def __init__(self, app) -> None:
        self.app, self.count = app, 0

    async def __call__(self, scope, receive, send) -> None:
        async def counted():
            message = await receive()
            self.count += len(message.get("body", b""))
            return message

        await self.app(scope, counted, send)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_chunked_body_without_content_length_is_refused_at_the_limit(index):
    import uvicorn

    app = _BytesRead(create_app(index=index, max_upload_bytes=MAX_UPLOAD))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive()
        time.sleep(0.05)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.putrequest("POST", "/api/search/image")
        connection.putheader("Content-Type", "multipart/form-data; boundary=x")
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        chunk = b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"q.png\"\r\n\r\n" + bytes(65_000)
        status = None
        try:
            for _ in range(32):  # 2 MB: it fits the socket buffers, so sending never waits for the server
                connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            status = connection.getresponse().status
        except (ConnectionResetError, BrokenPipeError):
            pass  # the server answered and closed while the client was still sending
        chunk_size = 65_536  # uvicorn reads the socket in pieces of at most this
        assert app.count <= MAX_UPLOAD + 64 * 2**10 + chunk_size
        assert status in (413, None)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


# -- Host header ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("header, expected", [("localhost:8000", "localhost"), ("[::1]:8000", "::1"),
                                              ("Example.ORG.", "example.org"), ("127.0.0.1", "127.0.0.1"),
                                              ("[::1", ""), ("::1", "::1")])
def test_host_names_are_read_without_port_case_or_final_dot(header, expected):
    assert host_name(header) == expected


def test_a_forged_host_header_is_refused_and_allowed_names_are_served(index):
    client = TestClient(create_app(index=index, allowed_hosts=["127.0.0.1", "localhost", "::1", "archive.lan"]),
                        base_url="http://localhost")
    assert client.get("/api/info", headers={"Host": "attacker.example"}).status_code == 400
    assert "--allowed-host" in client.get("/api/search?q=x", headers={"Host": "attacker.example"}).json()["detail"]
    for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000", "ARCHIVE.lan"):
        assert client.get("/api/info", headers={"Host": host}).status_code == 200, host
    anyone = TestClient(create_app(index=index, allowed_hosts=["*"]), base_url="http://attacker.example")
    assert anyone.get("/api/info").status_code == 200


def test_serve_allows_the_bound_address_localhost_and_allowed_hosts(monkeypatch, tmp_path):
    import uvicorn

    from rsitr.cli import main
    import rsitr.api.app as api

    seen = {}
    monkeypatch.setattr(api, "create_app", lambda *args, **kwargs: seen.update(kwargs) or "app")
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: None)
    assert main(["serve", str(tmp_path), "--host", "10.0.0.5", "--allowed-host", "archive.lan"]) == 0
    assert set(seen["allowed_hosts"]) == {"10.0.0.5", "127.0.0.1", "localhost", "::1", "archive.lan"}
