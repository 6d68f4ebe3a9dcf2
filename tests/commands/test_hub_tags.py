"""A hub tag through every command: fetched once from a local hub (tests/support/hub.py) by the command that
names it first, then index, search, serve, eval, classify, embed and train take it from the Hugging Face cache
with the hub gone; an index records the tag and reopens from the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rsitr.cli import main
from rsitr.models import TINY_MODEL
from support.hub import TINY_TAG, serve_tiny_tag, tiny_weights
from support.index import make_archive

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_hub_tag_indexes_searches_serves_evaluates_classifies_embeds_and_trains(
        tmp_path, monkeypatch, capsys, synthetic_caption_file, class_folders):
    hub = serve_tiny_tag(monkeypatch, tmp_path / "hf", tiny_weights()[1])
    archive = make_archive(tmp_path / "archive", geotiff=False)
    try:
        assert main(["index", str(archive), "--out", str(tmp_path / "index"), "--pretrained", TINY_TAG,
                     "--no-progress"]) == 0
    finally:
        hub.stop()
    assert [method for method, _, _ in hub.requests] == ["HEAD", "GET"]  # fetched once; from now on, the cache
    capsys.readouterr()

    assert main(["search", str(tmp_path / "index"), "a harbour", "--top-k", "2", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 2
    from fastapi.testclient import TestClient

    served = {}
    monkeypatch.setattr("uvicorn.run", lambda app, host, port, **kwargs: served.update(app=app))
    assert main(["serve", str(tmp_path / "index"), "--port", "8124"]) == 0
    info = TestClient(served["app"], base_url="http://localhost").get("/api/info").json()
    assert (info["model"], info["pretrained"]) == (TINY_MODEL, TINY_TAG)  # the index records the tag

    images = str(synthetic_caption_file.parent / "images")
    assert main(["eval", "--data", str(synthetic_caption_file), "--images", images, "--pretrained", TINY_TAG,
                 "--no-progress"]) == 0
    assert main(["classify", str(class_folders), "--pretrained", TINY_TAG, "--out", str(tmp_path / "c.json"),
                 "--no-progress"]) == 0
    assert main(["embed", str(class_folders), "--pretrained", TINY_TAG, "--out", str(tmp_path / "emb"),
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train", "--config", str(ROOT / "configs" / "data" / "synthetic.yaml"), "--pretrained", TINY_TAG,
                 "--set", "data.synthetic.n_images=40", "train.max_steps_per_epoch=1", "--epochs", "1",
                 "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert f"model: {TINY_MODEL}, initialised from {TINY_TAG}" in capsys.readouterr().out
    assert (tmp_path / "run" / "checkpoints" / "latest.pt").is_file()
    assert len(hub.requests) == 2


def test_train_pretrained_names_the_tags_architecture_and_lets_it_decide_the_activation(tmp_path, monkeypatch):
    from rsitr.cli import build_parser
    from rsitr.commands.train import run_config

    hub = serve_tiny_tag(monkeypatch, tmp_path / "hf", b"not needed: nothing is fetched to configure a run")
    try:
        args = build_parser().parse_args(["train", "--config", str(ROOT / "configs" / "paper" / "ebaker.yaml"),
                                          "--pretrained", TINY_TAG])
        config = run_config(args)
    finally:
        hub.stop()
    assert (config.model.name, config.model.pretrained, config.model.quick_gelu) == (TINY_MODEL, TINY_TAG, None)
    assert config.method.ker and config.method.eba  # the EBAKER recipe, from the tag's weights
    assert [request for request in hub.requests if request[0] != "HEAD"] == []  # asked whether it is there, no more
