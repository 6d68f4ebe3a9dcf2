"""What a newcomer meets (issue 30): no traceback, no download, no contradiction.

Devices this machine lacks and busy ports are one line before a model loads; errors name what the user gave and
the right fix; typos get the command's own name and a did-you-mean; one flag vocabulary, old spellings kept with a
deprecation line; library chatter stays off a normal run; every command's help ends with examples that run in a
checkout; `rsitr train` with no model trains the default model's recipe offline.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import socket
import sys
import warnings
from pathlib import Path

import pytest
import yaml

import rsitr.cli as cli
from rsitr.cli import COMMANDS, build_parser, main, parse
from rsitr.deprecations import deprecation
from rsitr.errors import RsitrWarning
from rsitr.models import DEFAULT_PRETRAINED, get_pretrained_cfg
from rsitr.models.registry import default_training_recipe
from rsitr.runtime import available_devices
from support.errors import assert_refused_without_torch, assert_user_error

from support import REPO as ROOT, SHARED_DATA
CONFIGS = ROOT / "configs"
MISSING_DEVICES = [device for device in ("cuda", "gpu", "mps", "cuda:3") if device not in available_devices()
                   and not (device == "cuda" and "cuda:0" in available_devices())]


def subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return commands.choices[name]


@pytest.fixture
def no_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything builds a model: every model rsitr loads is built by OpenCLIP's factory."""
    from rsitr._compat import open_clip

    def refuse(*args, **kwargs):
        pytest.fail("a model was loaded before the error")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", refuse)


@pytest.fixture
def fake_index(tmp_path: Path) -> Path:
    """A folder that passes the command line's is-it-an-index check (the index is never opened in these tests)."""
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "index.sqlite").touch()
    return tmp_path / "index"


def command_lines(tmp_path: Path, synthetic_caption_file: Path, class_folders: Path, index: Path) -> dict:
    images = str(synthetic_caption_file.parent / "images")
    return {
        "search": ["search", str(index), "trees"],
        "serve": ["serve", str(index), "--port", "0"],
        "index": ["index", images, "--out", str(tmp_path / "new")],
        "embed": ["embed", str(class_folders), "--out", str(tmp_path / "emb")],
        "classify": ["classify", str(class_folders)],
        "eval": ["eval", "--data", str(synthetic_caption_file), "--images", images],
        "train": ["train", "--config", str(CONFIGS / "data" / "synthetic.yaml"), "--out", str(tmp_path / "run")],
        "demo": ["demo", "--out", str(tmp_path / "demo")],
    }


# -- 2. devices and ports -----------------------------------------------------------------------------------
@pytest.mark.skipif(not MISSING_DEVICES, reason="this machine has every device the test asks for")
@pytest.mark.parametrize("command", ["search", "serve", "index", "embed", "classify", "eval", "train", "demo"])
def test_a_device_this_machine_lacks_is_one_line_before_a_model_loads(
        command: str, tmp_path: Path, synthetic_caption_file: Path, class_folders: Path, fake_index: Path,
        capsys: pytest.CaptureFixture, no_model_loads: None) -> None:
    argv = command_lines(tmp_path, synthetic_caption_file, class_folders, fake_index)[command]
    for device in MISSING_DEVICES:
        code = main([*argv, "--device", device])
        assert_user_error(code, capsys.readouterr().err, command, f"device {device!r} is not on this machine",
                          "which has cpu")
    assert not (tmp_path / "new").exists() and not (tmp_path / "run").exists()


def test_a_busy_port_is_one_line_before_the_model_loads(fake_index: Path, capsys: pytest.CaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import rsitr.api.app as api

    monkeypatch.setattr(api, "create_app", lambda *args, **kwargs: pytest.fail("the index was loaded"))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        code = main(["serve", str(fake_index), "--port", str(port)])
    assert_user_error(code, capsys.readouterr().err, "serve", f"port {port} on 127.0.0.1 is in use", "--port")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may bind privileged ports")
def test_a_privileged_port_is_one_line(fake_index: Path, capsys: pytest.CaptureFixture) -> None:
    assert_user_error(main(["serve", str(fake_index), "--port", "80"]), capsys.readouterr().err, "serve",
                      "port 80 needs administrator rights")


def test_serve_says_what_it_loads_then_the_url(fake_index: Path, capsys: pytest.CaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    import rsitr.api.app as api

    served = {}
    monkeypatch.setattr(api, "create_app", lambda *args, **kwargs: "app")
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, log_level, **kwargs: served.update(port=port, level=log_level))
    assert main(["serve", str(fake_index), "--port", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"loading the index {fake_index} and its model ..."
    assert served["port"] > 0 and served["level"] == "warning"  # port 0: the free port found is the one printed
    assert lines[1].startswith(f"serving {fake_index} at http://127.0.0.1:{served['port']}/")


# -- 3. errors that name what the user gave -----------------------------------------------------------------
def test_search_on_a_folder_or_file_that_is_no_index_does_not_advise_writing_into_it(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "notes.md").write_text("notes")
    for path, what in ((tmp_path, "not an rsitr index"), (tmp_path / "notes.md", "a file, not an index folder")):
        code = main(["search", str(path), "a harbour"])
        err = capsys.readouterr().err
        assert_user_error(code, err, "search", f"{path} is {what}", "rsitr index IMAGES --out NEW_INDEX")
        assert f"--out {path}" not in err


@pytest.mark.parametrize("tag", ["rsitr-minilm", "laion2b_s34b_b79kk"])
def test_a_mistyped_tag_names_no_model_the_user_did_not_give(tag: str, class_folders: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    code = main(["embed", str(class_folders), "--out", str(tmp_path / "o"), "--pretrained", tag])
    err = capsys.readouterr().err
    assert_user_error(code, err, "embed", f"unknown pretrained tag {tag!r}; rsitr ships {DEFAULT_PRETRAINED} "
                                          f"(the default)")  # the default first
    assert "ViT-B-32" not in err


def test_a_mistyped_command_gets_a_did_you_mean(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serch", "index", "trees"])
    assert exit_.value.code == 2
    assert "rsitr: error: argument COMMAND: invalid choice: 'serch'; did you mean search?" in capsys.readouterr().err


@pytest.mark.parametrize("argv, prog, hint", [
    (["search", "idx", "trees", "--formt", "json"], "rsitr search", "--formt: did you mean --format?"),
    (["search", "idx", "trees", "--format", "jsn"], "rsitr search", "did you mean json?"),
    (["index", "--imges", "d", "--out", "o"], "rsitr index", "--imges: did you mean --images?"),
    (["search", "idx", "trees", "--topk", "3"], "rsitr search", "--topk: did you mean --top-k?"),
    (["demo", "--pretrained", "rsitr-small-rsicd"], "rsitr demo", "--pretrained is a flag of rsitr eval, "),
    (["data", "inspect", "a.json", "--images", "d", "--outt", "x"], "rsitr data inspect", "did you mean --out"),
])
def test_a_mistyped_flag_names_the_command_and_the_closest_flag(argv: list[str], prog: str, hint: str,
                                                                capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.splitlines()[-1].startswith(f"{prog}: error: ") and hint in err, err


# -- 4. one flag vocabulary ---------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, dest, value, old", [
    (["train", "--config", "c.yaml", "--output-dir", "runs/x"], "output_dir", "runs/x", "--output-dir"),
    (["search", "idx", "q", "--pretrained", "m.pt"], "checkpoint", "m.pt", "--pretrained"),
    (["serve", "idx", "--pretrained", "m.pt"], "checkpoint", "m.pt", "--pretrained"),
    (["classify", "d", "--json", "r.json"], "out", "r.json", "--json"),
])
def test_old_spellings_still_work_with_a_deprecation_line(argv: list[str], dest: str, value: str, old: str,
                                                          capsys: pytest.CaptureFixture) -> None:
    new = '--out' if dest != 'checkpoint' else '--checkpoint'
    message = deprecation(f"rsitr {argv[0]}", old).message  # rsitr/deprecations.py's table
    assert message.startswith(f"{old} is deprecated: it is now {new} ")
    args = parse(argv)
    assert getattr(args, dest) == value
    assert capsys.readouterr().err.strip() == f"rsitr {argv[0]}: warning: {message}"
    with pytest.warns(RsitrWarning, match=re.escape(message)):  # a library caller's warning
        assert getattr(build_parser().parse_args(argv), dest) == value
    assert old not in subparser(argv[0]).format_help()  # hidden


def test_each_flag_name_has_one_meaning_across_commands() -> None:
    """--pretrained names the model to encode with, --json is a print format: nowhere else another meaning."""
    for name in COMMANDS:
        visible = {flag: action for action in subparser(name)._actions if action.help != argparse.SUPPRESS
                   for flag in action.option_strings}
        if "--pretrained" in visible:
            assert "checkpoint" in visible["--pretrained"].help.lower() and "tag" in visible["--pretrained"].help
        if "--json" in visible:
            assert visible["--json"].const == "json", name  # search's --format json
        assert "--output-dir" not in visible, name


@pytest.mark.parametrize("command", ["demo", "train", "index", "embed", "classify", "eval"])
def test_every_command_that_encodes_has_the_shared_flags(command: str) -> None:
    flags = {flag for action in subparser(command)._actions for flag in action.option_strings}
    assert {"--device", "--precision", "--threads", "--batch-size", "--no-progress"} <= flags, command


def test_index_takes_its_folder_as_embed_and_classify_do(capsys: pytest.CaptureFixture) -> None:
    for argv in (["index", "photos", "--out", "o"], ["index", "--images", "photos", "--out", "o"],
                 ["index", "--out", "o", "photos"]):
        assert build_parser().parse_args(argv).source == "photos", argv
    assert_user_error(main(["index", "--out", "o"]), capsys.readouterr().err, "index",
                      "give the folder of images to index: rsitr index IMAGES --out INDEX")


def test_train_flags_reach_the_config() -> None:
    from rsitr.commands.train import overrides

    args = build_parser().parse_args(["train", "--config", "c.yaml", "--workers", "3", "--threads", "2",
                                      "--out", "runs/x", "--device", "cpu"])
    assert {"data.num_workers=3", "output_dir=runs/x", "device=cpu"} <= set(overrides(args)) and args.threads == 2


# -- 5. quiet by default --------------------------------------------------------------------------------------
def test_library_warnings_and_logs_stay_off_a_normal_run(capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    import rsitr.commands.models as models

    def noisy(args: argparse.Namespace) -> int:
        warnings.warn_explicit("a library's warning", UserWarning, "/site-packages/lancedb/table.py", 1)
        warnings.warn_explicit("rsitr's own warning", RsitrWarning, str(ROOT / "rsitr" / "data" / "loaders.py"), 1)
        logging.getLogger().warning("Model rsitr-minilm-r18 initialized partially.")  # OpenCLIP's root logger
        levels.append(logging.getLogger("transformers").level)  # it has its own handler: its level is what counts
        return 0

    levels = []
    monkeypatch.setattr(models, "run", noisy)
    level, transformers_level = logging.getLogger().level, logging.getLogger("transformers").level
    assert main(["models"]) == 0
    assert capsys.readouterr().err == "rsitr models: warning: rsitr's own warning\n"
    assert caplog.records == []
    assert logging.getLogger().level == level  # put back for whoever called main
    assert main(["models", "--verbose"]) == 0
    assert "a library's warning" in capsys.readouterr().err
    assert levels == [logging.CRITICAL, transformers_level]  # quiet, then as it was (set by whoever set it)
    assert [record.getMessage() for record in caplog.records] == ["Model rsitr-minilm-r18 initialized partially."]


def test_the_default_model_loads_without_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    """The Python API: OpenCLIP's "initialized partially" is expected for a shipped tag with a text tower."""
    from rsitr.models import create_model

    create_model(None, DEFAULT_PRETRAINED)
    assert not [record for record in caplog.records if "initialized" in record.getMessage()]


# -- 8. help -------------------------------------------------------------------------------------------------
def test_the_command_list_cuts_no_line(capsys: pytest.CaptureFixture) -> None:
    for name in COMMANDS:
        assert not cli.summary(sys.modules[f"rsitr.commands.{name}"].__doc__).endswith(("(", ",", " the", " their"))
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "pretrained tags (as `open_clip.list_pretrained()` gives them)" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_ends_with_examples_that_parse_and_name_files_a_checkout_has(command: str) -> None:
    """Each example is a valid command line of its command, and each path it reads (configs, demo images,
    ../shared/data) is in a checkout, so that it runs as written."""
    help_text = subparser(command).format_help()
    examples = help_text[help_text.rindex("\nExamples"):].split("\n", 2)[2].replace("\\\n", " ")
    lines = [line.split("  #")[0] for line in examples.splitlines()]
    assert lines and all(line.startswith(f"  rsitr {command} ") or line == f"  rsitr {command}" for line in lines), \
        examples
    for line in lines:
        argv = shlex.split(line)[1:]
        build_parser().parse_args(argv)  # exits (fails the test) on a flag it does not know
        for token in argv:
            if token.startswith("../shared/data") and not SHARED_DATA.is_dir():
                continue  # a checkout without the real data beside it (a clone elsewhere) cannot show these
            if token.startswith(("configs/", "rsitr/demo_data", "../shared/data")):
                assert (ROOT / token).exists(), f"{line}: {token} is not in a checkout"


# -- 1. train's default -------------------------------------------------------------------------------------
def test_a_config_without_a_model_gets_the_default_models_recipe() -> None:
    from rsitr.commands.train import run_config

    shipped = get_pretrained_cfg(DEFAULT_PRETRAINED).config
    args = build_parser().parse_args(["train", "--config", str(CONFIGS / "data" / "ucm.yaml"),
                                      str(CONFIGS / "methods" / "ebaker.yaml")])
    config = run_config(args)
    assert config.model.name == shipped["model"]["name"] and config.model.pretrained == shipped["model"]["pretrained"]
    assert config.model.text_unlocked_layers == shipped["model"]["text_unlocked_layers"]
    assert config.train.lr == shipped["train"]["lr"] and config.method.ker is True  # the method file over the recipe
    assert config.device == "auto" and config.data.datasets[0].name == "ucm"  # the machine's and the user's
    named = build_parser().parse_args(["train", "--config", str(CONFIGS / "paper" / "ebaker.yaml")])
    assert run_config(named).model.name == "ViT-B-32"  # a config that names its model keeps it
    assert default_training_recipe()["model"] == shipped["model"]


def test_train_without_a_model_trains_the_default_recipe_offline(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from rsitr.models import factory

    monkeypatch.setattr(factory, "hub_answers", lambda: pytest.fail("the hub was asked for the default recipe"))
    config = tmp_path / "data.yaml"
    config.write_text("data: {synthetic: {n_images: 20, image_size: 32}}\n")
    code = main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--epochs", "1",
                 "--batch-size", "8", "--no-progress", "--set", "train.max_steps_per_epoch=1", "eval.batch_size=8"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"by the recipe of the default model {DEFAULT_PRETRAINED}" in out
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["model"]["name"] == get_pretrained_cfg(DEFAULT_PRETRAINED).architecture


def test_a_hub_tag_offline_is_one_line_without_retries(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    from rsitr.models import factory

    offline = constants.HF_HUB_OFFLINE
    monkeypatch.setattr(factory, "hub_answers", lambda: False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # nothing cached
    code = main(["train", "--config", str(CONFIGS / "data" / "synthetic.yaml"), "--out", str(tmp_path / "run"),
                 "--set", "model.name=ViT-B-32", "model.pretrained=openai"])
    err = capsys.readouterr().err
    assert_user_error(code, err, "train", "'openai' weights of ViT-B-32 are not in the OpenCLIP cache",
                      "use a shipped rsitr tag")
    assert constants.HF_HUB_OFFLINE is offline  # put back


# -- 6. errors that need no model are quick --------------------------------------------------------------------
def test_errors_that_need_no_model_import_no_torch(tmp_path: Path, fake_index: Path) -> None:
    """In a fresh process: not an index, a tag typo, a busy port: one line each, and torch never imported."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        cases = [(["search", str(tmp_path), "trees"], "not an rsitr index"),
                 (["search", str(tmp_path / "none"), "trees"], "not found"),
                 (["embed", str(tmp_path), "--out", str(tmp_path / "o"), "--pretrained", "rsitr-minilm"],
                  "unknown pretrained tag"),
                 (["serve", str(fake_index), "--port", str(busy)], "is in use")]
        assert_refused_without_torch(cases)
