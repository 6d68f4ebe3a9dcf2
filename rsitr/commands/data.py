"""Look at caption files before training on them: counts, problems, near-duplicate images, train/test leakage.

Each caption file is followed by its image folder. Image hashes are cached (beside --out, or in
~/.cache/rsitr), so a second run does not decode the images again.

Examples:
  rsitr data inspect ../shared/data/ucm/dataset_ucm.json --images ../shared/data/ucm/images
  rsitr data inspect ../shared/data/rsicd/dataset_rsicd.json --images ../shared/data/rsicd/images \
      ../shared/data/ucm/dataset_ucm.json --images ../shared/data/ucm/images --out inspect.json
"""

from __future__ import annotations

import argparse

from rsitr.commands.options import add_progress_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    inspect = actions.add_parser(
        "inspect", help="per dataset and split: counts, empty/duplicate captions, missing/unreadable images, "
                        "near-duplicate images and a train/test leakage verdict")
    inspect.add_argument("items", nargs="+", metavar="FILE --images DIR",
                         help="caption file (Karpathy JSON, NWPU JSON or CSV), each followed by --images DIR")
    inspect.add_argument("--images", nargs="+", action=_ImagesThenFiles, default=[], help=argparse.SUPPRESS)
    inspect.add_argument("--out", metavar="FILE", help="write the whole report (every pair listed) to this JSON file")
    inspect.add_argument("--max-distance", type=int, default=2,
                         help="pHash Hamming distance at or below which two images are near-duplicates (default 2)")
    inspect.add_argument("--list", type=int, default=10, metavar="N", help="pairs listed per kind (default 10)")
    inspect.add_argument("--cache", help="pHash cache file (default: beside --out, else ~/.cache/rsitr/phash.json)")
    add_progress_argument(inspect)


class _ImagesThenFiles(argparse.Action):
    """``--images DIR [FILE ...]``: argparse takes a positional list only once, so the caption files that follow
    a folder (``a.json --images A b.json --images B``) arrive here and are added to ``items``."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        namespace.images = [*namespace.images, values[0]]
        namespace.items = [*(getattr(namespace, "items", None) or []), *values[1:]]


def _pairs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """``FILE --images DIR`` pairs, in order (argparse gathers the files and the folders in two lists)."""
    from rsitr.errors import UserError

    if len(args.items) != len(args.images):
        raise UserError(f"{len(args.items)} caption file(s) but {len(args.images)} --images folder(s); "
                        "follow each caption file with --images DIR")
    return list(zip(args.items, args.images))


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rsitr.atomic import write_atomic
    from rsitr.data.inspect import inspect_datasets
    from rsitr.data.phash import HashCache, default_cache_path

    files = _pairs(args)
    out = Path(args.out) if args.out else None
    if out is not None and not out.parent.is_dir():
        from rsitr.errors import UserError
        raise UserError(f"folder {out.parent} of --out does not exist; create it or pick another path")
    cache = Path(args.cache) if args.cache else out.parent / "phash-cache.json" if out else default_cache_path()
    report = inspect_datasets(files, args.max_distance, cache=HashCache(cache), progress=not args.no_progress)
    print(report.summary(limit=args.list))
    if out is not None:
        import json

        text = json.dumps(report.to_json(), indent=1)
        write_atomic(out, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))
        print(f"written {out} (pHash cache: {cache})")
    return 0
