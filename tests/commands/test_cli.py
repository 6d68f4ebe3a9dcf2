"""End-to-end runs of the `rsitr` command line on generated data with the tiny model."""

import json
from pathlib import Path

import pytest
import torch

from rsitr._compat import open_clip
from rsitr.cli import build_parser, main
from rsitr.models import TINY_MODEL, create_model

from support import CONFIGS


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("demo", "eval", "train", "reproduce", "index", "search", "serve"):
        assert command in out


def test_eval_end_to_end_writes_table_and_reports(synthetic_caption_file, tmp_path, capsys):
    clip_weights = tmp_path / "tiny.pt"
    torch.save(create_model(TINY_MODEL).model.clip.state_dict(), clip_weights)
    code = main(["eval", "--data", str(synthetic_caption_file), "--images", str(synthetic_caption_file.parent / "images"),
                 "--model", TINY_MODEL, "--pretrained", str(clip_weights), "--split", "test", "--sar",
                 "--two-stage", "--recall-k", "3", "--scene-prior", "0.5",
                 "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "Image->Text" in out and "+ SAR" in out and "encode_seconds" in out
    assert "FTF two-stage (K=3)" in out and "two_stage_stage2_seconds" in out
    assert "+ scene prior (uses gallery scene labels)" in out and "scene_prior_seconds" in out  # scene classes from the <scene>_<n>.png names
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    row = results["results"][f"{TINY_MODEL} (tiny.pt)"]  # a weights file's rows name it beside the model
    assert set(row) == {"i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "mR"}
    assert 0 <= row["mR"] <= 100
    assert (tmp_path / "out" / "results.csv").read_text().startswith("method,i2t_R@1")


def test_eval_reports_a_missing_caption_file(tmp_path, capsys):
    code = main(["eval", "--data", str(tmp_path / "missing.json"), "--images", str(tmp_path), "--model", TINY_MODEL,
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("rsitr eval: error: ") and "missing.json" in err and "Traceback" not in err


def test_debug_flag_shows_the_exception(tmp_path):
    with pytest.raises(ValueError, match="missing.json"):
        main(["eval", "--debug", "--data", str(tmp_path / "missing.json"), "--images", str(tmp_path),
              "--model", TINY_MODEL, "--no-progress"])


def test_two_epoch_training_then_eval_of_its_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--config", str(CONFIGS / "data" / "synthetic.yaml"), str(CONFIGS / "methods" / "ebaker.yaml"),
                 "--out", str(out), "--epochs", "2", "--no-progress",
                 "--set", "data.synthetic.n_images=40", "train.max_steps_per_epoch=4"])
    assert code == 0
    assert (out / "checkpoints" / "latest.pt").is_file() and (out / "results.json").is_file()
    log = (out / "train_log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,step,global,local,ker")
    capsys.readouterr()
    caption_file = next((out / "synthetic-data").glob("*/dataset_synthetic.json"))
    code = main(["eval", "--data", str(caption_file), "--images", str(caption_file.parent / "images"),
                 "--pretrained", str(out / "checkpoints" / "latest.pt"), "--no-progress"])
    assert code == 0
    out_text = capsys.readouterr().out
    assert "rsitr-tiny-ViT" in out_text  # rebuilt from the checkpoint, not the default ViT-B-32
    # the table's rows name the run and checkpoint evaluated, never a model name a shipped tag also reads as
    rows = [line.split("|")[0].strip() for line in out_text.splitlines() if "|" in line]
    assert "run/latest" in rows and "rsitr-tiny-ViT" not in rows


@pytest.mark.slow
def test_demo_runs_and_learns(tmp_path, capsys):
    assert main(["demo", "--synthetic", "--out", str(tmp_path / "demo"), "--epochs", "2"]) == 0
    results = json.loads((tmp_path / "demo" / "results.json").read_text())["results"]
    before, after = results["tiny CLIP, random init"], results["+ EBAKER fine-tuning (2 epochs)"]
    assert after["mR"] > before["mR"]


def test_parser_builds_without_heavy_imports():
    parser = build_parser()
    args = parser.parse_args(["eval", "--data", "x.json", "--images", "d"])
    assert args.split == "test" and args.model is None  # the tag's or checkpoint's model, else the shipped default


def test_reproduce_refuses_missing_data_before_training(tmp_path, capsys):
    assert main(["reproduce", "--config", str(CONFIGS / "paper" / "ebaker.yaml"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rsitr reproduce: error: missing dataset files: rsicd:") and "nwpu" in err
    assert not (tmp_path / "run").exists()


def test_reproduce_refuses_missing_weights(tmp_path, capsys, monkeypatch):
    def offline(cfg, cache_dir=None):
        raise OSError("no connection")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    code = main(["reproduce", "--config", str(CONFIGS / "data" / "synthetic.yaml"), "--out", str(tmp_path),
                 "--published", str(CONFIGS / "paper" / "published_results.yaml"), "--set", "model.name=ViT-B-32", "model.pretrained=openai"])
    assert code == 2 and "could not be downloaded" in capsys.readouterr().err


def test_reproduce_runs_end_to_end_on_a_tiny_synthetic_config(tmp_path, capsys):
    published = tmp_path / "published.yaml"
    paper = {"i2t_R@1": 1.0, "i2t_R@5": 2.0, "i2t_R@10": 3.0, "t2i_R@1": 4.0, "t2i_R@5": 5.0, "t2i_R@10": 6.0, "mR": 3.5}
    published.write_text(json.dumps({"source": "a test", "results": {"tiny": {"synthetic": paper}}}))
    code = main(["reproduce", "--config", str(CONFIGS / "data" / "synthetic.yaml"), "--out", str(tmp_path / "run"),
                 "--published", str(published), "--method", "tiny", "--epochs", "1", "--no-progress",
                 "--set", "data.synthetic.n_images=20", "train.max_steps_per_epoch=1", "method.ker=false"])
    out = capsys.readouterr().out
    assert code == 0
    assert "synthetic test" in out and "tiny (paper)" in out and "(ours)" in out
    assert "  1.00   2.00   3.00 |   4.00   5.00   6.00 |   3.50" in out
    results = json.loads((tmp_path / "run" / "reproduce.json").read_text())
    assert results["published_source"] == "a test" and any(k.startswith("synthetic: ") for k in results["results"])


# -- one warning channel: warnings.warn(..., RsitrWarning) ----------------------------------------------------
@pytest.fixture
def one_empty_caption(tmp_path: Path) -> Path:
    """A caption file (RSICD's layout) with one empty caption, which the loader drops with a warning."""
    (tmp_path / "a.jpg").touch()  # loaders only check that image files exist
    sentences = [{"raw": caption} for caption in ("a field", "", "a road", "a lake", "trees", "a river")]
    path = tmp_path / "dataset_x.json"
    path.write_text(json.dumps({"images": [{"filename": "a.jpg", "split": "train", "sentences": sentences}]}))
    return path


def test_a_library_warning_reaches_the_command_line_as_one_line(one_empty_caption, capsys, monkeypatch):
    import rsitr.commands.models as models
    from rsitr.data import load_corpus

    # Called from this file, not from rsitr's code: the warning's category is what makes it rsitr's.
    monkeypatch.setattr(models, "run", lambda args: len(load_corpus(one_empty_caption, one_empty_caption.parent)
                                                        .images[0].captions) - 5)
    assert main(["models"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("rsitr models: warning: ") and "dropped 1 empty caption" in err, err
    assert len(err.splitlines()) == 1 and "RsitrWarning" not in err


def test_a_library_caller_filters_rsitr_warnings_with_the_warnings_module(one_empty_caption):
    import warnings

    from rsitr.data import load_corpus
    from rsitr.errors import RsitrWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", RsitrWarning)
        with pytest.raises(RsitrWarning, match="dropped 1 empty caption"):
            load_corpus(one_empty_caption, one_empty_caption.parent)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", RsitrWarning)
        assert len(load_corpus(one_empty_caption, one_empty_caption.parent).images[0].captions) == 5
    assert caught == []
