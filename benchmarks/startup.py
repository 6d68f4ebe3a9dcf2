"""Start-up time of the command line: a one-shot `rsitr search` and the errors that need no model, against
`python -c "import torch"` measured in the same run (issue 30: search at most 2.5x that, such errors under 1 s).

Builds the 210-chip index of the demo images with the default model (once, in a temporary folder), then runs each
command line --repeats times as a fresh process, interleaved so that a machine's changing load falls on all of
them alike, and reports the median wall time and the median CPU time (user + system: less sensitive to other
processes on a loaded machine). Prints the CPU model and writes benchmarks/results/startup.json.

    python benchmarks/startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "startup.json"
SEARCH_TARGET = 2.5  # x `import torch`
ERROR_TARGET_S = 1.0


def timed(argv: list[str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system of the child) and exit code of one fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    code = subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rsitr = [sys.executable, "-m", "rsitr.cli"]
    with tempfile.TemporaryDirectory() as folder, socket.socket() as busy:
        index = Path(folder) / "ucm.index"
        subprocess.run([*rsitr, "index", "rsitr/demo_data/ucm", "--out", str(index), "--no-progress"],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cases = {
            "import torch": [sys.executable, "-c", "import torch"],
            "search": [*rsitr, "search", str(index), "a baseball field next to green trees", "--top-k", "5"],
            "error: missing path": [*rsitr, "search", str(Path(folder) / "none"), "trees"],
            "error: not an index": [*rsitr, "search", folder, "trees"],
            "error: tag typo": [*rsitr, "embed", "rsitr/demo_data/ucm", "--out", str(Path(folder) / "emb"),
                                "--pretrained", "rsitr-minilm"],
            "error: busy port": [*rsitr, "serve", str(index), "--port", str(busy.getsockname()[1])],
        }
        expected = {name: 0 if name in ("import torch", "search") else 2 for name in cases}
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
        for _ in range(args.repeats):
            for name, argv in cases.items():
                wall, cpu, code = timed(argv)
                if code != expected[name]:
                    raise SystemExit(f"{name}: exit code {code}, expected {expected[name]}")
                runs[name].append((wall, cpu))
    medians = {name: {"wall_s": round(statistics.median(w for w, _ in times), 3),
                      "cpu_s": round(statistics.median(c for _, c in times), 3)} for name, times in runs.items()}
    torch_wall, torch_cpu = medians["import torch"]["wall_s"], medians["import torch"]["cpu_s"]
    search = medians["search"]
    result = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
        "python": sys.version.split()[0], "repeats": args.repeats, "index_chips": 210,
        "median": medians,
        "search_over_import_torch": {"wall": round(search["wall_s"] / torch_wall, 2),
                                     "cpu": round(search["cpu_s"] / torch_cpu, 2), "target": SEARCH_TARGET},
        "errors_under_target": {name: value["wall_s"] < ERROR_TARGET_S
                                for name, value in medians.items() if name.startswith("error")},
        "error_target_s": ERROR_TARGET_S,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(f"CPU: {result['cpu']} ({result['cores']} cores, load average {result['load_average_1m']})")
    for name, value in medians.items():
        print(f"  {name:22s} wall {value['wall_s']:6.2f} s   cpu {value['cpu_s']:6.2f} s")
    ratio = result["search_over_import_torch"]
    print(f"search / import torch: {ratio['wall']}x wall, {ratio['cpu']}x CPU (target {SEARCH_TARGET}x); "
          f"written {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
