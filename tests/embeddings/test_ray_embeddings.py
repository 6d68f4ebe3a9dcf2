"""`rsitr embed --engine ray` on a local Ray cluster: the embedded path's shards and vectors, resumed by shard, and
one error line for an unreachable cluster or a missing extra; `--engine ray` prints rsitr's lines only (no Ray ones)
without --verbose."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("ray")

from rsitr.cli import main  # noqa: E402
from rsitr.inference.embed import EmbedSettings, embed_to_parquet, read_embed_input, read_embeddings  # noqa: E402
from rsitr.inference.embed import embed_with_ray  # noqa: E402
from rsitr.retrieval import vector_index  # noqa: E402
from support.index import noise, tiny_encoder  # noqa: E402
from support.errors import assert_user_error  # noqa: E402


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_shards_hold_the_embedded_vectors_and_resume(tmp_path, ray_cluster):
    images = tmp_path / "images"
    images.mkdir()
    for seed in range(10):
        noise(seed, 64, 48).save(images / f"scene_{seed}.png")
    (images / "broken.png").write_bytes(b"not an image")
    encoder = tiny_encoder()
    data = read_embed_input(images)
    settings = EmbedSettings(dtype="fp32", shard_size=4)
    local = embed_to_parquet(encoder.model, data, tmp_path / "local", settings, "tiny", None, 4, progress=False)
    remote = embed_with_ray(encoder.model, data, tmp_path / "ray", settings, "tiny", None, 4)
    assert (remote.rows, remote.shards, remote.skipped) == (local.rows, local.shards, local.skipped) == (10, 3, ["broken.png"])
    local_table, local_vectors = read_embeddings(tmp_path / "local")
    ray_table, ray_vectors = read_embeddings(tmp_path / "ray")
    assert ray_table.column("path").to_pylist() == local_table.column("path").to_pylist()
    np.testing.assert_allclose(ray_vectors, local_vectors, atol=1e-6)
    ids = np.arange(len(local_vectors))
    queries = local_vectors + 0.01
    found = [vector_index.search_vectors(vector_index.build_vector_index(v, ids), queries, 10)[1]
             for v in (local_vectors, ray_vectors)]
    np.testing.assert_array_equal(*found)  # the same top-10
    # A lost shard (a worker died while writing it) is the only one encoded again.
    kept = {path.name: path.stat().st_mtime_ns for path in (tmp_path / "ray").glob("part-*.parquet")}
    (tmp_path / "ray" / "part-00001.parquet").unlink()
    again = embed_with_ray(encoder.model, data, tmp_path / "ray", settings, "tiny", None, 4)
    assert again.reused_shards == 2 and again.rows == 10
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray").glob("part-*.parquet")
            if p.name != "part-00001.parquet"} == {k: v for k, v in kept.items() if k != "part-00001.parquet"}
    np.testing.assert_array_equal(read_embeddings(tmp_path / "ray")[1], ray_vectors)


def test_ray_resumes_embedded_shards_of_the_same_settings_only(tmp_path, ray_cluster):
    """Both engines write and check one manifest: the same settings resume, other settings are refused."""
    from rsitr.errors import UserError

    images = tmp_path / "images"
    images.mkdir()
    for seed in range(3):
        noise(seed, 32, 32).save(images / f"scene_{seed}.png")
    encoder = tiny_encoder()
    data = read_embed_input(images)
    embed_to_parquet(encoder.model, data, tmp_path / "out", EmbedSettings(dtype="fp32"), "tiny", None, 4,
                     progress=False)
    resumed = embed_with_ray(encoder.model, data, tmp_path / "out", EmbedSettings(dtype="fp32"), "tiny", None, 4)
    assert (resumed.rows, resumed.reused_shards) == (3, 1)
    with pytest.raises(UserError, match="other settings"):
        embed_with_ray(encoder.model, data, tmp_path / "out", EmbedSettings(dtype="fp16"), "tiny", None, 4)


def test_unreachable_ray_address_is_one_error_line(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    noise(0, 32, 32).save(images / "a.png")
    code = main(["embed", str(images), "--out", str(tmp_path / "out"), "--engine", "ray", "--address", "127.0.0.1:1"])
    captured = capsys.readouterr()
    assert_user_error(code, captured.err, "embed", "cannot reach the Ray cluster at 127.0.0.1:1")
    assert captured.out == ""  # refused before the input is read or the model loads
    assert not (tmp_path / "out").exists()


def test_missing_ray_extra_is_one_error_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    images = tmp_path / "images"
    images.mkdir()
    noise(0, 32, 32).save(images / "a.png")
    code = main(["embed", str(images), "--out", str(tmp_path / "out"), "--engine", "ray"])
    assert_user_error(code, capsys.readouterr().err, "embed", "pip install 'rsitr[ray]'")


@pytest.mark.slow
def test_the_ray_engine_prints_only_rsitrs_lines_without_verbose(tmp_path):
    """`rsitr index --engine ray` in its own process, where Ray's driver, workers and Ray Data would print (about
    20 lines before their logging was tied to --verbose): stdout is the index's report, stderr rsitr's warnings."""
    import subprocess

    from rsitr.models import TINY_MODEL
    from support import REPO
    from support.index import CHIP_SETTINGS, make_archive

    root, out = make_archive(tmp_path / "archive", geotiff=False), tmp_path / "index"
    settings = [item for key, value in CHIP_SETTINGS.items() for item in (f"--{key.replace('_', '-')}", str(value))]
    done = subprocess.run([sys.executable, "-m", "rsitr.cli", "index", str(root), "--out", str(out), "--model",
                           TINY_MODEL, "--engine", "ray", "--ray-actors", "1", "--no-progress", *settings],
                          cwd=REPO, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{out}: 4 chips from 4 files (new 5, changed 0, resumed 0, removed 0, unchanged 0; 4 chips encoded)",
        "skipped 1 unreadable image(s):",
        f"  broken.jpg: UnidentifiedImageError: cannot identify image file '{root / 'broken.jpg'}'"], done.stdout
    assert all(line.startswith("rsitr index: warning: ") for line in done.stderr.splitlines()), done.stderr
