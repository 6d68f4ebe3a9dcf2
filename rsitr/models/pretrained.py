"""Pretrained tags whose weights ship inside the package, so that they load offline.

OpenCLIP resolves its own tags (``openai``, ``laion2b_s34b_b79k`` ...) by downloading; rsitr's tags resolve
here, in one place, to a file under ``rsitr/models/weights/``. ``weights/pretrained.json`` lists each tag
with its model config name, its file, how it was trained and what it reached, so the numbers travel with
the weights. A shipped file is an OpenCLIP ``state_dict`` in fp16 (half the size; loading casts it back).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rsitr.errors import UserError

WEIGHTS_DIR = Path(__file__).parent / "weights"
REGISTRY = WEIGHTS_DIR / "pretrained.json"
DEFAULT_TAG = "rsitr-small-rsicd"
"""The shipped model used where none is named (``rsitr demo``, the benchmarks)."""


@dataclass(frozen=True)
class PackagedWeights:
    """One shipped tag: the model config it belongs to and the weights file."""

    tag: str
    model: str
    file: Path
    description: str = ""
    results: dict = field(default_factory=dict)


def packaged_tags() -> dict[str, PackagedWeights]:
    """Every tag shipped with this installation (empty when none is)."""
    if not REGISTRY.is_file():
        return {}
    entries = json.loads(REGISTRY.read_text(encoding="utf-8"))
    return {tag: PackagedWeights(tag, entry["model"], WEIGHTS_DIR / entry["file"], entry.get("description", ""),
                                 entry.get("results", {}))
            for tag, entry in entries.items()}


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


def export_weights(clip: torch.nn.Module, path: str | Path) -> Path:
    """Write an OpenCLIP model's ``state_dict`` in fp16 (floating tensors only; others unchanged)."""
    state = {key: value.half() if value.is_floating_point() else value for key, value in clip.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def package_run(run_dir: str | Path, tag: str, description: str, results: dict) -> Path:
    """Ship an ``rsitr train`` run's model as ``tag``: fp16 weights, its training config and its figures.

    Writes ``weights/<tag>.pt`` and ``weights/<tag>.yaml`` (the run's ``config.yaml``) and adds the tag to
    ``weights/pretrained.json``. A maintainer's step (the package is then rebuilt), not a user command.
    """
    from rsitr.models.factory import load_model

    run_dir = Path(run_dir)
    model, config = load_model(None, str(run_dir / "checkpoints" / "latest.pt"))
    path = export_weights(model.clip, WEIGHTS_DIR / f"{tag}.pt")
    (WEIGHTS_DIR / f"{tag}.yaml").write_text((run_dir / "config.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    entries = json.loads(REGISTRY.read_text(encoding="utf-8")) if REGISTRY.is_file() else {}
    entries[tag] = {"model": config["model"]["name"], "file": path.name, "config": f"{tag}.yaml",
                    "description": description, "results": results}
    REGISTRY.write_text(json.dumps(entries, indent=1) + "\n", encoding="utf-8")
    return path
