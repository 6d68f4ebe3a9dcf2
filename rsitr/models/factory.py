"""Build a model, or load it back, with its scoring recipe: :func:`create_model`, the one way every command,
the index, the service and training get a model.

A model is named by a model config (OpenCLIP's or rsitr's, :func:`rsitr.models.list_models`), a pretrained tag
(rsitr's shipped ones, :func:`rsitr.models.list_pretrained`, or OpenCLIP's), an OpenCLIP checkpoint file, an
``rsitr train`` checkpoint or run folder, or a :class:`~rsitr.config.ModelConfig` (training). With none,
:data:`~rsitr.models.registry.DEFAULT_PRETRAINED`. The result carries the model's
:class:`~rsitr.models.registry.ScoringRecipe` (from its run config, or the registry for a shipped tag), so that
evaluation and search score it as it was trained.

The messages about weights are rsitr's and honest: OpenCLIP's own "initialized randomly" log line is dropped, and
rsitr says once per model name when weights really are random (no pretrained tag or file, and no checkpoint to
load afterwards). Checkpoints that do not fit end as one :class:`CheckpointError` line naming both architectures
instead of a state_dict dump.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import nn

from rsitr.config import ModelConfig
from rsitr.errors import RsitrWarning, UserError
from rsitr.models.checkpoint import (CheckpointError, check_exists, read_checkpoint, read_state_dict, run_checkpoint,
                                     weights_label)
from rsitr.models.clip import RetrievalCLIP
from rsitr.models.hf_text import quiet_transformers, resolve_text_tower
from rsitr.models.hub import hub_answers
from rsitr.models.image_towers import load_packaged_weights, packaged_image_tower, weights_file
from rsitr.models.pretrained import PRETRAINED_PREFIXES, shipped_weights
from rsitr.models.registry import (DEFAULT_PRETRAINED, OPENCLIP_TAG_MODEL, RETIRED_TAGS, TINY_MODEL, PretrainedCfg,
                                   ScoringRecipe, get_pretrained_cfg, is_pretrained_tag, register_model_configs)


@dataclass(frozen=True)
class LoadedModel:
    """A model and how to use it: the name and pretrained value it was built from (a checkpoint file's absolute
    path, so that an index can reload it from any working directory) and its scoring recipe."""

    model: nn.Module
    """A :class:`RetrievalCLIP`, or a wrapper with its interface (a Focus-Adapter)."""
    name: str
    pretrained: str | None
    recipe: ScoringRecipe = ScoringRecipe()

    @property
    def label(self) -> str:
        """What result tables call it (:func:`rsitr.models.checkpoint.weights_label`): a run's checkpoint by run."""
        return weights_label(self.name, self.pretrained)


@dataclass(frozen=True)
class ModelSource:
    """What a single model argument was taken for: ``kind`` is ``"name"`` (a model config name: random weights),
    ``"tag"`` (a pretrained tag of the registry), ``"checkpoint"`` (a weights file) or ``"run"`` (an ``rsitr train``
    run folder, standing for its best checkpoint)."""

    kind: str
    value: str


def resolve_model(value: str | Path) -> ModelSource:
    """How :func:`create_model`'s one-argument form reads ``value``: a registry tag, then an existing folder (a run)
    or file (a checkpoint), else a model name. The keywords of :func:`create_model` say it without this guess."""
    if is_pretrained_tag(str(value)):
        return ModelSource("tag", str(value))
    if Path(value).is_dir():
        return ModelSource("run", str(value))
    if Path(value).exists():
        return ModelSource("checkpoint", str(value))
    return ModelSource("name", str(value))


def create_model(model: str | Path | ModelConfig | None = None, pretrained: str | Path | None = None, *,
                 checkpoint: str | Path | None = None, device: str | torch.device = "cpu", seed: int | None = 0,
                 weights_follow: bool = False) -> LoadedModel:
    """The model ``model`` / ``pretrained`` / ``checkpoint`` name, with its scoring recipe.

    Explicit: ``create_model(model="ViT-B-32")`` (a name: random weights), ``create_model(pretrained="openai")``
    (a tag), ``create_model(checkpoint="runs/x")`` (a weights file or run folder; refused when it does not exist).
    Convenient: ``create_model("rsitr-small-rsicd")``, one argument read by :func:`resolve_model`.

    ``model``: a model config name, or (``pretrained`` left out) a shipped tag or an ``rsitr train`` checkpoint or run
    folder; or a :class:`ModelConfig` for training (see :func:`_from_model_config`). ``checkpoint``: a weights file or
    an ``rsitr train`` run folder, never taken for a tag. ``pretrained``: a shipped tag
    (its model follows from it), an OpenCLIP tag (``openai``; with no model name it is :data:`OPENCLIP_TAG_MODEL`'s),
    an OpenCLIP checkpoint file, or an ``rsitr train`` checkpoint or run folder, whose architecture (Focus-Adapter
    included) and recipe come from the checkpoint: a model name that contradicts it is an error naming both. Neither:
    :data:`DEFAULT_PRETRAINED`. A model name alone has random weights (said once on stderr unless
    ``weights_follow``: a checkpoint is loaded into it next); ``seed`` fixes them.
    """
    if isinstance(model, ModelConfig):
        return _from_model_config(model, device, seed, weights_follow)
    name = None if model is None else str(model)
    weights = None if pretrained is None else str(pretrained)
    if checkpoint is not None:
        if weights is not None:
            raise TypeError("create_model() takes pretrained or checkpoint, not both")
        if not Path(checkpoint).exists():
            raise CheckpointError.missing(checkpoint)
        weights = str(checkpoint)
    elif weights is None and name is not None and resolve_model(name).kind != "name":
        name, weights = None, name
    if name is None and weights is None:
        weights = DEFAULT_PRETRAINED
    if weights in RETIRED_TAGS:
        get_pretrained_cfg(weights)  # refuses it, saying how to train it again
    weights = run_checkpoint(weights)
    if weights and Path(weights).is_file():
        weights = str(Path(weights).resolve())
    if weights and (trained := read_checkpoint(weights)) is not None:
        return _from_checkpoint(name, weights, trained, device)
    if name is None and not is_pretrained_tag(weights):
        name = OPENCLIP_TAG_MODEL
    built, recipe = _build(name, weights, device, seed, weights_follow)
    return LoadedModel(built, built.model_name, weights, recipe)


def _build(name: str | None, pretrained: str | None, device: str | torch.device, seed: int | None,
           weights_follow: bool, quick_gelu: bool | None = None) -> tuple[RetrievalCLIP, ScoringRecipe]:
    """:func:`_open_clip_model` with rsitr's messages: a missing checkpoint file, or an OpenCLIP checkpoint of another
    architecture, is a :class:`CheckpointError`; random weights are announced unless ``weights_follow``."""
    shipped = shipped_weights(name, pretrained) if is_pretrained_tag(pretrained) else None
    source = pretrained
    if shipped is not None:  # its file (a hub tag's fetched), architecture and activation
        name, source = shipped.architecture, str(shipped.check_file())
        quick_gelu = shipped.quick_gelu if quick_gelu is None else quick_gelu
    if name is None:  # create_model names OPENCLIP_TAG_MODEL for a bare OpenCLIP tag: a caller's bug
        raise TypeError("a model name is needed unless pretrained is a registry tag")
    try:
        # OpenCLIP's random-init line is replaced by warn_random_weights's; a shipped file that leaves out its
        # towers loads in two steps, and OpenCLIP's "initialized partially" is the first
        with drop_root_log_lines("initialized randomly", "initialized partially"):
            model = _open_clip_model(name, source, device, seed, quick_gelu, shipped)
    except Exception as err:  # noqa: BLE001 - torch and pickle raise many types for a file of the wrong kind
        if not (source and Path(source).is_file()):
            raise
        state = read_state_dict(source)  # a CheckpointError when torch cannot read it at all
        if "state_dict" not in str(err):
            raise
        raise CheckpointError(f"{source} holds weights of another architecture "
                              f"({describe_weights(state)}) than the model asked for "
                              f"({describe_model(name)}); pass the matching `model`", parameters=("model",)) from None
    if not pretrained and not weights_follow:
        warn_random_weights(name, model.hf_text is not None, model.image_pretrained)
    return model, shipped.recipe if shipped is not None else ScoringRecipe()


def _from_model_config(config: ModelConfig, device: str | torch.device, seed: int | None,
                       weights_follow: bool) -> LoadedModel:
    """The model a run configures: the OpenCLIP retrieval model, its towers locked as configured, wrapped in CMER's
    Focus-Adapter when ``config.focus_adapter``.

    ``config.pretrained`` may be an ``rsitr train`` checkpoint: the model starts from that run's weights (a
    warm restart; optimiser, schedule and training heads start anew), which must be of the same architecture.
    ``config.quick_gelu`` is set to the activation built, so a saved config rebuilds the same one without the tag.
    """
    source = run_checkpoint(config.pretrained)
    run = read_checkpoint(source) if source else None
    quick_gelu = config.quick_gelu
    if run is not None:
        recorded = run["config"]["model"]
        if recorded["name"] != config.name:
            raise CheckpointError(f"{config.pretrained} holds a trained {recorded['name']}, not {config.name}; "
                                  f"set model.name to {recorded['name']} to start from it")
        quick_gelu = recorded.get("quick_gelu") if quick_gelu is None else quick_gelu
    # warned below, once the config is valid
    built, recipe = _build(config.name, None if run else source, device, seed, True, quick_gelu)
    config.quick_gelu = built.quick_gelu
    built.lock_text(config.text_unlocked_layers)
    built.lock_image(config.image_unlocked_layers)
    if not (config.pretrained or weights_follow):
        warn_random_weights(config.name, built.hf_text is not None, built.image_pretrained)
    model: nn.Module = built
    if config.focus_adapter:
        from rsitr.models.focus_adapter import FocusAdapterCLIP

        model = FocusAdapterCLIP(built, adapter_dim=config.adapter_dim).to(device)
    if run is not None and source is not None:
        load_state_checked(model, run["model"], source, config.name)
        recipe = ScoringRecipe.from_config(run["config"])
    return LoadedModel(model, config.name, source, recipe)


def _from_checkpoint(name: str | None, path: str, checkpoint: dict, device: str | torch.device) -> LoadedModel:
    """The model an ``rsitr train`` checkpoint holds, rebuilt without downloading anything, scored as it was
    trained (its config's method: local score on or off, fusion weights)."""
    recorded = checkpoint["config"]["model"]
    if name is not None and name != recorded["name"]:
        raise CheckpointError(f"`model='{name}'` contradicts checkpoint {path}, which holds a trained "
                              f"{recorded['name']}; leave out `model` or pass `model='{recorded['name']}'`",
                              parameters=("model",))
    model = _from_model_config(ModelConfig(**{**recorded, "pretrained": None}), device, 0, weights_follow=True).model
    load_state_checked(model, checkpoint["model"], path, recorded["name"])
    return LoadedModel(model, recorded["name"], path, ScoringRecipe.from_config(checkpoint["config"]))


def load_state_checked(model: nn.Module, state: dict, path: str | Path, name: str) -> None:
    """``model.load_state_dict(state)``, or one :class:`CheckpointError` line naming both architectures."""
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise CheckpointError(f"{path} holds weights of another architecture ({describe_weights(state)}) than "
                              f"{name} ({describe_weights(model.state_dict())})") from None


_warned_random: set[str] = set()


def warn_random_weights(name: str, pretrained_text: bool = False, pretrained_image: bool = False) -> None:
    """Say once per process and model name that ``name`` has random weights (only its image tower's, when its
    text tower is a pretrained Hugging Face encoder; only its projections', when both towers are pretrained)."""
    if name not in _warned_random:
        _warned_random.add(name)
        if pretrained_text and pretrained_image:
            which = f"{name}'s projection heads have randomly initialised weights (its towers are pretrained)"
        elif pretrained_text:
            which = f"{name}'s image tower has randomly initialised weights (its text tower is pretrained)"
        else:
            which = f"{name} has randomly initialised weights"
        warnings.warn(f"{which}; no pretrained tag or checkpoint was given, so its embeddings mean nothing until it "
                      f"is trained", RsitrWarning, stacklevel=3)


def describe_weights(state: dict) -> str:
    """A one-line architecture summary of a CLIP state dict (OpenCLIP's or an rsitr model's, prefixed or not)."""
    def find(suffix: str):
        return next((v for k, v in state.items() if k.endswith(suffix) and hasattr(v, "shape")), None)

    conv, projection = find("visual.conv1.weight"), find("text_projection")
    layers = {k.split("visual.transformer.resblocks.")[1].split(".")[0] for k in state
              if "visual.transformer.resblocks." in k}
    parts = []
    if conv is not None:
        parts.append(f"ViT width {conv.shape[0]}, patch {conv.shape[-1]}, {len(layers)} layers")
    if projection is not None:
        parts.append(f"embedding dim {projection.shape[-1]}")
    return ", ".join(parts) or f"{len(state)} tensors of an unrecognised layout"


def describe_model(name: str) -> str:
    """The same summary as :func:`describe_weights`, from an OpenCLIP model config."""
    config = register_model_configs().get_model_config(name) or {}
    vision = config.get("vision_cfg", {})
    patch = vision.get("patch_size")
    if not patch or not isinstance(vision.get("layers"), int):
        return name
    return f"{name}: ViT width {vision.get('width')}, patch {patch}, {vision['layers']} layers, " \
           f"embedding dim {config.get('embed_dim')}"


def resolve_quick_gelu(model_name: str, pretrained: str | None, requested: bool | None = None) -> bool:
    """Whether the towers use QuickGELU: what the pretrained tag was trained with, unless ``requested`` says.

    OpenAI's CLIP weights (``openai``, and e.g. ``laion400m_e31``) were trained with QuickGELU; built as plain
    ``ViT-B-32`` they load without error but compute a different function (open_clip only logs a warning).
    So a tag decides the activation (``requested=None``) and a request that contradicts the tag, or that asks a
    ``-quickgelu`` architecture for GELU, raises :class:`~rsitr.errors.UserError`. Without a tag (random init,
    a checkpoint file) the architecture's own activation is used unless ``requested`` forces QuickGELU.
    """
    open_clip = register_model_configs()
    model_config = open_clip.get_model_config(model_name) or {}
    architecture = bool(model_config.get("quick_gelu", False))
    tag = open_clip.get_pretrained_cfg(model_name, pretrained) if pretrained else {}
    trained_with = bool(tag.get("quick_gelu", False)) if tag else None
    activation = requested if requested is not None else trained_with if trained_with is not None else architecture
    if architecture and not activation:
        raise UserError(f"{model_name} is a QuickGELU architecture and cannot be built with GELU; use "
                        f"{model_name.removesuffix('-quickgelu')} or leave model.quick_gelu unset")
    if trained_with is not None and activation != trained_with:
        trained, asked = ("QuickGELU", "GELU") if trained_with else ("GELU", "QuickGELU")
        raise UserError(f"the {pretrained!r} weights of {model_name} were trained with {trained}, but "
                        f"model.quick_gelu={requested} asks for {asked}: the model would compute a different "
                        f"function; leave model.quick_gelu unset")
    return activation




def _open_clip_model(model_name: str, pretrained: str | None, device: str | torch.device, seed: int | None,
                     quick_gelu: bool | None, shipped: PretrainedCfg | None = None) -> RetrievalCLIP:
    """Build a :class:`RetrievalCLIP` the OpenCLIP way, with ``pretrained`` an OpenCLIP tag (downloaded by OpenCLIP,
    so it needs the hub or its cache) or an OpenCLIP checkpoint file (a registry tag's: ``shipped``, its entry). ``seed``
    fixes the random initialisation of weights that no file provides; ``quick_gelu``: see :func:`resolve_quick_gelu`
    (the model's ``quick_gelu`` attribute records what was built)."""
    trained_parts = None
    if shipped is not None and shipped.leaves_out_pretrained:  # its file loads after the towers' packages
        trained_parts, pretrained = pretrained, None
    if seed is not None:
        torch.manual_seed(seed)
    check_exists(pretrained)
    activation = resolve_quick_gelu(model_name, pretrained, quick_gelu)
    open_clip = register_model_configs()
    model_cfg = open_clip.get_model_config(model_name) or {}
    text_cfg, vision_cfg = model_cfg.get("text_cfg", {}), model_cfg.get("vision_cfg", {})
    overrides: dict[str, object] = {}
    tower = None
    image_tower = vision_cfg.get("timm_model_name") if vision_cfg.get("timm_model_pretrained") else None
    if image_tower is not None:  # ImageNet weights from an installed package, loaded below (no hub)
        packaged_tower = packaged_image_tower(image_tower)
        weights_file(image_tower)  # a missing package is refused before the model is built
        overrides["vision_cfg"] = {**vision_cfg, "timm_model_pretrained": False}
        overrides.update(image_mean=packaged_tower.mean, image_std=packaged_tower.std)
    if text_cfg.get("hf_model_name"):
        tower = resolve_text_tower(text_cfg["hf_model_name"])
        overrides["text_cfg"] = {**text_cfg, "hf_model_name": tower, "hf_tokenizer_name": tower}
        quiet_transformers()
    try:
        with _offline_unless_hub_answers(pretrained):
            clip, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, device=device, force_quick_gelu=activation, **overrides)
    except RuntimeError as err:
        if "Failed to download" in str(err):
            raise UserError(f"the {pretrained!r} weights of {model_name} are not in the OpenCLIP cache and could "
                            f"not be downloaded (is this machine offline?); fetch them where there is a connection, "
                            f"or use a shipped rsitr tag (`rsitr models` lists them; the default needs no flag) or a "
                            f"local checkpoint file") from err
        if model_name in open_clip.list_models():
            raise
        raise UserError(f"unknown OpenCLIP model {model_name!r}; choose one of open_clip.list_models() "
                         f"or {TINY_MODEL!r}") from err
    tokenizer = (open_clip.tokenizer.HFTokenizer(tower, context_length=text_cfg.get("context_length", 64))
                 if tower else open_clip.get_tokenizer(model_name))
    if image_tower is not None and pretrained is None:
        load_packaged_weights(clip.visual.trunk, image_tower)
    if trained_parts is not None:
        _load_trained_parts(clip, trained_parts)
    model = RetrievalCLIP(clip, tokenizer, preprocess_train, preprocess_val, model_name)
    model.quick_gelu = activation
    model.image_pretrained = image_tower is not None
    return model


class _DropLogLines(logging.Filter):
    def __init__(self, fragments: Sequence[str]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


@contextlib.contextmanager
def drop_root_log_lines(*fragments: str) -> Iterator[None]:
    """Drop the root logger's lines holding any of ``fragments`` (OpenCLIP logs through the root logger) while
    the block runs: rsitr says what they would, in its own words, or knows them to be wrong."""
    root, log_filter = logging.getLogger(), _DropLogLines(fragments)
    root.addFilter(log_filter)
    try:
        yield
    finally:
        root.removeFilter(log_filter)


@contextlib.contextmanager
def _offline_unless_hub_answers(pretrained: str | None) -> Iterator[None]:
    """Load a hub tag from the cache alone when the hub does not answer: Hugging Face's client would otherwise
    retry for a minute, printing each attempt, before OpenCLIP says the download failed."""
    if not pretrained or Path(pretrained).is_file():
        yield
        return
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = offline or not hub_answers()
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = offline


def _load_trained_parts(clip: nn.Module, path: str) -> None:
    """Load a shipped file that leaves out the towers' untrained tensors (built from their packages' weights just
    before); the tensors it holds, the trained layers' among them, replace the packages'."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = clip.load_state_dict(state, strict=False)
    if unexpected or any(not key.startswith(PRETRAINED_PREFIXES) for key in missing):
        raise UserError(f"{path} does not fit its model: reinstall rsitr")
