"""One default model, one set of flags: every command that encodes uses the shipped default when no model flag is
given, the shared flags mean the same everywhere, and argument mistakes end as one line (exit 2) before torch loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rsitr.cli import build_parser, main
from rsitr.models import DEFAULT_PRETRAINED, TINY_MODEL, get_pretrained_cfg, list_pretrained
from rsitr.models.pretrained import check_model_arguments
from support.errors import assert_refused_without_torch, assert_user_error
from support.index import CHIP_SETTINGS, make_archive, noise

DEFAULT_MODEL_NAME = get_pretrained_cfg(DEFAULT_PRETRAINED).architecture
MODEL_COMMANDS = ("eval", "classify", "embed", "index")


@pytest.fixture(scope="module")
def default_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``rsitr index`` of the test archive with no model flag."""
    base = tmp_path_factory.mktemp("default_index")
    archive = make_archive(base / "archive", geotiff=False)
    assert main(["index", str(archive), "--out", str(base / "index"), "--no-progress"]) == 0
    return base / "index"


def test_the_default_is_a_shipped_tag() -> None:
    assert DEFAULT_PRETRAINED in list_pretrained() and get_pretrained_cfg(DEFAULT_PRETRAINED).file.is_file()


def test_index_without_a_model_flag_records_the_default(default_index: Path) -> None:
    from rsitr.index import ArchiveIndex

    index = ArchiveIndex.open(default_index)
    info = index.info()
    index.close()
    assert (info["model"], info["pretrained"]) == (DEFAULT_MODEL_NAME, DEFAULT_PRETRAINED)
    assert info["chips"] == 4 and info["failures"] == 1


def test_search_and_serve_use_the_index_model(default_index: Path, capsys: pytest.CaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    assert main(["search", str(default_index), "green trees", "--top-k", "2", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 2
    served = {}
    monkeypatch.setattr("uvicorn.run", lambda app, host, port, **kwargs: served.update(app=app, port=port))
    assert main(["serve", str(default_index), "--port", "8123"]) == 0
    info = TestClient(served["app"], base_url="http://localhost").get("/api/info").json()
    assert served["port"] == 8123 and (info["model"], info["pretrained"]) == (DEFAULT_MODEL_NAME, DEFAULT_PRETRAINED)


def test_eval_without_a_model_flag_uses_the_default(synthetic_caption_file: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", "--data", str(synthetic_caption_file), "--images", str(synthetic_caption_file.parent / "images"),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"model: {DEFAULT_MODEL_NAME}, weights from {DEFAULT_PRETRAINED}" in out and "RANDOM" not in out


def test_classify_without_a_model_flag_uses_the_default(class_folders: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    assert main(["classify", str(class_folders), "--out", str(tmp_path / "c.json"), "--no-progress"]) == 0
    assert f"model: {DEFAULT_MODEL_NAME}, pretrained {DEFAULT_PRETRAINED}" in capsys.readouterr().out
    record = json.loads((tmp_path / "c.json").read_text())
    assert (record["model"], record["pretrained"]) == (DEFAULT_MODEL_NAME, DEFAULT_PRETRAINED)


def test_embed_without_a_model_flag_uses_the_default(class_folders: Path, tmp_path: Path) -> None:
    assert main(["embed", str(class_folders), "--out", str(tmp_path / "emb"), "--no-progress"]) == 0
    manifest = json.loads((tmp_path / "emb" / "_manifest.json").read_text())
    assert (manifest["model"], manifest["pretrained"]) == (DEFAULT_MODEL_NAME, DEFAULT_PRETRAINED)


def test_the_tag_alone_is_enough(class_folders: Path, tmp_path: Path) -> None:
    assert main(["embed", str(class_folders), "--out", str(tmp_path / "emb"), "--pretrained", DEFAULT_PRETRAINED,
                 "--no-progress"]) == 0
    assert json.loads((tmp_path / "emb" / "_manifest.json").read_text())["model"] == DEFAULT_MODEL_NAME


def test_embed_takes_one_split_of_a_caption_file(synthetic_caption_file: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    import pandas as pd

    images = str(synthetic_caption_file.parent / "images")
    assert main(["embed", str(synthetic_caption_file), "--images", images, "--split", "test", "--out",
                 str(tmp_path / "emb"), "--model", TINY_MODEL, "--no-progress"]) == 0
    capsys.readouterr()
    rows = pd.read_parquet(tmp_path / "emb")
    assert len(rows) == 6 * 5 and rows["path"].nunique() == 6  # the 6 test images of the 48/6/6 split, 5 captions
    code = main(["embed", images, "--split", "test", "--out", str(tmp_path / "x"), "--model", TINY_MODEL])
    assert_user_error(code, capsys.readouterr().err, "embed", "no caption file", "--split")


@pytest.mark.parametrize("command", MODEL_COMMANDS + ("search", "serve"))
def test_shared_flags_have_one_meaning(command: str) -> None:
    required = {"eval": ["--data", "d.json", "--images", "d"], "classify": ["src"], "embed": ["src", "--out", "o"],
                "index": ["d", "--out", "o"], "search": ["idx", "q"], "serve": ["idx"]}[command]
    args = build_parser().parse_args([command, *required])
    assert (args.device, args.precision, args.threads) == ("auto", "auto", None)
    if command in MODEL_COMMANDS:
        assert (args.model, args.pretrained, args.batch_size, args.no_progress) == (None, None, 64, False)
        quiet = build_parser().parse_args([command, *required, "--no-progress"])
        assert quiet.no_progress is True
    if command in ("eval", "classify", "embed"):
        assert args.workers == 0


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_a_mistyped_tag_names_the_closest_one(command: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "d.json").write_text("{}")
    required = {"eval": ["--data", str(tmp_path / "d.json"), "--images", str(tmp_path)], "classify": [str(tmp_path)],
                "embed": [str(tmp_path), "--out", str(tmp_path / "o")],
                "index": [str(tmp_path), "--out", str(tmp_path / "o")]}[command]
    code = main([command, *required, "--pretrained", DEFAULT_PRETRAINED + "x"])
    assert_user_error(code, capsys.readouterr().err, command, f"unknown pretrained tag '{DEFAULT_PRETRAINED}x'",
                      f"did you mean {DEFAULT_PRETRAINED}")  # the closest first
    assert not (tmp_path / "o").exists()


def test_argument_errors_end_before_torch_is_imported(tmp_path: Path) -> None:
    """In a fresh process: each mistake is one line, exit 2, and torch was never imported (so it is quick)."""
    cases = [
        (["classify", str(tmp_path), "--pretrained", DEFAULT_PRETRAINED + "d"], "did you mean"),
        (["serve", str(tmp_path), "--port", "80000"], "--port must be from 0 to 65535, got 80000"),
        (["eval", "--data", str(tmp_path / "none.json"), "--images", str(tmp_path)], "none.json not found"),
        (["embed", str(tmp_path), "--out", str(tmp_path / "o"), "--pretrained", "runs/x/latest.pt"],
         "checkpoint runs/x/latest.pt does not exist"),
        (["index", str(tmp_path / "none"), "--out", str(tmp_path / "o")], "none not found"),
        (["classify", str(tmp_path), "--model", TINY_MODEL, "--pretrained", DEFAULT_PRETRAINED],
         f"is a '{DEFAULT_MODEL_NAME}' model, not '{TINY_MODEL}'"),
    ]
    assert_refused_without_torch(cases)


def test_another_model_for_an_existing_index_is_refused(default_index: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    from rsitr.index import ArchiveIndex, BuildOptions

    images = str(ArchiveIndex.open(default_index).root)
    code = main(["index", images, "--out", str(default_index), "--model", TINY_MODEL])
    assert_user_error(code, capsys.readouterr().err, "index", f"built with model '{DEFAULT_MODEL_NAME}' ",
                      f"not --model {TINY_MODEL}", "--rebuild")
    other = tmp_path / "tiny"
    ArchiveIndex.build(other, images, TINY_MODEL, progress=False, options=BuildOptions(**CHIP_SETTINGS))[0].close()
    code = main(["search", str(other), "trees", "--pretrained", DEFAULT_PRETRAINED])
    err = "".join(line for line in capsys.readouterr().err.splitlines(True) if not line.startswith("rsitr search: warning"))
    assert_user_error(code, err, "search", f"built with model '{TINY_MODEL}'", f"not '{DEFAULT_PRETRAINED}'")
    assert main(["search", str(default_index), "trees", "--pretrained", DEFAULT_PRETRAINED, "--top-k", "1"]) == 0


def test_check_model_arguments_lets_real_values_through(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"")
    for model, pretrained in [(None, None), (None, DEFAULT_PRETRAINED), (None, str(checkpoint)), (TINY_MODEL, None),
                              ("ViT-B-32", "openai"), ("ViT-B-32", "hf-hub:org/model")]:
        check_model_arguments(model, pretrained)


@pytest.mark.parametrize("model, pretrained, message", [
    ("ViT-B-32", "opneai", "unknown pretrained tag 'opneai' for model 'ViT-B-32'; closest: openai"),
    (None, "opneai", f"unknown pretrained tag 'opneai'; rsitr ships {DEFAULT_PRETRAINED} \\(the default\\).*; "
                     "closest OpenCLIP tags: openai \\(each with its `model`\\)"),  # no model the user did not give
    ("ViT-B-23", None, "unknown model 'ViT-B-23'; closest: ViT-B-32"),
    (DEFAULT_MODEL_NAME, "openai", f"unknown pretrained tag 'openai' for model '{DEFAULT_MODEL_NAME}'"),
])
def test_check_model_arguments_names_the_closest_open_clip_names(model: str | None, pretrained: str | None,
                                                                 message: str) -> None:
    from rsitr.errors import UserError

    with pytest.raises(UserError, match=message):
        check_model_arguments(model, pretrained)


def test_index_progress_bar_has_a_fixed_total(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The total is counted before encoding: it equals the chips encoded and never changes while the bar runs."""
    from rsitr.index import ArchiveIndex, BuildOptions, indexer
    from support.index import tiny_encoder

    bars = []

    class Bar:
        def __init__(self, total: int, **_: object) -> None:
            self.total, self.first_total, self.n = total, total, 0
            bars.append(self)

        def update(self, count: int) -> None:
            self.n += count
            assert self.total == self.first_total

        def refresh(self) -> None:
            pass

        def close(self) -> None:
            pass

    monkeypatch.setattr(indexer, "tqdm", Bar)
    archive = make_archive(tmp_path / "archive")  # 4 one-chip scenes, a 3 x 2 chip GeoTIFF, one broken file
    noise(7, 300, 200).save(archive / "large.png")  # tiled: 3 x 2 chips
    _, report = ArchiveIndex.build(tmp_path / "index", archive, encoder=tiny_encoder(),
                                   options=BuildOptions(batch_size=5, **CHIP_SETTINGS))
    assert report.chips_encoded == 4 + 6 + 6
    assert [(bar.first_total, bar.total, bar.n) for bar in bars] == [(16, 16, 16)]


def test_version_names_torch_open_clip_and_the_default_model(capsys: pytest.CaptureFixture) -> None:
    from importlib import metadata

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert f"torch {metadata.version('torch')}" in out and f"open_clip {metadata.version('open_clip_torch')}" in out
    assert f"default model {DEFAULT_PRETRAINED}" in out and out.startswith("rsitr ")


def test_models_lists_shipped_tags_and_open_clip_architectures(capsys: pytest.CaptureFixture) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    shipped, open_clip_part = out.split("OpenCLIP architectures")
    weights = get_pretrained_cfg(DEFAULT_PRETRAINED)
    assert f"  {DEFAULT_PRETRAINED}: model {weights.architecture}  (default)" in shipped
    assert f"mR {weights.results['rsicd_test']['mR']}" in shipped
    assert "  ViT-B-32: " in open_clip_part and "openai" in open_clip_part.split("  ViT-B-32: ")[1].splitlines()[0]
    assert f"  {TINY_MODEL}: -" in open_clip_part
