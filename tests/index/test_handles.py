"""Chips named by id or by file (PATH, PATH:WxH+X+Y) in the library, on the command line and in the API; --list."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from rsitr.api.app import create_app
from rsitr.cli import main
from rsitr.index import ArchiveIndex, BuildOptions, UnknownChipError, list_chips
from rsitr.index.handles import resolve_chip
from support.index import build_test_index


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> ArchiveIndex:
    return build_test_index(tmp_path_factory.mktemp("handles"))


def chip_of(index: ArchiveIndex, path: str, x: int = 0, y: int = 0) -> int:
    return next(i for i in index.store.chips_of(path) if (index.chip(i).window.x, index.chip(i).window.y) == (x, y))


def test_a_chip_is_named_by_its_id_its_file_or_its_file_and_window(index):
    store, scene0 = index.store, chip_of(index, "scene0.png")
    assert resolve_chip(store, scene0) == resolve_chip(store, str(scene0)) == resolve_chip(store, "scene0.png") == scene0
    assert resolve_chip(store, "sub/scene3.png") == chip_of(index, "sub/scene3.png")
    geo = index.store.chips(index.store.chips_of("geo.tif"))
    assert len(geo) > 1
    for chip_id, record in geo.items():
        w = record.window
        assert resolve_chip(store, f"geo.tif:{w.width}x{w.height}+{w.x}+{w.y}") == chip_id
    with pytest.raises(UnknownChipError, match=rf"geo.tif is cut into {len(geo)} chips: name one as geo.tif:WxH\+X\+Y"):
        resolve_chip(store, "geo.tif")
    with pytest.raises(UnknownChipError, match=r"geo.tif has no chip at 1x1\+0\+0"):
        resolve_chip(store, "geo.tif:1x1+0+0")
    for unknown in ("nothing.png", "broken.jpg", "../archive/scene0.png"):  # broken.jpg was never indexed
        with pytest.raises(UnknownChipError, match="is no indexed image"):
            resolve_chip(store, unknown)
    with pytest.raises(UnknownChipError, match="no chip 99999"):
        resolve_chip(store, 99999)


def test_a_path_on_disk_names_its_chip_on_the_command_line_only(index, tmp_path):
    on_disk = str(index.root / "scene1.png")
    assert resolve_chip(index.store, on_disk, on_disk=True) == chip_of(index, "scene1.png")
    with pytest.raises(UnknownChipError):  # the web service names archive paths only, never the server's
        resolve_chip(index.store, on_disk)
    outside = tmp_path / "scene1.png"
    outside.write_bytes((index.root / "scene1.png").read_bytes())
    with pytest.raises(UnknownChipError):
        resolve_chip(index.store, str(outside), on_disk=True)


def test_searches_take_files_as_they_take_ids(index):
    ids = {path: chip_of(index, path) for path in ("scene0.png", "scene2.png", "sub/scene3.png")}
    by_id = index.search("a harbour", k=5, positive=[ids["scene0.png"]], negative=[ids["scene2.png"]])
    by_file = index.search("a harbour", k=5, positive=["scene0.png"], negative=["scene2.png"])
    assert [hit.chip_id for hit in by_file] == [hit.chip_id for hit in by_id]
    assert [h.chip_id for h in index.search(like="sub/scene3.png", k=3)] == \
        [h.chip_id for h in index.search(like=ids["sub/scene3.png"], k=3)]
    found = index.find_all(positive=["scene0.png", "sub/scene3.png"], negative=["scene2.png"])
    assert found.ids.tolist() == index.find_all(positive=[ids["scene0.png"], ids["sub/scene3.png"]],
                                                negative=[ids["scene2.png"]]).ids.tolist()


def test_list_shows_every_chip_of_the_matching_files_with_its_handle(index, capsys):
    listed = list_chips(index.store, "*.png")
    assert [chip.path for chip in listed] == ["scene0.png", "scene1.png", "scene2.png", "sub/scene3.png"]
    assert all(resolve_chip(index.store, chip.handle) == chip.chip_id for chip in listed)
    geo = list_chips(index.store, "geo.*")
    assert sorted(chip.chip_id for chip in geo) == index.store.chips_of("geo.tif")
    assert main(["search", str(index.directory), "--list", "sub/*"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["  chip  handle", f"{chip_of(index, 'sub/scene3.png'):6d}  sub/scene3.png:64x48+0+0"]


def test_the_api_takes_files_as_it_takes_ids(index):
    client = TestClient(create_app(index=index), base_url="http://localhost")
    wanted = chip_of(index, "scene0.png")
    by_id = client.get("/api/search", params={"q": "a harbour", "positive": wanted, "k": 4}).json()
    by_file = client.get("/api/search", params={"q": "a harbour", "positive": "scene0.png", "k": 4}).json()
    assert [hit["chip_id"] for hit in by_file["results"]] == [hit["chip_id"] for hit in by_id["results"]]
    like = client.get("/api/search", params={"like": "sub/scene3.png", "k": 2}).json()
    assert like["results"][0]["chip_id"] == chip_of(index, "sub/scene3.png")
    answer = client.get("/api/search", params={"like": str(index.root / "scene0.png")})
    assert answer.status_code == 404 and "is no indexed image" in answer.json()["detail"]


def test_every_hit_carries_the_handle_that_names_it_after_a_re_index(index, tmp_path):
    """A hit's handle (the library's, the API's) is its path, with the window for a chip of a tiled scene, and names
    the same chip in another index of the archive whose ids differ (what the page keeps in its URL)."""
    from support.index import CHIP_SETTINGS, noise, tiny_encoder

    hits = index.search("a harbour", k=20, rerank=False)
    for hit in hits:
        window = hit.window
        assert hit.handle == (hit.path if hit.whole_image else
                              f"{hit.path}:{window.width}x{window.height}+{window.x}+{window.y}")
        assert resolve_chip(index.store, hit.handle) == hit.chip_id
    client = TestClient(create_app(index=index), base_url="http://localhost")
    answer = client.get("/api/search", params={"q": "a harbour", "k": 20, "rerank": False}).json()
    assert {h["chip_id"]: h["handle"] for h in answer["results"]} == {h.chip_id: h.handle for h in hits}

    archive = tmp_path / "archive"  # the same images and one more listed first: every chip gets another id
    for path in index.store.files():
        (archive / path).parent.mkdir(parents=True, exist_ok=True)
        (archive / path).write_bytes((index.root / path).read_bytes())
    noise(77, 64, 48).save(archive / "0.png")
    other, _ = ArchiveIndex.build(tmp_path / "index", archive, encoder=tiny_encoder(), progress=False,
                                  options=BuildOptions(**CHIP_SETTINGS))
    for hit in hits:
        moved = other.chip(resolve_chip(other.store, hit.handle))
        assert moved.id != hit.chip_id and (moved.path, moved.window) == (hit.path, hit.window)
    other.close()
