"""The web page in headless Chromium: search, shared URLs, chip detail, more like this, feedback, map, export.

Needs Debian's /usr/bin/chromium and the ``playwright`` Python package (no downloaded browser); skipped
otherwise. The server runs in a thread on 127.0.0.1, and the page is only allowed to reach it.
"""

from __future__ import annotations

import json
import os
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
from test_index_support import build_test_index

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> ArchiveIndex:
    return build_test_index(tmp_path_factory.mktemp("browser"))


@contextmanager
def serving(index: ArchiveIndex) -> Iterator[str]:
    """``rsitr serve`` on ``index`` in a thread on a free local port; yields its URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(index=index), host="127.0.0.1", port=port, log_level="warning"))
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
def server_url(index):
    with serving(index) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file() and shutil.which("chromium") is None:
        pytest.skip(f"Chromium not found at {CHROMIUM} (Debian package `chromium`)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server_url):
    with confined_page(browser, server_url) as page:
        yield page


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


def shown_ids(page) -> list[int]:
    page.wait_for_function("document.querySelectorAll('#results img').length > 0 && "
                           "[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth)",
                           timeout=20_000)
    return page.eval_on_selector_all("#results figure", "nodes => nodes.map(n => Number(n.dataset.chipId))")


def wait_for_new_results(page, before: str) -> None:
    page.wait_for_function("s => !['', s].includes(document.querySelector('#status').textContent)", arg=before,
                           timeout=20_000)


def test_query_url_detail_more_like_this_and_map(page, server_url, index):
    page.goto(server_url)
    page.wait_for_function("document.querySelector('#index-info').textContent.includes('chips')")
    assert page.text_content("#index-info") == (f"index · 5 files · 10 chips · model {index.encoder.model_name} · "
                                                "exact index")
    page.fill("#query", "a harbour with boats")
    page.fill("#k", "10")  # every chip of the archive, so all 6 GeoTIFF chips are shown
    page.click("#text-form button")
    ids = shown_ids(page)
    assert ids == [hit.chip_id for hit in index.search_text("a harbour with boats", k=10)]
    assert page.text_content("#status") == "10 results for “a harbour with boats”."
    coords = page.eval_on_selector_all("#results .coords", "nodes => nodes.map(n => n.textContent)")
    assert len(coords) == 6 and all(text.startswith("EPSG:32633: ") for text in coords)
    # the map: one footprint per georeferenced hit, hovering a card highlights its footprint
    footprints = page.eval_on_selector_all("#map path.footprint", "paths => paths.map(p => Number(p.dataset.chipId))")
    geo_ids = [chip_id for chip_id, hit in zip(ids, index.search_text("a harbour with boats", k=10)) if hit.bounds]
    assert sorted(footprints) == sorted(geo_ids)
    assert page.locator("#map img.leaflet-image-layer").count() == 6
    page.hover(f"#results figure[data-chip-id='{geo_ids[0]}']")
    assert page.eval_on_selector_all("#map path.footprint.highlight", "p => p.map(x => Number(x.dataset.chipId))") \
        == [geo_ids[0]]

    # the URL carries the search: a pasted link shows the same results
    shared = page.url
    assert "q=a+harbour+with+boats" in shared and "k=10" in shared
    other = page.context.new_page()
    other.goto(shared)
    assert shown_ids(other) == ids and other.input_value("#query") == "a harbour with boats"
    other.close()

    # the detail of a GeoTIFF chip, then "more like this" from it; back returns to the text results
    page.click(f"#results figure[data-chip-id='{geo_ids[0]}'] img")
    page.wait_for_function("document.querySelector('#detail').open && "
                           "!document.querySelector('#scene-outline').hidden")
    facts = page.text_content("#detail-facts")
    assert "geo.tif" in facts and "EPSG:32633" in facts and "global (cosine)" in facts
    outline = page.eval_on_selector("#scene-outline", "e => [e.style.width, e.style.height].map(parseFloat)")
    assert outline == pytest.approx([100 * 128 / 300, 100 * 128 / 200], abs=1e-3)  # a 128 px chip of a 300 x 200 scene
    before = page.text_content("#status")
    page.click("#detail-like")
    wait_for_new_results(page, before)
    like_ids = shown_ids(page)
    assert f"like={geo_ids[0]}" in page.url
    assert like_ids == [hit.chip_id for hit in index.search(like=geo_ids[0], k=10)] and like_ids != ids
    assert like_ids[0] == geo_ids[0]
    before = page.text_content("#status")
    page.go_back()
    wait_for_new_results(page, before)
    assert page.input_value("#query") == "a harbour with boats"
    assert shown_ids(page) == ids


def test_feedback_refines_and_export_downloads_geojson(page, server_url, index, tmp_path):
    page.goto(f"{server_url}/?q=storage+tanks&k=10")
    ids = shown_ids(page)
    page.click(f"#results figure[data-chip-id='{ids[-1]}'] .mark-wanted")
    page.click(f"#results figure[data-chip-id='{ids[0]}'] .mark-unwanted")
    assert page.text_content("#marks") == "1 wanted, 1 not wanted"
    before = page.text_content("#status")
    page.click("#refine")
    wait_for_new_results(page, before)
    refined = shown_ids(page)
    expected = index.search("storage tanks", k=10, positive=[ids[-1]], negative=[ids[0]])
    assert refined == [hit.chip_id for hit in expected] and refined != ids
    assert f"positive={ids[-1]}" in page.url and f"negative={ids[0]}" in page.url
    assert page.get_attribute(f"#results figure[data-chip-id='{ids[-1]}'] .mark-wanted", "aria-pressed") == "true"

    with page.expect_download() as download:
        page.click("#export-geojson")
    path = tmp_path / "results.geojson"
    download.value.save_as(path)
    collection = json.loads(path.read_text())
    assert collection["type"] == "FeatureCollection"
    assert [feature["id"] for feature in collection["features"]] == refined
    assert sum(feature["geometry"] is not None for feature in collection["features"]) == 6
    pyogrio = pytest.importorskip("pyogrio", reason="pyogrio is not installed: the checks above must do")
    assert pyogrio.read_info(path)["features"] == 10


def test_errors_and_slow_searches_are_sentences(page, server_url):
    page.add_init_script("""{ const fetch = window.fetch;  // every search answers 800 ms late
        window.fetch = (url, ...rest) => String(url).startsWith('/api/search')
            ? new Promise(done => setTimeout(() => done(fetch(url, ...rest)), 800)) : fetch(url, ...rest); }""")
    page.goto(f"{server_url}/?like=999")
    page.wait_for_selector("#spinner:not([hidden])", timeout=5_000)
    page.wait_for_function("document.querySelector('#status').classList.contains('error')", timeout=20_000)
    status = page.text_content("#status")
    assert status.startswith("The search failed: no chip 999 in this index") and "{" not in status
    assert page.is_hidden("#spinner") and page.locator("#results figure").count() == 0


def test_no_results_and_index_being_built_are_sentences(page, server_url):
    info = {"name": "scenes.index", "model": "m", "pretrained": None, "files": 40, "incomplete_files": 30,
            "chips": 10, "settings": {"index_type": "flat"}}
    page.route("**/api/info", lambda route: route.fulfill(json=info))
    page.route("**/api/search?*", lambda route: route.fulfill(json={"results": []}))
    page.goto(f"{server_url}/?q=volcano")
    page.wait_for_function("document.querySelector('#status').textContent !== ''")
    assert page.text_content("#status") == "No chips match this search (for “volcano”). Try other words or fewer marks."
    page.wait_for_selector("#notice:not([hidden])")
    assert page.text_content("#notice") == ("This index is still being built: 10 of 40 files (10 chips) are indexed so "
                                            "far; the new chips become searchable when the indexing run finishes.")


RSICD_QUERY = "many planes are parked near the airport terminal"
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "search_page_rsicd.png"


@pytest.fixture(scope="module")
def rsicd_index(shared_data, tmp_path_factory) -> Iterator[ArchiveIndex]:
    """The shipped ``rsitr-small-rsicd`` indexing the 1,093 RSICD test images (real data: skipped without it)."""
    import warnings

    from rsitr.data import load_corpus
    from rsitr.models.pretrained import packaged_tags

    packaged = packaged_tags().get("rsitr-small-rsicd")
    if packaged is None:
        pytest.skip("this installation ships no rsitr-small-rsicd weights")
    rsicd = shared_data / "rsicd"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RSICD's 3 empty captions
        test = load_corpus(rsicd / "dataset_rsicd.json", rsicd / "images", name="rsicd").split("test")
    base = tmp_path_factory.mktemp("rsicd")
    (base / "images").mkdir()
    for record in test.images:  # copies: the archive scanner does not follow links out of the folder
        shutil.copyfile(record.path, base / "images" / record.path.name)
    index, _ = ArchiveIndex.build(base / "index", base / "images", packaged.model, "rsitr-small-rsicd",
                                  progress=False)
    yield index
    index.close()


def test_a_real_query_on_rsicd_with_the_shipped_model(browser, rsicd_index, tmp_path):
    """The README's screenshot: a real query, one result marked wanted and one not, refined.

    ``RSITR_UPDATE_SCREENSHOT=1`` writes it to docs/search_page_rsicd.png (1200 px wide, 128 colours)."""
    with serving(rsicd_index) as url:
        with confined_page(browser, url, viewport={"width": 1400, "height": 900}) as page:
            page.goto(f"{url}/?q={RSICD_QUERY.replace(' ', '+')}&k=15")
            ids = shown_ids(page)
            scenes = [Path(hit.path).stem.rsplit("_", 1)[0] for hit in rsicd_index.search_text(RSICD_QUERY, k=15)]
            # the shipped model finds airports: 15 random test images hold 0.6 of them (42 of 1,093)
            assert scenes.count("airport") >= 5, scenes
            wanted = ids[scenes.index("airport")]
            unwanted = ids[max(i for i, scene in enumerate(scenes) if scene != "airport")]
            page.click(f"#results figure[data-chip-id='{wanted}'] .mark-wanted")
            page.click(f"#results figure[data-chip-id='{unwanted}'] .mark-unwanted")
            before = page.text_content("#status")
            page.click("#refine")
            wait_for_new_results(page, before)
            refined = shown_ids(page)
            assert refined == [hit.chip_id for hit in rsicd_index.search(RSICD_QUERY, k=15, positive=[wanted],
                                                                           negative=[unwanted])]
            assert unwanted not in refined[:5]
            shot = tmp_path / "search_page.png"
            page.screenshot(path=str(shot))
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    assert image.size == (1400, 900)
    if os.environ.get("RSITR_UPDATE_SCREENSHOT") == "1":
        image.resize((1200, 1200 * image.height // image.width), Image.LANCZOS).quantize(128).save(
            SCREENSHOT, optimize=True)
