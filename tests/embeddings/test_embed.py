"""`rsitr embed`: Parquet shards that hold the model's own embeddings, resume, skip bad images, read back."""

import shutil

import numpy as np
import pandas as pd
import pytest
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from rsitr.cli import main
from rsitr.data import DataError, load_corpus, make_synthetic_dataset, open_rgb
from rsitr.errors import UserError
from rsitr.inference.embed import EmbedSettings, embed_to_parquet, read_embed_input, read_embeddings
from rsitr.models import TINY_MODEL


def _embed(model, data, out, **settings):
    return embed_to_parquet(model, data, out, EmbedSettings(**settings), TINY_MODEL, None, batch_size=8,
                            progress=False)


@torch.no_grad()
def _own_image_embeddings(model, paths):
    return model.encode_image(torch.stack([model.preprocess_val(open_rgb(p)) for p in paths])).global_


def test_folder_embeddings_equal_the_models_own(class_folders, tiny_model, tmp_path):
    data = read_embed_input(class_folders)
    assert data.kind == "folder" and len(data.items) == 21
    summary = _embed(tiny_model, data, tmp_path / "fp32", dtype="fp32", normalize=False, shard_size=8)
    assert (summary.rows, summary.shards, summary.skipped) == (21, 3, [])
    frame = pd.read_parquet(tmp_path / "fp32")  # what a user does: pandas reads the folder of shards
    assert list(frame.columns) == ["id", "path", "image_embedding"] and frame["id"].tolist() == list(range(21))
    assert frame["path"][0] == data.items[0].relative and "/" in frame["path"][0]
    stored = torch.tensor(np.stack(frame["image_embedding"]))
    own = _own_image_embeddings(tiny_model, [item.path for item in data.items])
    torch.testing.assert_close(stored, own, atol=1e-5, rtol=1e-4)  # unnormalised fp32: the very vectors

    _embed(tiny_model, data, tmp_path / "fp16", dtype="fp16", normalize=True, shard_size=8)
    table, matrix = read_embeddings(tmp_path / "fp16")
    assert str(table.schema.field("image_embedding").type.value_type) == "halffloat"
    cosine = F.cosine_similarity(torch.tensor(matrix), own, dim=-1)
    assert torch.allclose(cosine, torch.ones(21), atol=1e-3)
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1, atol=2e-3)


def test_caption_file_rows_hold_caption_and_image_embeddings(tiny_model, tmp_path):
    captions = make_synthetic_dataset(tmp_path / "data", n_images=6, image_size=32)
    corpus = load_corpus(captions, tmp_path / "data" / "images")
    data = read_embed_input(captions, tmp_path / "data" / "images")
    assert data.kind == "captions" and len(data.items) == len(corpus.captions) == 30
    _embed(tiny_model, data, tmp_path / "out", modalities=("image", "text"), dtype="fp32", shard_size=12)
    table, texts = read_embeddings(tmp_path / "out", "text_embedding")
    _, images = read_embeddings(tmp_path / "out", "image_embedding")
    assert table.column("caption").to_pylist() == corpus.captions
    with torch.no_grad():
        own_text = tiny_model.encode_text(tiny_model.tokenize(corpus.captions)).global_
    own_image = _own_image_embeddings(tiny_model, [record.path for record in corpus.images])
    own_image = own_image[torch.tensor(corpus.caption_image)]  # each caption row holds its image's vector
    for stored, own in ((texts, own_text), (images, own_image)):
        assert torch.allclose(F.cosine_similarity(torch.tensor(stored), own, dim=-1), torch.ones(30), atol=1e-5)


def test_interrupted_run_resumes_at_the_missing_shard(class_folders, tiny_model, tmp_path):
    data = read_embed_input(class_folders)
    out = tmp_path / "out"
    _embed(tiny_model, data, out, shard_size=5)
    before = pd.read_parquet(out)
    (out / "part-00002.parquet").unlink()
    kept = (out / "part-00000.parquet").stat().st_mtime_ns
    summary = _embed(tiny_model, data, out, shard_size=5)
    assert summary.reused_shards == 4 and summary.shards == 5 and summary.rows == 21
    assert (out / "part-00000.parquet").stat().st_mtime_ns == kept
    pd.testing.assert_frame_equal(pd.read_parquet(out), before)
    with pytest.raises(UserError, match="other settings"):
        _embed(tiny_model, data, out, shard_size=5, dtype="fp32")


def test_unreadable_images_are_skipped_and_counted(class_folders, tiny_model, tmp_path):
    root = tmp_path / "images"
    shutil.copytree(class_folders, root)
    (root / "beach" / "broken.png").write_bytes(b"not a png")
    summary = _embed(tiny_model, read_embed_input(root), tmp_path / "out", shard_size=10)
    assert summary.rows == 21 and summary.skipped == ["beach/broken.png"]
    assert "beach/broken.png" not in pq.read_table(tmp_path / "out").column("path").to_pylist()


def test_image_list_and_input_errors(class_folders, tiny_model, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("# two images\nforest/forest_00.png\nriver/river_01.png\n")
    data = read_embed_input(listing, class_folders)
    assert data.kind == "list" and [item.relative for item in data.items] == ["forest/forest_00.png",
                                                                               "river/river_01.png"]
    listing.write_text("forest/missing.png\n")
    with pytest.raises(DataError, match="1 listed image"):
        read_embed_input(listing, class_folders)
    with pytest.raises(UserError, match="no captions"):
        _embed(tiny_model, read_embed_input(class_folders), tmp_path / "out", modalities=("text",))


def test_cli_embed_writes_shards_and_reports_errors(class_folders, tmp_path, capsys):
    out = tmp_path / "emb"
    assert main(["embed", str(class_folders), "--out", str(out), "--model", TINY_MODEL, "--shard-size", "16",
                 "--precision", "bf16", "--no-progress"]) == 0
    assert "written 21 rows in 2 shard(s)" in capsys.readouterr().out
    assert len(pd.read_parquet(out)) == 21
    assert main(["embed", str(tmp_path / "nowhere"), "--out", str(out), "--model", TINY_MODEL]) == 2
    assert "rsitr embed: error:" in capsys.readouterr().err
