"""Mistakes and faults a user meets: run folders and indexes that a wrong command cannot destroy, honest
model messages, user errors as one line, files readable by other accounts, and docs that cite real files."""

from __future__ import annotations

import csv
import logging
import os
import re
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from rsitr.atomic import write_atomic
from rsitr.cli import COMMANDS, build_parser, main
from rsitr.config import ConfigError, ModelConfig, load_config
from rsitr.errors import RsitrWarning
from rsitr.index import ArchiveIndex, BuildOptions, IndexSetupError
from rsitr.models import TINY_MODEL, create_model
from rsitr.models import factory
from rsitr.models.checkpoint import CHECKPOINT_FORMAT, CheckpointError
from rsitr.training.run_folder import RunFolderError
from rsitr.training.trainer import Trainer
from support.index import CHIP_SETTINGS, make_archive, noise
from support.training import TINY

from support import REPO


# -- files ---------------------------------------------------------------------------------------------------
def test_atomic_writes_keep_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a.txt", lambda temporary: Path(temporary).write_text("x"))
        os.umask(0o027)
        write_atomic(tmp_path / "b.txt", lambda temporary: Path(temporary).write_text("x"))
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o640


# -- training runs -------------------------------------------------------------------------------------------
def run_config(out: Path, *extra: str):
    return load_config(None, TINY + [f"output_dir={out}", "train.log_every=1", *extra])


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    Trainer(run_config(out, "train.epochs=2"), progress=False).fit(until_epoch=1)
    return out


def test_a_run_folder_with_checkpoints_is_refused_without_resume_or_overwrite(one_epoch_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(one_epoch_run, out)
    before = snapshot(out)
    with pytest.raises(RunFolderError, match="`resume`.*`overwrite`"):
        Trainer(run_config(out, "train.epochs=2"), progress=False)
    assert snapshot(out) == before
    fresh = Trainer(run_config(out, "train.epochs=2"), progress=False, overwrite=True)
    assert not (out / "checkpoints").exists() and not (out / "train_log.csv").exists() and fresh.step == 0
    assert (out / "keywords.json").is_file()  # this run's own


@pytest.mark.parametrize("change", ["model.focus_adapter=true", "method.ker=false"])
def test_a_failed_resume_changes_nothing_on_disk(one_epoch_run, tmp_path, change):
    out = tmp_path / "run"
    shutil.copytree(one_epoch_run, out)
    before = snapshot(out)
    with pytest.raises(RunFolderError):
        Trainer(run_config(out, "train.epochs=2", change), progress=False, resume=True)
    assert snapshot(out) == before  # config.yaml included


def test_the_log_holds_each_step_once_after_kill_and_resume(one_epoch_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(one_epoch_run, out)
    # A kill during epoch 2: two of its steps were logged, its checkpoint never written.
    with (out / "train_log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    with (out / "train_log.csv").open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        for step in (4, 5):
            writer.writerow({**rows[-1], "epoch": 2, "step": step})
    resumed = Trainer(run_config(out, "train.epochs=2"), progress=False, resume=True)
    assert resumed.resumed and resumed.step == 3
    resumed.fit()
    with (out / "train_log.csv").open() as handle:
        steps = [int(row["step"]) for row in csv.DictReader(handle)]
    assert steps == [1, 2, 3, 4, 5, 6]
    with (out / "eval_log.csv").open() as handle:
        epochs = [int(row["epoch"]) for row in csv.DictReader(handle)]
    assert epochs == sorted(epochs) and len(epochs) == len(set(epochs)) * (len(epochs) // len(set(epochs)))


def test_train_command_refuses_the_folder_and_ctrl_c_says_how_to_resume(one_epoch_run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(one_epoch_run, out)
    args = ["train", "--config", str(REPO / "configs" / "data" / "synthetic.yaml"), "--out", str(out),
            "--no-progress", "--set", *TINY]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("rsitr train: error: ") and "--resume" in err and err.count("\n") == 1

    def interrupted(self, until_epoch=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "fit", interrupted)
    assert main(args + ["--resume"]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume" in err and "Traceback" not in err


# -- indexes -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mistake", [["--images", "{missing}"], ["--chip-size", "0"], ["--chip-overlap", "-1"],
                                     ["--pretrained", "{missing}/model.pt"], ["--batch-size", "0"]])
def test_index_argument_errors_exit_2_and_create_nothing(tmp_path, capsys, mistake):
    root = make_archive(tmp_path / "archive", geotiff=False)
    out = tmp_path / "index"
    args = {"--images": str(root), "--out": str(out), "--model": TINY_MODEL}
    args[mistake[0]] = mistake[1].format(missing=tmp_path / "missing")
    argv = ["index", "--no-progress", *[item for pair in args.items() for item in pair]]
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own usage errors
        code = exit.code
    assert code == 2
    assert "error:" in capsys.readouterr().err
    assert not out.exists()


def test_index_settings_are_checked_before_anything_is_written(tmp_path):
    root = make_archive(tmp_path / "archive", geotiff=False)
    for bad in [{"chip_size": 0}, {"chip_overlap": 128}, {"tile_larger_than": -5}, {"index_type": "fast"}]:
        with pytest.raises(IndexSetupError):
            ArchiveIndex.build(tmp_path / "index", root, TINY_MODEL, progress=False,
                               options=BuildOptions(**{**CHIP_SETTINGS, **bad}))
        assert not (tmp_path / "index").exists()


def test_a_moved_checkpoint_is_found_by_hash(tmp_path, capsys):
    (tmp_path / "a" / "models").mkdir(parents=True)
    checkpoint = tmp_path / "a" / "models" / "tiny.pt"
    torch.save(create_model(TINY_MODEL, seed=3).model.clip.state_dict(), checkpoint)
    root = make_archive(tmp_path / "a" / "archive", geotiff=False)
    assert main(["index", str(root), "--out", str(tmp_path / "a" / "index"), "--model", TINY_MODEL,
                 "--pretrained", str(checkpoint), "--no-progress", *sum([[f"--{k.replace('_', '-')}", str(v)]
                                                                   for k, v in CHIP_SETTINGS.items()], [])]) == 0
    index = ArchiveIndex.open(tmp_path / "a" / "index")
    assert index.store.get_meta("pretrained") == "../models/tiny.pt"
    assert index.info()["pretrained"] == "tiny.pt"
    index.close()
    shutil.move(tmp_path / "a", tmp_path / "b")  # index and checkpoint moved together: still found
    capsys.readouterr()
    assert main(["search", str(tmp_path / "b" / "index"), "a harbour", "--top-k", "2"]) == 0
    shutil.move(tmp_path / "b" / "models", tmp_path / "elsewhere")  # the checkpoint moved alone
    assert main(["search", str(tmp_path / "b" / "index"), "a harbour"]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert main(["search", str(tmp_path / "b" / "index"), "a harbour", "--top-k", "2",
                 "--checkpoint", str(tmp_path / "elsewhere" / "tiny.pt")]) == 0
    other = tmp_path / "other.pt"
    torch.save(create_model(TINY_MODEL, seed=4).model.clip.state_dict(), other)
    capsys.readouterr()
    assert main(["search", str(tmp_path / "b" / "index"), "a harbour", "--checkpoint", str(other)]) == 2
    assert "SHA-256" in capsys.readouterr().err


def test_search_refuses_an_image_over_the_pixel_limit_in_one_line(tmp_path, capsys):
    root = make_archive(tmp_path / "archive", geotiff=False)
    from support.index import tiny_encoder

    ArchiveIndex.build(tmp_path / "index", root, encoder=tiny_encoder(), progress=False,
                       options=BuildOptions(**CHIP_SETTINGS))[0].close()
    noise(1, 300, 200).save(tmp_path / "query.png")
    assert main(["search", str(tmp_path / "index"), "--image", str(tmp_path / "query.png"),
                 "--max-pixels", "50000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "300 x 200" in err and "--max-pixels" in err


# -- model messages ------------------------------------------------------------------------------------------
def rsitr_checkpoint(path: Path, seed: int = 0) -> Path:
    model = create_model(TINY_MODEL, seed=seed).model
    torch.save({"format": CHECKPOINT_FORMAT, "config": {"model": asdict(ModelConfig(TINY_MODEL, None))},
                "model": model.state_dict()}, path)
    return path


def test_random_weight_warning_only_for_random_weights_once_in_rsitr_words(tmp_path, caplog, capsys, monkeypatch):
    clip_file = tmp_path / "clip.pt"
    torch.save(create_model(TINY_MODEL).model.clip.state_dict(), clip_file)
    trained = rsitr_checkpoint(tmp_path / "rsitr.pt")
    monkeypatch.setattr(factory, "_warned_random", set())  # the files above came from random models too
    caplog.clear()
    capsys.readouterr()
    with caplog.at_level(logging.INFO), warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        create_model(TINY_MODEL, str(clip_file))
        create_model(None, str(trained))
        assert not [w for w in shown if "randomly" in str(w.message)]
        create_model(TINY_MODEL, None)
        create_model(TINY_MODEL, None)
    assert not [r for r in caplog.records if "randomly" in r.getMessage()]  # OpenCLIP's own line is dropped
    random = [w for w in shown if "randomly" in str(w.message)]
    assert len(random) == 1 and random[0].category is RsitrWarning
    assert str(random[0].message).startswith(f"{TINY_MODEL} has randomly")
    assert "randomly" not in capsys.readouterr().err  # a library call warns; only the command line prints


def test_a_model_that_contradicts_the_checkpoint_is_an_error_naming_both(tmp_path):
    with pytest.raises(CheckpointError, match=f"`model='ViT-B-32'` .*{TINY_MODEL}"):
        create_model("ViT-B-32", str(rsitr_checkpoint(tmp_path / "rsitr.pt")))


def test_a_checkpoint_of_another_architecture_is_one_line_naming_both(tmp_path):
    state = create_model(TINY_MODEL).model.clip.state_dict()
    state["text_projection"] = torch.zeros(state["text_projection"].shape[0], 7)
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(CheckpointError) as caught:
        create_model(TINY_MODEL, str(tmp_path / "other.pt"))
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400
    assert "embedding dim 7" in message and TINY_MODEL in message
    with pytest.raises(CheckpointError, match="not a checkpoint torch can read"):
        (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
        create_model(TINY_MODEL, str(tmp_path / "junk.pt"))
    with pytest.raises(CheckpointError, match="does not exist"):
        create_model(TINY_MODEL, str(tmp_path / "missing.pt"))


def test_eval_names_the_model_and_says_random_figures_are_chance(synthetic_caption_file, capsys):
    assert main(["eval", "--data", str(synthetic_caption_file), "--images", str(synthetic_caption_file.parent / "images"),
                 "--model", TINY_MODEL, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"model: {TINY_MODEL} with RANDOM weights" in out and "chance level" in out


# -- user errors ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("setting", ["eval.batch_size=0", "train.batch_size=0", "train.epochs=0",
                                     "eval.recall_k=-1", "train.lr=0"])
def test_non_positive_sizes_are_config_errors(setting):
    with pytest.raises(ConfigError, match=setting.split("=")[0]):
        load_config(None, ["data.synthetic.n_images=10", setting])


@pytest.mark.parametrize("argv", [["eval", "--data", "x.json", "--images", "d", "--batch-size", "0"],
                                  ["search", "idx", "q", "--top-k", "0"], ["index", "d", "--out", "o",
                                                                           "--chip-size", "0"]])
def test_non_positive_sizes_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args(argv)
    assert exit.value.code == 2 and "must be at least 1" in capsys.readouterr().err


# -- docs ----------------------------------------------------------------------------------------------------
CITED_PATH = re.compile(r"(?<![\w/.-])((?:configs|benchmarks|docs|rsitr|tests)/[\w./*-]*[\w*/])")


def cited_paths(text: str) -> set[str]:
    return set(CITED_PATH.findall(text))


def test_every_file_cited_in_the_readme_and_help_exists():
    texts = {"README.md": (REPO / "README.md").read_text()}
    parser = build_parser()
    texts["rsitr --help"] = parser.format_help()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in COMMANDS:
        texts[f"rsitr {name} --help"] = subparsers.choices[name].format_help()
    assert cited_paths(texts["rsitr train --help"])  # the check sees the examples
    missing = [(where, path) for where, text in texts.items() for path in cited_paths(text)
               if not list(REPO.glob(path.rstrip("/")))]
    assert not missing
