"""List the models: the tags shipped inside rsitr (what each is, its figures) and OpenCLIP's architectures with
their pretrained tags (as `open_clip.list_pretrained()` gives them).

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

from rsitr.models.pretrained import DEFAULT_PRETRAINED, packaged_tags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shipped", action="store_true", help="only the tags shipped with rsitr (no torch import)")


def run(args: argparse.Namespace) -> int:
    print("Shipped with rsitr (offline):")
    for tag, weights in sorted(packaged_tags().items()):
        default = "  (default)" if tag == DEFAULT_PRETRAINED else ""
        print(f"  {tag}: model {weights.model}{default}")
        print(textwrap.fill(weights.description, width=110, initial_indent="    ", subsequent_indent="    "))
        for split, figures in weights.results.items():
            print(f"    {split}: " + ", ".join(f"{name} {value}" for name, value in figures.items()))
    if args.shipped:
        return 0
    from rsitr.models.clip import open_clip  # with rsitr's own model configs registered

    tags: dict[str, list[str]] = {name: [] for name in open_clip.list_models()}
    for name, tag in open_clip.list_pretrained():
        tags.setdefault(name, []).append(tag)
    print("\nOpenCLIP architectures (--model) and their pretrained tags (downloaded on first use):")
    for name, known in tags.items():
        print(f"  {name}: {', '.join(known) if known else '-'}")
    return 0
