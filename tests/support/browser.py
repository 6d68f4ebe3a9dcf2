"""The headless Chromium the page tests drive (skipped without Chromium or playwright), a server in a thread."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from rsitr.api.app import create_app
from rsitr.index import ArchiveIndex

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(index: ArchiveIndex, port: int | None = None, **options) -> Iterator[str]:
    """``rsitr serve`` on ``index`` in a thread on ``port`` (None: a free local one; ``options``: :func:`create_app`'s);
    yields its URL."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(index=index, **options), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file() and shutil.which("chromium") is None:
        pytest.skip(f"Chromium not found at {CHROMIUM} (Debian package `chromium`)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@contextmanager
def confined_page(browser, server_url: str, **context_options) -> Iterator:
    """A fresh page that may only reach the test server (requests elsewhere are aborted and listed)."""
    context = browser.new_context(accept_downloads=True, **context_options)
    page = context.new_page()
    page.outside = []
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(server_url)
               else (page.outside.append(route.request.url), route.abort()))
    yield page
    context.close()
    assert page.outside == []
