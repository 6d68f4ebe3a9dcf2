"""Hub tags (RemoteCLIP, GeoRSCLIP): the registry's entries, and their weights fetched from a local hub
(tests/support/hub.py) into the Hugging Face cache: checked, refused when damaged, resumed after a killed
download, loaded from the cache with the hub gone, and one error line when the hub cannot be reached."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rsitr.cli import main
from rsitr.errors import UserError
from rsitr.models import TINY_MODEL, create_model, get_pretrained_cfg, list_models, list_pretrained
from rsitr.models import hub as rsitr_hub
from support.hub import (TINY_FILE as FILE, TINY_REPO as REPO, TINY_TAG as TAG, layout_state_dict, serve_hub,
                         serve_tiny_tag, state_dict_bytes)
from support.hub import tiny_weights as make_tiny_weights

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_weights() -> tuple[dict, bytes]:
    return make_tiny_weights()


@pytest.fixture
def hub(tmp_path, monkeypatch, tiny_weights):
    """A local hub serving the tiny weights as hub tag ``test-tiny-hub``, and an empty Hugging Face cache."""
    served = serve_tiny_tag(monkeypatch, tmp_path / "hf", tiny_weights[1])
    yield served
    served.stop()


def blobs(cache: Path) -> list[str]:
    return sorted(path.name for path in cache.glob("models--*/blobs/*"))


def test_every_hub_tag_is_an_open_clip_architecture_with_a_file_size_and_licence():
    tags = list_pretrained(hub=True)
    assert {"remoteclip-rn50", "remoteclip-vit-b-32", "remoteclip-vit-l-14", "georsclip-vit-b-32",
            "georsclip-vit-l-14", "georsclip-vit-h-14", "georsclip-vit-b-32-rsicd"} == set(tags)
    assert not set(tags) & set(list_pretrained())  # listed apart from the shipped tags
    architectures = set(list_models())
    for tag in tags:
        entry = get_pretrained_cfg(tag)
        assert entry.architecture in architectures and entry.file is None and entry.licence
        assert entry.hub.repo in ("chendelong/RemoteCLIP", "Zilun/GeoRSCLIP") and entry.hub.filename.endswith(".pt")
        assert entry.hub.size_mb > 100
        assert not entry.published or entry.published["source"]  # published figures say where from
    assert get_pretrained_cfg("remoteclip-vit-b-32").published["rsicd_test"]["mR"] == pytest.approx(35.26, abs=1e-9)


def test_models_lists_hub_tags_apart_with_their_download_size(capsys):
    assert main(["models", "--shipped"]) == 0
    out = capsys.readouterr().out
    hub_part = out[out.index("On the Hugging Face hub"):]
    assert "Shipped with rsitr" in out[:out.index("On the Hugging Face hub")]
    for tag in list_pretrained(hub=True):
        size = get_pretrained_cfg(tag).hub.size_mb
        assert f"  {tag}: model {get_pretrained_cfg(tag).architecture}, downloads about {size:.0f} MB on first use" \
            in hub_part
    assert "published (not measured here" in hub_part


def test_a_hub_tag_is_fetched_once_checked_and_then_loaded_from_the_cache(hub, tiny_weights, tmp_path):
    loaded = create_model(None, TAG, seed=99)
    assert (loaded.name, loaded.pretrained) == (TINY_MODEL, TAG)
    for key, value in tiny_weights[0].items():
        torch.testing.assert_close(loaded.model.clip.state_dict()[key], value, rtol=0, atol=0)
    assert blobs(tmp_path / "hf") == [hub.sha256]  # hub's layout: blobs/<sha256>, no partial file left
    cached = get_pretrained_cfg(TAG).hub.cached()
    assert cached is not None and hashlib.sha256(cached.read_bytes()).hexdigest() == hub.sha256
    asked = len(hub.requests)
    hub.stop()  # the hub is gone: the cache alone serves the tag
    again = create_model(None, TAG, seed=7)
    assert len(hub.requests) == asked
    torch.testing.assert_close(again.model.clip.state_dict()["text_projection"], tiny_weights[0]["text_projection"])


def test_huggingface_hub_finds_what_rsitr_cached(hub, tmp_path):
    from huggingface_hub import hf_hub_download

    path = get_pretrained_cfg(TAG).check_file()
    hub.stop()
    found = hf_hub_download(REPO, FILE, cache_dir=str(tmp_path / "hf"), local_files_only=True)
    assert Path(found).resolve() == path.resolve()


def test_a_file_that_differs_from_the_hubs_sha256_is_refused_and_deleted(hub, tmp_path, tiny_weights, capsys):
    content = tiny_weights[1]
    damaged = content[:100] + bytes([content[100] ^ 0xFF]) + content[101:]  # one byte changed on the way
    hub.add(REPO, FILE, damaged, reported_sha256=hub.sha256)
    assert main(["models", "--download", TAG]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("rsitr models: error: the download of pretrained tag "
                                                         f"'{TAG}'") and f"is not the {hub.sha256}" in err
    assert blobs(tmp_path / "hf") == [] and get_pretrained_cfg(TAG).hub.cached() is None
    hub.add(REPO, FILE, tiny_weights[1])  # repaired: the next attempt downloads it anew
    assert main(["models", "--download", TAG]) == 0 and blobs(tmp_path / "hf") == [hub.sha256]


def test_a_hub_that_serves_another_file_than_the_pinned_one_is_refused_before_the_download(tmp_path, monkeypatch,
                                                                                         tiny_weights):
    from support.hub import hub_entry

    pinned = hashlib.sha256(b"the file rsitr knows").hexdigest()
    hub = serve_hub(monkeypatch, tmp_path / "hf", {TAG: hub_entry(TINY_MODEL, REPO, FILE, sha256=pinned)})
    try:
        served = hub.add(REPO, FILE, tiny_weights[1])
        with pytest.raises(UserError, match=f"SHA-256 {served}.* than the {pinned} rsitr pins"):
            get_pretrained_cfg(TAG).check_file()
    finally:
        hub.stop()
    assert [method for method, _, _ in hub.requests] == ["HEAD"] and blobs(tmp_path / "hf") == []


def test_a_killed_download_resumes_where_it_stopped(hub, tmp_path, tiny_weights):
    content = tiny_weights[1]
    half = len(content) // 2 // 4096 * 4096  # whole chunks of the child's 4 KiB: all of them reach the disk
    hub.add(REPO, FILE, content, stall_after=half)
    partial = tmp_path / "hf" / f"models--{REPO.replace('/', '--')}" / "blobs" / f"{hub.sha256}.incomplete"
    script = ("import huggingface_hub.constants as c; c.DOWNLOAD_CHUNK_SIZE = 4096\n"  # written as it arrives
              f"from rsitr.models import get_pretrained_cfg; get_pretrained_cfg({TAG!r}).check_file()")
    from rsitr.models import registry

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", f"import rsitr.models.registry as r, pathlib; "
                              f"r.HUB_REGISTRY = pathlib.Path({str(registry.HUB_REGISTRY)!r})\n{script}"], env=env)
    try:
        for _ in range(600):  # the child has written the first half and waits for the rest
            if partial.is_file() and partial.stat().st_size >= half:
                break
            assert child.poll() is None, "the download ended before it was killed"
            time.sleep(0.1)
        child.kill()
    finally:
        child.wait()
    assert partial.stat().st_size == half and blobs(tmp_path / "hf") == [partial.name]
    hub.add(REPO, FILE, content)  # no more stalling
    path = get_pretrained_cfg(TAG).check_file()
    assert ("GET", f"/{REPO}/resolve/main/{FILE}", f"bytes={half}-") in hub.requests  # only the rest was asked for
    assert path.read_bytes() == content and blobs(tmp_path / "hf") == [hub.sha256]


def test_offline_a_hub_tag_not_cached_is_one_line_naming_the_tag_size_and_fix(hub, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    asked = len(hub.requests)
    assert main(["models", "--download", TAG]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"rsitr models: error: pretrained tag '{TAG}' (")
    assert "1 MB" in err and "HF_HUB_OFFLINE is set" in err and f"rsitr models --download {TAG}" in err
    assert len(hub.requests) == asked  # HF_HUB_OFFLINE: not one request


@pytest.mark.parametrize("command", ["eval", "index", "classify", "embed"])
def test_with_the_hub_down_every_command_ends_in_one_line_without_retrying(command, hub, tmp_path, monkeypatch,
                                                                           capsys):
    hub.stop()
    monkeypatch.setattr(time, "sleep", lambda seconds: pytest.fail("a retry waited"))
    images = str(tmp_path)
    required = {"eval": ["--data", images, "--images", images], "index": [images, "--out", images + "/i"],
                "classify": [images], "embed": [images, "--out", images + "/e"]}[command]
    assert main([command, *required, "--pretrained", TAG]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"the hub ({hub.url}) cannot be reached" in err
    assert f"rsitr models --download {TAG}" in err and "Traceback" not in err


def test_hub_waits_are_bounded_well_under_ten_seconds():
    """The most an unreachable or silent hub can cost: a connection attempt, then one metadata request."""
    assert rsitr_hub.CONNECT_TIMEOUT_S + rsitr_hub.METADATA_TIMEOUT_S < 10


def test_a_hub_tag_with_another_model_is_refused_before_anything_is_fetched(hub):
    with pytest.raises(UserError, match=rf"'{TAG}' is a '{TINY_MODEL}' model, not 'ViT-B-32'"):
        create_model("ViT-B-32", TAG)
    assert hub.requests == []


@pytest.mark.slow
@pytest.mark.parametrize("tag", ["remoteclip-vit-b-32", "remoteclip-rn50", "georsclip-vit-b-32-rsicd"])
def test_a_real_hub_tags_file_layout_loads_into_its_architecture(tag, tmp_path, monkeypatch):
    """rsitr's own entry (repository, file, architecture, activation) against a file with the real keys and shapes
    of the architecture: downloaded through the hub protocol, built, and encoding to the architecture's width."""
    entry = get_pretrained_cfg(tag)
    hub = serve_hub(monkeypatch, tmp_path / "hf")
    try:
        hub.add(entry.hub.repo, entry.hub.filename, state_dict_bytes(layout_state_dict(entry.architecture)))
        loaded = create_model(None, tag)
    finally:
        hub.stop()
    assert loaded.model.quick_gelu is entry.quick_gelu
    with torch.no_grad():
        text = loaded.model.encode_text(loaded.model.tokenize(["a harbour with boats"])).global_
    width = {"RN50": 1024}.get(entry.architecture, 512)
    assert text.shape == (1, width) and torch.isfinite(text).all()


def test_every_hub_tag_downloads_through_the_hub_protocol(tmp_path, monkeypatch):
    """Each entry's repository, file and revision make a URL the hub serves (layouts of the big architectures too,
    without building them)."""
    hub = serve_hub(monkeypatch, tmp_path / "hf")
    try:
        for tag in list_pretrained(hub=True):
            entry = get_pretrained_cfg(tag)
            content = state_dict_bytes(layout_state_dict(entry.architecture))
            hub.add(entry.hub.repo, entry.hub.filename, content)
            assert entry.check_file().read_bytes() == content
    finally:
        hub.stop()
    assert {(method, path.split("/resolve/")[1].split("/")[0]) for method, path, _ in hub.requests} == \
        {("HEAD", get_pretrained_cfg(tag).hub.revision) for tag in list_pretrained(hub=True)} | \
        {("GET", get_pretrained_cfg(tag).hub.revision) for tag in list_pretrained(hub=True)}
