"""Text-query latency and recall@10 of the archive index's exact, IVF and HNSW FAISS indexes.

Generates clustered unit vectors standing in for chip embeddings (random cluster centres, Gaussian
spread) and query vectors near random centres (standing in for encoded captions), builds each index
type with :func:`rsitr.retrieval.vector_index.build_vector_index` (the code the product uses), then times
single-query searches one by one (the service answers one query at a time) and measures recall@10
against the exact index. Prints one line per index type and the ratios to exact.

Searches run with ``--search-threads`` OpenMP threads (default 1): for one query at a time FAISS's
thread start-up and barriers cost more than they save on a small shared machine (IVF p50 ~8 ms with 2
threads versus ~0.4 ms with 1 here); builds use all cores.

    python benchmarks/index_search.py [--vectors 100000 --dim 512 --queries 300 --clusters 1000]
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from rsitr.retrieval.vector_index import build_vector_index, search_vectors

K = 10


def clustered_unit_vectors(rng: np.random.Generator, count: int, centres: np.ndarray, spread: float) -> np.ndarray:
    vectors = centres[rng.integers(0, len(centres), count)] + spread * rng.standard_normal(
        (count, centres.shape[1]), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def timed_searches(index, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Result ids ``[Q, K]`` and per-query latencies in ms."""
    ids, latencies = [], []
    for query in queries:
        start = time.perf_counter()
        _, found = search_vectors(index, query[None], K)
        latencies.append((time.perf_counter() - start) * 1e3)
        ids.append(found[0])
    return np.stack(ids), np.asarray(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--search-threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.clusters, args.dim), dtype=np.float32) / np.sqrt(args.dim)
    # Spread comparable to the centre norm: neighbours in a cluster are close but not duplicates.
    vectors = clustered_unit_vectors(rng, args.vectors, centres, spread=0.6 / np.sqrt(args.dim))
    queries = clustered_unit_vectors(rng, args.queries, centres, spread=0.8 / np.sqrt(args.dim))
    ids = np.arange(args.vectors, dtype=np.int64)
    print(f"{args.vectors} vectors, dim {args.dim}, {args.clusters} clusters, {args.queries} single queries, k={K}, "
          f"{args.search_threads} search thread(s)")

    results = {}
    for index_type in ("exact", "ivf", "hnsw"):
        start = time.perf_counter()
        index = build_vector_index(vectors, ids, index_type, seed=args.seed)
        build_s = time.perf_counter() - start
        build_threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(args.search_threads)
        found, latencies = timed_searches(index, queries)
        faiss.omp_set_num_threads(build_threads)
        results[index_type] = (build_s, found, np.percentile(latencies, 50), np.percentile(latencies, 95))

    exact_found = results["exact"][1]
    exact_p50, exact_p95 = results["exact"][2], results["exact"][3]
    for index_type, (build_s, found, p50, p95) in results.items():
        recall = np.mean([len(set(f) & set(e)) / K for f, e in zip(found, exact_found)])
        print(f"{index_type:6s} build {build_s:6.2f} s  p50 {p50:7.3f} ms  p95 {p95:7.3f} ms  recall@{K} vs exact "
              f"{recall:.3f}  p50 speed-up x{exact_p50 / p50:5.1f}  p95 speed-up x{exact_p95 / p95:5.1f}")


if __name__ == "__main__":
    main()
