"""The web page in headless Chromium: search, shared URLs, chip detail, more like this, feedback, map, export.

Needs Debian's /usr/bin/chromium and the ``playwright`` Python package (no downloaded browser); skipped
otherwise. The server runs in a thread on 127.0.0.1, and the page is only allowed to reach it.
The page's Content-Security-Policy holds in the tests too (no unsafe-eval): waits are given as functions, which
Playwright compiles once, not as expressions it evaluates from a string on every poll.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from rsitr.index import ArchiveIndex, BuildOptions
from rsitr.index.find_all import format_probability
from support.index import build_far_index, build_test_index
from support import REPO
from support.browser import browser, confined_page, serving  # noqa: F401 - browser is a fixture

@pytest.fixture(scope="module")
def index(tmp_path_factory) -> ArchiveIndex:
    return build_test_index(tmp_path_factory.mktemp("browser"))


@pytest.fixture(scope="module")
def server_url(index):
    with serving(index) as url:
        yield url


@pytest.fixture
def page(browser, server_url):
    with confined_page(browser, server_url) as page:
        yield page


def shown_ids(page) -> list[int]:
    page.wait_for_function("() => document.querySelectorAll('#results img').length > 0 && "
                           "[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth)",
                           timeout=20_000)
    return page.eval_on_selector_all("#results figure", "nodes => nodes.map(n => Number(n.dataset.chipId))")


def handle_of(index: ArchiveIndex, chip_id: int) -> str:
    """The chip's handle (what the page names it by: ids are an index's own, handles outlive a re-index)."""
    record = index.chip(chip_id)
    window = record.window
    return record.path if record.whole_image else f"{record.path}:{window.width}x{window.height}+{window.x}+{window.y}"


def handle_param(index: ArchiveIndex, chip_id: int) -> str:
    """:func:`handle_of` as the page's URL holds it (URL-encoded)."""
    from urllib.parse import quote_plus

    return quote_plus(handle_of(index, chip_id))


def wait_for_new_results(page, before: str, timeout: int = 20_000) -> None:
    page.wait_for_function("s => !['', s].includes(document.querySelector('#status').textContent)", arg=before,
                           timeout=timeout)


def test_query_url_detail_more_like_this_and_map(page, server_url, index):
    page.goto(server_url)
    page.wait_for_function("() => document.querySelector('#index-info').textContent.includes('chips')")
    assert page.text_content("#index-info") == (f"index · 5 files · 10 chips · model {index.encoder.model_name} · "
                                                "exact index")
    page.fill("#query", "a harbour with boats")
    page.fill("#k", "10")  # every chip of the archive, so all 6 GeoTIFF chips are shown
    page.click("#text-form button")
    ids = shown_ids(page)
    assert ids == [hit.chip_id for hit in index.search("a harbour with boats", k=10)]
    assert page.text_content("#status") == "10 results for “a harbour with boats”."
    coords = page.eval_on_selector_all("#results .coords", "nodes => nodes.map(n => n.textContent)")
    assert len(coords) == 6 and all(text.startswith("EPSG:32633: ") for text in coords)
    # the map: one footprint per georeferenced hit, hovering a card highlights its footprint
    footprints = page.eval_on_selector_all("#map path.footprint", "paths => paths.map(p => Number(p.dataset.chipId))")
    geo_ids = [chip_id for chip_id, hit in zip(ids, index.search("a harbour with boats", k=10)) if hit.bounds]
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
    page.wait_for_function("() => document.querySelector('#detail').open && "
                           "!document.querySelector('#scene-outline').hidden")
    facts = page.text_content("#detail-facts")
    assert "geo.tif" in facts and "EPSG:32633" in facts and "global (cosine)" in facts
    outline = page.eval_on_selector("#scene-outline", "e => [e.style.width, e.style.height].map(parseFloat)")
    assert outline == pytest.approx([100 * 128 / 300, 100 * 128 / 200], abs=1e-3)  # a 128 px chip of a 300 x 200 scene
    before = page.text_content("#status")
    page.click("#detail-like")
    wait_for_new_results(page, before)
    like_ids = shown_ids(page)
    assert f"like={handle_param(index, geo_ids[0])}" in page.url  # "geo.tif%3A128x128%2B..."
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
    assert ids[0] not in refined and len(refined) == 9 and expected.removed == 1  # 10 chips, 1 not wanted
    assert page.text_content("#status") == ("9 results for “storage tanks”, refined by 1 wanted and 1 not wanted "
                                            "(1 not-wanted chip removed).")
    assert f"positive={handle_param(index, ids[-1])}" in page.url
    assert f"negative={handle_param(index, ids[0])}" in page.url
    # the bar counts the marks of the chips shown; the removed one apart
    assert page.text_content("#marks") == "1 wanted, 1 not wanted (1 not wanted left out of the results)"
    assert page.get_attribute(f"#results figure[data-chip-id='{ids[-1]}'] .mark-wanted", "aria-pressed") == "true"

    with page.expect_download() as download:
        page.click("#export-geojson")
    path = tmp_path / "results.geojson"
    download.value.save_as(path)
    collection = json.loads(path.read_text())
    assert collection["type"] == "FeatureCollection"
    assert collection["query"] == {"q": "storage tanks", "positive": [handle_of(index, ids[-1])],
                                   "negative": [handle_of(index, ids[0])]}  # the page's handles, as given
    assert [feature["id"] for feature in collection["features"]] == refined
    assert sum(feature["geometry"] is not None for feature in collection["features"]) == \
        sum(hit.bounds is not None for hit in expected)
    pyogrio = pytest.importorskip("pyogrio", reason="pyogrio is not installed: the checks above must do")
    assert pyogrio.read_info(path)["features"] == 9


def test_errors_and_slow_searches_are_sentences(page, server_url):
    page.add_init_script("""{ const fetch = window.fetch;  // every search answers 800 ms late
        window.fetch = (url, ...rest) => String(url).startsWith('/api/search')
            ? new Promise(done => setTimeout(() => done(fetch(url, ...rest)), 800)) : fetch(url, ...rest); }""")
    page.goto(f"{server_url}/?like=999")
    page.wait_for_selector("#spinner:not([hidden])", timeout=5_000)
    page.wait_for_function("() => document.querySelector('#status').classList.contains('error')", timeout=20_000)
    status = page.text_content("#status")
    assert status.startswith("The search failed: no chip 999 in this index") and "{" not in status
    assert page.is_hidden("#spinner") and page.locator("#results figure").count() == 0


def test_no_results_and_index_being_built_are_sentences(page, server_url):
    info = {"name": "scenes.index", "model": "m", "pretrained": None, "files": 40, "incomplete_files": 30,
            "chips": 10, "settings": {"index_type": "flat"}}
    page.route("**/api/info", lambda route: route.fulfill(json=info))
    page.route("**/api/search?*", lambda route: route.fulfill(json={"results": []}))
    page.goto(f"{server_url}/?q=volcano")
    page.wait_for_function("() => document.querySelector('#status').textContent !== ''")
    assert page.text_content("#status") == "No chips match this search (for “volcano”). Try other words or fewer marks."
    page.wait_for_selector("#notice:not([hidden])")
    assert page.text_content("#notice") == ("This index is still being built: 10 of 40 files (10 chips) are indexed so "
                                            "far; the new chips become searchable when the indexing run finishes.")


def test_api_docs_render_offline(page, server_url):
    page.goto(f"{server_url}/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=20_000)
    paths = page.eval_on_selector_all(".opblock-summary-path", "nodes => nodes.map(n => n.dataset.path)")
    assert "/api/search" in paths and "/api/search/image" in paths and "/api/query-images/{image_id}" in paths
    # confined_page checks on leaving that nothing outside the server was asked for (no CDN, no validator)


def test_an_image_query_lives_in_the_url_and_shows_the_image(page, server_url, index, tmp_path):
    from support.index import noise

    query = tmp_path / "example.png"
    noise(2, 64, 48).save(query)  # a copy of scene2.png
    image_id = hashlib.sha256(query.read_bytes()).hexdigest()[:16]
    expected = [hit.chip_id for hit in index.search_image(query, k=10)]
    page.goto(f"{server_url}/?q=a+harbour&k=10")
    shown_ids(page)
    page.set_input_files("#image", str(query))
    before = page.text_content("#status")
    page.click("#image-form button")
    wait_for_new_results(page, before)
    assert shown_ids(page) == expected
    assert page.url == f"{server_url}/?image={image_id}&k=10"
    assert page.input_value("#query") == ""  # the old text is gone
    assert page.text_content("#status") == "10 results like the example image."
    page.wait_for_function("() => document.querySelector('#query-image-img').naturalWidth === 64")
    assert page.is_visible("#query-image") and page.is_visible("#exports")

    # reload and a pasted link give the same results and show the image; so does the export
    page.reload()
    assert shown_ids(page) == expected
    page.wait_for_function("() => document.querySelector('#query-image-img').naturalWidth === 64")
    other = page.context.new_page()
    other.goto(f"{server_url}/?image={image_id}&k=10")
    assert shown_ids(other) == expected and other.is_visible("#query-image")
    other.close()
    with page.expect_download() as download:
        page.click("#export-csv")
    rows = download.value.path().read_text().splitlines()[1:]
    assert [int(row.split(",")[1]) for row in rows] == expected

    # refine: the not-wanted chip is removed, the image stays the query
    page.click(f"#results figure[data-chip-id='{expected[4]}'] .mark-wanted")
    page.click(f"#results figure[data-chip-id='{expected[1]}'] .mark-unwanted")
    before = page.text_content("#status")
    page.click("#refine")
    wait_for_new_results(page, before)
    refined = index.search(vector=index.embed_image(query), k=10, positive=[expected[4]], negative=[expected[1]])
    assert shown_ids(page) == [hit.chip_id for hit in refined] and expected[1] not in shown_ids(page)
    assert f"image={image_id}" in page.url and page.is_visible("#query-image")
    assert page.text_content("#status") == ("9 results like the example image, refined by 1 wanted and 1 not wanted "
                                            "(1 not-wanted chip removed).")

    # a text search hides the image again; an id the server does not keep (any longer) is a sentence
    before = page.text_content("#status")
    page.fill("#query", "a harbour")
    page.click("#text-form button")
    wait_for_new_results(page, before)
    assert page.is_hidden("#query-image") and "image=" not in page.url
    page.goto(f"{server_url}/?image=0123456789abcdef")
    page.wait_for_function("() => document.querySelector('#status').classList.contains('error')", timeout=20_000)
    assert page.text_content("#status").startswith("The search failed: no query image 0123456789abcdef on this server")


def test_more_results_pages_on_and_keeps_the_marks(page, server_url, index):
    page.goto(f"{server_url}/?q=storage+tanks&k=4")
    first = shown_ids(page)
    page.click(f"#results figure[data-chip-id='{first[2]}'] .mark-wanted")  # marked, not applied yet
    for k, shown in [(8, 8), (12, 10)]:  # 4 more each time; the index holds 10 chips
        before = page.text_content("#status")
        page.click("#more")
        wait_for_new_results(page, before)
        ids = shown_ids(page)
        assert len(ids) == shown and ids[:4] == first
        assert ids == [hit.chip_id for hit in index.search("storage tanks", k=k)] and f"k={k}" in page.url
    assert page.is_hidden("#more")  # fewer than asked: every chip is shown
    assert page.get_attribute(f"#results figure[data-chip-id='{first[2]}'] .mark-wanted", "aria-pressed") == "true"
    page.reload()
    assert shown_ids(page) == ids


def test_the_detail_explains_the_score(page, server_url, index):
    hits = index.search("storage tanks", k=3)
    page.goto(f"{server_url}/?q=storage+tanks&k=3")
    shown_ids(page)
    page.wait_for_function("() => document.querySelector('#index-info').textContent.includes('chips')")
    hit = hits[1]
    page.click(f"#results figure[data-chip-id='{hit.chip_id}'] img")
    page.wait_for_function("() => document.querySelector('#detail').open")
    rows = dict(page.eval_on_selector_all("#detail-facts tr", "rows => rows.map(r => [r.cells[0].textContent, "
                                                                    "r.cells[1].textContent])"))
    assert rows["fused"] == (f"0.6 × {hit.global_score:.4f} + 0.4 × {hit.local_score:.4f} = {hit.score:.4f}")
    assert hit.score == pytest.approx(0.6 * hit.global_score + 0.4 * hit.local_score, abs=1e-5)
    assert rows["global (cosine)"].startswith(f"{hit.global_score:.4f}: ") and "from −1 to 1" in rows["global (cosine)"]
    assert "not bounded by 1" in page.text_content("#detail-scores")
    before = page.text_content("#status")
    page.click("#detail-like")  # more like this ranks by the global cosine alone: the score is that cosine
    wait_for_new_results(page, before)
    first = shown_ids(page)[0]
    page.click(f"#results figure[data-chip-id='{first}'] img")
    page.wait_for_function("() => document.querySelector('#detail').open")
    assert "fused" not in page.text_content("#detail-facts")
    assert "global cosine alone" in page.text_content("#detail-scores")


@pytest.fixture(scope="module")
def far_index(tmp_path_factory) -> Iterator[ArchiveIndex]:
    index = build_far_index(tmp_path_factory.mktemp("far"))
    yield index
    index.close()


def numbers(text: str) -> list[float]:
    return [float(value) for value in text.split(": ", 1)[1].replace(" – ", ", ").split(", ")]


def test_the_map_fits_far_apart_hits_marks_tiny_footprints_and_prints_every_digit(browser, far_index):
    hits = [hit for hit in far_index.search("a field", k=3) if hit.bounds]
    with serving(far_index) as url, confined_page(browser, url, viewport={"width": 1400, "height": 900}) as page:
        page.goto(f"{url}/?q=a+field&k=3")
        ids = shown_ids(page)
        page.wait_for_selector("#map path.footprint-marker")
        # both footprints are 38 m across, 70 km apart: fitted to the hits, each is a marker on the map
        box = page.locator("#map").bounding_box()
        markers = {int(page.locator("#map path.footprint-marker").nth(i).get_attribute("data-chip-id")):
                   page.locator("#map path.footprint-marker").nth(i).bounding_box() for i in range(2)}
        assert sorted(markers) == sorted(hit.chip_id for hit in hits)
        for marker in markers.values():
            assert marker["width"] >= 12 and marker["height"] >= 12
            assert box["x"] <= marker["x"] and marker["x"] + marker["width"] <= box["x"] + box["width"]
            assert box["y"] <= marker["y"] and marker["y"] + marker["height"] <= box["y"] + box["height"]
        xs = sorted(marker["x"] for marker in markers.values())
        assert xs[1] - xs[0] > 0.6 * box["width"]  # the view spans the hits, not the world
        # hover both ways: card -> marker, marker -> card
        page.hover(f"#results figure[data-chip-id='{hits[0].chip_id}']")
        highlighted = page.eval_on_selector_all("#map path.highlight", "p => p.map(x => [x.classList[0], "
                                                                       "Number(x.dataset.chipId)])")
        assert sorted(highlighted) == [["footprint", hits[0].chip_id], ["footprint-marker", hits[0].chip_id]]
        page.hover(f"#map path.footprint-marker[data-chip-id='{hits[1].chip_id}']", force=True)
        assert page.eval_on_selector_all("#results figure.highlight", "f => f.map(x => Number(x.dataset.chipId))") \
            == [hits[1].chip_id]
        # every digit of the bounds, in the cards and the detail (native and WGS84)
        coords = page.eval_on_selector_all("#results .coords", "nodes => nodes.map(n => n.textContent)")
        assert [numbers(text) for text in coords] == [list(hit.bounds) for hit in far_index.search("a field", k=3)
                                                      if hit.bounds]
        assert any(len(text) > 60 for text in coords)  # e.g. 412345.678 and 5818765.4321: nothing rounded
        page.click(f"#results figure[data-chip-id='{hits[0].chip_id}'] img")
        page.wait_for_function("() => document.querySelector('#detail').open")
        rows = dict(page.eval_on_selector_all("#detail-facts tr", "rows => rows.map(r => [r.cells[0].textContent, "
                                                                        "r.cells[1].textContent])"))
        details = far_index.chip_details(hits[0].chip_id)
        assert numbers(rows["bounds"]) == list(details["bounds"])
        assert numbers(rows["WGS84"]) == list(details["wgs84_bounds"])
        page.keyboard.press("Escape")

        # one hit alone fills the view: its footprint is large, so no marker is drawn
        page.goto(f"{url}/?like={hits[0].chip_id}&k=1")
        page.wait_for_selector("#map path.footprint")
        assert page.locator("#map path.footprint").bounding_box()["width"] > 300
        assert page.locator("#map path.footprint-marker").count() == 0
        assert ids  # the text search showed results above


@pytest.mark.parametrize("width", [360, 390, 1280, 1400])
def test_the_page_fits_phone_and_desktop_widths(browser, server_url, width):
    with confined_page(browser, server_url, viewport={"width": width, "height": 800}) as page:
        page.goto(f"{server_url}/?q=a+harbour&k=10")
        shown_ids(page)
        if width < 800:  # results and map are tabs at the top: the map is one tap away, not below the results
            tabs = page.locator("#view-tabs").bounding_box()
            assert page.is_hidden("#map") and tabs["y"] + tabs["height"] <= 800
            page.click("#tab-map")
            assert page.is_hidden("#results") and page.get_attribute("#tab-map", "aria-pressed") == "true"
        else:
            assert page.is_hidden("#view-tabs")
        page.wait_for_selector("#map path.footprint")
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        panel = page.locator("#map").bounding_box()
        assert panel["x"] >= 0 and panel["x"] + panel["width"] <= width
        if width < 800:
            assert panel["y"] < 800  # on the first screen
            page.click("#tab-results")
        if width < 800:  # the forms and the toolbar leave the first results on the first screen (was 358 px at 390)
            assert page.locator("#results figure").first.bounding_box()["y"] <= 300
        for selector in ("#query", "#text-form button", "#image-form button", "#results figure"):
            box = page.locator(selector).first.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= width, selector
        assert page.locator("#query").bounding_box()["width"] >= 150  # wide enough to type in
        if width >= 800:  # the map beside the results
            results = page.locator("#results").bounding_box()
            assert panel["x"] >= results["x"] + results["width"] and panel["y"] < results["y"] + 100
        page.click("#results figure img >> nth=0")
        page.wait_for_function("() => document.querySelector('#detail').open")
        dialog = page.locator("#detail").bounding_box()
        assert dialog["x"] >= 0 and dialog["x"] + dialog["width"] <= width
        assert page.evaluate("document.documentElement.scrollWidth") <= width


BROKEN_WORDS = """selector => {  // words of visible text that the layout split over two lines (a line may end after a
    // space or a dash: "patch–word" may wrap there, "256×256" and "georeferenced" may not)
    const broken = [];
    for (const root of document.querySelectorAll(selector)) {
        const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
        for (let node = walker.nextNode(); node; node = walker.nextNode()) {
            for (const word of node.data.matchAll(/[^\\s–-]+/g)) {
                const range = document.createRange();
                range.setStart(node, word.index);
                range.setEnd(node, word.index + word[0].length);
                const lines = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
                if (lines.size > 1) broken.push(word[0]);
            }
        }
    }
    return broken;
}"""


@pytest.mark.parametrize("width", [360, 1280])
def test_cards_and_detail_break_no_word_and_untiled_cards_name_no_window(browser, server_url, index, width):
    hits = index.search("a harbour with boats", k=10)
    with confined_page(browser, server_url, viewport={"width": width, "height": 800}) as page:
        page.goto(f"{server_url}/?q=a+harbour+with+boats&k=10")
        shown_ids(page)
        for hit in hits:
            text = page.text_content(f"#results figure[data-chip-id='{hit.chip_id}'] .where")
            if hit.bounds is None:  # the 64 x 48 images are one chip each: no "[64×48 at 0,0]"
                assert text == hit.path
            else:  # chips of the tiled GeoTIFF say where they lie in it
                assert text == f"{hit.path} [128×128 at {hit.window.x},{hit.window.y}]"
        assert page.evaluate(BROKEN_WORDS, "#results figcaption") == []
        for hit in (next(h for h in hits if h.bounds is None), next(h for h in hits if h.bounds)):
            page.click(f"#results figure[data-chip-id='{hit.chip_id}'] img")
            page.wait_for_function("() => document.querySelector('#detail').open")
            page.wait_for_timeout(100)
            rows = dict(page.eval_on_selector_all("#detail-facts tr", "rows => rows.map(r => [r.cells[0].textContent, "
                                                                            "r.cells[1].textContent])"))
            assert rows["window"] == ("the whole image" if hit.bounds is None else
                                      f"128×128 at {hit.window.x},{hit.window.y}")
            # the whole scene beside a chip of a tiled scene; not beside a chip that is its whole image
            assert page.is_hidden("#scene") == (hit.bounds is None)
            assert page.evaluate(BROKEN_WORDS, "#detail-facts, #detail-scores") == []
            page.keyboard.press("Escape")


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


@pytest.mark.parametrize("width", [360, 1280])
def test_find_all_like_these_pages_the_archive_and_exports_regions(browser, server_url, index, tmp_path, width):
    with confined_page(browser, server_url, viewport={"width": width, "height": 800}) as page:
        page.goto(f"{server_url}/?q=a+harbour&k=3")
        ids = shown_ids(page)
        assert page.is_disabled("#find-all")  # nothing marked wanted yet
        page.click(f"#results figure[data-chip-id='{ids[0]}'] .mark-wanted")
        page.click(f"#results figure[data-chip-id='{ids[1]}'] .mark-wanted")
        page.click(f"#results figure[data-chip-id='{ids[2]}'] .mark-unwanted")
        # what the page must show (computed first: the first fit imports scikit-learn, slow on a loaded machine)
        found = index.find_all("a harbour", positive=ids[:2], negative=ids[2:], threshold=0.5)
        lower = index.find_all("a harbour", positive=ids[:2], negative=ids[2:], threshold=0.2)
        before = page.text_content("#status")
        page.click("#find-all")
        wait_for_new_results(page, before)
        assert "all=true" in page.url and f"positive={handle_param(index, ids[0])}" in page.url
        assert page.text_content("#status").startswith(
            f"Found {plural(found.count, 'chip')} like your 2 wanted with a probability of at least 0.5 (of 10 chips "
            "scored)")
        if found.count:
            assert shown_ids(page) == found.ids[:3].tolist()
            assert page.text_content("#page-info") == f"1–{min(3, found.count)} of {found.count}"
            assert page.text_content("#results figure .score") == \
                f"#1  probability {format_probability(found.probabilities[0])}"
        assert page.is_disabled("#page-prev") and page.is_hidden("#more")
        # one count of marks on the page: the bar's is the status line's, until a mark changes
        assert page.text_content("#marks").startswith("2 wanted, 1 not wanted")
        if found.count:  # a mark of the first chip shown toggled and back
            first = shown_ids(page)[0]
            button = f"#results figure[data-chip-id='{first}'] .mark-{'wanted' if first in ids[:2] else 'unwanted'}"
            page.click(button)
            assert page.text_content("#marks").endswith(
                ": changed since this search, which used 2 wanted and 1 not wanted")
            page.click(button)
            assert "changed" not in page.text_content("#marks")

        # a lower threshold finds more; the pages walk through all of them
        before = page.text_content("#status")
        page.fill("#threshold", "0.2")
        page.dispatch_event("#threshold", "change")
        wait_for_new_results(page, before)
        assert lower.count > 3 and "threshold=0.2" in page.url
        assert shown_ids(page) == lower.ids[:3].tolist()
        before = page.text_content("#status")
        page.click("#page-next")
        # each page fits the probe again (seconds on a loaded machine)
        page.wait_for_function("n => document.querySelector('#page-info').textContent.startsWith(n)", arg="4–",
                               timeout=90_000)
        assert shown_ids(page) == lower.ids[3:6].tolist() and "offset=3" in page.url
        assert page.text_content("#results figure .score").startswith("#4  probability ")
        page.click(f"#results figure img >> nth=0")
        page.wait_for_function("() => document.querySelector('#detail').open")
        assert "calibrated on held-out marks" in page.text_content("#detail-scores")
        page.keyboard.press("Escape")

        # the exports hold everything found, adjacent chips merged into counted regions
        with page.expect_download() as download:
            page.click("#export-geojson")
        path = tmp_path / "found.geojson"
        download.value.save_as(path)
        collection = json.loads(path.read_text())
        assert collection["chips"] == lower.count == sum(f["properties"]["chips"] for f in collection["features"])
        assert collection["regions"] == len(collection["features"]) and collection["query"]["q"] == "a harbour"
        assert page.evaluate("document.documentElement.scrollWidth") <= width

        before = page.text_content("#status")
        page.click("#back-to-search")
        wait_for_new_results(page, before)
        assert "all=true" not in page.url
        assert shown_ids(page) == [hit.chip_id for hit in index.search("a harbour", k=3, positive=ids[:2],
                                                                       negative=ids[2:])]
        assert page.is_hidden("#pager")


@pytest.mark.parametrize("width", [360, 1280])
def test_the_heat_layer_colours_a_scenes_chips_and_links_the_geotiff(browser, server_url, index, width):
    import rasterio
    from rasterio.io import MemoryFile

    hits = index.search("a harbour", k=10)
    geo = next(hit for hit in hits if hit.bounds)
    scores = index.scene_scores(geo.path, "a harbour")
    with confined_page(browser, server_url, viewport={"width": width, "height": 800}) as page:
        page.goto(f"{server_url}/?q=a+harbour&k=10")
        shown_ids(page)
        plain = next(hit for hit in hits if hit.bounds is None)
        page.click(f"#results figure[data-chip-id='{plain.chip_id}'] img")
        page.wait_for_function("() => document.querySelector('#detail').open")
        assert page.is_hidden("#detail-heat")  # a plain PNG has no place on a map
        page.keyboard.press("Escape")
        page.click(f"#results figure[data-chip-id='{geo.chip_id}'] img")
        page.wait_for_function("() => document.querySelector('#detail').open")
        page.click("#detail-heat")
        page.wait_for_function("() => document.querySelectorAll('#map path.heat-cell').length === 6")
        assert page.is_visible("#map") and page.is_visible("#heat-controls")  # on a phone: the map tab
        cells = page.eval_on_selector_all("#map path.heat-cell", "ps => ps.map(p => [Number(p.dataset.chipId), "
                                                                 "Number(p.dataset.score), p.getAttribute('fill')])")
        assert sorted(cell[0] for cell in cells) == scores.chip_ids
        expected = dict(zip(scores.chip_ids, scores.scores.tolist()))
        assert all(score == pytest.approx(expected[chip], abs=1e-5) for chip, score, _ in cells)
        best = max(cells, key=lambda cell: cell[1])
        worst = min(cells, key=lambda cell: cell[1])
        assert (best[2], worst[2]) == ("rgb(253, 231, 37)", "rgb(68, 1, 84)")  # the ends of the legend's ramp
        assert page.text_content("#heat-min") == f"{scores.scores.min():.3f}"
        assert page.text_content("#heat-max") == f"{scores.scores.max():.3f}"
        assert page.text_content("#heat-title").startswith(f"{geo.path}: ")
        page.fill("#heat-opacity", "0.25")
        page.dispatch_event("#heat-opacity", "input")
        opacities = page.eval_on_selector_all("#map path.heat-cell", "ps => ps.map(p => p.getAttribute('fill-opacity'))")
        assert set(opacities) == {"0.25"}
        box = page.locator("#map").bounding_box()
        assert box["y"] < 800 and box["x"] + box["width"] <= width
        raster = page.request.get(server_url + page.get_attribute("#heat-geotiff", "href"))
        assert raster.ok
        with MemoryFile(raster.body()) as memory, memory.open() as dataset:
            assert dataset.crs == rasterio.crs.CRS.from_string("EPSG:32633")
        page.click("#heat-hide")
        assert page.locator("#map path.heat-cell").count() == 0 and page.is_hidden("#heat-controls")


def test_an_archive_of_plain_images_says_why_there_is_no_map_and_offers_no_map_settings(browser, tmp_path):
    from support.index import CHIP_SETTINGS, make_archive, tiny_encoder

    from rsitr.models import ScoringRecipe

    encoder = tiny_encoder()
    encoder.recipe = ScoringRecipe(local=False)  # a model trained without the local similarity, as the shipped default
    plain, _ = ArchiveIndex.build(tmp_path / "index", make_archive(tmp_path / "archive", geotiff=False),
                                  encoder=encoder, progress=False, options=BuildOptions(**CHIP_SETTINGS))
    with serving(plain) as url, confined_page(browser, url, viewport={"width": 360, "height": 800}) as page:
        page.goto(f"{url}/?q=a+harbour&k=4")
        shown_ids(page)
        page.wait_for_selector("#map-note:not([hidden])")
        assert page.text_content("#map-note") == ("No map: none of the 4 images of this index is georeferenced (plain "
                                                  "JPEG and PNG files carry no coordinates; GeoTIFFs do).")
        assert page.is_hidden("#settings") and page.is_hidden("#map-panel") and page.is_hidden("#view-tabs")
        page.click("#results figure img >> nth=0")
        page.wait_for_function("() => document.querySelector('#detail').open")
        assert page.text_content("#detail-scores").startswith("Text searches on this index rank by the global cosine "
                                                              "alone: its model was trained without the local")
    plain.close()


def test_where_and_when_limit_the_page_and_the_server_basemap_is_its_only_tile_source(browser, tmp_path):
    from support.browser import free_port
    from support.index import PLACED_EAST_BOX, build_placed_index

    placed = build_placed_index(tmp_path)
    east = set(placed.store.chips_of("east.tif"))
    port = free_port()
    template = f"http://127.0.0.1:{port}/tiles/{{z}}/{{x}}/{{y}}.png"  # its own origin: tiles answer 404, but are asked
    with serving(placed, port=port, basemap=template) as url, confined_page(browser, url) as page:
        bbox = ",".join(map(str, PLACED_EAST_BOX))
        page.goto(f"{url}/?q=fields&k=50&bbox={bbox}&before=2024-01-01")
        assert set(shown_ids(page)) == east  # every east.tif chip, and nothing else
        assert page.input_value("#bbox") == bbox and page.input_value("#before") == "2024-01-01"
        assert page.eval_on_selector("#limits", "d => d.open")
        page.wait_for_function("() => performance.getEntriesByType('resource').some(e => e.name.includes('/tiles/'))")
        assert page.input_value("#basemap") == template
        page.click("#results figure img >> nth=0")
        page.wait_for_function("() => document.querySelector('#detail').open")
        rows = dict(page.eval_on_selector_all("#detail-facts tr", "rows => rows.map(r => [r.cells[0].textContent, "
                                                                        "r.cells[1].textContent])"))
        assert rows["acquired"] == "2023-01-05T10:00:00+00:00"
        page.keyboard.press("Escape")
        # a new search from the form keeps the area and adds a date
        page.fill("#query", "a river")
        page.fill("#after", "2022-12-01")
        before = page.text_content("#status")
        page.click("#text-form button[type=submit]")
        wait_for_new_results(page, before)
        assert "after=2022-12-01" in page.url and "bbox=" in page.url
        assert set(shown_ids(page)) <= east
    with serving(placed) as url, confined_page(browser, url) as page:  # no --basemap: no tile is asked for
        page.goto(f"{url}/?q=fields&k=5")
        shown_ids(page)
        page.wait_for_function("() => document.querySelectorAll('#map path.footprint').length > 0")
        assert not page.evaluate("() => performance.getEntriesByType('resource').some(e => e.name.includes('/tiles/'))")
    placed.close()


RSICD_QUERY = "many planes are parked near the airport terminal"
SCREENSHOT = REPO / "docs" / "search_page_rsicd.png"


@pytest.fixture(scope="module")
def rsicd_index(shared_data, tmp_path_factory) -> Iterator[ArchiveIndex]:
    """The shipped ``rsitr-small-rsicd`` indexing the 1,093 RSICD test images (real data: skipped without it)."""
    import warnings

    from rsitr.data import load_corpus
    from rsitr.models import get_pretrained_cfg, list_pretrained

    if "rsitr-small-rsicd" not in list_pretrained():
        pytest.skip("this installation ships no rsitr-small-rsicd weights")
    rsicd = shared_data / "rsicd"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RSICD's 3 empty captions
        test = load_corpus(rsicd / "dataset_rsicd.json", rsicd / "images", name="rsicd").split("test")
    base = tmp_path_factory.mktemp("rsicd")
    (base / "images").mkdir()
    for record in test.images:  # copies: the archive scanner does not follow links out of the folder
        shutil.copyfile(record.path, base / "images" / record.path.name)
    index, _ = ArchiveIndex.build(base / "index", base / "images", get_pretrained_cfg("rsitr-small-rsicd").architecture,
                                  "rsitr-small-rsicd",
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
            scenes = [Path(hit.path).stem.rsplit("_", 1)[0] for hit in rsicd_index.search(RSICD_QUERY, k=15)]
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
            assert unwanted not in refined
            shot = tmp_path / "search_page.png"
            page.screenshot(path=str(shot))
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    assert image.size == (1400, 900)
    if os.environ.get("RSITR_UPDATE_SCREENSHOT") == "1":
        image.resize((1200, 1200 * image.height // image.width), Image.LANCZOS).quantize(128).save(
            SCREENSHOT, optimize=True)


def test_links_name_chips_by_handle_and_probabilities_print_as_the_cli_prints_them(page, server_url, index):
    """A link naming chips by id (an older one) is rewritten to their handles once they are shown, so it outlives a
    re-index; the page formats a find-all probability as rsitr's format_probability does."""
    hits = index.search("storage tanks", k=10)
    wanted = hits[-1].chip_id
    page.goto(f"{server_url}/?q=storage+tanks&k=10&positive={wanted}")
    shown_ids(page)
    page.wait_for_function("h => window.location.search.includes(h)", arg=f"positive={handle_param(index, wanted)}")
    assert page.text_content("#marks") == "1 wanted, 0 not wanted"
    assert page.get_attribute(f"#results figure[data-chip-id='{wanted}'] .mark-wanted", "aria-pressed") == "true"
    values = [0.5, 0.91839, 0.99989, 0.99995, 0.9999899, 0.99999962, 1 - 3e-9, 1 - 1e-13, 1.0]
    printed = page.evaluate("async values => { const { formatProbability } = await import('/static/js/results.js'); "
                            "return values.map(formatProbability); }", values)
    assert printed == [format_probability(value) for value in values]
    assert len(set(printed[3:7])) == 4  # near 1 they still rank
