"""A tiny synthetic-data trainer and one fixed batch, for training and model tests."""

import random

import torch

from rsitr.config import load_config
from rsitr.training.trainer import Trainer

TINY = ["model.name=rsitr-tiny-ViT", "model.pretrained=null", "device=cpu",
        "data.synthetic.n_images=40", "data.synthetic.image_size=32",
        "method.drop_epoch=2", "method.drop_ratio=0.1", "method.keywords_top_k=16",
        "train.batch_size=16", "train.lr=1e-3", "train.weight_decay=0.01", "train.warmup_steps=1",
        "train.max_steps_per_epoch=3"]


def make_trainer(out, *extra, resume=False):
    return Trainer(load_config(None, TINY + [f"output_dir={out}", *extra]), progress=False, resume=resume)


def fixed_batch(trainer):
    raw = next(iter(trainer._loader(1)))
    return trainer._batch(raw, random.Random(0), torch.Generator().manual_seed(0))
