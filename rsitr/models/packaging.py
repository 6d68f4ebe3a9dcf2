"""Ship an ``rsitr train`` run's model inside the package as a pretrained tag (a maintainer's step, then the
package is rebuilt; see :mod:`rsitr.models.registry` for the registry it writes to)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Collection

import torch
import yaml

from rsitr.models import registry
from rsitr.models.factory import create_model
from rsitr.models.pretrained import FROZEN_IMAGE_PREFIX, FROZEN_TEXT_PREFIX


def export_weights(clip: torch.nn.Module, path: str | Path, leave_out: Collection[str] = ()) -> Path:
    """Write an OpenCLIP model's ``state_dict`` in fp16 (floating tensors only; others unchanged), without the
    tensors named in ``leave_out`` (a pretrained text tower's, where training left them unchanged)."""
    state = {key: value.half() if value.is_floating_point() else value for key, value in clip.state_dict().items()
             if key not in leave_out}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def unchanged_tower_tensors(model: torch.nn.Module) -> set[str]:
    """The keys of ``model``'s pretrained towers (a Hugging Face text tower, a packaged timm image tower) whose
    tensors still equal their packages': all of them for a frozen tower, all but the trained layers' for a partly
    unlocked one, none for a tower without a package."""
    prefixes = tuple(prefix for prefix, pretrained in ((FROZEN_TEXT_PREFIX, getattr(model, "hf_text", None)),
                                                       (FROZEN_IMAGE_PREFIX, getattr(model, "image_pretrained", False)))
                     if pretrained)
    if not prefixes:
        return set()
    # the packages' tensors, as a model built from them holds them (its other tensors are random and not compared)
    reference = create_model(model.model_name, weights_follow=True).model.clip.state_dict()
    return {key for key, value in model.clip.state_dict().items()
            if key.startswith(prefixes) and torch.equal(value, reference[key])}


def package_run(run_dir: str | Path, tag: str, description: str, results: dict) -> Path:
    """Ship an ``rsitr train`` run's model as ``tag``: fp16 weights, its training config and its figures.

    Writes ``weights/<tag>.pt`` and ``weights/<tag>.yaml`` (the run's ``config.yaml``) and adds the tag, with the
    file's SHA-256, to ``weights/pretrained.json``. A maintainer's step (the package is then rebuilt), not a user
    command.
    """
    run_dir = Path(run_dir)
    loaded = create_model(run_dir)
    model = loaded.model
    unchanged = unchanged_tower_tensors(model)
    path = export_weights(model.clip, registry.WEIGHTS_DIR / f"{tag}.pt", leave_out=unchanged)
    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    config["output_dir"] = f"runs/{tag}"  # where `rsitr train` of this recipe writes; not the maintainer's folder
    (registry.WEIGHTS_DIR / f"{tag}.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    entries = json.loads(registry.REGISTRY.read_text(encoding="utf-8")) if registry.REGISTRY.is_file() else {}
    entries[tag] = {"model": loaded.name, "file": path.name, "sha256": registry.file_sha256(path),
                    "config": f"{tag}.yaml", "description": description, "results": results}
    model_cfg = registry.register_model_configs().get_model_config(loaded.name)
    if any(key.startswith(FROZEN_TEXT_PREFIX) for key in unchanged):
        entries[tag]["text_tower"] = model_cfg["text_cfg"]["hf_model_name"]
    if any(key.startswith(FROZEN_IMAGE_PREFIX) for key in unchanged):
        entries[tag]["image_tower"] = model_cfg["vision_cfg"]["timm_model_name"]
    registry.REGISTRY.write_text(json.dumps(entries, indent=1) + "\n", encoding="utf-8")
    return path
