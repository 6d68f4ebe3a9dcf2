"""The one training loop: EBAKER / iEBAKER fine-tuning, with CMER and FTF parts switched on by config.

Reproducibility: every epoch re-seeds all random number generators from ``train.seed`` and the epoch
number, and checkpoints are written at epoch ends with the optimiser, schedule, EBA banks and negative
queue. So ``--resume`` continues exactly where an uninterrupted run would be.

The run folder's policy (refusing to lose an earlier run, resuming, logs cut back to the checkpoint) is
:mod:`rsitr.training.run_folder`'s; a resume checks every state before anything is written, so a failed
resume leaves the folder as it was.
"""

from __future__ import annotations

import functools
import json
import math
import random
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader, RandomSampler
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from rsitr.atomic import write_atomic
from rsitr.config import RunConfig, save_config
from rsitr.data import PairDataset, collate
from rsitr.data.augment import with_random_orientation
from rsitr.evaluate.report import format_table
from rsitr.evaluate.runner import Evaluation, evaluate_model
from rsitr.losses.eba import EliminateBeforeAlign
from rsitr.models import ScoringRecipe
from rsitr.models.checkpoint import CHECKPOINT_FORMAT, read_checkpoint
from rsitr.models.factory import create_model, load_state_checked
from rsitr.models.precision import grad_scaler, resolve_precision
from rsitr.runtime import resolve_device, seed_everything
from rsitr.training.corpus import build_corpus, check_files, dataset_splits
from rsitr.training.distributed import init_distributed, main_first
from rsitr.training.objective import Batch, RetrievalObjective
from rsitr.training.run_folder import (RunFolderError, append_csv, check_resumable, checkpoint_to_resume,
                                       remove_run_outputs, truncate_log)

if TYPE_CHECKING:
    from rsitr.models.image_cache import ImageFeatureCache


def warmup_cosine(warmup_steps: int, total_steps: int):
    """LR multiplier: linear warm-up to 1 over ``warmup_steps``, then cosine decay to 0 at ``total_steps``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def parameter_groups(module: torch.nn.Module, weight_decay: float, lr: float,
                     text_lr: float | None = None, image_lr: float | None = None) -> list[dict]:
    """OpenCLIP's rule: no weight decay on gains, biases, norms, embeddings' scales and logit scales.

    A pretrained (Hugging Face) text tower's own layers learn at ``text_lr`` and a timm image tower's trunk at
    ``image_lr`` (when given); their projections into the joint space learn with the rest at ``lr``."""
    groups: dict[tuple[bool, float], list] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        exclude = param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        rate = lr
        if text_lr is not None and ".text.transformer." in f".{name}":
            rate = text_lr
        elif image_lr is not None and ".visual.trunk." in f".{name}":
            rate = image_lr
        groups.setdefault((exclude, rate), []).append(param)
    return [{"params": params, "weight_decay": 0.0 if exclude else weight_decay, "lr": rate}
            for (exclude, rate), params in sorted(groups.items())]


class Trainer:
    def __init__(self, config: RunConfig, progress: bool = True, resume: bool = False,
                 overwrite: bool = False) -> None:
        """Set up a run in ``config.output_dir``. ``resume`` continues from its ``checkpoints/latest.pt`` (if
        there is one); ``overwrite`` starts over in a folder that holds an earlier run; a folder with
        checkpoints and neither flag is refused (:class:`RunFolderError`) before anything is written."""
        self.config, self.progress = config, progress
        self.out = Path(config.output_dir)
        checkpoint = checkpoint_to_resume(self.out, resume, overwrite)
        if checkpoint is not None:
            check_resumable(checkpoint, config, self.out)
        # Named steps, in this order (each draws from the seeded random generators in turn, so the order is the
        # run's: same seed, same losses).
        self.configure_device()
        check_files(config.data)  # data files before the (slow) model, which may need a download
        seed_everything(config.train.seed)
        self.configure_model(checkpoint)  # a checkpoint of another architecture is refused before the folder is touched
        self.out.mkdir(parents=True, exist_ok=True)
        image_cache = self.configure_corpus()
        self.configure_losses()
        self.configure_dataset(image_cache)
        self.configure_optimizers()
        self.epoch = 0
        self.step = 0
        self.best: dict | None = None
        """``{"epoch", "mR"}`` of the best validation so far (its weights are ``checkpoints/best.pt``)."""
        self.dropped_log_rows = 0
        """Rows of ``train_log.csv`` dropped at the start: steps of an interrupted attempt that this run redoes."""
        if checkpoint is not None:
            self._load_state(checkpoint)
        if self.dist.is_main:
            self._prepare_run_folder(overwrite and checkpoint is None)

    # --- set-up steps -------------------------------------------------------------------------------------
    def configure_device(self) -> None:
        """``device`` (the config's, one GPU per process when distributed) and ``dist``."""
        self.device = resolve_device(self.config.device)
        self.dist = init_distributed(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)

    def configure_model(self, checkpoint: dict | None) -> None:
        """``model`` (with the weights of ``checkpoint`` when resuming) and ``recipe``, how validation and test
        score it. weights_follow: training gives the weights (no "random weights" warning, which is for models used
        as they are)."""
        config = self.config
        self.model = create_model(config.model, device=self.device, seed=config.train.seed, weights_follow=True).model
        self.recipe = ScoringRecipe.from_config(asdict(config))
        if checkpoint is not None:
            load_state_checked(self.model, checkpoint["model"], self.out / "checkpoints" / "latest.pt",
                               config.model.name)

    def configure_corpus(self) -> ImageFeatureCache | None:
        """``corpus`` and ``train_corpus`` (built or generated once, by the main process first), with the frozen
        towers' feature caches attached to the model; returns the image cache (None without one)."""
        with main_first(self.dist):
            self.corpus = build_corpus(self.config.data, self.out, seed=self.config.train.seed, progress=self.progress)
        self.train_corpus = self.corpus.split("train")
        if self.config.model.text_cache and getattr(self.model, "text_frozen", False):
            from rsitr.models.text_cache import TextFeatureCache

            captions = [c for split in ("train", "val") for image in self.corpus.split(split).images
                        for c in image.captions]
            self.model.attach_text_cache(TextFeatureCache.for_captions(self.model, captions, progress=self.progress))
        return self._image_cache() if self.config.model.image_cache_views else None

    def configure_losses(self) -> None:
        """The method's parts (KER's masker and head, EBA, the negative queue) in ``objective``, at ``precision``;
        ``trainable`` is what the optimiser steps (the objective, wrapped for distributed training)."""
        method = self.config.method
        self.masker = self._build_masker() if method.ker else None
        ker_head = self._build_ker_head() if method.ker else None
        eba = (EliminateBeforeAlign(len(self.train_corpus.captions), method.drop_epoch, method.drop_ratio,
                                    method.eba_scheme, method.eba_compare, method.drop_epoch_base)
               if method.eba else None)
        queue = None
        if method.negative_queue > 0:
            from rsitr.losses.negative_queue import NegativeQueue

            queue = NegativeQueue(method.negative_queue, self.model.embed_dim)
        self.precision = resolve_precision(self.config.precision, self.device)
        self.objective = RetrievalObjective(self.model, method, ker_head, eba, queue, self.dist,
                                            self.precision).to(self.device)
        self.trainable = self.objective
        if self.dist.enabled:
            # Unused parameters exist in some method combinations (e.g. CLIP's logit scale with a fixed temperature).
            self.trainable = torch.nn.parallel.DistributedDataParallel(
                self.objective, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)

    def configure_dataset(self, image_cache: ImageFeatureCache | None) -> None:
        """``dataset`` of training pairs (augmented as configured) and the run's length in steps."""
        config = self.config
        transform = self.model.preprocess_train
        if config.data.random_orientation:
            transform = with_random_orientation(transform)
        self.dataset = PairDataset(self.train_corpus, transform, image_cache.random_view if image_cache else None)
        batches = math.ceil(len(self.dataset) / (config.train.batch_size * self.dist.world_size))
        self.steps_per_epoch = min(batches, config.train.max_steps_per_epoch or batches)
        self.total_steps = self.steps_per_epoch * config.train.epochs

    def configure_optimizers(self) -> None:
        """``optimizer`` (per-tower learning rates), ``scheduler`` (warm-up then cosine) and ``scaler``."""
        train = self.config.train
        optimizer_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[train.optimizer]
        self.optimizer = optimizer_cls(parameter_groups(self.objective, train.weight_decay, train.lr, train.text_lr,
                                                        train.image_lr), lr=train.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           warmup_cosine(train.warmup_steps, self.total_steps))
        self.scaler = grad_scaler(self.precision, self.device)  # fp16 (CUDA AMP) only; a pass-through otherwise

    def _prepare_run_folder(self, start_over: bool) -> None:
        """The main process's writes before training: an earlier run's outputs removed (``start_over``), log rows
        past the checkpoint dropped (they are done again; without one, all are), the config saved."""
        if start_over:  # keywords.json was just written by this run when KER is on
            remove_run_outputs(self.out, keep={"keywords.json"} if self.config.method.ker else set())
        self.dropped_log_rows = truncate_log(self.out / "train_log.csv", "step", self.step)
        truncate_log(self.out / "eval_log.csv", "epoch", self.epoch)
        save_config(self.config, self.out / "config.yaml")

    @property
    def resumed(self) -> bool:
        """True when this run continues from a checkpoint."""
        return self.step > 0

    def _image_cache(self) -> ImageFeatureCache | None:
        """A locked image tower's frozen stages, computed once for the training images in each configured
        orientation (and for every split's images as they are, which validation and testing then reuse), attached
        to the model; None when the tower is not locked or not cacheable."""
        model = self.model
        unlocked = getattr(model, "image_unlocked_layers", None)
        if unlocked is None or unlocked > 2:
            return None
        from rsitr.models.image_cache import ImageFeatureCache

        every = [image.path for split in ("train", "val", "test") for image in self.corpus.split(split).images]
        train = [image.path for image in self.train_corpus.images]
        cache = ImageFeatureCache.for_images(
            model, {view: every if view == 0 else train for view in self.config.model.image_cache_views},
            precision=resolve_precision(self.config.precision, self.device),
            progress=self.progress and self.dist.is_main)
        model.attach_image_cache(cache)
        return cache

    # --- method parts --------------------------------------------------------------------------------
    def _build_masker(self):
        from rsitr.models.keywords import build_keywords, mask_captions, stop_list

        by_source: dict[str, list[str]] = {}
        for image in self.train_corpus.images:
            by_source.setdefault(image.source, []).extend(image.captions)
        keywords = build_keywords(by_source, top_k=self.config.method.keywords_top_k,
                                  stop_words=stop_list(self.config.method.keyword_stop_list))
        if self.dist.is_main:
            keywords.save(self.out / "keywords.json")
        return functools.partial(mask_captions, tokenizer=self.model.tokenizer, mode=self.config.method.ker_masking,
                                 keywords=keywords)

    def _build_ker_head(self):
        from rsitr.models.ker_head import KERHead

        return KERHead(self.model.embed_dim, self.model.vocab_size, num_blocks=self.config.method.ker_blocks)

    def _augment(self, captions: list[str], image_ids: torch.Tensor, rng: random.Random) -> list[str]:
        prob = self.config.data.scene_augment_prob
        if prob <= 0:
            return captions
        from rsitr.data.scene_labels import augment_caption

        scenes = [self.train_corpus.images[i].scene for i in image_ids.tolist()]
        return [augment_caption(c, s, prob, rng) for c, s in zip(captions, scenes)]

    # --- loop --------------------------------------------------------------------------------------------
    def _loader(self, epoch: int) -> DataLoader:
        if self.dist.enabled:
            sampler = DistributedSampler(self.dataset, seed=self.config.train.seed)
            sampler.set_epoch(epoch)
        else:
            sampler = RandomSampler(self.dataset, generator=torch.Generator().manual_seed(self.config.train.seed + epoch))
        return DataLoader(self.dataset, batch_size=self.config.train.batch_size, sampler=sampler,
                          num_workers=self.config.data.num_workers, collate_fn=collate,
                          persistent_workers=False, pin_memory=self.device.type == "cuda")

    def _batch(self, raw: dict, rng: random.Random, generator: torch.Generator) -> Batch:
        captions = self._augment(list(raw["caption"]), raw["image_id"], rng)
        tokens = self.model.tokenize(captions)  # the objective trims them to the batch's longest caption
        batch = Batch(raw["image"], tokens, raw["image_id"], raw["caption_id"])
        if self.masker is not None:
            batch.masked_tokens, batch.mask_labels = self.masker(captions, generator=generator)
        return Batch(**{k: (v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                        for k, v in vars(batch).items()})

    def train_step(self, batch: Batch) -> dict[str, float]:
        self.trainable.train()
        loss, logs = self.trainable(batch)  # the objective runs the encoders under self.precision
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.train.grad_clip_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.objective.parameters(), self.config.train.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        logs["loss"] = float(loss.detach())
        logs["lr"] = self.scheduler.get_last_lr()[0]
        return logs

    def _start_epoch(self, epoch: int) -> None:
        eba = self.objective.eba
        if eba is None:
            return
        report = eba.start_epoch(epoch)
        self.objective.eliminating = report.active
        if self.dist.is_main:
            (self.out / "eba").mkdir(exist_ok=True)
            (self.out / "eba" / f"epoch_{epoch:03d}.json").write_text(json.dumps(asdict(report), indent=1))
            if eba.eliminates_in(epoch) and eba.compare == "live":
                tqdm.write(f"epoch {epoch}: EBA drops batch pairs at or below global {report.global_threshold} / "
                           f"local {report.local_threshold}")
            elif eba.eliminates_in(epoch):
                tqdm.write(f"epoch {epoch}: EBA eliminates {len(report.global_pairs)} global / "
                           f"{len(report.local_pairs)} local pairs (threshold {report.global_threshold})")

    def fit(self, until_epoch: int | None = None) -> Evaluation | None:
        """Train up to ``until_epoch`` (default: all configured epochs), evaluating on the validation split and
        checkpointing after each epoch; return the last evaluation. The schedule always spans all epochs, so
        stopping early and resuming later gives the same run."""
        cfg = self.config.train
        evaluation = None
        log_path = self.out / "train_log.csv"
        for epoch in range(self.epoch + 1, min(until_epoch or cfg.epochs, cfg.epochs) + 1):
            seed_everything(cfg.seed * 1000 + epoch)
            rng, generator = random.Random(cfg.seed * 1000 + epoch), torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
            self._start_epoch(epoch)
            bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch}/{cfg.epochs}",
                       disable=not (self.progress and self.dist.is_main))
            for index, raw in enumerate(self._loader(epoch)):
                if index >= self.steps_per_epoch:
                    break
                logs = self.train_step(self._batch(raw, rng, generator))
                bar.update(1)
                bar.set_postfix(loss=f"{logs['loss']:.3f}")
                if self.dist.is_main and (self.step % cfg.log_every == 0 or index == self.steps_per_epoch - 1):
                    append_csv(log_path, {"epoch": epoch, "step": self.step, **logs})
            bar.close()
            self.epoch = epoch
            if self.dist.is_main:
                evaluation = self.validate()
                self.save_checkpoint(evaluation)
        return evaluation

    def validate(self, split: str = "val") -> Evaluation | None:
        corpus = self.corpus.split(split)
        if len(corpus) == 0:
            return None
        evaluation = evaluate_model(self.model, corpus, self.recipe, self.config.eval, self.device,
                                    name=f"epoch {self.epoch}", progress=False, precision=self.precision)
        tqdm.write(format_table(evaluation.rows, title=f"{split} after epoch {self.epoch}"))
        for name, metrics in evaluation.rows.items():
            append_csv(self.out / "eval_log.csv", {"epoch": self.epoch, "split": split, "row": name, **metrics})
        return evaluation

    def test(self, progress: bool = True) -> dict[str, Evaluation]:
        """Evaluate on each configured dataset's own ``eval.split`` (not the merged union), by dataset name."""
        config = self.config
        splits = dataset_splits(config.data, self.out, config.eval.split, seed=config.train.seed)
        return {name: evaluate_model(self.model, corpus, self.recipe, config.eval, self.device,
                                     name=config.model.name, progress=progress, precision=self.precision)
                for name, corpus in splits.items() if len(corpus)}

    # --- checkpoints -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        objective = self.objective
        return {
            "format": CHECKPOINT_FORMAT,
            "config": _config_dict(self.config),
            "epoch": self.epoch, "step": self.step,
            "model": self.model.state_dict(),
            "objective": {k: v for k, v in objective.state_dict().items() if not k.startswith("model.")},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "eba": None if objective.eba is None else objective.eba.state_dict(),
            "queue": None if objective.queue is None else objective.queue.state_dict(),
            "best": self.best,
        }

    def validation_mr(self, evaluation: Evaluation | None) -> float | None:
        """The mR of this epoch's validation (its first row: the model as its recipe scores it), None without one."""
        return None if evaluation is None else float(next(iter(evaluation.rows.values()))["mR"])

    def save_checkpoint(self, evaluation: Evaluation | None = None) -> Path:
        """``latest.pt`` (what a resume continues); ``best.pt`` when this epoch's validation mR (``evaluation``) beats
        every earlier one (a tie keeps the earlier); ``epoch_NNN.pt`` only with ``train.keep_epochs``. Returns
        the latest's path."""
        folder = self.out / "checkpoints"
        folder.mkdir(exist_ok=True)
        mr = self.validation_mr(evaluation)
        improved = mr is not None and (self.best is None or mr > self.best["mR"])
        if improved:
            self.best = {"epoch": self.epoch, "mR": mr}
        state = self.state_dict()
        targets = [folder / "latest.pt"] + [folder / "best.pt"] * improved + \
            [folder / f"epoch_{self.epoch:03d}.pt"] * self.config.train.keep_epochs
        for target in targets:
            write_atomic(target, lambda temporary: torch.save(state, temporary))
        return targets[0]

    def load_best(self) -> dict | None:
        """Put the best epoch's model weights (``best.pt``) in place of the last epoch's, to test what the run ships;
        returns ``self.best`` (None, and nothing loaded, when there is no best or it is the current epoch)."""
        if self.best is None or self.best["epoch"] == self.epoch:
            return None
        path = self.out / "checkpoints" / "best.pt"
        load_state_checked(self.model, read_checkpoint(path)["model"], path, self.config.model.name)
        return self.best

    def _load_state(self, checkpoint: dict) -> None:
        """Everything but the model (loaded and checked first, in ``__init__``) from a checkpoint."""
        try:
            self.objective.load_state_dict({**{f"model.{k}": v for k, v in checkpoint["model"].items()},
                                            **checkpoint["objective"]})
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
            if checkpoint.get("scaler"):
                self.scaler.load_state_dict(checkpoint["scaler"])
            if self.objective.eba is not None:
                self.objective.eba.load_state_dict(checkpoint["eba"])
            if self.objective.queue is not None:
                self.objective.queue.load_state_dict(checkpoint["queue"])
        except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise RunFolderError(f"the checkpoint in {self.out} was trained with another method or data setup "
                                 f"than the config gives ({first_line[:200]}); resume with the run's own "
                                 f"{self.out / 'config.yaml'}, or `overwrite` to start over", parameters=("overwrite",)) from err
        self.epoch, self.step = checkpoint["epoch"], checkpoint["step"]
        self.best = checkpoint.get("best")  # None in a checkpoint of an earlier rsitr


def _config_dict(config: RunConfig) -> dict:
    return json.loads(json.dumps(asdict(config)))
