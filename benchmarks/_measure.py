"""Shared benchmark helper: run a function in a fresh process and report its time and peak memory.

Peak memory is the growth of the process's peak resident set size (Linux ``VmHWM``) over its resident size
just before the measured call: the peak is reset there (``/proc/self/clear_refs``), so imports, inputs and
set-up are not counted. Each variant runs in its own process so one variant's memory cannot hide another's.
"""

from __future__ import annotations

import gc
import json
import multiprocessing as mp
import platform
import socket
import subprocess
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator


def cpu_model() -> str:
    """``lscpu``'s model name: every benchmark prints the CPU it ran on."""
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    except OSError:  # no lscpu on this machine
        lines = []
    for line in lines:
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def write_report(result: dict, path: Path) -> None:
    """Write a benchmark's ``result`` (with ``cpu``, ``cores`` and ``load_average_1m``) to ``path`` as JSON and print
    it: the CPU and its load first, then the figures."""
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"CPU: {result['cpu']} ({result['cores']} cores, load average {result['load_average_1m']})")
    print(json.dumps({key: value for key, value in result.items() if key not in ("cpu", "cores")}, indent=1))
    print(f"written {path.resolve().relative_to(Path(__file__).resolve().parents[1])}")


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _child(fn: Callable[..., Any], args: tuple, queue: mp.Queue) -> None:
    try:
        queue.put(_run(fn, args))
    except BaseException:  # hand the failure to the parent, which would otherwise wait forever
        queue.put({"error": traceback.format_exc()})
        raise


def _run(fn: Callable[..., Any], args: tuple) -> dict:
    setup = fn(*args, prepare=True)
    gc.collect()
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset VmHWM to the current resident size
    before = _status_mib("VmRSS")
    start = time.perf_counter()
    result = fn(*args, prepare=False, state=setup)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mib": max(0.0, _status_mib("VmHWM") - before), "result": result}


def measure(fn: Callable[..., Any], *args: Any) -> dict:
    """Run ``fn(*args, prepare=True)`` then time ``fn(*args, prepare=False, state=...)`` in a new process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_child, args=(fn, args, queue))
    process.start()
    outcome = queue.get()
    process.join()
    if "error" in outcome:
        raise RuntimeError(f"benchmark process failed:\n{outcome['error']}")
    return outcome


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(index_dir: Path, *flags: str, env: dict | None = None) -> Iterator[tuple[str, int]]:
    """A fresh `rsitr serve INDEX_DIR FLAGS` process on a free local port, once it answers; yields its URL and
    process id, and stops it."""
    import httpx

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "rsitr.cli", "serve", str(index_dir), "--port", str(port),
                               *flags], cwd=Path(__file__).resolve().parent.parent, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                httpx.get(f"{url}/api/info", timeout=1.0)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url, server.pid
    finally:
        server.terminate()
        server.wait(timeout=30)
