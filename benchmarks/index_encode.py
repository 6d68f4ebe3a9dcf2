"""Index encoding speed: chips/s when building an index and the latency of encoding one `rsitr search` text query,
today's path (fp32, the query at the full 77-token context) vs the new default (auto precision, the query at its
real length), side by side in one process.

Default model: the ViT-B-32 architecture, randomly initialised (nothing is downloaded); chips are random
224 px RGB images, encoded --batch at a time as `rsitr index` does.

    python benchmarks/index_encode.py [--chips 64 --batch 32 --queries 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rsitr.inference.encoder import Encoder
from rsitr.models import create_model

sys.path.insert(0, str(Path(__file__).parent))

from _measure import cpu_model  # noqa: E402

QUERIES = ["a viaduct shaped like an eight on bare land", "many boats in a harbour", "a playground with a track",
           "an airport with two white planes parked beside the terminal"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--chips", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    chips = [Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)) for _ in range(args.chips)]
    queries = [QUERIES[i % len(QUERIES)] for i in range(args.queries)]
    loaded = create_model(args.model)
    model = loaded.model
    rows = {}
    for name, precision in (("today (fp32, 77 ctx)", "fp32"), ("new default", "auto")):
        encoder = Encoder(loaded, precision=precision)
        encoder.encode_images(chips[:2])  # warm-up
        start = time.perf_counter()
        for i in range(0, len(chips), args.batch):
            encoder.encode_images(chips[i:i + args.batch])
        chips_per_s = len(chips) / (time.perf_counter() - start)
        start = time.perf_counter()
        with torch.no_grad():
            for query in queries:
                if precision == "fp32":  # today's query path: one caption at the full context
                    model.encode_text(model.tokenize([query]))
                else:
                    encoder.encode_text(query)
        latency_ms = (time.perf_counter() - start) / len(queries) * 1000
        rows[name] = (chips_per_s, latency_ms)
        print(f"{name:22s} ({encoder.precision}): {chips_per_s:6.2f} chips/s, text query encoding {latency_ms:6.1f} ms")
    (old_rate, old_latency), (new_rate, new_latency) = rows.values()
    print(f"CPU: {cpu_model()}, {args.threads} threads; {args.model} randomly initialised, batch {args.batch}; "
          f"new/today: {new_rate / old_rate:.2f}x chips/s, {old_latency / new_latency:.2f}x faster queries")


if __name__ == "__main__":
    main()
