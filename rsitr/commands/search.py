"""Search an archive index by text or by example image and print the best chips with their scores.

Text queries are ranked by global cosine, then the best --candidates are re-ranked with local
(patch-word) similarity when the index stores local tokens (--no-rerank skips that). Image queries
(--image FILE) rank by global cosine.
"""

from __future__ import annotations

import argparse
import json
import sys

from rsitr.commands.options import add_precision_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index", help="index directory written by `rsitr index`")
    parser.add_argument("query", nargs="?", help="text query (omit with --image)")
    parser.add_argument("--image", metavar="FILE", help="search by this example image instead of text")
    parser.add_argument("--top-k", type=int, default=10, help="number of results (default 10)")
    parser.add_argument("--candidates", type=int, default=100,
                        help="FAISS candidates re-ranked for text queries (default 100)")
    parser.add_argument("--no-rerank", action="store_true", help="rank text queries by global cosine only")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--device", default="cpu", help="torch device for encoding the query (default cpu)")
    add_precision_argument(parser)


def run(args: argparse.Namespace) -> int:
    if (args.query is None) == (args.image is None):
        print("rsitr search: error: give either a text query or --image FILE", file=sys.stderr)
        return 2
    if args.top_k < 1:
        print("rsitr search: error: --top-k must be at least 1", file=sys.stderr)
        return 2
    from rsitr.index import ArchiveIndex

    try:
        index = ArchiveIndex.open(args.index, device=args.device, precision=args.precision)
        if args.image is not None:
            hits = index.search_image(args.image, args.top_k)
        else:
            hits = index.search_text(args.query, args.top_k, rerank=not args.no_rerank, candidates=args.candidates)
    except (ValueError, OSError) as err:
        print(f"rsitr search: error: {err}", file=sys.stderr)
        return 2
    index.close()
    if args.json:
        print(json.dumps([hit.to_dict() for hit in hits], indent=2))
        return 0
    for rank, hit in enumerate(hits, 1):
        window = f"{hit.window.width}x{hit.window.height}+{hit.window.x}+{hit.window.y}"
        where = "" if hit.bounds is None else "  bounds " + ",".join(f"{v:.6g}" for v in hit.bounds) + f" {hit.crs}"
        print(f"{rank:3d}  {hit.score:8.4f}  {hit.path} [{window}]  chip {hit.chip_id}{where}")
    return 0
