"""Peak memory of `rsitr serve` under concurrent image uploads: the largest accepted image and an over-limit one.

Builds a 10-image index with the tiny model (rsitr-tiny-ViT, random weights: memory does not depend on the
weights), starts `rsitr serve` as a real process on 127.0.0.1, and sends 8 concurrent uploads of

- the largest image the server accepts (a PNG of just under ``--max-pixels``, default 40 MP; a smooth
  gradient so that its bytes stay under the 10 MiB upload limit), and
- an over-limit PNG of 13,000 x 13,000 pixels (a few hundred KB: the decompression bomb of the issue).

Each case runs on a fresh server, whose peak resident set (``VmHWM``) is printed next to its resident size
when idle, for the default of 2 image threads and for 8 (no effective bound) side by side. Goal: under
1.5 GB with the default.

    python benchmarks/serve_memory.py [--uploads 8]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from rsitr.index import ArchiveIndex
from rsitr.index.archive import DEFAULT_MAX_QUERY_PIXELS
from rsitr.models import TINY_MODEL


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return "unknown CPU"


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=9)
    return buffer.getvalue()


def largest_accepted(max_pixels: int) -> bytes:
    side = int(max_pixels ** 0.5)
    row = np.linspace(0, 255, side, dtype=np.float32).astype(np.uint8)
    pixels = np.broadcast_to(row[None, :, None], (side, side, 3))
    return png(Image.fromarray(np.ascontiguousarray(pixels), "RGB"))


def status_mib(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not found for process {pid}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_index(base: Path) -> Path:
    archive = base / "archive"
    archive.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), "RGB").save(archive / f"scene{i}.png")
    index, _ = ArchiveIndex.build(base / "index", archive, TINY_MODEL, progress=False)
    index.close()
    return base / "index"


def peak_rss(index_dir: Path, slots: int, data: bytes, uploads: int) -> tuple[float, float, list[int]]:
    """Idle RSS, peak RSS (MiB) and the HTTP codes of a fresh server answering ``uploads`` concurrent uploads."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "rsitr.cli", "serve", str(index_dir), "--port", str(port),
                               "--max-concurrent-images", str(slots)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                httpx.get(f"{url}/api/info", timeout=1.0)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        idle = status_mib(server.pid, "VmRSS")

        def upload(_: int) -> int:
            return httpx.post(f"{url}/api/search/image", files={"file": ("q.png", data, "image/png")},
                              timeout=600.0).status_code

        with ThreadPoolExecutor(uploads) as pool:
            codes = sorted(set(pool.map(upload, range(uploads))))
        return idle, status_mib(server.pid, "VmHWM"), codes
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=8)
    args = parser.parse_args()
    side = int(DEFAULT_MAX_QUERY_PIXELS ** 0.5)
    payloads = {f"largest accepted ({side} x {side})": largest_accepted(DEFAULT_MAX_QUERY_PIXELS),
                "over the limit (13000 x 13000)": png(Image.new("RGB", (13_000, 13_000), (90, 120, 60)))}
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores); model {TINY_MODEL} (random weights); "
          f"{args.uploads} concurrent uploads; payloads " +
          ", ".join(f"{name} {len(data) / 2**20:.2f} MiB" for name, data in payloads.items()))
    with tempfile.TemporaryDirectory() as folder:
        index_dir = build_index(Path(folder))
        print(f"{'server peak RSS (MiB), idle ~':30s} {'2 image threads (default)':>28s} {f'{args.uploads} threads':>12s}"
              f" {'ratio':>6s}")
        for name, data in payloads.items():
            idle, bounded, codes = peak_rss(index_dir, 2, data, args.uploads)
            _, unbounded, _ = peak_rss(index_dir, args.uploads, data, args.uploads)
            print(f"{name:30s} {bounded:9.0f} (idle {idle:.0f}, HTTP {','.join(map(str, codes))}) "
                  f"{unbounded:12.0f} {unbounded / bounded:6.2f}x")


if __name__ == "__main__":
    main()
