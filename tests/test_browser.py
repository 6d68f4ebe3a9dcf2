"""The web page in headless Chromium: type a query, submit, and see result thumbnails actually load.

Needs Debian's /usr/bin/chromium and the ``playwright`` Python package (no downloaded browser); skipped
otherwise. The server runs in a thread on 127.0.0.1, and the page is only allowed to reach it.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from rsitr.api.app import create_app
from rsitr.index import ArchiveIndex
from test_index_support import CHIP_SETTINGS, make_archive, tiny_encoder

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server_url(tmp_path: Path):
    import uvicorn

    root = make_archive(tmp_path / "archive")
    index, _ = ArchiveIndex.build(tmp_path / "index", root, encoder=tiny_encoder(), progress=False, **CHIP_SETTINGS)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(index=index), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the test server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_typed_query_shows_loaded_result_images(server_url):
    if not Path(CHROMIUM).is_file() and shutil.which("chromium") is None:
        pytest.skip(f"Chromium not found at {CHROMIUM} (Debian package `chromium`)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            outside = []
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(server_url)
                       else (outside.append(route.request.url), route.abort()))
            page.goto(server_url)
            page.fill("#query", "a harbour with boats")
            page.fill("#k", "10")  # every chip of the archive, so all 6 GeoTIFF chips are shown
            page.click("#text-form button")
            page.wait_for_function("document.querySelectorAll('#results img').length === 10 && "
                                   "[...document.querySelectorAll('#results img')].every(i => i.complete)",
                                   timeout=20_000)
            widths = page.eval_on_selector_all("#results img", "images => images.map(i => i.naturalWidth)")
            status = page.text_content("#status")
            captions = page.eval_on_selector_all("#results .coords", "nodes => nodes.map(n => n.textContent)")
        finally:
            browser.close()
    assert len(widths) == 10 and all(width > 0 for width in widths)
    assert status == "10 result(s)"
    assert len(captions) == 6 and all(caption.startswith("EPSG:32633: ") for caption in captions)
    assert outside == []
