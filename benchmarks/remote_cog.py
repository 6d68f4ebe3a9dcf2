"""A Sentinel-2-sized Cloud-Optimized GeoTIFF indexed over HTTP: bytes the server sent against the file's size,
what a hit's preview reads, nodata chips left out, and the indexer's peak memory reading the same file from disk
(today's path) and from the server, side by side in one run.

The scene is generated: SIZE x SIZE, 4 bands of uint16 reflectance (smooth fields plus noise, so it compresses as
imagery does), a nodata (0) border over the left fifth, 512 px deflate tiles with overviews (rasterio's COG driver).
A local server with Range support (tests/support/http.py) serves it on 127.0.0.1 and counts the bytes it sends.
The model is rsitr-tiny-ViT (random weights): the measure is the reader, not the encoder.

    python benchmarks/remote_cog.py [--size 10980] [--out benchmarks/results/remote_cog.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from _measure import cpu_model, measure  # noqa: E402

DESCRIPTIONS = ("B02 blue", "B03 green", "B04 red", "B08 nir")


def write_scene(path: Path, size: int) -> None:
    """The generated COG, written a block of rows at a time (the whole array would be 1 GB)."""
    import rasterio
    import rasterio.shutil
    from affine import Affine
    from rasterio.windows import Window

    border = size // 5
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 4, "dtype": "uint16", "nodata": 0,
               "crs": "EPSG:32633", "transform": Affine(10, 0, 300000, 0, -10, 5000040), "tiled": True,
               "blockxsize": 512, "blockysize": 512, "compress": "deflate"}
    plain = path.with_suffix(".plain.tif")
    rng = np.random.default_rng(0)
    with rasterio.open(plain, "w", **profile) as dataset:
        for top in range(0, size, 512):
            rows = np.arange(top, min(size, top + 512))[:, None]
            columns = np.arange(size)[None, :]
            fields = [900 + 600 * np.sin(rows / (90 + 13 * band)) * np.cos(columns / (70 + 11 * band))
                      for band in range(4)]
            block = (np.stack(fields) + rng.normal(0, 40, (4, len(rows), size))).clip(1, 10000).astype(np.uint16)
            block[:, :, :border] = 0
            dataset.write(block, window=Window(0, top, size, len(rows)))
        dataset.descriptions = DESCRIPTIONS
    with rasterio.open(plain) as source:
        rasterio.shutil.copy(source, path, driver="COG", blocksize=512, compress="deflate")
    plain.unlink()


def index_run(listing: str, out: str, *, prepare: bool, state=None):
    """Build the index of ``listing`` (a folder or a URL list) with the tiny model; the report's counts."""
    from rsitr.index import ArchiveIndex, BuildOptions
    from rsitr.inference.encoder import Encoder
    from rsitr.models import TINY_MODEL, create_model

    if prepare:
        return Encoder(create_model(TINY_MODEL, seed=0), precision="fp32")
    index, report = ArchiveIndex.build(out, listing, encoder=state, progress=False,
                                       options=BuildOptions(scale="range 0 3000", batch_size=64))
    counts = {"chips": index.info()["chips"], "nodata_chips": report.nodata_chips,
              "failures": report.failures}
    index.close()
    return counts


def main() -> None:
    from support.http import RangeServer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=10980)
    parser.add_argument("--out", default=str(HERE / "results" / "remote_cog.json"))
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}")
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        (work / "cogs").mkdir()
        scene = work / "cogs" / "scene.tif"
        start = time.perf_counter()
        write_scene(scene, args.size)
        size = scene.stat().st_size
        print(f"scene {args.size} x {args.size} x 4 uint16 COG: {size / 2**20:.1f} MiB, written in "
              f"{time.perf_counter() - start:.0f} s")
        local = measure(index_run, str(work / "cogs"), str(work / "local.index"))
        print(f"from disk: {local['result']} in {local['seconds']:.0f} s, peak {local['peak_mib']:.0f} MiB")
        with RangeServer(work / "cogs") as server:
            (work / "urls.txt").write_text(f"{server.url}/scene.tif\n")
            remote = measure(index_run, str(work / "urls.txt"), str(work / "remote.index"))
            indexed = server.served.get("scene.tif", 0)
            print(f"over HTTP: {remote['result']} in {remote['seconds']:.0f} s, peak {remote['peak_mib']:.0f} "
                  f"MiB; served {indexed / 2**20:.1f} MiB = {indexed / size:.3f} x the file")
            from rsitr.index import ArchiveIndex
            from rsitr.inference.encoder import Encoder
            from rsitr.models import TINY_MODEL, create_model

            index = ArchiveIndex.open(work / "remote.index", encoder=Encoder(create_model(TINY_MODEL, seed=0),
                                                                             precision="fp32"))
            hit = index.search("a field", k=1)[0]
            before = server.served["scene.tif"]
            index.chip_image(index.chip(hit.chip_id), 256)  # the page's thumbnail of a hit
            preview = server.served["scene.tif"] - before
            index.close()
            print(f"a hit's preview read {preview / 2**10:.0f} KiB = {100 * preview / size:.3f} % of the file")
    from rsitr.index.archive import SCENE_BLOCK_CACHE_MB

    result = {"cpu": cpu_model(), "model": "rsitr-tiny-ViT (random weights)", "scene_px": args.size,
              "command": " ".join(["python", "benchmarks/remote_cog.py", *sys.argv[1:]]),
              "block_cache_mib": SCENE_BLOCK_CACHE_MB,
              "file_bytes": size, "chips": remote["result"]["chips"], "nodata_chips": remote["result"]["nodata_chips"],
              "served_bytes_indexing": indexed, "served_over_file": round(indexed / size, 4),
              "preview_bytes": preview, "preview_percent_of_file": round(100 * preview / size, 4),
              "peak_mib_from_disk": round(local["peak_mib"]), "peak_mib_over_http": round(remote["peak_mib"]),
              "seconds_from_disk": round(local["seconds"]), "seconds_over_http": round(remote["seconds"]),
              "same_chips": local["result"]["chips"] == remote["result"]["chips"]}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
