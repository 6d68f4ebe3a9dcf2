"""Typed run configuration: one YAML file per experiment, validated against these dataclasses.

Every method switch of the papers' ablation rows (baseline CLIP, +local, +KER, +EBA, SAR, CMER parts, FTF)
is a field here; the trainer and evaluator read them, no code is forked per method. Files are merged into
the schema with OmegaConf (type checks, unknown keys rejected) and ``key.sub=value`` overrides apply on top.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rsitr.errors import UserError
from rsitr.precision import PRECISIONS


@dataclass
class DatasetSpec:
    """A caption file (Karpathy JSON, NWPU-Captions JSON or CSV) and the folder its images are in."""

    captions: str = "???"
    images: str = "???"
    name: Optional[str] = None


@dataclass
class SyntheticSpec:
    """Generated coloured-shape "aerial" data (tests, demo): written under the run's output folder."""

    n_images: int = 0
    image_size: int = 64


@dataclass
class DataConfig:
    datasets: List[DatasetSpec] = field(default_factory=list)
    synthetic: SyntheticSpec = field(default_factory=SyntheticSpec)
    dedup_max_distance: int = 2  # pHash Hamming distance at or below which a later image is a duplicate
    split_seed: int = 0  # seeded 80/10/10 split for files without splits
    num_workers: int = 0
    scene_augment_prob: float = 0.0  # CMER scene-label prompt augmentation of training captions


@dataclass
class ModelConfig:
    name: str = "ViT-B-32"
    pretrained: Optional[str] = "openai"  # OpenCLIP tag, OpenCLIP checkpoint or rsitr checkpoint path
    focus_adapter: bool = False  # CMER: train a side-branch Focus-Adapter over a frozen backbone
    adapter_dim: int = 128


@dataclass
class MethodConfig:
    """The training objective: which of the papers' components are on."""

    local: bool = True  # EBAKER local similarity (patch x word), in the loss and in the fused score
    global_weight: float = 0.6
    local_weight: float = 0.4
    temperature: Optional[float] = None  # fixed InfoNCE temperature; None learns CLIP's logit scale
    eba: bool = True  # Eliminate Before Align
    eba_scheme: str = "joint"  # iEBAKER: joint | independent
    drop_epoch: int = 4
    drop_ratio: float = 0.01
    ker: bool = True  # Keyword Explicit Reasoning (masked keyword prediction)
    ker_weight: float = 0.5
    ker_masking: str = "keyword"  # keyword | random (IRR-style)
    keywords_top_k: int = 512
    negative_queue: int = 0  # CMER negative-sample recycling: queue length, 0 = off
    ftf_loss: bool = False  # FTF inter- and intra-modal loss


@dataclass
class EvalConfig:
    split: str = "test"
    batch_size: int = 128
    sar: bool = False  # iEBAKER Sort After Reversed retrieval
    sar_top_k: int = 10
    sar_reverse_weight: float = 1.0
    scene_prior: float = 0.0  # CMER: weight of P(query speaks of the image's scene) added to scores; 0 = off
    two_stage: bool = False  # FTF: coarse recall, then fine re-ranking of recall_k candidates
    recall_k: int = 100


@dataclass
class TrainConfig:
    epochs: int = 7
    batch_size: int = 100
    optimizer: str = "adamw"  # adam | adamw
    lr: float = 1.5e-5
    weight_decay: float = 0.7
    warmup_steps: int = 200
    grad_clip_norm: float = 50.0
    seed: int = 0
    log_every: int = 10
    max_steps_per_epoch: int = 0  # 0 = full epochs; >0 truncates (smoke runs)


@dataclass
class RunConfig:
    output_dir: str = "runs/default"
    device: str = "auto"
    precision: str = "auto"  # encoders' precision: fp32 | bf16 | fp16 (CUDA) | auto (bf16 where native, else fp32)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


class ConfigError(UserError):
    """A configuration file or override that does not fit the schema."""


def load_config(paths: str | Path | Sequence[str | Path] | None = None,
                overrides: Sequence[str] | None = None) -> RunConfig:
    """Merge YAML files in order into :class:`RunConfig`, then apply ``section.key=value`` overrides.

    Several files compose like the papers' ablation rows: a data file plus a method file, e.g.
    ``configs/data/rsitmd.yaml configs/methods/ebaker.yaml``.
    """
    paths = [] if paths is None else [paths] if isinstance(paths, (str, Path)) else list(paths)
    config = OmegaConf.structured(RunConfig)
    for path in map(Path, paths):
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (see configs/ for examples)")
        config = _merge(config, OmegaConf.load(path), f"config {path}")
    if overrides:
        config = _merge(config, OmegaConf.from_dotlist(list(overrides)), "config overrides")
    config = OmegaConf.to_object(config)
    if config.precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {config.precision!r}")
    if config.method.eba_scheme not in ("joint", "independent"):
        raise ConfigError(f"method.eba_scheme must be joint or independent, got {config.method.eba_scheme!r}")
    if config.method.ker_masking not in ("keyword", "random"):
        raise ConfigError(f"method.ker_masking must be keyword or random, got {config.method.ker_masking!r}")
    if not config.data.datasets and config.data.synthetic.n_images <= 0:
        raise ConfigError("config needs data.datasets (caption files) or data.synthetic.n_images > 0")
    return config


def _merge(base, layer, where: str):
    try:
        return OmegaConf.merge(base, layer)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{where}: {err}".strip()) from err


def save_config(config: RunConfig, path: str | Path) -> None:
    OmegaConf.save(OmegaConf.structured(config), Path(path))
