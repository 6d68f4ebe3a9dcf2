"""Search an archive index by text or by example image and print the best chips with their scores.

Text queries are ranked by global cosine, then the best --candidates are re-ranked with local
(patch-word) similarity when the index stores local tokens (--no-rerank skips that). Image queries
(--image FILE) rank by global cosine. --like CHIP searches like an indexed chip, from its stored
vector (nothing is re-encoded). --positive / --negative chips refine any of these by relevance
feedback (Rocchio: toward the wanted chips, away from the unwanted ones). A chip is named by its id or by
its image's path (PATH:WxH+X+Y for one chip of a tiled scene); --list PATTERN prints ids and paths.
--format geojson writes the footprints in WGS84 for a GIS; --format csv one row per chip.

--bbox (a box in degrees, or a GeoJSON polygon file) and --after / --before (acquisition dates: a STAC item's
datetime, or a TIFF's DATETIME tag, recorded when it was indexed) limit the chips that are ranked, so --top-k results
come back while as many lie there; chips without a footprint (no coordinates) or without a known date are left out
once the area, or a date, is given. They limit --all alike.

--all finds every chip of the index like the --positive ones: a calibrated linear probe fitted on the marks
(--negative and the query as priors) scores all chips, and those with a probability of at least --threshold are
printed, most probable first, with their count; --format geojson / csv then write the regions they form
(adjacent chips of one scene merged into polygons).

Examples (after `rsitr index rsitr/demo_data/ucm --out ucm.index`):
  rsitr search ucm.index "a baseball field next to green trees" --top-k 10
  rsitr search ucm.index --image rsitr/demo_data/ucm/forest_01.jpg
  rsitr search ucm.index --list 'storagetanks*'
  rsitr search ucm.index --like rsitr/demo_data/ucm/forest_01.jpg
  rsitr search ucm.index "storage tanks" --positive storagetanks_01.jpg storagetanks_02.jpg \\
    --negative parkinglot_01.jpg --format geojson
  rsitr search ucm.index --positive storagetanks_01.jpg storagetanks_02.jpg storagetanks_03.jpg \\
    --negative parkinglot_01.jpg harbor_01.jpg --all
  rsitr search s2.index "a flooded field" --bbox 11.2 47.9 11.9 48.3 --after 2024-05-01 --before 2024-07-01
  rsitr search s2.index "a flooded field" --bbox district.geojson
"""

from __future__ import annotations

import argparse

from rsitr.commands import positive_int
from rsitr.commands.options import add_inference_arguments, check_readable
from rsitr.errors import UserError
from rsitr.terminal import printable

FORMATS = ("table", "json", "geojson", "csv")
CHECKPOINT_HELP = ("where the index's model checkpoint lies now, if it moved (accepted only when its SHA-256 is "
                   "the recorded one)")
CHIP_HELP = ("a chip id, or an indexed image's path (inside the images folder, or relative to it), with :WxH+X+Y "
             "for one chip of a tiled scene")
MAX_PIXELS_HELP = "largest query image in pixels, read from its header before decoding (default 40,000,000)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index", help="index directory written by `rsitr index`")
    parser.add_argument("query", nargs="?", help="text query (omit with --image)")
    parser.add_argument("--image", metavar="FILE", help="search by this example image instead of text")
    parser.add_argument("--top-k", type=positive_int, default=10, help="number of results (default 10)")
    parser.add_argument("--candidates", type=positive_int, default=100,
                        help="FAISS candidates re-ranked for text queries (default 100)")
    parser.add_argument("--no-rerank", action="store_true", help="rank text queries by global cosine only")
    parser.add_argument("--like", metavar="CHIP", help="search like this indexed chip (its stored vector): " + CHIP_HELP)
    parser.add_argument("--positive", nargs="+", default=[], metavar="CHIP",
                        help="chips marked wanted: the ranking moves toward them")
    parser.add_argument("--negative", nargs="+", default=[], metavar="CHIP",
                        help="chips marked not wanted: the ranking moves away from them")
    parser.add_argument("--list", metavar="PATTERN",
                        help="list the chips of the indexed images whose path matches PATTERN (a glob relative to the "
                             "images folder, e.g. 'forest*'): id, path and window, nothing searched")
    parser.add_argument("--all", action="store_true", dest="find_all",
                        help="find all chips like the --positive ones (a classifier over the whole index)")
    parser.add_argument("--threshold", type=float, default=None, metavar="P",
                        help="with --all: the probability a chip needs (default 0.5: even odds)")
    parser.add_argument("--format", choices=FORMATS, default="table",
                        help="table (default), json, geojson (footprints in WGS84) or csv")
    parser.add_argument("--json", action="store_const", const="json", dest="format", help="same as --format json")
    parser.add_argument("--max-pixels", type=positive_int, default=None, help=MAX_PIXELS_HELP)
    add_where_arguments(parser)
    add_checkpoint_argument(parser)
    add_inference_arguments(parser, runtime=True)


WITHOUT = "; chips without {} are left out when it is given"


def add_where_arguments(parser: argparse.ArgumentParser) -> None:
    """``--bbox``, ``--after``, ``--before``: the area and acquisition dates the ranked chips are chosen from."""
    parser.add_argument("--bbox", nargs="+", metavar="W S E N | POLYGON.geojson",
                        help="only chips whose footprint intersects this box (west south east north, degrees WGS84) or "
                             "the GeoJSON polygon in this file" + WITHOUT.format("a footprint (no coordinates)"))
    parser.add_argument("--after", metavar="DATE",
                        help="only chips acquired at or after this ISO 8601 date or time (UTC unless it names a zone: "
                             "a STAC item's datetime or a TIFF's DATETIME tag)" + WITHOUT.format("a known date"))
    parser.add_argument("--before", metavar="DATE",
                        help="only chips acquired before this ISO 8601 date or time" + WITHOUT.format("a known date"))


def parse_where(args: argparse.Namespace):
    """The :class:`rsitr.index.where.Where` the flags ask for; a flag that cannot be read is one line."""
    from pathlib import Path

    from rsitr.index.where import Where, WhereError

    bbox, area = _box_or_polygon(args.bbox)
    check_readable(("--bbox", area))
    try:
        return Where.parse(bbox=bbox, area=None if area is None else Path(area), after=args.after,
                           before=args.before)
    except WhereError as err:
        flag = "--bbox" if args.after is None and args.before is None else "--bbox / --after / --before"
        raise UserError(f"{flag}: {err}") from None


def _box_or_polygon(bbox: list[str] | None) -> tuple[str | None, str | None]:
    """``--bbox``'s values as a box ``W,S,E,N`` or a polygon file (one value that is not four numbers)."""
    if bbox is None:
        return None, None
    words = " ".join(bbox).replace(",", " ").split()
    return (None, bbox[0]) if len(bbox) == 1 and len(words) != 4 else (",".join(words), None)


def add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint``: where a moved index model lies now."""
    parser.add_argument("--checkpoint", metavar="FILE", help=CHECKPOINT_HELP)


def check_query(args: argparse.Namespace) -> None:
    """Refuse flags that do not go together, before the index and its model load."""
    if args.list is not None:
        if args.query is not None or args.image is not None or args.like is not None or args.positive or \
                args.negative or args.find_all or args.bbox or args.after or args.before:
            raise UserError("--list only lists chips; search without it")
        return
    if args.image is not None and (args.query is not None or args.like is not None or args.positive or args.negative):
        raise UserError("--image searches alone; give a text query, --like or feedback without it")
    if args.query is None and args.image is None and args.like is None and not args.positive:
        raise UserError("give either a text query or --image FILE (or --like CHIP_ID)")
    if args.find_all and (args.image is not None or not args.positive):
        raise UserError("--all finds chips like the --positive ones: mark at least one wanted chip (--image is not "
                        "supported with --all)")
    if args.threshold is not None and not args.find_all:
        raise UserError("--threshold applies to --all only")
    if args.threshold is not None and not 0 < args.threshold < 1:
        raise UserError(f"--threshold must lie between 0 and 1 (exclusive), got {args.threshold}")


def check_index(path: str) -> None:
    """Refuse a path that is no index folder before the index's heavy modules and its model load."""
    from pathlib import Path

    from rsitr.index.store import DATABASE_NAME, not_an_index

    check_readable(("index", path))
    if not (Path(path) / DATABASE_NAME).is_file():
        raise UserError(not_an_index(Path(path), f"no {DATABASE_NAME}"))


def run(args: argparse.Namespace) -> int:
    check_query(args)
    where = parse_where(args)
    check_index(args.index)
    check_readable(("--image", args.image))
    from rsitr.index.archive import DEFAULT_MAX_QUERY_PIXELS, check_image

    if args.list is not None:
        return _print_list(args.index, args.list)
    _resolve_chips(args)  # wrong chips and query images are refused before the model loads
    if args.image is not None:
        check_image(args.image, args.max_pixels or DEFAULT_MAX_QUERY_PIXELS)
    from rsitr.index import ArchiveIndex
    from rsitr.index.export import export
    from rsitr.runtime import device_name, set_threads

    set_threads(args.threads)
    index = ArchiveIndex.open(args.index, device=device_name(args.device), checkpoint=args.checkpoint,
                              precision=args.precision, runtime=args.runtime)
    if args.find_all:
        return _print_found(index, args, where)
    if args.image is not None:
        hits = index.search_image(args.image, args.top_k, max_pixels=args.max_pixels or DEFAULT_MAX_QUERY_PIXELS,
                                  where=where)
    else:
        hits = index.search(args.query, args.top_k, like=args.like, positive=args.positive,
                            negative=args.negative, rerank=not args.no_rerank, candidates=args.candidates,
                            where=where)
    index.close()
    if args.format != "table":
        print(export(hits, args.format, _asked(args)), end="" if args.format == "csv" else "\n")
        return 0
    _print_table(hits)
    return 0


def _resolve_chips(args: argparse.Namespace) -> None:
    """``--like``, ``--positive`` and ``--negative`` as chip ids, read from the index database alone."""
    if args.like is None and not args.positive and not args.negative:
        return
    from pathlib import Path

    from rsitr.index.handles import resolve_chip, resolve_chips
    from rsitr.index.store import MetadataStore

    store = MetadataStore(Path(args.index), read_only=True)
    try:
        args.like = None if args.like is None else resolve_chip(store, args.like, on_disk=True)
        args.positive = resolve_chips(store, args.positive, on_disk=True)
        args.negative = resolve_chips(store, args.negative, on_disk=True)
    finally:
        store.close()


def _print_list(index: str, pattern: str) -> int:
    from pathlib import Path

    from rsitr.index.handles import list_chips
    from rsitr.index.store import MetadataStore

    store = MetadataStore(Path(index), read_only=True)
    try:
        listed = list_chips(store, pattern)
    finally:
        store.close()
    if not listed:
        raise UserError(f"no indexed image matches {pattern!r} (a glob on paths relative to the images folder, e.g. "
                        f"'*forest*')")
    print(f"{'chip':>6}  handle")
    for chip in listed:
        print(f"{chip.chip_id:6d}  {printable(chip.handle)}")
    return 0


def _asked(args: argparse.Namespace) -> dict:
    """What was searched, by the names of the API's parameters (as the exports record it)."""
    bbox, area = _box_or_polygon(args.bbox)
    asked = (("q", args.query), ("image", args.image), ("like", args.like), ("positive", args.positive),
             ("negative", args.negative), ("threshold", args.threshold), ("bbox", bbox), ("area", area),
             ("after", args.after), ("before", args.before))
    return {key: value for key, value in asked if value not in (None, [])}


def _print_found(index, args: argparse.Namespace, where) -> int:
    from rsitr.index import DEFAULT_THRESHOLD
    from rsitr.index.export import export_found

    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    found = index.find_all(args.query, like=args.like, positive=args.positive, negative=args.negative,
                           threshold=threshold, where=where)
    hits = index.found_hits(found)
    index.close()
    if args.format != "table":
        text = export_found(hits, args.format, {**_asked(args), "all": True, "threshold": threshold})
        print(text, end="" if args.format == "csv" else "\n")
        return 0
    _print_table(hits, probabilities=True)
    why = "" if found.probe.calibrated else "; not calibrated: " + (
        "mark two or more wanted chips" if found.probe.wanted < 2 else "too few chips to calibrate on held-out marks")
    print(f"{found.count} of {found.scored} chips found with a probability of at least {threshold:g} "
          f"({found.probe.wanted} wanted, {found.probe.unwanted} not wanted{why})")
    return 0


def _print_table(hits, probabilities: bool = False) -> None:
    """The hits as a table; ``probabilities``: their scores are find all's (:func:`format_probability`)."""
    from rsitr.index.find_all import format_probability

    scores = [format_probability(hit.score) if probabilities else f"{hit.score:.4f}" for hit in hits]
    header = "probability" if probabilities else "score"
    width = max([8, len(header), *map(len, scores)])
    print(f"{'rank':>4}  {header:>{width}}  file [window]  chip")
    for rank, (hit, score) in enumerate(zip(hits, scores), 1):
        window = f"{hit.window.width}x{hit.window.height}+{hit.window.x}+{hit.window.y}"
        where = "" if hit.bounds is None else "  bounds " + ",".join(map(repr, hit.bounds)) + f" {printable(hit.crs)}"
        when = "" if hit.acquired is None else f"  acquired {hit.acquired}"
        item = "" if hit.item_id is None else f"  item {printable(hit.item_id)}"
        stale = "  STALE" if hit.stale else ""
        print(f"{rank:4d}  {score:>{width}}  {printable(hit.path)} [{window}]  chip {hit.chip_id}{where}{when}{item}"
              f"{stale}")
    stale = sum(hit.stale for hit in hits)
    if stale:
        print(f"{stale} result(s) marked STALE: their image was deleted, moved or replaced since it was indexed; run "
              f"`rsitr index` on this index (with --relocate if the images folder moved)")
