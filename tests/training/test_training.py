import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from rsitr.training.trainer import warmup_cosine
from support import CONFIGS

from support.training import fixed_batch, make_trainer


def test_one_training_step_lowers_the_loss_on_a_fixed_batch(tmp_path):
    trainer = make_trainer(tmp_path, "train.lr=1e-4")
    batch = fixed_batch(trainer)
    with torch.no_grad():
        before, parts = trainer.objective(batch)
    assert set(parts) >= {"global", "local", "ker"}
    trainer.train_step(batch)
    with torch.no_grad():
        after, after_parts = trainer.objective(batch)
    assert after.item() < before.item()
    assert all(after_parts[k] < parts[k] for k in ("global", "local", "ker"))


@pytest.mark.parametrize("blocks", [2, 4])
def test_ker_blocks_sets_the_depth_of_the_ker_head(tmp_path, blocks):
    """method.ker_blocks: 2 in the reference code, 4 in the paper's text."""
    trainer = make_trainer(tmp_path, "method.local=false", "method.eba=false", f"method.ker_blocks={blocks}")
    assert len(trainer.objective.ker_head.blocks.layers) == blocks


def test_baseline_config_has_only_the_global_loss(tmp_path):
    trainer = make_trainer(tmp_path, "method.local=false", "method.ker=false", "method.eba=false")
    _, parts = trainer.objective(fixed_batch(trainer))
    assert set(parts) == {"global", "kept_rows"}


def test_reference_objective_fixed_scale_20_summed_directions_padding_included(tmp_path):
    """The paper config's loss: 20 x global cosine and 20 x local score (padding included), directions summed."""
    trainer = make_trainer(tmp_path, "method.ker=false", "method.eba=false", "method.temperature=0.05",
                           "method.infonce_directions=sum", "method.local_include_padding=true",
                           "precision=fp32")  # compared with an fp32 reference below
    batch = fixed_batch(trainer)
    with torch.no_grad():
        _, parts = trainer.objective(batch)
        image, text = trainer.model.encode_image(batch.images), trainer.model.encode_text(batch.tokens)
    ce = torch.nn.functional.cross_entropy
    labels = torch.arange(batch.images.shape[0])

    def reference(sim):
        return (ce(20 * sim, labels) + ce(20 * sim.T, labels)).item()

    img, txt = torch.nn.functional.normalize(image.global_, dim=-1), torch.nn.functional.normalize(text.global_, dim=-1)
    assert parts["global"] == pytest.approx(reference(img @ txt.T), rel=1e-4)
    patches = torch.nn.functional.normalize(image.tokens, dim=-1)
    words = torch.nn.functional.normalize(text.tokens, dim=-1)  # every position of the context, padding too
    local = torch.einsum("ipd,jld->ijpl", patches, words).flatten(2).norm(dim=-1)
    assert parts["local"] == pytest.approx(reference(local), rel=1e-4)


CMER = ["model.focus_adapter=true", "method.negative_queue=8", "data.scene_augment_prob=0.5"]


@pytest.mark.parametrize("extra", [[], CMER], ids=["ebaker", "ebaker+cmer"])
def test_resume_equals_uninterrupted_run(tmp_path, extra):
    straight = make_trainer(tmp_path / "a", "train.epochs=2", *extra)
    straight.fit()
    interrupted = make_trainer(tmp_path / "b", "train.epochs=2", *extra)
    interrupted.fit(until_epoch=1)
    del interrupted
    resumed = make_trainer(tmp_path / "b", "train.epochs=2", *extra, resume=True)
    assert resumed.resumed and resumed.epoch == 1
    resumed.fit()
    assert resumed.step == straight.step == 6
    for (name, a), b in zip(straight.objective.state_dict().items(), resumed.objective.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)
    # EBA ran in epoch 2 from the bank restored from the checkpoint, and listed what it eliminated.
    report = json.loads((tmp_path / "b" / "eba" / "epoch_002.json").read_text())
    assert report["global_pairs"] == json.loads((tmp_path / "a" / "eba" / "epoch_002.json").read_text())["global_pairs"]
    assert len(report["global_pairs"]) >= 1
    assert (tmp_path / "b" / "checkpoints" / "latest.pt").is_file()
    assert (tmp_path / "b" / "keywords.json").is_file()


def scripted_validation(trainer, scores: list[float]) -> None:
    """Make ``trainer.validate`` report these mR values, one per epoch (the weights still train for real)."""
    from rsitr.evaluate.runner import Evaluation

    trainer.validate = lambda split="val": Evaluation({f"epoch {trainer.epoch}": {"mR": scores[trainer.epoch - 1]}})


def test_a_run_keeps_its_best_epoch_by_validation_mr_and_its_latest(tmp_path):
    """best.pt is the epoch of the highest validation mR (what the run folder stands for, and what train tests),
    latest.pt the last (what a resume continues); other epochs are kept only with train.keep_epochs."""
    from rsitr.models.checkpoint import read_checkpoint, run_checkpoint

    trainer = make_trainer(tmp_path / "run", "train.epochs=3")
    scripted_validation(trainer, [10.0, 30.0, 30.0])  # a tie keeps the earlier epoch
    trainer.fit(until_epoch=2)
    del trainer
    trainer = make_trainer(tmp_path / "run", "train.epochs=3", resume=True)
    scripted_validation(trainer, [10.0, 30.0, 30.0])
    assert trainer.best == {"epoch": 2, "mR": 30.0}  # carried by latest.pt across the resume
    trainer.fit()
    folder = tmp_path / "run" / "checkpoints"
    assert sorted(path.name for path in folder.glob("*.pt")) == ["best.pt", "latest.pt"]
    best, latest = read_checkpoint(folder / "best.pt"), read_checkpoint(folder / "latest.pt")
    assert (best["epoch"], latest["epoch"], latest["best"]) == (2, 3, {"epoch": 2, "mR": 30.0})
    assert run_checkpoint(str(tmp_path / "run")) == str(folder / "best.pt")
    assert trainer.load_best() == {"epoch": 2, "mR": 30.0}
    for name, value in trainer.model.state_dict().items():
        torch.testing.assert_close(value, best["model"][name], atol=0, rtol=0, msg=name)
    assert any(not torch.equal(value, latest["model"][name]) for name, value in best["model"].items())

    kept = make_trainer(tmp_path / "kept", "train.epochs=2", "train.keep_epochs=true")
    scripted_validation(kept, [20.0, 5.0])
    kept.fit()
    assert sorted(path.name for path in (tmp_path / "kept" / "checkpoints").glob("*.pt")) == \
        ["best.pt", "epoch_001.pt", "epoch_002.pt", "latest.pt"]
    assert kept.load_best() == {"epoch": 1, "mR": 20.0}


def test_a_run_starts_from_another_runs_checkpoint(tmp_path):
    first = make_trainer(tmp_path / "first", "train.epochs=1")
    first.fit()
    checkpoint = tmp_path / "first" / "checkpoints" / "latest.pt"
    trained = torch.load(checkpoint, weights_only=True)["model"]
    second = make_trainer(tmp_path / "second", f"model.pretrained={checkpoint}", "train.epochs=1", "train.lr=1e-4")
    for (name, a), b in zip(second.objective.model.state_dict().items(), trained.values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    second.fit()
    assert second.step == 3
    # another architecture's run is refused with the name to set, before anything is written
    from rsitr.models.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="holds a trained rsitr-tiny-ViT, not ViT-B-32"):
        make_trainer(tmp_path / "third", f"model.pretrained={checkpoint}", "model.name=ViT-B-32")
    assert not (tmp_path / "third" / "checkpoints").exists()


def test_warmup_cosine_schedule():
    factor = warmup_cosine(warmup_steps=4, total_steps=12)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(4) == pytest.approx(1.0)
    assert factor(8) == pytest.approx(0.5)
    assert factor(12) == pytest.approx(0.0)


def _torchrun_train(out: Path, *extra: str) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 2 -m rsitr.cli train`` of EBAKER on generated data (CPU, gloo), 2 epochs."""
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun is not on PATH")
    root = CONFIGS
    command = ["torchrun", "--nproc-per-node", "2", "-m", "rsitr.cli", "train",
               "--config", str(root / "data" / "synthetic.yaml"), str(root / "methods" / "ebaker.yaml"),
               "--out", str(out), "--epochs", "2", "--no-progress",
               "--set", "data.synthetic.n_images=40", "train.max_steps_per_epoch=2", "train.batch_size=8", *extra]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_torchrun_two_processes_with_gathered_features(tmp_path):
    """DistributedDataParallel on CPU (gloo): two ranks train, rank 0 checkpoints and evaluates."""
    _torchrun_train(tmp_path)
    checkpoint = torch.load(tmp_path / "checkpoints" / "latest.pt", weights_only=True)
    assert checkpoint["epoch"] == 2 and checkpoint["step"] == 4
    # Each rank's batch of 8 was gathered: EBA banks hold similarities for pairs of both ranks' batches.
    seen = (~checkpoint["eba"]["global_bank"]["values"].isnan()).sum().item()
    assert seen > 16


def test_torchrun_ftf_loss_with_eba_elimination(tmp_path):
    """Issue 11's crash: in an eliminating epoch the FTF term got the keep mask of both ranks' pairs."""
    _torchrun_train(tmp_path, "method.ftf_loss=true", "method.drop_epoch=2", "method.drop_ratio=0.2")
    eliminated = json.loads((tmp_path / "eba" / "epoch_002.json").read_text())
    assert eliminated["active"] and eliminated["global_pairs"]
    assert torch.load(tmp_path / "checkpoints" / "latest.pt", weights_only=True)["epoch"] == 2


@pytest.mark.parametrize("extra", [
    ["method.ftf_loss=true", "method.ker=false"],
    ["method.eba_scheme=independent", "method.ker_masking=random"],
    CMER + ["method.local=false", "method.eba=false", "method.ker=false"],
], ids=["ftf", "iebaker-independent-random-masking", "cmer"])
def test_method_combinations_train_and_lower_the_loss(tmp_path, extra):
    trainer = make_trainer(tmp_path, "train.lr=1e-4", *extra)
    batch = fixed_batch(trainer)
    with torch.no_grad():
        before, parts = trainer.objective(batch)
    if "method.ftf_loss=true" in extra:
        assert "ftf" in parts
    trainer.train_step(batch)
    with torch.no_grad():
        after, _ = trainer.objective(batch)
    assert after.item() < before.item()
