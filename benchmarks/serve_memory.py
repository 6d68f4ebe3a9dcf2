"""Peak memory of `rsitr serve` under hostile uploads: large images, TIFF tile bombs and an endless chunked body.

Builds a 10-image index with the tiny model (rsitr-tiny-ViT, random weights: memory does not depend on the
weights), starts `rsitr serve` as a real process on 127.0.0.1 (a fresh one per case) and measures its peak
resident set (``VmHWM``) next to its resident size when idle:

- ``largest``, ``over-limit``: 8 (``--uploads``) concurrent uploads of the largest image the server accepts (a
  PNG of just under ``--max-pixels``, default 40 MP; a smooth gradient so that its bytes stay under the 10 MiB
  upload limit) and of an over-limit PNG of 13,000 x 13,000 pixels (a few hundred KB), for the default of 2
  image threads and for 8 (no effective bound) side by side;
- ``tile-bombs``: 48 (``--bombs``) concurrent uploads of a 150-byte TIFF of 64 x 64 pixels declaring one
  32,768 x 32,768 deflate tile (libtiff would allocate 1 GiB for it), and how long ``/api/info`` takes to answer
  while they are in flight;
- ``chunked``: one upload of 1 GiB (``--chunked-mib``) sent with ``Transfer-Encoding: chunked`` and no
  Content-Length: the bytes the server read from its socket before answering (``/proc/PID/io`` ``rchar``), what
  the client got to send, and the answer.

Goals: under 1.5 GB with the defaults; the chunked body refused after at most the limit plus one buffer.

    python benchmarks/serve_memory.py [--cases tile-bombs chunked] [--uploads 8] [--bombs 48]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from rsitr.api.app import DEFAULT_MAX_UPLOAD_BYTES
from rsitr.index import ArchiveIndex
from rsitr.index.archive import DEFAULT_MAX_QUERY_PIXELS
from rsitr.models import TINY_MODEL

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).parent.parent / "tests"))  # the hostile suite's file builders
from _measure import cpu_model, serving  # noqa: E402
from support.index import declared_tiff  # noqa: E402

CASES = ("largest", "over-limit", "tile-bombs", "chunked")


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


def build_index(base: Path) -> Path:
    archive = base / "archive"
    archive.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), "RGB").save(archive / f"scene{i}.png")
    index, _ = ArchiveIndex.build(base / "index", archive, TINY_MODEL, progress=False)
    index.close()
    return base / "index"


def upload(url: str, name: str, data: bytes) -> int:
    return httpx.post(f"{url}/api/search/image", files={"file": (name, data, "application/octet-stream")},
                      timeout=600.0).status_code


def peak_rss(index_dir: Path, slots: int, data: bytes, uploads: int) -> tuple[float, float, list[int]]:
    """Idle RSS, peak RSS (MiB) and the HTTP codes of a fresh server answering ``uploads`` concurrent uploads."""
    with serving(index_dir, "--max-concurrent-images", str(slots)) as (url, pid):
        idle = status_mib(pid, "VmRSS")
        with ThreadPoolExecutor(uploads) as pool:
            codes = sorted(set(pool.map(lambda _: upload(url, "q.png", data), range(uploads))))
        return idle, status_mib(pid, "VmHWM"), codes


def tile_bombs(index_dir: Path, bombs: int) -> None:
    data = declared_tiff(64, 64, tile=(32768, 32768))
    with serving(index_dir) as (url, pid):
        idle = status_mib(pid, "VmRSS")
        calm = time.perf_counter()
        httpx.get(f"{url}/api/info", timeout=60.0)
        calm = time.perf_counter() - calm
        with ThreadPoolExecutor(bombs + 1) as pool:
            answers = [pool.submit(upload, url, "bomb.tif", data) for _ in range(bombs)]
            time.sleep(0.2)  # the uploads in flight
            busy = time.perf_counter()
            httpx.get(f"{url}/api/info", timeout=60.0)
            busy = time.perf_counter() - busy
            codes = sorted({answer.result() for answer in answers})
        print(f"{bombs} concurrent TIFF tile bombs ({len(data)} bytes, one 32768 x 32768 tile): peak RSS "
              f"{status_mib(pid, 'VmHWM'):.0f} MiB (idle {idle:.0f}), HTTP {','.join(map(str, codes))}; /api/info "
              f"answered in {busy * 1000:.0f} ms during them ({calm * 1000:.0f} ms before)")


def chunked_body(index_dir: Path, mib: int) -> None:
    """Send ``mib`` MiB as a chunked multipart body without Content-Length, until the server answers and closes."""
    chunk = bytes(2**20)
    with serving(index_dir) as (url, pid):
        idle = status_mib(pid, "VmRSS")
        port = int(url.rsplit(":", 1)[1])
        sent, answer, started = 0, "none", time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /api/search/image HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                         b"Content-Type: multipart/form-data; boundary=x\r\n\r\n")
            head = b'--x\r\nContent-Disposition: form-data; name="file"; filename="q.png"\r\n\r\n'
            sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
            try:
                for _ in range(mib):
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    sent += len(chunk)
            except OSError as err:  # the server closed the connection (reset, broken pipe), or stopped reading
                stopped = type(err).__name__
            else:
                stopped = "nothing: the server read it all"
            try:
                answer = sock.recv(200).split(b"\r\n", 1)[0].decode() or "none (closed)"
            except OSError as err:
                answer = f"none ({type(err).__name__}: the reset discards it on the client)"
        seconds = time.perf_counter() - started
        limit = DEFAULT_MAX_UPLOAD_BYTES + 64 * 2**10
        print(f"chunked body of {mib} MiB without Content-Length (upload limit {limit / 2**20:.2f} MiB with multipart "
              f"slack): the client sent {sent / 2**20:.0f} MiB (including what the kernel's socket buffers took) "
              f"before {stopped}, in {seconds:.1f} s; answer {answer!r}; server peak RSS "
              f"{status_mib(pid, 'VmHWM'):.0f} MiB (idle {idle:.0f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--uploads", type=int, default=8)
    parser.add_argument("--bombs", type=int, default=48)
    parser.add_argument("--chunked-mib", type=int, default=1024)
    args = parser.parse_args()
    side = int(DEFAULT_MAX_QUERY_PIXELS ** 0.5)
    payloads = {}
    if "largest" in args.cases:
        payloads[f"largest accepted ({side} x {side})"] = largest_accepted(DEFAULT_MAX_QUERY_PIXELS)
    if "over-limit" in args.cases:
        payloads["over the limit (13000 x 13000)"] = png(Image.new("RGB", (13_000, 13_000), (90, 120, 60)))
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores); model {TINY_MODEL} (random weights); cases "
          f"{', '.join(args.cases)}")
    with tempfile.TemporaryDirectory() as folder:
        index_dir = build_index(Path(folder))
        if payloads:
            print(f"{args.uploads} concurrent uploads; payloads " +
                  ", ".join(f"{name} {len(data) / 2**20:.2f} MiB" for name, data in payloads.items()))
            print(f"{'server peak RSS (MiB), idle ~':30s} {'2 image threads (default)':>28s} "
                  f"{f'{args.uploads} threads':>12s} {'ratio':>6s}")
        for name, data in payloads.items():
            idle, bounded, codes = peak_rss(index_dir, 2, data, args.uploads)
            _, unbounded, _ = peak_rss(index_dir, args.uploads, data, args.uploads)
            print(f"{name:30s} {bounded:9.0f} (idle {idle:.0f}, HTTP {','.join(map(str, codes))}) "
                  f"{unbounded:12.0f} {unbounded / bounded:6.2f}x")
        if "tile-bombs" in args.cases:
            tile_bombs(index_dir, args.bombs)
        if "chunked" in args.cases:
            chunked_body(index_dir, args.chunked_mib)


if __name__ == "__main__":
    main()
