"""`rsitr index --engine ray` on a local Ray cluster: the embedded path's index (chips, vectors, tokens, top-10),
resumed by shard after a crash, and one error line for an unreachable cluster that leaves an index untouched."""

from __future__ import annotations

import pytest

pytest.importorskip("ray")

from rsitr.cli import main  # noqa: E402
from rsitr.index import ArchiveIndex, BuildOptions  # noqa: E402
from rsitr.index.chip_shards import CHIP_SHARDS  # noqa: E402
from rsitr.index.chip_shards import RayChipEncoder, build_index_with_ray  # noqa: E402
from support.index import CHIP_SETTINGS, assert_same_index, make_archive, tiny_encoder  # noqa: E402
from support.errors import assert_user_error  # noqa: E402


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """:func:`make_archive`: four one-chip PNGs, a GeoTIFF tiled into 6 chips, an unreadable file."""
    return make_archive(tmp_path_factory.mktemp("ray_index") / "archive")


@pytest.fixture(scope="module")
def local_index(archive):
    index, _ = ArchiveIndex.build(archive.parent / "local", archive, encoder=tiny_encoder(), progress=False,
                                  options=BuildOptions(batch_size=4, **CHIP_SETTINGS))
    yield index
    index.close()


class _DriverDies(RayChipEncoder):
    """The driver dies while ingesting: after handing over ``files`` files."""

    def __init__(self, directory, files: int) -> None:
        super().__init__(directory, files_per_shard=2)
        self.files = files

    def __call__(self, *arguments):
        for number, encoded in enumerate(super().__call__(*arguments)):
            if number == self.files:
                raise RuntimeError("driver killed")
            yield encoded


@pytest.mark.slow
def test_ray_index_equals_the_embedded_one(tmp_path, archive, local_index, ray_cluster):
    index, report = build_index_with_ray(tmp_path / "ray", archive, encoder=tiny_encoder(), progress=False,
                                         files_per_shard=2, options=BuildOptions(batch_size=4, **CHIP_SETTINGS))
    assert report.chips_encoded == 10 and [path for path, _ in report.failures] == ["broken.jpg"]
    assert_same_index(local_index, index)
    assert not (tmp_path / "ray" / CHIP_SHARDS).exists()  # the shards are gone once ingested
    index.close()


@pytest.mark.slow
def test_ray_index_resumes_by_shard(tmp_path, archive, local_index, ray_cluster):
    out = tmp_path / "ray"
    with pytest.raises(RuntimeError, match="driver killed"):
        ArchiveIndex.build(out, archive, encoder=tiny_encoder(), progress=False, chip_encoder=_DriverDies(out, files=3),
                           options=BuildOptions(batch_size=2, **CHIP_SETTINGS))
    shards = out / CHIP_SHARDS
    written = {path.name: path.stat().st_mtime_ns for path in shards.glob("part-*.parquet")}
    assert sorted(written) == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    (shards / "part-00001.parquet").unlink()  # a worker died writing it
    again = RayChipEncoder(out, files_per_shard=2)
    index, report = ArchiveIndex.build(out, archive, encoder=tiny_encoder(), progress=False, chip_encoder=again,
                                       options=BuildOptions(batch_size=2))
    assert again.encoded_shards == 1  # only the lost shard's files were encoded again
    assert {p.name: p.stat().st_mtime_ns for p in shards.glob("part-*.parquet")} == \
        {**{k: v for k, v in written.items() if k != "part-00001.parquet"},
         "part-00003.parquet": (shards / "part-00003.parquet").stat().st_mtime_ns}
    # Registered before the driver died: geo.tif with its chips (not its completion), scene0.png with none.
    assert report.resumed == ["geo.tif", "scene0.png"]
    assert_same_index(local_index, index, same_ids=False)
    index.close()


def test_unreachable_ray_address_is_one_error_line_and_keeps_the_index(tmp_path, archive, local_index, capsys):
    before = (local_index.store.generation, local_index.store.chip_count())
    code = main(["index", str(archive), "--out", str(archive.parent / "local"), "--engine", "ray",
                 "--address", "127.0.0.1:1", "--no-progress"])
    assert_user_error(code, capsys.readouterr().err, "index", "cannot reach the Ray cluster at 127.0.0.1:1")
    assert (local_index.store.generation, local_index.store.chip_count()) == before
    code = main(["index", str(archive), "--out", str(tmp_path / "new"), "--engine", "ray",
                 "--address", "127.0.0.1:1"])
    assert_user_error(code, capsys.readouterr().err, "index", "cannot reach the Ray cluster")
    assert not (tmp_path / "new").exists()


def test_missing_ray_extra_is_one_error_line(tmp_path, archive, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)
    code = main(["index", str(archive), "--out", str(tmp_path / "new"), "--engine", "ray"])
    assert_user_error(code, capsys.readouterr().err, "index", "pip install 'rsitr[ray]'")
    assert not (tmp_path / "new").exists()
