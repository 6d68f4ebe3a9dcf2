"""Peak memory of `rsitr index` on the two scenes red team round 4 could not bound: a sparse 44,000^2 uint16
GeoTIFF (3 bands, deflate tiles of 512, a diagonal of written tiles, the rest sparse) and a 13,000^2 RGBA PNG.

Each scene is indexed alone, to completion, by `rsitr index` in its own process; its peak resident size (VmHWM,
polled every second, and the kernel's ru_maxrss when it ends) is printed with the CPU model and written to
benchmarks/results/scene_memory.json. The goal (issue 40) is at most 1.5 GiB each.

  python benchmarks/scene_memory.py --work /tmp/scenes [--model rsitr-tiny-ViT] [--sparse-side 44000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from _measure import cpu_model

RESULTS = Path(__file__).parent / "results" / "scene_memory.json"


def sparse_geotiff(path: Path, side: int) -> None:
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=3, dtype="uint16", tiled=True,
                       blockxsize=512, blockysize=512, compress="deflate", sparse_ok=True, crs="EPSG:32633",
                       transform=from_origin(500_000, 4_000_000, 1, 1)) as dataset:
        for at in range(0, side, 4096):
            dataset.write(rng.integers(0, 4000, (3, 512, 512), dtype=np.uint16), window=Window(at, at, 512, 512))


def rgba_png(path: Path, side: int) -> None:
    from PIL import Image

    pixels = np.zeros((side, side, 4), np.uint8)
    pixels[..., 0] = (np.arange(side) % 256)[None, :]
    pixels[..., 1] = (np.arange(side) % 251)[:, None]
    pixels[::7, ::5, 2] = 200
    pixels[..., 3] = 255
    Image.fromarray(pixels, "RGBA").save(path, compress_level=1)


def peak_of_index(images: Path, out: Path, model: str) -> dict:
    """`rsitr index` of ``images`` in a child process: its seconds and peak RSS (GiB)."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "rsitr.cli", "index", str(images), "--out", str(out),
                              "--model", model, "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    polled = [0]

    def poll() -> None:
        while child.poll() is None:
            try:
                status = Path(f"/proc/{child.pid}/status").read_text()
                polled[0] = max(polled[0], int(next(line.split()[1] for line in status.splitlines()
                                                    if line.startswith("VmHWM:"))))
                print(f"  {time.perf_counter() - start:7.0f} s  peak {polled[0] / 2**20:.2f} GiB", flush=True)
            except (OSError, StopIteration):
                pass
            time.sleep(30)

    threading.Thread(target=poll, daemon=True).start()
    _, status, usage = os.wait4(child.pid, 0)
    printed = child.stdout.read()
    child.returncode = os.waitstatus_to_exitcode(status)
    return {"exit_code": child.returncode, "seconds": round(time.perf_counter() - start, 1),
            "peak_rss_gib": round(max(usage.ru_maxrss, polled[0]) / 2**20, 3), "output": printed.strip()[-300:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--model", default="rsitr-tiny-ViT")
    parser.add_argument("--sparse-side", type=int, default=44_000)
    parser.add_argument("--png-side", type=int, default=13_000)
    parser.add_argument("--only", choices=("png", "sparse"), default=None)
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}; model {args.model}")
    scenes = {"png": (f"{args.png_side}^2 RGBA PNG", "big.png", rgba_png, args.png_side),
              "sparse": (f"sparse {args.sparse_side}^2 uint16 GeoTIFF", "sparse.tif", sparse_geotiff,
                         args.sparse_side)}
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    for key, (title, name, make, side) in scenes.items():
        if args.only not in (None, key):
            continue
        folder = args.work / key
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / name).is_file():
            make(folder / name, side)
        print(f"{title}:", flush=True)
        result = peak_of_index(folder, args.work / f"{key}.index", args.model)
        print(f"  exit {result['exit_code']}, {result['seconds']} s, peak RSS {result['peak_rss_gib']} GiB")
        results[title] = {"cpu": cpu_model(), "model": args.model, **result}
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
