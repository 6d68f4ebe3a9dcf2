"""The hostile suite: what an attacker or a careless user tries, with generated files and loopback only.

Each test keeps one break of issue 22 fixed: decompression bombs in TIFF tiles and strips, chunked bodies
without a Content-Length, forged Host headers, corrupt or full index files, bad caption files, training
interrupted before its first checkpoint, a moved images folder and stale search results.
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from rsitr.api.app import create_app
from rsitr.api.middleware import host_name
from rsitr.cli import main
from rsitr.terminal import in_flags
from rsitr.index import ArchiveIndex, BuildOptions
from rsitr.index.archive import ImageTooLargeError, decode_image, open_scene
from rsitr.models import TINY_MODEL
from rsitr.retrieval import vector_index
from support.browser import browser  # noqa: F401 - the headless Chromium fixture (skips without Chromium)
from support.index import CHIP_SETTINGS, assert_same_index, declared_tiff, make_archive, noise, tiny_encoder
from support.training import TINY

from support import REPO

MAX_UPLOAD = 4000
SMALL_DISK_PAGES = 10
TILE_BOMBS = {"one 32768 x 32768 tile": {"tile": (32768, 32768)},
              "three 16-bit bands in 8192 x 8192 tiles": {"tile": (8192, 8192), "samples": 3, "bits": 16},
              "a 6000 x 6000 strip of 16-bit RGBA": {"rows_per_strip": 6000, "samples": 4, "bits": 16}}


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> ArchiveIndex:
    base = tmp_path_factory.mktemp("hostile")
    root = make_archive(base / "archive")
    index, _ = ArchiveIndex.build(base / "index", root, encoder=tiny_encoder(), progress=False,
                                  options=BuildOptions(**CHIP_SETTINGS))
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
                                   cwd=REPO).stdout)
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
        # One body message can hold what uvicorn buffered before it paused reading: its high-water mark (64 KiB)
        # plus one read of asyncio's transport (256 KiB), more under load; far below the 2 MB that was sent.
        high_water, transport_read = 64 * 2**10, 256 * 2**10
        assert app.count <= MAX_UPLOAD + 64 * 2**10 + high_water + transport_read
        assert status in (413, None)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_a_refused_body_closes_the_connection_so_its_rest_is_not_read(client):
    declared = client.post("/api/search/image", content=bytes(MAX_UPLOAD + 70_000),
                           headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert declared.status_code == 413 and declared.headers["connection"] == "close"


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

    import rsitr.api.app as api

    seen = {}
    monkeypatch.setattr(api, "create_app", lambda *args, **kwargs: seen.update(kwargs) or "app")
    import rsitr.commands.serve as serve

    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: None)
    monkeypatch.setattr(serve, "free_port", lambda host, port: port)  # 10.0.0.5 is no address of this machine
    (tmp_path / "index.sqlite").touch()  # what `rsitr serve` checks before it loads the index (create_app here)
    assert main(["serve", str(tmp_path), "--host", "10.0.0.5", "--allowed-host", "archive.lan"]) == 0
    assert set(seen["allowed_hosts"]) == {"10.0.0.5", "127.0.0.1", "localhost", "::1", "archive.lan"}


# -- index files --------------------------------------------------------------------------------------------
def index_argv(root: Path, out: Path, *extra: str) -> list[str]:
    settings = [item for key, value in CHIP_SETTINGS.items() for item in (f"--{key.replace('_', '-')}", str(value))]
    return ["index", str(root), "--out", str(out), "--model", TINY_MODEL, "--no-progress", *settings, *extra]


@pytest.fixture
def built(tmp_path, capsys) -> tuple[Path, Path]:
    root, out = make_archive(tmp_path / "archive", geotiff=False), tmp_path / "index"
    assert main(index_argv(root, out)) == 0
    capsys.readouterr()
    return root, out


def one_error_line(capsys, command: str) -> str:
    """The one error line on stderr (after any one-line ``rsitr <command>: warning:``), with no traceback."""
    lines = capsys.readouterr().err.splitlines()
    assert lines and lines[-1].startswith(f"rsitr {command}: error: "), lines
    assert all(line.startswith("rsitr") for line in lines) and sum("error:" in line for line in lines) == 1, lines
    return lines[-1]


def garbage(data: bytes) -> bytes:
    return np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8).tobytes()


DAMAGES = {"truncated": lambda data: data[:len(data) // 2], "zeroed": lambda data: bytes(len(data)),
           "garbage": garbage}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_index_database_is_refused_in_one_line_until_rebuild(built, capsys, damage):
    root, out = built
    database = out / "index.sqlite"
    database.write_bytes(DAMAGES[damage](database.read_bytes()))
    damaged = database.read_bytes()
    assert main(["search", str(out), "a harbour"]) == 2
    assert "damaged" in (err := one_error_line(capsys, "search")) and "--rebuild" in err
    assert main(index_argv(root, out)) == 2
    assert "--rebuild" in one_error_line(capsys, "index")
    assert database.read_bytes() == damaged  # refused without touching it
    assert main(index_argv(root, out, "--rebuild")) == 0
    assert main(["search", str(out), "a harbour", "--top-k", "2"]) == 0


def test_an_emptied_index_database_is_no_index_in_one_line(built, capsys):
    _, out = built
    (out / "index.sqlite").write_bytes(b"")
    assert main(["search", str(out), "a harbour"]) == 2
    assert "not an rsitr index (its index.sqlite has no index tables)" in one_error_line(capsys, "search")


@pytest.mark.parametrize("damage", [*DAMAGES, "another index"])
def test_a_damaged_vectors_file_is_searched_from_the_store_and_rewritten_by_index(built, capsys, damage):
    root, out = built
    vectors = out / "vectors.faiss"
    assert main(["search", str(out), "a harbour", "--top-k", "3"]) == 0
    expected = capsys.readouterr().out
    if damage == "another index":
        vector_index.save_atomic(vector_index.build_vector_index(np.eye(4, dtype=np.float32), np.arange(4)), vectors)
    else:
        vectors.write_bytes(DAMAGES[damage](vectors.read_bytes()))
    assert main(["search", str(out), "a harbour", "--top-k", "3"]) == 0
    answer = capsys.readouterr()
    assert answer.out == expected and "warning" in answer.err and "vectors.faiss" in answer.err
    assert main(index_argv(root, out)) == 0
    capsys.readouterr()
    assert main(["search", str(out), "a harbour", "--top-k", "3"]) == 0
    assert capsys.readouterr() == (expected, "")  # the file was rewritten: no warning


def test_a_full_disk_while_indexing_is_one_line_and_a_rerun_completes(tmp_path, capsys, monkeypatch):
    root = make_archive(tmp_path / "archive", geotiff=False)
    connect = sqlite3.connect

    def small_disk(*args, **kwargs) -> sqlite3.Connection:
        connection = connect(*args, **kwargs)
        connection.execute(f"PRAGMA max_page_count = {SMALL_DISK_PAGES}")  # SQLite's own "disk is full" past it
        return connection

    monkeypatch.setattr(sqlite3, "connect", small_disk)
    assert main(index_argv(root, tmp_path / "index", "--batch-size", "1")) == 2
    err = one_error_line(capsys, "index")
    assert "full" in err and "free disk space" in err
    monkeypatch.undo()
    assert main(index_argv(root, tmp_path / "index")) == 0
    assert main(index_argv(root, tmp_path / "fresh")) == 0
    resumed, fresh = (ArchiveIndex.open(tmp_path / name, encoder=tiny_encoder()) for name in ("index", "fresh"))
    assert resumed.info()["chips"] == fresh.info()["chips"] > 0
    # The same chips under the same ids; the vectors agree to assert_same_index's tolerance, not bit for bit: the
    # resumed chips were encoded one per batch, the fresh ones in one batch, and a CPU's kernels may sum a batch in
    # another order (7th digit on an AMD EPYC).
    assert_same_index(resumed, fresh)


def test_a_locked_index_is_one_line(built, capsys):
    root, out = built
    holder = sqlite3.connect(out / "index.sqlite", isolation_level=None, timeout=0)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        assert main(index_argv(root, out)) == 2
        assert "another process" in one_error_line(capsys, "index")
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_sqlite_errors_of_the_users_making_are_one_line_and_bugs_keep_their_traceback(tmp_path, capsys, monkeypatch):
    import rsitr.commands.search as search_command

    sqlite3.connect(tmp_path / "db.sqlite").close()
    read_only = sqlite3.connect(f"file:{tmp_path / 'db.sqlite'}?mode=ro", uri=True)

    def write_read_only(args) -> int:
        read_only.execute("CREATE TABLE t (x)")
        return 0

    monkeypatch.setattr(search_command, "run", write_read_only)
    assert main(["search", str(tmp_path), "x"]) == 2
    assert "read-only" in one_error_line(capsys, "search")

    def a_bug(args) -> int:
        read_only.execute("SELEC 1")
        return 0

    monkeypatch.setattr(search_command, "run", a_bug)
    with pytest.raises(sqlite3.OperationalError, match="syntax"):
        main(["search", str(tmp_path), "x"])


# -- caption files ------------------------------------------------------------------------------------------
def karpathy(*images: dict) -> bytes:
    return json.dumps({"images": list(images)}).encode()


def entry(filename: str = "a.png", *captions: str, split: str = "test") -> dict:
    return {"filename": filename, "split": split, "sentences": [{"raw": c} for c in captions or ("a field",) * 5]}


CSV_HEADER = "filepath,caption,split\n"
BAD_CAPTION_FILES = {
    # name: (file name, bytes, a fragment of the one error line, or None when the file loads)
    "deeply nested JSON": ("deep.json", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    "deeply nested entry": ("deep_entry.json", b'{"images": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "nested"),
    "JSON that is a number": ("number.json", b"42", "unknown caption file layout"),
    "invalid JSON": ("broken.json", b'{"images": [', "invalid JSON"),
    "JSON not UTF-8": ("latin.json", '{"images": []}  é'.encode("latin-1"), "UTF-8"),
    "an empty file": ("empty.json", b"", "invalid JSON"),
    "entry not an object": ("list_entry.json", karpathy([1, 2]), "not an object"),
    "caption not text": ("number_caption.json", karpathy({**entry(), "sentences": [{"raw": 5}]}), "not text"),
    "NUL in a JSON file name": ("nul.json", karpathy(entry("a\0.png")), "control character"),
    "newline in a JSON file name": ("newline.json", karpathy(entry("a\n.png")), "control character"),
    "escape in a JSON file name": ("escape.json", karpathy(entry("\x1b[31ma.png")), "control character"),
    "a 200,000-character caption": ("long.csv", (CSV_HEADER + "a.png," + "x" * 200_000 + ",test\n").encode(), None),
    "a 2,000,000-character field": ("huge.csv", (CSV_HEADER + "a.png," + "x" * 2_000_000 + ",test\n").encode(),
                                    "line"),
    "an unclosed quote": ("quote.csv", (CSV_HEADER + 'a.png,"never closed\n' + "b.png,x,test\n" * 10).encode(), None),
    "NUL in a CSV path": ("nul.csv", (CSV_HEADER + "a.png,a field,test\na\0.png,a field,test\n").encode(),
                          "line 3"),
    "NUL bytes in a CSV": ("nuls.csv", CSV_HEADER.encode() + bytes(100), None),
    "CSV without header": ("noheader.csv", b"a.png,a field,test\n", "missing CSV columns"),
    "CSV not UTF-8": ("latin.csv", (CSV_HEADER + "a.png,caf\xe9,test\n").encode("latin-1"), "UTF-8"),
    "binary garbage as CSV": ("garbage.csv", bytes(range(256)) * 40, None),
    "a 5,000-digit number": ("bigint.json", b'{"images": [{"id": ' + b"1" * 5000 + b"}]}", "cannot read"),
    "a 5,000-character file name": ("longname.json", karpathy(entry("a" * 5000 + ".png")), None),
    "an unpaired surrogate in a file name": ("surrogate.json", karpathy(entry("a\ud800.png")), "unpaired surrogate"),
    "NUL in an NWPU file name": ("nwpu.json", json.dumps({"airport": [{"filename": "a\0.png", "raw": "x",
                                                                       "split": "test"}]}).encode(), "control"),
    "UTF-16 JSON": ("utf16.json", json.dumps({"images": []}).encode("utf-16"), "UTF-8"),
    "sentences not a list": ("sentences.json", karpathy({**entry(), "sentences": {"raw": "x"}}), "not a list"),
    "a numeric split": ("split.json", karpathy({**entry(), "split": 3}), "unknown split"),
    "a null file name": ("null.json", karpathy({**entry(), "filename": None}), None),
    "a path outside the image folder": ("outside.csv", (CSV_HEADER + "../../etc/passwd,a field,test\n").encode(),
                                        None),  # eval refuses it (not found), inspect counts it as missing
}


@pytest.fixture(scope="module")
def caption_images(tmp_path_factory) -> Path:
    images = tmp_path_factory.mktemp("caption_images")
    for seed, name in enumerate(("a.png", "b.png")):
        noise(seed, 32, 32).save(images / name)
    return images


@pytest.mark.parametrize("command", ["eval", "data inspect"])
@pytest.mark.parametrize("kind", BAD_CAPTION_FILES)
def test_bad_caption_files_end_in_one_line_never_a_traceback(tmp_path, capsys, caption_images, command, kind):
    name, data, fragment = BAD_CAPTION_FILES[kind]
    path = tmp_path / name
    path.write_bytes(data)
    if command == "eval":
        argv = ["eval", "--data", str(path), "--images", str(caption_images), "--model", TINY_MODEL,
                "--device", "cpu", "--global-only"]
    else:
        argv = ["data", "inspect", str(path), "--images", str(caption_images), "--no-progress",
                "--cache", str(tmp_path / "phash.json")]
    code = main(argv)
    if code != 0:
        assert code == 2
        line = one_error_line(capsys, command.split()[0])
        assert "\0" not in line and "\x1b" not in line
        if fragment is not None:
            assert fragment in line, line
    else:
        assert fragment is None, f"{kind} was accepted"
        assert "Traceback" not in capsys.readouterr().err


def test_csv_fields_return_to_the_csv_module_limit_after_reading(tmp_path, caption_images):
    import csv

    from rsitr.data import load_corpus

    before = csv.field_size_limit()
    path = tmp_path / "long.csv"
    path.write_text(CSV_HEADER + "a.png," + "x" * 200_000 + ",test\n")
    assert len(load_corpus(path, caption_images, check=False).images[0].captions[0]) == 200_000
    assert csv.field_size_limit() == before


def test_warnings_of_valid_files_are_one_rsitr_line_without_python_source(tmp_path, capsys, caption_images):
    # RSICD's layout: one of an image's captions is empty, so it is dropped (with one warning line).
    path = tmp_path / "dataset_x.json"
    path.write_bytes(karpathy(entry("a.png", "a field", "", "a road", "a field", "a lake"), entry("b.png")))
    assert main(["eval", "--data", str(path), "--images", str(caption_images), "--model", TINY_MODEL,
                 "--device", "cpu", "--global-only"]) == 0
    err = capsys.readouterr().err
    assert "rsitr eval: warning: " in err and "dropped 1 empty caption" in err
    assert "UserWarning" not in err and "warnings.warn" not in err


# -- training interrupted before its first checkpoint -------------------------------------------------------
def train_argv(out: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(REPO / "configs" / "data" / "synthetic.yaml"), "--out", str(out),
            "--no-progress", "--set", *TINY, "train.epochs=1", "train.log_every=1", *extra]


def logged_steps(out: Path) -> list[int]:
    with (out / "train_log.csv").open() as handle:
        return [int(row["step"]) for row in csv.DictReader(handle)]


@pytest.mark.parametrize("again", [["--resume"], []])
def test_ctrl_c_before_the_first_checkpoint_says_so_and_the_rerun_starts_clean(tmp_path, capsys, monkeypatch, again):
    from rsitr.training.trainer import Trainer

    out = tmp_path / "run"
    step = Trainer.train_step

    def interrupted_at_step_3(self, batch):
        if self.step == 2:
            raise KeyboardInterrupt
        return step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", interrupted_at_step_3)
    assert main(train_argv(out)) == 130
    err = capsys.readouterr().err.splitlines()[-1]
    assert "nothing is checkpointed" in err and "--resume to continue" not in err
    assert logged_steps(out) == [1, 2] and not (out / "checkpoints").exists()
    monkeypatch.undo()
    assert main(train_argv(out, *again)) == 0
    said = capsys.readouterr().out
    assert "starts from the beginning" in said and "the 2 logged steps of the interrupted attempt" in said
    assert logged_steps(out) == [1, 2, 3]
    assert (out / "checkpoints" / "latest.pt").is_file()


# -- a moved images folder and stale results ------------------------------------------------------------------
def test_a_moved_images_folder_is_relocated_without_encoding_again(built, tmp_path, capsys):
    root, out = built
    index = ArchiveIndex.open(out, encoder=tiny_encoder())
    chip = index.chip(1)
    before = index.store.embeddings()
    index.close()
    moved = tmp_path / "moved"
    root.rename(moved)
    index = ArchiveIndex.open(out, encoder=tiny_encoder())
    with pytest.raises(FileNotFoundError, match="--relocate"):
        index.chip_image(chip)
    index.close()
    assert main(index_argv(moved, out)) == 2
    assert "--relocate" in one_error_line(capsys, "index")
    assert main(index_argv(moved, out, "--relocate")) == 0
    assert "0 chips encoded" in capsys.readouterr().out
    index = ArchiveIndex.open(out, encoder=tiny_encoder())
    assert index.root == moved.resolve() and index.chip_image(chip).size == (chip.window.width, chip.window.height)
    after = index.store.embeddings()
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    index.close()


def test_search_results_flag_chips_whose_source_changed_or_vanished(built, capsys):
    root, out = built
    (root / "scene0.png").unlink()
    noise(7, 64, 48).save(root / "scene1.png")  # replaced: other pixels, other size
    index = ArchiveIndex.open(out, encoder=tiny_encoder())
    hits = index.search("a field", k=10)
    stale = {hit.path for hit in hits if hit.stale}
    assert stale == {"scene0.png", "scene1.png"} and len(hits) > len(stale)
    index.close()
    assert main(["search", str(out), "a field", "--top-k", "10"]) == 0
    printed = capsys.readouterr().out
    assert sum("STALE" in line for line in printed.splitlines() if "scene0.png" in line or "scene1.png" in line) == 2
    assert "2 result(s) marked STALE" in printed
    assert main(["search", str(out), "a field", "--top-k", "10", "--format", "csv"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert {row["path"] for row in rows if row["stale"] == "True"} == {"scene0.png", "scene1.png"}
    assert main(index_argv(root, out)) == 0
    capsys.readouterr()
    assert main(["search", str(out), "a field", "--top-k", "10"]) == 0
    assert "STALE" not in capsys.readouterr().out


# -- issue 33: a model file runs no code --------------------------------------------------------------------
class Payload:
    """What an attacker pickles into a model file: unpickling it calls ``os.system``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("command", ["index", "classify", "search"])
def test_a_model_file_that_asks_to_run_code_is_refused_in_one_line(built, tmp_path, capsys, command):
    """``--pretrained e.pt`` to a command that encodes, or a shared index folder whose recorded checkpoint
    (``model.pt``, its SHA-256 matching) is such a file."""
    import torch

    from rsitr.models.hub import file_sha256
    from rsitr.index.store import MetadataStore

    root, out = built
    marker, model = tmp_path / "PWNED", out / "model.pt"
    torch.save({"state_dict": Payload(marker)}, model)
    for name in ("harbour", "field"):
        (tmp_path / "classes" / name).mkdir(parents=True)
        noise(len(name), 32, 32).save(tmp_path / "classes" / name / "a.png")
    store = MetadataStore(out)
    store.set_meta(pretrained="model.pt", pretrained_sha256=file_sha256(model))
    store.close()
    argv = {"index": index_argv(root, tmp_path / "other", "--pretrained", str(model)),
            "classify": ["classify", str(tmp_path / "classes"), "--pretrained", str(model)],
            "search": ["search", str(out), "a harbour"]}[command]
    assert main(argv) == 2
    assert "posix.system" in one_error_line(capsys, command) and not marker.exists()


def test_a_training_checkpoint_still_loads_with_the_restricted_unpickler(tmp_path):
    from rsitr.models.checkpoint import CHECKPOINT_FORMAT, read_checkpoint
    from support.training import make_trainer

    trainer = make_trainer(tmp_path, "train.epochs=1", "method.ftf_loss=true")
    trainer.fit()
    checkpoint = read_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    assert checkpoint["format"] == CHECKPOINT_FORMAT and checkpoint["epoch"] == 1
    assert checkpoint["optimizer"]["state"] and checkpoint["eba"] is not None


# -- issue 33: a file name is text on the page --------------------------------------------------------------
SCRIPTED_NAME = "<img src=x onerror=alert(9)>.tif"


def test_a_file_name_with_markup_is_shown_as_text_on_the_map(browser, tmp_path):
    from support.browser import confined_page, serving
    from support.index import write_geotiff

    root = tmp_path / "archive"
    root.mkdir()
    write_geotiff(root / SCRIPTED_NAME)
    index, _ = ArchiveIndex.build(tmp_path / "index", root, encoder=tiny_encoder(), progress=False,
                                  options=BuildOptions(**CHIP_SETTINGS))
    with serving(index) as url, confined_page(browser, url) as page:
        dialogs = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(f"{url}/?q=a+field&k=3")
        page.wait_for_selector("#map path.footprint")
        page.hover("#map path.footprint", force=True)
        page.wait_for_selector(".leaflet-tooltip")
        assert page.text_content(".leaflet-tooltip").startswith(SCRIPTED_NAME)
        assert page.locator(".leaflet-tooltip img").count() == 0
        # and markup that slips in some other way runs no inline script: the Content-Security-Policy forbids it
        ran = page.evaluate("""() => new Promise(done => {
            document.body.insertAdjacentHTML('beforeend', '<img id=probe src=x onerror="window.ran = 1">');
            document.getElementById('probe').addEventListener('error', () => done(window.ran ?? 0));
        })""")
        assert ran == 0 and dialogs == []
    index.close()


def test_every_answer_carries_a_content_security_policy(client):
    page = client.get("/")
    policy = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
    assert policy["script-src"] == "'self'" and policy["object-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'" and "unsafe" not in policy["style-src"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" in client.get("/api/info").headers
    docs = client.get("/docs").headers["content-security-policy"]  # Swagger UI's one inline start, by its hash
    assert "script-src 'self' 'sha256-" in docs and "'unsafe-inline'" not in docs.split("script-src")[1].split(";")[0]


# -- issue 33: requests a browser may be led to send ---------------------------------------------------------
def test_a_post_from_another_origins_page_is_refused(client):
    upload = {"file": ("q.png", bytes(10), "image/png")}
    refused = client.post("/api/search/image", files=upload, headers={"Origin": "http://evil.example"})
    assert refused.status_code == 403 and "cross-origin" in refused.json()["detail"]
    assert client.post("/api/search/image", files=upload, headers={"Origin": "null"}).status_code == 403
    own = client.post("/api/search/image", files=upload, headers={"Origin": "http://localhost"})
    assert own.status_code == 415  # past the check: the bytes are no image
    assert client.get("/api/info", headers={"Origin": "http://evil.example"}).status_code == 200  # reads: CORS


@pytest.mark.parametrize("method, path, status", [("POST", "/api/search", 405), ("PUT", "/api/info", 405),
                                                  ("GET", "/api/info", 413), ("POST", "/nowhere", 404)])
def test_a_body_to_a_route_that_takes_none_is_refused_before_it_is_read(client, method, path, status):
    """Answered without closing, the server reads (and drops) the whole body to keep the connection."""
    answer = client.request(method, path, content=bytes(MAX_UPLOAD // 2))
    assert answer.status_code == status and answer.headers["connection"] == "close"
    assert status != 413 or "takes no request body" in answer.json()["detail"]


# -- issue 33: one bad file never breaks every search ---------------------------------------------------------
@pytest.fixture
def fresh_crs_warnings():
    """Untransformable CRSs are warned once per process: forget the ones warned in earlier tests."""
    from rsitr.index import export

    export.wgs84_bounds.cache_clear()
    export._warn_untransformable.cache_clear()


@pytest.mark.parametrize("crs", ['LOCAL_CS["arbitrary",UNIT["metre",1]]', "EPSG:99999", "not a CRS"])
def test_a_crs_that_cannot_reach_wgs84_gives_no_footprint_and_one_warning(fresh_crs_warnings, crs):
    from rsitr.index.export import wgs84_bounds

    with pytest.warns(UserWarning, match="cannot be placed in WGS84") as warned:
        assert wgs84_bounds((1000.0, 1936.0, 1064.0, 2000.0), crs) is None
        assert wgs84_bounds((0.0, 0.0, 64.0, 64.0), crs) is None
    assert len(warned) == 1


def test_a_local_crs_geotiff_is_listed_without_a_footprint_never_a_500(tmp_path, capsys, fresh_crs_warnings):
    import rasterio
    from rasterio.crs import CRS

    root, out = make_archive(tmp_path / "archive", geotiff=False), tmp_path / "index"
    pixels = np.asarray(noise(5, 64, 64)).transpose(2, 0, 1)
    with rasterio.open(root / "local.tif", "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8",
                       crs=CRS.from_wkt('LOCAL_CS["arbitrary",UNIT["metre",1]]'),
                       transform=rasterio.Affine(1, 0, 1000, 0, -1, 2000)) as dataset:
        dataset.write(pixels)
    assert main(index_argv(root, out)) == 0
    capsys.readouterr()
    for fmt in ("geojson", "json", "csv"):
        assert main(["search", str(out), "a field", "--top-k", "10", "--format", fmt]) == 0
        printed, warned = capsys.readouterr()
        assert "Traceback" not in warned and "ERROR" not in warned
        if fmt == "geojson":  # the first: its warning line (once per process)
            assert sum("cannot be placed in WGS84" in line for line in warned.splitlines()) == 1
            features = json.loads(printed)["features"]
            assert [f["geometry"] for f in features if f["properties"]["path"] == "local.tif"] == [None]
    index = ArchiveIndex.open(out, encoder=tiny_encoder())
    chip = next(hit.chip_id for hit in index.search("a field", k=10) if hit.path == "local.tif")
    app = TestClient(create_app(index=index), base_url="http://localhost")
    listed = app.get("/api/search", params={"q": "a field", "k": 10})
    assert listed.status_code == 200
    assert [hit["wgs84_bounds"] for hit in listed.json()["results"] if hit["chip_id"] == chip] == [None]
    assert app.get(f"/api/chips/{chip}").json()["wgs84_bounds"] is None
    assert app.get("/api/search", params={"q": "a field", "k": 10, "format": "geojson"}).status_code == 200
    index.close()


def rewrite_lance_with_a_huge_component(out: Path) -> None:
    """A bit flip in a float's exponent: one stored vector component becomes 1e28."""
    from rsitr.index.lance_store import LanceVectors
    from rsitr.index.store import MetadataStore

    store = MetadataStore(out)
    ids, vectors = store.embeddings()
    store.close()
    vectors = vectors.copy()
    vectors[0, 0] = 1e28
    LanceVectors.write(str(out / "vectors.lance"), ids, vectors)


LANCE_DAMAGES = {"deleted": lambda path: path.unlink(),
                 "garbage": lambda path: path.write_bytes(garbage(path.read_bytes())),
                 "truncated": lambda path: path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])}


def searched_ids(capsys, out: Path) -> tuple[list[int], list[str]]:
    assert main(["search", str(out), "a harbour", "--top-k", "10", "--format", "json"]) == 0
    printed, err = capsys.readouterr()
    return [hit["chip_id"] for hit in json.loads(printed)["results"]], err.splitlines()


@pytest.mark.parametrize("damage", [*LANCE_DAMAGES, "a component of 1e28"])
def test_a_damaged_lancedb_store_is_searched_from_sqlite_and_rewritten_by_index(tmp_path, capsys, damage):
    root, out = make_archive(tmp_path / "archive", geotiff=False), tmp_path / "index"
    assert main(index_argv(root, out, "--backend", "lancedb")) == 0
    capsys.readouterr()
    expected, _ = searched_ids(capsys, out)
    if damage in LANCE_DAMAGES:
        LANCE_DAMAGES[damage](next((out / "vectors.lance" / "chips.lance" / "data").glob("*.lance")))
    else:
        rewrite_lance_with_a_huge_component(out)
    found, err = searched_ids(capsys, out)
    assert found == expected
    assert all(line.startswith("rsitr") for line in err) and sum("are damaged" in line for line in err) == 1, err
    assert main(index_argv(root, out)) == 0  # nothing to encode, but the store is read whole and rewritten
    capsys.readouterr()
    found, err = searched_ids(capsys, out)
    assert found == expected and not any("damaged" in line for line in err)
    index = ArchiveIndex.open(out, encoder=tiny_encoder())
    assert type(index._vectors).__name__ == "LanceVectors"
    index.close()


def test_a_lancedb_index_reached_by_another_path_searches_its_table(tmp_path, capsys, monkeypatch):
    root, out = make_archive(tmp_path / "archive", geotiff=False), tmp_path / "index"
    monkeypatch.chdir(tmp_path)
    assert main(index_argv(root, Path("index"), "--backend", "lancedb")) == 0
    (tmp_path / "link").symlink_to(out)
    for path in (out, tmp_path / "link"):
        index = ArchiveIndex.open(path, encoder=tiny_encoder())
        assert type(index._vectors).__name__ == "LanceVectors"
        index.close()


# -- issue 33: one writer per index ---------------------------------------------------------------------------
def test_a_second_rsitr_index_on_an_index_being_written_is_one_line(built, capsys, monkeypatch):
    """The second run is refused while the first holds the lock, and the first completes."""
    from rsitr.index import archive_index

    root, out = built
    noise(9, 64, 48).save(root / "new.png")
    outcomes = []
    real_update = archive_index.update_index

    def update_while_another_run_starts(*args, **kwargs):
        outcomes.append(main(index_argv(root, out)))  # the second run, while the first is writing
        outcomes.append(one_error_line(capsys, "index"))
        return real_update(*args, **kwargs)

    monkeypatch.setattr(archive_index, "update_index", update_while_another_run_starts)
    assert main(index_argv(root, out)) == 0
    assert outcomes[0] == 2 and f"another rsitr index is writing {out}" in outcomes[1]
    monkeypatch.setattr(archive_index, "update_index", real_update)
    index = ArchiveIndex.open(out, encoder=tiny_encoder())
    assert "new.png" in index.store.files()
    index.close()
    assert main(index_argv(root, out)) == 0  # the lock is released with the run


# -- issue 33: memory limits per file -------------------------------------------------------------------------
def test_a_huge_sparse_scene_is_refused_from_its_header_naming_the_flag(tmp_path, capsys):
    """A 10^6 x 10^6 sparse GeoTIFF of a few kB: refused per scene (pixels) or per file (chips), the run goes on."""
    import rasterio

    root, out = make_archive(tmp_path / "archive", geotiff=False), tmp_path / "index"
    with rasterio.open(root / "sparse.tif", "w", driver="GTiff", width=10**6, height=10**6, count=1, dtype="uint8",
                       tiled=True, blockxsize=4096, blockysize=4096, compress="deflate", sparse_ok=True,
                       crs="EPSG:32633", transform=rasterio.Affine(0.3, 0, 400000, 0, -0.3, 5800000)) as dataset:
        dataset.write(np.full((1, 256, 256), 7, np.uint8), window=rasterio.windows.Window(0, 0, 256, 256))
    assert (root / "sparse.tif").stat().st_size < 5_000_000
    assert main(index_argv(root, out, "--max-pixels", str(10**13), "--max-chips-per-file", "5000")) == 0
    printed = capsys.readouterr().out
    assert "over the limit of 5,000 per file (--max-chips-per-file)" in printed
    assert main(index_argv(root, tmp_path / "defaults")) == 0  # a new index, the default limits
    printed = capsys.readouterr().out
    assert "sparse.tif" in printed and "(--max-pixels)" in printed
    for path in (out, tmp_path / "defaults"):
        index = ArchiveIndex.open(path, encoder=tiny_encoder())
        assert "sparse.tif" not in index.store.files() and len(index.store.files()) == 4
        index.close()
    # the index stores the failure in library terms (an API or a library caller reads it); only the CLI says flags
    index = ArchiveIndex.open(out, encoder=tiny_encoder())
    assert dict(index.store.failures())["sparse.tif"].endswith("per file (`max_chips_per_file`)")
    index.close()


def test_chip_count_is_the_number_of_windows():
    from rsitr.index.tiling import chip_count, chip_windows

    for width, height, size, overlap, larger in [(300, 200, 128, 32, 256), (64, 48, 128, 32, 256), (1000, 1000, 224, 32, 512),
                                                 (225, 5000, 224, 0, 100), (224, 224, 224, 32, 100), (10, 700, 50, 49, 20)]:
        assert chip_count(width, height, size, overlap, larger) == len(chip_windows(width, height, size, overlap, larger))


def test_the_ray_chip_encoder_holds_one_batch_of_chip_images_as_the_embedded_path(tmp_path, monkeypatch):
    """``encode_files`` (what each Ray actor runs) encodes a batch at a time while it reads a scene, rather than
    reading every chip of a file first: a tiled scene of many chips no longer sits in each worker's memory."""
    from rsitr.index import indexer
    from rsitr.index.indexer import IndexSettings, encode_files
    from support.index import write_geotiff

    root = tmp_path / "archive"
    root.mkdir()
    write_geotiff(root / "big.tif", width=600, height=600)
    encoder = tiny_encoder()
    held, most = [], []
    real_open, real_encode = indexer.open_scene, encoder.encode_images

    class CountedScene:
        def __init__(self, path, **options):
            self.opened = real_open(path, **options)

        def __enter__(self):
            scene = self.opened.__enter__()
            real_chip = scene.chip
            scene.chip = lambda window: (held.append(window), real_chip(window))[1]
            return scene

        def __exit__(self, *exc):
            return self.opened.__exit__(*exc)

    def counted_encode(images, *args):
        most.append(len(held))
        held.clear()
        return real_encode(images, *args)

    monkeypatch.setattr(indexer, "open_scene", CountedScene)
    monkeypatch.setattr(encoder, "encode_images", counted_encode)
    [encoded] = encode_files(encoder, root, IndexSettings(**CHIP_SETTINGS), ["big.tif"], batch_size=4)
    assert len(encoded.chips) == 36 and max(most) == 4  # 6 x 6 chips of 128 px, 96 apart


# -- issue 33: CSV cells a spreadsheet would run -------------------------------------------------------------
@pytest.mark.parametrize("name", ['=HYPERLINK("http://evil.example","x").png', "+1+cmd.png", "-2+3.png", "@SUM(A1).png",
                                  "\tx.png"])
def test_csv_exports_neutralise_cells_that_start_like_a_formula(name):
    from rsitr.index.export import to_csv
    from rsitr.index.searcher import SearchHit
    from rsitr.index.tiling import Window

    hits = [SearchHit(7, name, Window(0, 0, 64, 64), (-120.5, -33.0, -120.0, -32.5), "EPSG:4326", -0.25, -0.5,
                      None, False), SearchHit(8, "plain.png", Window(0, 0, 64, 64), None, None, 0.1, 0.1, None, False)]
    rows = list(csv.DictReader(io.StringIO(to_csv(hits))))
    assert rows[0]["path"] == "'" + name and rows[1]["path"] == "plain.png"
    assert float(rows[0]["left"]) == -120.5 and float(rows[0]["score"]) == -0.25  # numbers stay numbers


# -- issue 33: files that are no images ------------------------------------------------------------------------
def test_a_fifo_and_a_symlink_loop_in_the_archive_are_skipped_with_one_line_each(tmp_path, capsys):
    import os

    root, out = make_archive(tmp_path / "archive", geotiff=False), tmp_path / "index"
    os.mkfifo(root / "fifo.jpg")  # opening it to read would wait for a writer forever
    (root / "self.jpg").symlink_to("self.jpg")
    (root / "gone.jpg").symlink_to(root / "deleted.jpg")  # a broken symlink (inside: one leading out is no file of it)
    assert main(index_argv(root, out)) == 0
    err = capsys.readouterr().err.splitlines()
    assert sum("skipped fifo.jpg: not a regular file" in line for line in err) == 1
    assert sum("skipped self.jpg: a symlink loop" in line for line in err) == 1
    assert sum("skipped gone.jpg: a broken symlink" in line for line in err) == 1
    assert all(line.startswith("rsitr") for line in err), err
    index = ArchiveIndex.open(out, encoder=tiny_encoder())
    assert len(index.store.files()) == 4
    app = TestClient(create_app(index=index), base_url="http://localhost")
    for path in ("self.jpg", "fifo.jpg"):
        assert app.get("/api/files/preview", params={"path": path}).status_code == 404
    index.close()


# -- issue 33: config files that are no configs ----------------------------------------------------------------
HOSTILE_CONFIGS = {
    "a python tag": ("train:\n  epochs: !!python/object/apply:os.system ['touch {marker}']\n", "python/object"),
    "billion laughs": ("a: &a [x, x, x, x, x, x, x, x, x]\n"
                       + "".join(f"{b}: &{b} [*{a}, *{a}, *{a}, *{a}, *{a}, *{a}, *{a}, *{a}, *{a}]\n"
                                 for a, b in zip("abcdefgh", "bcdefghi")), "aliases"),
    "deep nesting": ("train: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 32"),
    "binary content": (bytes(range(256)) * 4, "not a YAML text file"),
    "control characters": ("train:\n  epochs: \x00\x01\n", "not a YAML file rsitr reads"),
}


@pytest.mark.parametrize("kind", HOSTILE_CONFIGS)
def test_a_hostile_yaml_config_is_one_line(tmp_path, capsys, kind):
    content, expected = HOSTILE_CONFIGS[kind]
    marker = tmp_path / "PWNED"
    path = tmp_path / "config.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content.replace("{marker}", str(marker)))
    assert main(["train", "--config", str(path), "--output-dir", str(tmp_path / "run")]) == 2
    assert expected in one_error_line(capsys, "train") and not marker.exists()
    assert not (tmp_path / "run").exists()


def test_a_full_disk_while_saving_vectors_faiss_is_one_line_and_keeps_the_old_file(built, capsys, monkeypatch):
    """The disk fills while the vectors are written: the file size limit (RLIMIT_FSIZE) makes write() fail as
    ENOSPC would, for that call only."""
    import resource
    import signal

    root, out = built
    before = (out / "vectors.faiss").read_bytes()
    noise(9, 64, 48).save(root / "new.png")
    real_save = vector_index.save_atomic

    def save_on_a_full_disk(index, path) -> None:
        limits = resource.getrlimit(resource.RLIMIT_FSIZE)
        handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, limits[1]))
        try:
            real_save(index, path)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, limits)
            signal.signal(signal.SIGXFSZ, handler)

    monkeypatch.setattr(vector_index, "save_atomic", save_on_a_full_disk)
    assert main(index_argv(root, out)) == 2
    assert "File too large" in one_error_line(capsys, "index")
    assert (out / "vectors.faiss").read_bytes() == before and not list(out.glob("*.tmp"))
    monkeypatch.setattr(vector_index, "save_atomic", real_save)
    assert main(index_argv(root, out)) == 0
    assert (out / "vectors.faiss").read_bytes() != before


# -- issue 33: an embed folder that is not what its manifest says ---------------------------------------------
def embed_argv(source: Path, out: Path, shard_size: int = 8) -> list[str]:
    return ["embed", str(source), "--out", str(out), "--model", TINY_MODEL, "--shard-size", str(shard_size),
            "--no-progress"]


EMBED_DAMAGES = {
    "a garbage manifest": (lambda out: (out / "_manifest.json").write_bytes(garbage(bytes(300))), "no manifest"),
    "a manifest of other fields": (lambda out: (out / "_manifest.json").write_text('{"format": 1}'), "no manifest"),
    "a manifest that is a list": (lambda out: (out / "_manifest.json").write_text("[1, 2]"), "no manifest"),
    "a garbage shard": (lambda out: (out / "part-00001.parquet").write_bytes(garbage(bytes(3000))), "no shard"),
    "a truncated shard": (lambda out: (out / "part-00001.parquet").write_bytes(
        (out / "part-00001.parquet").read_bytes()[:500]), "no shard"),
}


@pytest.mark.parametrize("damage", EMBED_DAMAGES)
def test_embed_into_a_folder_with_a_bad_manifest_or_shard_is_one_line(class_folders, tmp_path, capsys, damage):
    out = tmp_path / "emb"
    assert main(embed_argv(class_folders, out)) == 0
    spoil, expected = EMBED_DAMAGES[damage]
    spoil(out)
    assert main(embed_argv(class_folders, out)) == 2
    assert expected in one_error_line(capsys, "embed")


def test_embed_refuses_another_runs_shards_under_a_matching_manifest(class_folders, tmp_path, capsys):
    """Shards of a run with another shard size, copied beside this run's manifest: ids would be duplicated."""
    out, other = tmp_path / "emb", tmp_path / "other"
    assert main(embed_argv(class_folders, out, shard_size=8)) == 0
    assert main(embed_argv(class_folders, other, shard_size=5)) == 0
    capsys.readouterr()
    for shard in out.glob("part-*.parquet"):
        shard.unlink()
    for shard in other.glob("part-*.parquet"):
        shutil.copy(shard, out / shard.name)
    assert main(embed_argv(class_folders, out, shard_size=8)) == 2
    assert "another run's shard" in one_error_line(capsys, "embed")


def test_a_tile_bomb_in_the_archive_names_no_flag_index_lacks(tmp_path, capsys):
    """rsitr index reads scenes a window at a time: its --max-pixels bounds scenes, not the decoder's blocks, so the
    block error names the fixed limit and the fix (re-tiling); search and serve name their --max-pixels."""
    root, out = make_archive(tmp_path / "archive", geotiff=False), tmp_path / "index"
    (root / "bomb.tif").write_bytes(bomb("one 32768 x 32768 tile"))
    assert main(index_argv(root, out)) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if "bomb.tif" in line)
    assert "over the decoding limit" in line and "--max-pixels" not in line and "re-tile" in line
    with pytest.raises(ImageTooLargeError, match=r"\(`max_pixels` x 4\)") as raised:
        decode_image(bomb("one 32768 x 32768 tile"), "bomb.tif", 40_000_000)
    assert "(--max-pixels x 4)" in in_flags(raised.value)  # the line search and serve print
