"""Red team round 4, table-driven: every attack on a scene's name or georeferencing against every output path.

:data:`ATTACKS` are scenes an archive may hold (hostile names, a CRS that cannot reach WGS84, latitudes of 744);
:data:`OUTPUTS` every way a search result leaves rsitr (the command line's table, JSON, GeoJSON and CSV, ranked and
"find all"; the API's JSON and downloads, ranked and "find all"; the heat map's JSON and GeoTIFF). Each pair is one
test, so a new output path added to :data:`OUTPUTS` inherits every attack, and a new attack every output path.
The outputs are made once per module from one index, holding every attack scene (each one chip).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import unquote

import numpy as np
import pytest
from fastapi.testclient import TestClient

from rsitr.api.app import create_app
from rsitr.cli import main
from rsitr.index.export import FORMULA_STARTS
from rsitr.models import TINY_MODEL
from rsitr.terminal import printable
from support.index import CHIP_SETTINGS, noise

FORMULA_NAMES = ('=HYPERLINK("evil.example","x").tif', "=cmd|' calc'!A0.tif", "=1+1.tif", "\tTAB.tif",
                 "@SUM(A1).tif", "+1.tif", "-1.tif")
TERMINAL_NAMES = ("esc\x1b[2J\x1b[31mred.tif", "line\n  1    0.9999  forged.tif", "bidi\u202egpj.tif")
FILLERS = 8
UTM, LOCAL = "EPSG:32633", 'LOCAL_CS["arbitrary",UNIT["metre",1]]'


@dataclass(frozen=True)
class Attack:
    """A scene of the archive: its file name, CRS and top-left corner (64 x 64 pixels of ``pixel`` units)."""

    name: str
    crs: str = UTM
    origin: tuple[float, float] = (500_000.0, 4_000_000.0)
    pixel: float = 10.0
    placed: bool = True
    """Whether its footprint can be drawn in WGS84 (False: null geometry, no bounds for maps)."""


ATTACKS = {
    **{f"formula {name!r}": Attack(name, origin=(400_000.0 + 1000 * number, 4_000_000.0))
       for number, name in enumerate(FORMULA_NAMES)},
    **{f"terminal {name!r}": Attack(name, origin=(420_000.0 + 1000 * number, 4_000_000.0))
       for number, name in enumerate(TERMINAL_NAMES)},
    "a name no latin-1 holds": Attack("场景-ü-\u2603.tif", origin=(440_000.0, 4_000_000.0)),
    "a local CRS": Attack("local.tif", crs=LOCAL, origin=(1000.0, 2000.0), pixel=1.0, placed=False),
    "latitudes 744-1000 in EPSG:4326": Attack("lat744.tif", crs="EPSG:4326", origin=(10.0, 1000.0), pixel=4.0,
                                              placed=False),
}


@dataclass
class Output:
    """One output path's answer: its text (or bytes), HTTP headers, and per scene path what it says of it."""

    kind: str
    text: str
    err: str = ""
    headers: dict = field(default_factory=dict)
    footprints: dict[str, list] = field(default_factory=dict)
    """Scene path -> the WGS84 footprints listed for it (coordinates, or None for no footprint)."""
    csv_rows: list[dict] = field(default_factory=list)


def write_scene(root: Path, attack: Attack, seed: int) -> None:
    import rasterio
    from rasterio.crs import CRS

    pixels = np.asarray(noise(seed, 64, 64)).transpose(2, 0, 1)
    transform = rasterio.Affine(attack.pixel, 0, attack.origin[0], 0, -attack.pixel, attack.origin[1])
    crs = CRS.from_wkt(attack.crs) if attack.crs.startswith("LOCAL_CS") else CRS.from_string(attack.crs)
    with rasterio.open(root / attack.name, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8",
                       crs=crs, transform=transform) as dataset:
        dataset.write(pixels)


@dataclass
class Setting:
    out: Path
    client: TestClient
    chip_of: dict[str, int]
    """Attack scene path -> its chip id."""
    every_chip: list[int]


@pytest.fixture(scope="module")
def setting(tmp_path_factory) -> Setting:
    from rsitr.index import ArchiveIndex

    base = tmp_path_factory.mktemp("attacks")
    root, out = base / "archive", base / "index"
    root.mkdir()
    for seed, attack in enumerate(ATTACKS.values()):
        write_scene(root, attack, seed)
    for seed in range(FILLERS):  # unmarked chips: the background of "find all"
        noise(100 + seed, 64, 48).save(root / f"filler{seed}.png")
    settings = [item for key, value in CHIP_SETTINGS.items() for item in (f"--{key.replace('_', '-')}", str(value))]
    assert cli(["index", str(root), "--out", str(out), "--model", TINY_MODEL, "--no-progress",
                *settings])[0] == 0
    index = ArchiveIndex.open(out, device="cpu")
    ids, _ = index.store.embeddings()
    chip_of = {record.path: chip_id for chip_id, record in index.store.chips(ids.tolist()).items()
               if not record.path.startswith("filler")}
    assert set(chip_of) == {attack.name for attack in ATTACKS.values()}
    return Setting(out, TestClient(create_app(index=index), base_url="http://localhost"), chip_of, ids.tolist())


def cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's refusal of the command line
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def marks(setting: Setting) -> list[str]:
    """Every attack scene's chip marked wanted: "find all" then finds each."""
    return [str(chip) for chip in setting.chip_of.values()]


def parsed(kind: str, text: str, headers: dict | None = None, err: str = "") -> Output:
    output = Output(kind, text, err, dict(headers or {}))
    if kind == "geojson":
        for feature in json.loads(text)["features"]:
            geometry = feature["geometry"]
            output.footprints.setdefault(feature["properties"]["path"], []).append(
                None if geometry is None else geometry["coordinates"])
    elif kind == "json":
        answer = json.loads(text)
        for hit in answer if isinstance(answer, list) else answer["results"]:
            output.footprints.setdefault(hit["path"], []).append(hit["wgs84_bounds"])
    elif kind == "csv":
        output.csv_rows = list(csv.DictReader(io.StringIO(text)))
    return output


def cli_output(kind: str, find_all: bool) -> Callable[[Setting], Output]:
    def run(setting: Setting) -> Output:
        argv = ["search", str(setting.out), "--positive", *marks(setting), "--top-k", "50"]
        code, printed, err = cli([*argv, *(["--all", "--threshold", "0.01"] if find_all else []), "--format", kind])
        assert code == 0 and "Traceback" not in err, err
        return parsed(kind, printed, err=err)

    return run


def cli_list(setting: Setting) -> Output:
    """``rsitr search INDEX --list '*'``: every chip's handle (its file name) in a table."""
    code, printed, err = cli(["search", str(setting.out), "--list", "*"])
    assert code == 0 and "Traceback" not in err, err
    return parsed("table", printed, err=err)


def api_output(kind: str, find_all: bool) -> Callable[[Setting], Output]:
    def run(setting: Setting) -> Output:
        params = {"positive": marks(setting), "k": 50, "format": kind, **({"all": "true", "threshold": 0.01}
                                                                           if find_all else {})}
        answer = setting.client.get("/api/search", params=params)
        assert answer.status_code == 200, answer.text
        return parsed(kind, answer.text, answer.headers)

    return run


def heatmap_output(kind: str) -> Callable[[Setting], dict[str, Output]]:
    """The heat map of every scene (one answer each, by scene path)."""
    def run(setting: Setting) -> dict[str, Output]:
        answers = {}
        for path, chip in setting.chip_of.items():
            answer = setting.client.get("/api/heatmap", params={"path": path, "like": chip, "format": kind})
            assert answer.status_code == 200, answer.text
            output = Output(kind, answer.text if kind == "json" else "", headers=dict(answer.headers))
            if kind == "json":
                output.footprints[path] = [cell["wgs84_bounds"] for cell in answer.json()["chips"]]
            answers[path] = output
        return answers

    return run


OUTPUTS = {
    **{f"rsitr search --format {kind}": cli_output(kind, False) for kind in ("table", "json", "geojson", "csv")},
    **{f"rsitr search --all --format {kind}": cli_output(kind, True) for kind in ("table", "json", "geojson", "csv")},
    "rsitr search --list": cli_list,
    **{f"/api/search format={kind}": api_output(kind, False) for kind in ("json", "geojson", "csv")},
    **{f"/api/search all=true format={kind}": api_output(kind, True) for kind in ("json", "geojson", "csv")},
    **{f"/api/heatmap format={kind}": heatmap_output(kind) for kind in ("json", "geotiff")},
}


@pytest.fixture(scope="module")
def outputs(setting) -> Callable[[str], Output | dict[str, Output]]:
    """An output path's answer, made once (a path that fails fails each of its tests, not the others')."""
    made: dict[str, Output | dict[str, Output]] = {}

    def output(name: str) -> Output | dict[str, Output]:
        if name not in made:
            made[name] = OUTPUTS[name](setting)
        return made[name]

    return output


def coordinates(nested) -> list[tuple[float, float]]:
    """The (longitude, latitude) pairs of a footprint: bounds (w, s, e, n) or GeoJSON coordinates."""
    if nested and isinstance(nested[0], (int, float)):
        return [(nested[0], nested[1]), (nested[2], nested[3])]
    return [pair for part in nested for pair in (coordinates(part) if not isinstance(part[0], (int, float))
                                                  else [tuple(part)])]


@pytest.mark.parametrize("output_name", OUTPUTS)
@pytest.mark.parametrize("attack_name", ATTACKS)
def test_every_attack_holds_on_every_output_path(outputs, attack_name, output_name):
    attack, output = ATTACKS[attack_name], outputs(output_name)
    if isinstance(output, dict):  # the heat map: the scene's own answer
        output = output[attack.name]
    # the scene is listed, by its exact name where the format carries names
    if output.kind in ("json", "geojson"):
        assert attack.name in output.footprints, sorted(output.footprints)
    if output.kind == "csv":
        assert any(row["path"].lstrip("'") == attack.name for row in output.csv_rows)
    if output.kind == "table":
        assert printable(attack.name) in output.text
    # coordinates: every footprint on the globe; a scene that cannot be placed has none
    for footprint in output.footprints.get(attack.name, []):
        if not attack.placed:
            assert footprint is None, footprint
        elif footprint is not None:
            assert all(abs(lon) <= 180 and abs(lat) <= 90 for lon, lat in coordinates(footprint)), footprint
    if output.kind == "csv":  # every text cell inert, whatever column holds the name
        for row in output.csv_rows:
            for value in row.values():
                assert not value.startswith(FORMULA_STARTS), row
        for row in output.csv_rows:
            if row["path"].lstrip("'") == attack.name and not attack.placed:
                assert not any(row.get(column) for column in ("lon_min", "lat_min", "lon_max", "lat_max", "wkt"))
    if output.kind == "table":  # nothing that acts on a terminal, one line per result
        assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]", output.text)
        assert "forged.tif" not in "".join(line for line in output.text.splitlines()
                                           if re.match(r"\s*\d+\s+-?\d", line) and "line\\n" not in line)
    if output.kind == "geotiff":  # a download named by RFC 6266, any name
        disposition = output.headers["content-disposition"]
        assert disposition.isascii() and "\n" not in disposition
        encoded = re.search(r"filename\*=UTF-8''(\S+)", disposition).group(1)
        assert unquote(encoded) == f"{Path(attack.name).stem}-scores.tif"
    if output.kind in ("csv", "geojson") and output.headers:
        assert output.headers["content-disposition"].isascii()


def test_find_all_with_every_chip_marked_wanted_is_one_error_line(setting):
    """Nothing is left to tell the wanted chips from: one error line (CLI), 400 (API), not a traceback or 500."""
    from support.errors import assert_user_error

    every = [str(chip) for chip in setting.every_chip]
    for kind in ("table", "json", "geojson", "csv"):
        code, _, err = cli(["search", str(setting.out), "--positive", *every, "--all", "--format", kind])
        assert_user_error(code, err, "search", "every chip of the index")
    for kind in ("json", "geojson", "csv"):
        answer = setting.client.get("/api/search", params={"positive": every, "all": "true", "format": kind})
        assert answer.status_code == 400 and "every chip of the index" in answer.json()["detail"], answer.text
    path = next(iter(setting.chip_of))
    for kind in ("json", "geotiff"):
        answer = setting.client.get("/api/heatmap", params={"path": path, "positive": every, "all": "true",
                                                             "format": kind})
        assert answer.status_code == 400 and "every chip of the index" in answer.json()["detail"], answer.text


# -- the derived vector store, damaged where no search looks --------------------------------------------------
RANDOM_WEIGHTS = "randomly initialised weights"  # the tiny test model's own warning line
DAMAGES = {"1e28": np.float32(1e28), "NaN": np.float32(np.nan)}


def damage_stored_vector(files: list[Path], vector: np.ndarray, value: np.float32) -> Path:
    """The first 8 floats of ``vector`` set to ``value`` where a store file holds it (as FAISS and Lance keep
    float32 vectors: its bytes verbatim); headers and id maps stay intact."""
    wanted = np.asarray(vector, "<f4").tobytes()
    for path in files:
        data = bytearray(path.read_bytes())
        at = data.find(wanted)
        if at >= 0:
            data[at:at + 32] = np.full(8, value, "<f4").tobytes()
            path.write_bytes(bytes(data))
            return path
    raise AssertionError("the vector is in no store file")


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``rsitr`` in its own process: what native code prints (a Rust panic) reaches its stderr too."""
    import subprocess
    import sys

    from support import REPO

    done = subprocess.run([sys.executable, "-m", "rsitr.cli", *argv], capture_output=True, text=True, cwd=REPO,
                          timeout=600)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("backend", ["faiss", "lancedb"])
def test_a_changed_vector_that_no_search_returns_is_found_when_the_store_opens(tmp_path, backend, damage):
    from rsitr.index.store import MetadataStore
    from support.index import make_archive

    root, out = make_archive(tmp_path / "archive", geotiff=False), tmp_path / "index"
    settings = [item for key, value in CHIP_SETTINGS.items() for item in (f"--{key.replace('_', '-')}", str(value))]
    index_argv = ["index", str(root), "--out", str(out), "--model", TINY_MODEL, "--no-progress", "--backend",
                  backend, *settings]
    assert cli(index_argv)[0] == 0
    record = MetadataStore(out)
    ids, vectors = record.embeddings()
    record.close()
    target = int(ids[1])
    store_files = [out / "vectors.faiss"] if backend == "faiss" else \
        sorted((out / "vectors.lance" / "chips.lance" / "data").glob("*.lance"))
    damage_stored_vector(store_files, vectors[1], DAMAGES[damage])
    code, printed, err = run_cli("search", str(out), "--like", str(target), "--top-k", "3", "--format", "json")
    assert code == 0, err
    assert json.loads(printed)["results"][0]["chip_id"] == target  # the best hit (itself) is still found
    lines = [line for line in err.splitlines() if RANDOM_WEIGHTS not in line]
    assert len(lines) == 1 and lines[0].startswith("rsitr search: warning: ") and "not the ones written" in err, err
    assert cli(index_argv)[0] == 0  # the next indexing run writes the store anew
    code, printed, err = run_cli("search", str(out), "--like", str(target), "--top-k", "3", "--format", "json")
    assert code == 0 and json.loads(printed)["results"][0]["chip_id"] == target, err
    assert [line for line in err.splitlines() if RANDOM_WEIGHTS not in line] == []


# -- inputs: each attack ends as one error line (exit 2), nothing written lost ----------------------------------
def deep_json(levels: int) -> str:
    return '{"format": ' + "[" * levels + "]" * levels + "}"


def embed_argv(images: Path, out: Path) -> list[str]:
    return ["embed", str(images), "--out", str(out), "--model", TINY_MODEL, "--shard-size", "2", "--no-progress"]


def a_stray_shard(tmp_path: Path, setting: Setting) -> list[str]:
    """A finished embed folder with a copied shard beside its own: a Parquet reader of the folder reads both."""
    images = tmp_path / "images"
    images.mkdir()
    for seed in range(5):
        noise(seed, 32, 32).save(images / f"image{seed}.png")
    assert cli(embed_argv(images, tmp_path / "embedded"))[0] == 0
    (tmp_path / "embedded" / "part-00007.parquet").write_bytes((tmp_path / "embedded" / "part-00000.parquet")
                                                               .read_bytes())
    return embed_argv(images, tmp_path / "embedded")


def a_deep_manifest(tmp_path: Path, setting: Setting) -> list[str]:
    images = tmp_path / "images"
    images.mkdir()
    noise(0, 32, 32).save(images / "image0.png")
    (tmp_path / "embedded").mkdir()
    (tmp_path / "embedded" / "_manifest.json").write_text(deep_json(100_000))
    return embed_argv(images, tmp_path / "embedded")


def a_fifo_query_image(tmp_path: Path, setting: Setting) -> list[str]:
    import os

    os.mkfifo(tmp_path / "q.jpg")  # reading it would wait for a writer forever
    return ["search", str(setting.out), "--image", str(tmp_path / "q.jpg")]


def a_fifo_as(name: str, argv: Callable[[Path, Setting], list[str]]) -> Callable[[Path, Setting], list[str]]:
    """A FIFO at ``tmp_path / name``, given where ``argv`` (of the FIFO's path and the setting) reads a file."""
    def make(tmp_path: Path, setting: Setting) -> list[str]:
        import os

        os.mkfifo(tmp_path / name)
        return argv(tmp_path / name, setting)

    return make


def an_index_recording_a_checkpoint(tmp_path: Path, setting: Setting, digest: str) -> Path:
    """A copy of the attacks' index that records ``model.pt`` with the SHA-256 ``digest`` as its weights."""
    import shutil

    from rsitr.index.store import MetadataStore

    out = tmp_path / "index"
    shutil.copytree(setting.out, out)
    store = MetadataStore(out)
    store.set_meta(pretrained="model.pt", pretrained_sha256=digest)
    store.close()
    return out


def a_replaced_checkpoint(tmp_path: Path, setting: Setting) -> list[str]:
    """A copy of the index whose recorded checkpoint (``model.pt``, with its SHA-256) was replaced by another file
    at the same path: it must not be loaded (unpickled) at all."""
    import hashlib

    out = an_index_recording_a_checkpoint(tmp_path, setting, hashlib.sha256(b"the weights indexed with").hexdigest())
    (out / "model.pt").write_bytes(b"other weights put in their place")
    return ["search", str(out), "a harbour"]


def a_config(text: str) -> Callable[[Path, Setting], list[str]]:
    def make(tmp_path: Path, setting: Setting) -> list[str]:
        (tmp_path / "config.yaml").write_text(text)
        return ["train", "--config", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "run")]

    return make


def an_override(value: str) -> Callable[[Path, Setting], list[str]]:
    synthetic = Path(__file__).resolve().parents[2] / "configs" / "data" / "synthetic.yaml"
    return lambda tmp_path, setting: ["train", "--config", str(synthetic), "--set", value, "--out",
                                      str(tmp_path / "run")]


INPUT_ATTACKS = {
    "a config that is a YAML list": (a_config("- 1\n- 2\n"), "not a mapping of sections"),
    "a config with a 2 MB model name": (a_config("model:\n  name: " + "x" * 2_000_000 + "\n"), "bytes, more than"),
    "--set nested 5,000 deep": (an_override("a=" + "[" * 5000 + "]" * 5000), "nested deeper than"),
    "--set with a self-referencing alias": (an_override("a=&x [*x]"), "aliases"),
    "--set with a key 5,000 deep": (an_override("a." + ".".join(["b"] * 5000) + "=1"), "deeper than a config"),
    "an embed manifest nested 100,000 deep": (a_deep_manifest, "nested deeper than"),
    "a stray shard copied into an embed folder": (a_stray_shard, "part-00007.parquet"),
    "a FIFO named q.jpg as the query image": (a_fifo_query_image, "FIFO"),
    "a FIFO as the config": (a_fifo_as("config.yaml", lambda fifo, setting: [
        "train", "--config", str(fifo), "--out", str(fifo.parent / "run")]), "FIFO"),
    "a FIFO as the caption file inspected": (a_fifo_as("captions.json", lambda fifo, setting: [
        "data", "inspect", str(fifo), "--images", str(fifo.parent)]), "FIFO"),
    "a FIFO as the pHash cache": (a_fifo_as("phash.json", lambda fifo, setting: [
        "data", "inspect", str(fifo.parent / "captions.json"), "--images", str(fifo.parent), "--cache", str(fifo)]),
        "FIFO"),
    "a FIFO as the checkpoint to index with": (a_fifo_as("model.pt", lambda fifo, setting: [
        "index", str(fifo.parent), "--out", str(fifo.parent / "index"), "--pretrained", str(fifo)]), "FIFO"),
    "a FIFO as the moved checkpoint of an index": (a_fifo_as("moved.pt", lambda fifo, setting: [
        "search", str(an_index_recording_a_checkpoint(fifo.parent, setting, "0" * 64)), "a harbour",
        "--checkpoint", str(fifo)]), "FIFO"),
    "a checkpoint replaced at its recorded path": (a_replaced_checkpoint, "SHA-256 differs from the recorded"),
    "a flag prefix (--top for --top-k)": (lambda tmp_path, setting: ["search", str(setting.out), "x", "--top", "3"],
                                          "unrecognized arguments: --top"),
}


@pytest.mark.parametrize("attack", INPUT_ATTACKS)
def test_every_input_attack_ends_as_one_error_line(tmp_path, setting, attack):
    from support.errors import assert_user_error

    make, fragment = INPUT_ATTACKS[attack]
    argv = make(tmp_path, setting)
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file() and not path.is_fifo()}
    code, _, err = cli(argv)
    if attack.startswith("a flag prefix"):  # argparse's refusal: its usage, then the error line
        assert code == 2 and fragment in err.splitlines()[-1], err
        return
    assert_user_error(code, err, argv[0], fragment)
    assert len(err) < 2000  # nothing huge echoed
    after = {path: path.read_bytes() for path in before if path.is_file()}
    assert after == before  # nothing already written lost


def test_reading_an_embed_folder_reads_the_shards_its_manifest_names(tmp_path, setting):
    from rsitr.inference.embed import read_embeddings
    from rsitr.errors import RsitrWarning

    a_stray_shard(tmp_path, setting)
    with pytest.warns(RsitrWarning, match="part-00007.parquet"):
        table, vectors = read_embeddings(tmp_path / "embedded")
    assert sorted(table.column("id").to_pylist()) == list(range(5)) and vectors.shape[0] == 5


# -- the server: half-sent requests ---------------------------------------------------------------------------
def test_half_sent_requests_are_closed_at_the_header_deadline_and_whole_ones_answered(setting):
    import socket
    import threading
    import time

    import uvicorn

    from rsitr.api.server import HeaderTimeoutProtocol

    class Quick(HeaderTimeoutProtocol):
        header_timeout = 0.5

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(setting.client.app, host="127.0.0.1", port=port, log_level="warning",
                                           http=Quick))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive()
        time.sleep(0.05)
    slow = []
    try:
        for _ in range(50):  # slowloris: a request line and part of a header, never finished
            connection = socket.create_connection(("127.0.0.1", port), timeout=60)
            connection.sendall(b"GET /api/info HTTP/1.1\r\nHost: localhost\r\nX-Slow: a")
            slow.append(connection)
        for connection in slow:
            assert connection.recv(1024) == b""  # closed by the server (a timeout here would raise)
        with socket.create_connection(("127.0.0.1", port), timeout=60) as whole:
            whole.sendall(b"GET /api/info HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            assert whole.recv(1024).startswith(b"HTTP/1.1 200")
    finally:
        for connection in slow:
            connection.close()
        server.should_exit = True
        thread.join(30)


def test_rsitr_serve_closes_a_half_sent_request_at_its_header_deadline(setting):
    """The real `rsitr serve` (its own process, the default deadline): a request left half-sent is closed, not
    held open; a whole one is answered."""
    import socket
    import subprocess
    import sys

    import httpx

    from rsitr.api.server import HEADER_TIMEOUT
    from support import REPO

    server = subprocess.Popen([sys.executable, "-m", "rsitr.cli", "serve", str(setting.out), "--port", "0"],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = next(line for line in server.stdout if line.startswith("serving ")).split(" at ")[1].split("/ ")[0]
        host, port = url.removeprefix("http://").rsplit(":", 1)
        while True:  # the line is printed before uvicorn binds
            try:
                httpx.get(f"{url}/api/info", timeout=5.0)
                break
            except httpx.TransportError:
                assert server.poll() is None
        with socket.create_connection((host, int(port)), timeout=HEADER_TIMEOUT + 60) as slow:
            slow.sendall(b"GET /api/info HTTP/1.1\r\nHost: localhost\r\nX-Slow: a")
            assert slow.recv(1024) == b""  # closed by the server (a socket timeout here would raise)
        assert httpx.get(f"{url}/api/info", timeout=30.0).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_no_parser_of_the_command_line_takes_a_flag_prefix():
    """Every parser, nested ones included (``rsitr data inspect``), refuses a prefix of a flag."""
    import argparse

    from rsitr.cli import build_parser

    parsers, seen = [build_parser()], []
    while parsers:
        parser = parsers.pop()
        seen.append(parser.prog)
        assert parser.allow_abbrev is False, parser.prog
        parsers.extend(sub for action in parser._actions if isinstance(action, argparse._SubParsersAction)
                       for sub in action.choices.values())
    assert {"rsitr", "rsitr search", "rsitr index", "rsitr serve", "rsitr data inspect"} <= set(seen), seen
    code, _, err = cli(["data", "inspect", "captions.json", "--images", "images", "--max-dist", "3"])
    assert code == 2 and "unrecognized arguments: --max-dist" in err.splitlines()[-1], err
