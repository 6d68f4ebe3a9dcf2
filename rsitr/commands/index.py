"""Index an image archive for search: tile large scenes into chips, encode them, store vectors and metadata.

Walks IMAGES (JPEG, PNG, TIFF, GeoTIFF), or reads the remote (Cloud-Optimized) GeoTIFFs
a listing names: a .txt file of http(s):// or s3:// URLs, or a STAC catalog, collection, item or item collection .json
(a saved pystac-client search) with --asset; they are read by windows through range requests, never downloaded whole,
and an update re-reads only the files whose ETag / Last-Modified changed. Scenes whose longer side exceeds
--tile-larger-than are cut into --chip-size squares overlapping by --chip-overlap pixels; GeoTIFF chips keep their
geographic bounds and CRS. A GeoTIFF's chips show the --bands it names (by a STAC asset's eo:bands where it has them;
by default the bands they or the file call red, green and blue, else the first three), scaled by --scale (by default a
STAC asset's raster:bands statistics where every asset gives them, else each file's percentiles); chips more than
--max-nodata nodata (the file's nodata value, mask or alpha) are left out and counted. Running it again on the same
--out updates the index: new files are added, changed ones re-encoded, deleted ones removed, and an interrupted run
resumes where it stopped. Unreadable images are skipped and listed. The model is recorded in the index; a different
one is refused. A new index is encoded with the shipped model unless --model or --pretrained names another (`rsitr
models` lists them). A checkpoint is recorded relative to the index with its SHA-256: move both together, or point
`rsitr search` / `rsitr serve` at the moved checkpoint with --checkpoint. Arguments are checked before anything is
written. A moved images folder is re-pointed with --relocate; a damaged index database is refused (one line naming the
damage) until --rebuild; a damaged vectors.faiss is rewritten, being derived. --engine ray encodes the chips on a Ray
cluster (a local one, or --address): the same index, resumable by shard (docs/SCALE.md).

Examples:
  rsitr index rsitr/demo_data/ucm --out ucm.index
  rsitr index rsitr/demo_data/ucm --out ucm-exact.index --index-type exact
  rsitr index sentinel2/ --out s2.index --bands B04,B03,B02 --scale range 0 3000
  rsitr index search.json --asset visual --out visual.index
"""

from __future__ import annotations

import argparse
import dataclasses

from rsitr.commands import fraction, non_negative_int, positive_int
from rsitr.commands.options import (add_batch_size_argument, add_engine_arguments, add_inference_arguments,
                                    add_model_arguments, add_orientations_argument, add_progress_argument,
                                    check_readable)
from rsitr.errors import UserError
from rsitr.models.pretrained import check_model_arguments
from rsitr.terminal import in_flags, printable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # IMAGES as embed's and classify's SOURCE (--images, its deprecated spelling, is an alias: rsitr.deprecations).
    # No default: argparse would let an absent positional overwrite --images with it.
    parser.add_argument("source", nargs="?", metavar="IMAGES", default=argparse.SUPPRESS,
                        help="folder of images to index (searched recursively), or a listing of remote rasters "
                             "(.txt of URLs, STAC .json)")
    parser.add_argument("--out", required=True, help="index directory (created, or updated if it exists)")
    add_model_arguments(parser, default="with neither flag, the index's recorded model, or for a new index the "
                                        "shipped one")
    parser.add_argument("--chip-size", type=positive_int, help="chip side in pixels (new index default 224)")
    parser.add_argument("--chip-overlap", type=non_negative_int, help="overlap of neighbouring chips in pixels (default 32)")
    parser.add_argument("--tile-larger-than", type=positive_int, metavar="N",
                        help="tile scenes whose longer side exceeds N pixels; smaller ones are one chip (default 1024)")
    # The values of rsitr.retrieval.vector_index.INDEX_CHOICES, repeated so that building the parser imports no faiss.
    parser.add_argument("--index-type", choices=("auto", "exact", "ivf", "hnsw", "ivfpq"),
                        help="FAISS index: auto (default: exact below 200,000 chips, else ivfpq), exact, ivf, hnsw or "
                             "ivfpq (IVF-PQ re-scored in float16: about half the RAM); may change on update")
    parser.add_argument("--backend", choices=("faiss", "lancedb"),
                        help="vector store searched: faiss (default; vectors.faiss) or lancedb (a LanceDB table that "
                             "searchers can share; needs `pip install 'rsitr[lancedb]'`); may change on update")
    parser.add_argument("--vector-uri", metavar="URI",
                        help="--backend lancedb: the table's location, a path or object-store URI such as "
                             "s3://bucket/archive (default: vectors.lance in --out)")
    parser.add_argument("--max-pixels", type=positive_int, metavar="N",
                        help="skip (as a failure) a scene of more than N pixels, read from its header (default "
                             "2,000,000,000); may change on update")
    parser.add_argument("--max-chips-per-file", type=positive_int, metavar="N",
                        help="skip (as a failure) a file that would be cut into more than N chips (default 100,000); "
                             "may change on update")
    parser.add_argument("--bands", metavar="BANDS",
                        help="GeoTIFF bands shown as red,green,blue (or one as grey): 1-based indexes or names, "
                             "e.g. 4,3,2 or B04,B03,B02 or red,green,blue: a STAC asset's eo:bands name or "
                             "common_name where it has them, else the file's band descriptions / colour names "
                             "(default: the bands they name red, green and blue, else the first three)")
    parser.add_argument("--scale", nargs="+", metavar="MODE",
                        help="how GeoTIFF values become 0-255: 'percentile' (each file's 2nd-98th percentiles; "
                             "8-bit files as they are), 'statistics' (each band's mean +- 2 stddev from its STAC "
                             "asset's raster:bands statistics; the default where every asset gives them, else "
                             "percentile) or 'range LOW HIGH', the same in every scene (e.g. range 0 3000 for "
                             "Sentinel-2 L2A reflectance; in physical units, e.g. range 0 0.3, where a STAC asset's "
                             "raster:bands give a scale and offset)")
    parser.add_argument("--asset", metavar="KEY",
                        help="a STAC listing: the asset of each item to index, e.g. visual; or three single-band "
                             "assets stacked as red, green, blue, e.g. red,green,blue or B04,B03,B02 (one grid)")
    parser.add_argument("--max-nodata", type=fraction, metavar="F",
                        help="leave out chips whose fraction of nodata pixels exceeds F (default 0.5; 1 keeps all)")
    add_batch_size_argument(parser, "chips")
    add_engine_arguments(parser, "chips encoded by a Ray actor pool into Parquet shards that the index ingests (the "
                                 "same index; needs `pip install 'rsitr[ray]'`; --out and IMAGES must be on storage "
                                 "every node sees)", " with --threads CPUs")
    tokens = parser.add_mutually_exclusive_group()
    tokens.add_argument("--store-local-tokens", dest="store_local_tokens", action="store_true", default=None,
                        help="keep patch tokens for local re-ranking of text queries (default: kept only when "
                             "the model re-ranks with them)")
    tokens.add_argument("--no-local-tokens", dest="store_local_tokens", action="store_false",
                        help="store global embeddings only (smaller index, no re-ranking), whatever the model")
    add_inference_arguments(parser, runtime=True)
    add_orientations_argument(parser, default=None, where=", at index time and for query images; fixed for the "
                                                         "life of an index")
    add_progress_argument(parser)
    parser.add_argument("--relocate", action="store_true",
                        help="the images folder moved to IMAGES: re-point the index at it (unchanged files are "
                             "kept, matched by their path inside the folder)")
    parser.add_argument("--rebuild", action="store_true",
                        help="discard the index's files and build it anew (a damaged index.sqlite; needs --model)")


def INTERRUPTED_HINT(args: argparse.Namespace) -> str:  # noqa: N802 - the name the command line looks up
    """What Ctrl-C leaves behind: every file finished (all its chips) is kept; the same command resumes."""
    return (f"The chips written so far are kept in {args.out} (whole files, a file's chips in committed batches); "
            f"run the same command again to resume where it stopped.")


def _options(args: argparse.Namespace):
    """What the flags ask :meth:`ArchiveIndex.build` for (:class:`~rsitr.index.BuildOptions`; a setting left out:
    as the index records it, or the default), made and checked here once. ``--device`` as typed: it is resolved
    (which may import torch) only when there is work."""
    from rsitr.index.indexer import BuildOptions

    return BuildOptions(
        chip_size=args.chip_size, chip_overlap=args.chip_overlap, tile_larger_than=args.tile_larger_than,
        index_type=args.index_type, store_local_tokens=args.store_local_tokens, backend=args.backend,
        vector_uri=args.vector_uri, max_pixels=args.max_pixels, max_chips_per_file=args.max_chips_per_file,
        bands=args.bands, scale=None if args.scale is None else " ".join(args.scale), max_nodata=args.max_nodata,
        asset=args.asset, orientations=args.orientations, batch_size=args.batch_size,
        device=args.device, precision=args.precision, runtime=args.runtime)


def _unchanged(args: argparse.Namespace, options) -> bool:
    """Print the summary of an update that would change nothing, told without the model (see
    :mod:`rsitr.index.freshness`); False when there is work (or a model or engine was named)."""
    if args.rebuild or args.relocate or args.model or args.pretrained or args.engine != "local":
        return False
    from pathlib import Path

    from rsitr.index.freshness import unchanged

    found = unchanged(Path(args.out), Path(args.images), options.requested())
    if found is None:
        return False
    _print_summary(args.out, found.files, found.chips, unchanged=found.files, failures=found.failures)
    return True


def _print_summary(out: str, files: int, chips: int, *, new: int = 0, changed: int = 0, resumed: int = 0,
                   removed: int = 0, unchanged: int = 0, retried: int = 0, encoded: int = 0, nodata: int = 0,
                   failures: list[tuple[str, str]] = ()) -> None:
    print(f"{printable(out)}: {chips} chips from {files} files (new {new}, changed {changed}, resumed {resumed}, removed "
          f"{removed}, unchanged {unchanged}{f', retried {retried}' if retried else ''}; {encoded} chips encoded"
          f"{f', {nodata} left out as nodata' if nodata else ''})")
    if failures:
        from rsitr.index.indexer import BuildOptions  # loaded by the run that found them

        # a stored failure names the index's settings as the library does (`max_pixels`); here they are flags
        settings = [field.name for field in dataclasses.fields(BuildOptions)]
        print(f"skipped {len(failures)} unreadable image(s):")
        for path, error in failures:
            print(f"  {printable(path)}: {printable(in_flags(error, settings))}")


def run(args: argparse.Namespace) -> int:
    args.images = getattr(args, "source", None)
    if args.images is None:
        raise UserError("give the folder of images to index: rsitr index IMAGES --out INDEX")
    check_readable(("images folder", args.images))
    check_model_arguments(args.model, args.pretrained)  # mistyped names are refused before torch loads
    options = _options(args)
    if _unchanged(args, options):
        return 0
    if args.backend == "lancedb":
        from rsitr.index.lance_store import import_lancedb

        import_lancedb()  # a missing extra is one line before anything is encoded
    if args.engine == "ray":
        from rsitr.inference.distributors import check_engine

        check_engine(args.address)  # a missing extra or a dead address is one line before the model loads
    from dataclasses import replace

    from rsitr.index import ArchiveIndex
    from rsitr.runtime import device_name, set_threads

    set_threads(args.threads)
    build = ArchiveIndex.build
    if args.engine == "ray":
        from functools import partial

        from rsitr.index.chip_shards import build_index_with_ray

        build = partial(build_index_with_ray, address=args.address, num_cpus=args.threads, actors=args.ray_actors)
    index, report = build(args.out, args.images, args.model, args.pretrained,
                          replace(options, device=device_name(args.device)), progress=not args.no_progress,
                          relocate=args.relocate, rebuild=args.rebuild)
    info = index.info()
    index.close()
    _print_summary(args.out, info["files"], info["chips"], new=len(report.new), changed=len(report.changed),
                   resumed=len(report.resumed), removed=len(report.removed), unchanged=report.unchanged,
                   retried=len(report.retried), encoded=report.chips_encoded, nodata=report.nodata_chips,
                   failures=report.failures)
    return 0
