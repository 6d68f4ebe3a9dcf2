"""Every cache rsitr keeps between runs (image and text features, ONNX exports) lies under one root,
``$RSITR_CACHE_DIR`` (default ``~/.cache/rsitr``): :func:`rsitr.paths.cache_folder`."""

from __future__ import annotations

from pathlib import Path

from rsitr.models import image_cache, onnx_runtime, text_cache


def test_every_cache_follows_rsitr_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("RSITR_CACHE_DIR", str(tmp_path))
    assert image_cache.cache_dir() == tmp_path / "image-features"
    assert text_cache.cache_dir() == tmp_path / "text-features"
    assert onnx_runtime.onnx_cache_root() == tmp_path / "onnx"
    monkeypatch.delenv("RSITR_CACHE_DIR")
    assert image_cache.cache_dir() == Path.home() / ".cache" / "rsitr" / "image-features"


def test_a_test_session_keeps_its_caches_out_of_the_users_home():
    """tests/conftest.py gives the session a cache folder of its own (what a test run derives stays in it)."""
    assert Path.home() / ".cache" / "rsitr" not in image_cache.cache_dir().parents
