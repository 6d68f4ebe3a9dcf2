"""The encode pipeline: the index's batch loop of reader -> encoder -> writer (rsitr/index/chips.py), the resumable
shard folder and the distributors (rsitr/inference/) (here, and Ray's when it is installed) writing the same shards."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from rsitr.errors import UserError
from rsitr.index.chip_shards import CHIP_SHARDS, ShardedChipEncoder
from rsitr.index.indexer import FileToEncode, IndexSettings
from rsitr.index.chips import Chip, FileEnd, FileStart, encode_chips
from rsitr.inference.distributors import in_process
from rsitr.inference.shards import MANIFEST, ShardFolder
from rsitr.index.tiling import Window
from support.index import CHIP_SETTINGS, make_archive, tiny_encoder


class CountingEncoder:
    """Encodes a chip image as ``[mean red, batch number]`` and remembers the batch sizes it saw."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def encode_images(self, images, orientations=1):
        self.batches.append(len(images))
        embeddings = np.array([[np.asarray(image)[..., 0].mean(), len(self.batches)] for image in images], np.float32)
        return SimpleNamespace(embeddings=embeddings, tokens=embeddings[:, None, :])


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def start(self, file: FileStart) -> None:
        self.calls.append(("start", file.path))

    def write(self, chips: list[Chip], completed: list[str]) -> None:
        self.calls.append(("write", [(chip.file, chip.window.x, float(chip.embedding[0]), chip.image)
                                     for chip in chips], completed))

    def fail(self, path: str, error: str) -> None:
        self.calls.append(("fail", path, error))


def chips(path: str, count: int, red: int) -> list:
    return [FileStart(path, 10 * count, 10, None),
            *(Chip(path, Window(10 * i, 0, 10, 10), None, Image.new("RGB", (10, 10), (red + i, 0, 0)))
              for i in range(count))]


def test_chips_are_encoded_in_batches_and_written_with_the_files_they_complete():
    events = [*chips("a.png", 3, 10), FileEnd("a.png"), *chips("b.png", 2, 50), FileEnd("b.png", "OSError: broken"),
              *chips("c.png", 1, 90), FileEnd("c.png"), FileStart("d.png", 5, 5, None), FileEnd("d.png")]
    encoder, writer = CountingEncoder(), Recorder()
    encode_chips(iter(events), writer, 2, encoder, keep_tokens=False)
    assert encoder.batches == [2, 2, 1]  # b.png's second chip never reaches the encoder: b failed before
    assert writer.calls == [
        ("start", "a.png"),
        ("write", [("a.png", 0, 10.0, None), ("a.png", 10, 11.0, None)], []),  # images freed once encoded
        ("start", "b.png"),
        ("write", [("a.png", 20, 12.0, None), ("b.png", 0, 50.0, None)], ["a.png"]),
        ("fail", "b.png", "OSError: broken"),  # its pending chip is dropped; the written one is the writer's to drop
        ("start", "c.png"), ("start", "d.png"),
        ("write", [("c.png", 0, 90.0, None)], ["c.png", "d.png"]),  # the last batch marks d.png, which has no chip
    ]


def test_encoded_chips_pass_through_and_tokens_are_kept_when_asked():
    encoded = Chip("a.png", Window(0, 0, 4, 4), None, embedding=np.ones(2, np.float32), tokens=np.ones((1, 2)))
    writer = Recorder()
    encode_chips([FileStart("a.png", 4, 4, None), encoded, FileEnd("a.png")], writer, 8, None)
    assert writer.calls[-1] == ("write", [("a.png", 0, 1.0, None)], ["a.png"])
    kept = Recorder()
    kept.write = lambda chips, completed: kept.calls.append([chip.tokens.shape for chip in chips])
    encode_chips(chips("b.png", 1, 0) + [FileEnd("b.png")], kept, 8, CountingEncoder(), keep_tokens=True)
    assert kept.calls == [("start", "b.png"), [(1, 2)]]
    with pytest.raises(ValueError, match="batch_size"):
        encode_chips([], writer, 0, None)


MANIFEST_A = {"format": "test", "settings": {"a": 1}, "fingerprint": {"dim": 2, "probe": [0.25, -0.5]}}


def test_a_shard_folder_keeps_the_shards_of_the_same_run_and_refuses_or_restarts_another(tmp_path):
    import pyarrow as pa

    folder = ShardFolder(tmp_path / "out")
    folder.resume(MANIFEST_A, ("format", "settings"))  # nothing there yet
    folder.write_manifest(MANIFEST_A)
    folder.write(0, pa.table({"id": [1, 2]}))
    folder.write(3, pa.table({"id": [3]}))
    assert [path.name for path in folder.shards()] == ["part-00000.parquet", "part-00003.parquet"]
    folder.resume(json.loads(json.dumps(MANIFEST_A)), ("format", "settings"))  # the same run: kept
    assert len(folder.shards()) == 2
    other = {**MANIFEST_A, "settings": {"a": 2}}
    with pytest.raises(UserError, match="made with other settings"):
        folder.resume(other, ("format", "settings"))
    assert len(folder.shards()) == 2
    folder.resume(other, ("format",))  # a key not compared may differ
    (folder.path / MANIFEST).write_bytes(b"\xff garbage")
    with pytest.raises(UserError, match="no manifest rsitr can read"):
        folder.resume(MANIFEST_A, ("format",))
    (folder.path / MANIFEST).unlink()
    with pytest.raises(UserError, match="holds Parquet shards but no _manifest.json"):
        folder.resume(MANIFEST_A, ("format",))
    folder.resume(MANIFEST_A, ("format",), restart=True)  # a cache starts over
    assert not folder.path.exists()


def encoded_files(encoded) -> list[tuple]:
    return [(file.path, file.width, file.height, file.crs, file.error,
             [(chip.window, chip.bounds, chip.embedding.tolist(),
               None if chip.tokens is None else chip.tokens.tolist()) for chip in file.chips]) for file in encoded]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = make_archive(tmp_path_factory.mktemp("pipeline") / "archive")  # 5 files (one GeoTIFF), one broken
    return root, [FileToEncode(path.relative_to(root).as_posix(), f"hash-{number}")
                  for number, path in enumerate(sorted(p for p in root.rglob("*") if p.is_file()))]


def test_chip_shards_resume_after_a_lost_shard_with_the_same_chips(tmp_path, archive):
    root, files = archive
    encoder, settings = tiny_encoder(), IndexSettings(**CHIP_SETTINGS)
    first = ShardedChipEncoder(tmp_path, in_process, files_per_shard=2)
    expected = encoded_files(first(encoder, root, settings, files, 4))
    shards = tmp_path / CHIP_SHARDS
    assert first.encoded_shards == 3 and len(list(shards.glob("part-*.parquet"))) == 3
    assert [file[4] is not None for file in expected] == [file.path == "broken.jpg" for file in files]
    (shards / "part-00001.parquet").unlink()  # a worker died writing it
    again = ShardedChipEncoder(tmp_path, in_process, files_per_shard=2)
    assert encoded_files(again(encoder, root, settings, files, 4)) == expected
    assert again.encoded_shards == 1 and (shards / "part-00003.parquet").is_file()
    other = ShardedChipEncoder(tmp_path, in_process, files_per_shard=2)  # another model: the cache starts over
    list(other(tiny_encoder(seed=1), root, settings, files, 4))
    assert other.encoded_shards == 3 and sorted(p.name for p in shards.glob("part-*.parquet")) == \
        ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]


@pytest.mark.slow
def test_the_ray_distributor_writes_the_chips_the_embedded_one_writes(tmp_path, archive):
    pytest.importorskip("ray")
    import ray

    from rsitr.index.chip_shards import RayChipEncoder

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False)
    try:
        root, files = archive
        encoder, settings = tiny_encoder(), IndexSettings(**CHIP_SETTINGS)
        here = ShardedChipEncoder(tmp_path / "here", in_process, files_per_shard=2)
        on_ray = RayChipEncoder(tmp_path / "ray", files_per_shard=2)
        assert encoded_files(on_ray(encoder, root, settings, files, 4)) == \
            encoded_files(here(encoder, root, settings, files, 4))
        assert here.encoded_shards == on_ray.encoded_shards == 3
    finally:
        if started:
            ray.shutdown()
