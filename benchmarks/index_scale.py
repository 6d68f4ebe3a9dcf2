"""Indexes of 100k and 1M chips on one machine: build time, RAM, disk, text-query latency and recall@10 against exact
for each FAISS index type the product builds (exact, IVF-Flat, HNSW, IVF-PQ with a float16 re-score), and the cost of
the local-token re-rank at that size.

Vectors: real chips are encoded once with the default model (256 dims; ``rsitr-minilm-r18-rsicd-ucm`` in the recorded
run; by default the 2,100 UC Merced images through ``rsitr embed``, cached under --cache); the archive's vectors are
then synthetic with the same statistics: a Gaussian mixture whose centres and weights are the k-means clusters of the
real embeddings and whose spread is their pooled within-cluster covariance, L2-normalised as the encoder's are. Queries
are real captions (UCM test split) encoded by the same model's text tower, one at a time as `rsitr search` does;
their encode time is measured too, so "end-to-end" = text encode + vector search.

Each index type is built in its own process (``spawn``): "build RAM" is the peak resident growth while the index is
built from the vectors (the vectors themselves included), "index RAM" the resident growth the index keeps once
the vectors are freed (what a searcher holds), "disk" the saved ``vectors.faiss``. Searches run with one OpenMP
thread (the service answers one query at a time; see index_search.py). IVF and HNSW rows are repeated per search
breadth (nprobe / efSearch) so the recall/latency trade-off is visible.

Re-rank: a text query's local re-rank reads the patch tokens of its 100 best candidates from ``index.sqlite``
(float16, ``P x D`` a chip) and scores them; that read is measured on an SQLite table holding --rerank-chips chips'
tokens (it does not grow with the archive: 100 rows by primary key), and the score on those candidates.

    python benchmarks/index_scale.py [--sizes 100000 1000000 --queries 200 --types exact ivf hnsw ivfpq]
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _measure import _status_mib, cpu_model  # noqa: E402

K = 10
CANDIDATES = 100
UCM = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ucm"
RESULTS = Path(__file__).parent / "results" / "index_scale.json"
SEARCH_BREADTHS = {"exact": [None], "ivf": [16, 64], "ivfpq": [16, 32, 64], "hnsw": [64, 128]}


# -- vectors -------------------------------------------------------------------------------------------------------
def real_embeddings(images: Path, cache: Path) -> np.ndarray:
    """The default model's image embeddings of every image under ``images``, encoded once into ``cache``."""
    from rsitr.inference.embed import EmbedSettings, embed_to_parquet, read_embed_input, read_embeddings
    from rsitr.models import DEFAULT_PRETRAINED, create_model

    out = cache / f"{images.parent.name}_{images.name}_emb"
    if not (out / "_manifest.json").is_file() or not json.loads((out / "_manifest.json").read_text()).get("complete"):
        loaded = create_model(None, DEFAULT_PRETRAINED)
        embed_to_parquet(loaded.model, read_embed_input(images), out, EmbedSettings(dtype="fp32"), loaded.name,
                         DEFAULT_PRETRAINED, progress=True)
    return read_embeddings(out)[1]


def fit_mixture(real: np.ndarray, clusters: int, seed: int) -> dict:
    """k-means centres and weights of ``real`` and the Cholesky factor of its pooled within-cluster covariance."""
    import faiss

    kmeans = faiss.Kmeans(real.shape[1], clusters, niter=25, seed=seed, verbose=False)
    kmeans.train(real)
    assign = kmeans.index.search(real, 1)[1][:, 0]
    residuals = real - kmeans.centroids[assign]
    covariance = residuals.T @ residuals / len(real)
    values, vectors = np.linalg.eigh(covariance)
    return {"centres": kmeans.centroids, "weights": np.bincount(assign, minlength=clusters) / len(real),
            "factor": (vectors * np.sqrt(np.clip(values, 0, None))).astype(np.float32)}


def synthetic(mixture: dict, count: int, seed: int, chunk: int = 100_000) -> np.ndarray:
    """``count`` unit vectors drawn from the mixture, generated in chunks to keep the peak near the output's size."""
    rng = np.random.default_rng(seed)
    dim = mixture["centres"].shape[1]
    out = np.empty((count, dim), np.float32)
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        block = mixture["centres"][rng.choice(len(mixture["weights"]), n, p=mixture["weights"])]
        block += rng.standard_normal((n, dim), dtype=np.float32) @ mixture["factor"].T
        out[start:start + n] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def mean_cosines(vectors: np.ndarray, rng: np.random.Generator, pairs: int = 20_000) -> tuple[float, float]:
    """Mean cosine of random pairs, and mean nearest-neighbour cosine within a 2,000 sample: the statistics the
    synthetic vectors should share with the real ones."""
    a, b = rng.integers(0, len(vectors), (2, pairs))
    sample = vectors[rng.choice(len(vectors), min(2000, len(vectors)), replace=False)]
    sims = sample @ sample.T
    np.fill_diagonal(sims, -1)
    return float(np.mean(np.sum(vectors[a] * vectors[b], axis=1))), float(sims.max(axis=1).mean())


# -- one index type, in its own process ----------------------------------------------------------------------------
def _measure_type(index_type: str, mixture: dict, count: int, seed: int, queries: np.ndarray, workdir: str,
                  out: mp.Queue) -> None:
    try:
        import faiss

        from rsitr.retrieval import vector_index

        gc.collect()
        baseline = _status_mib("VmRSS")
        vectors = synthetic(mixture, count, seed)
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # the peak from here on
        start = time.perf_counter()
        index = vector_index.build_vector_index(vectors, np.arange(count, dtype=np.int64), index_type, seed=seed)
        build_s = time.perf_counter() - start
        build_peak = _status_mib("VmHWM") - baseline
        del vectors
        gc.collect()
        index_ram = _status_mib("VmRSS") - baseline
        path = Path(workdir) / f"{index_type}.faiss"
        vector_index.save_atomic(index, path)
        disk = path.stat().st_size
        path.unlink()
        faiss.omp_set_num_threads(1)
        rows = []
        for breadth in SEARCH_BREADTHS[index_type]:
            if breadth is not None:
                vector_index.set_search_breadth(index, nprobe=breadth, ef_search=breadth)
            vector_index.search_vectors(index, queries[:5], K)  # warm-up
            found, latencies = [], []
            for query in queries:
                begin = time.perf_counter()
                _, ids = vector_index.search_vectors(index, query[None], K)
                latencies.append((time.perf_counter() - begin) * 1e3)
                found.append(ids[0])
            rows.append({"breadth": breadth, "found": np.stack(found), "latencies_ms": np.asarray(latencies)})
        out.put({"build_s": build_s, "build_peak_mib": build_peak, "index_ram_mib": index_ram, "disk_bytes": disk,
                 "rows": rows})
    except BaseException as err:  # the parent waits on the queue
        out.put({"error": f"{type(err).__name__}: {err}"})
        raise


def measure_type(*args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_measure_type, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    if "error" in result:
        raise RuntimeError(result["error"])
    return result


# -- the local-token re-rank -----------------------------------------------------------------------------------------
def rerank_cost(encoder, captions: list[str], chips: int, seed: int) -> dict:
    """Token bytes a chip, and per query: reading 100 candidates' tokens from SQLite (the product's path) and
    scoring them, on a table of ``chips`` chips of random float16 tokens of the model's shape."""
    from PIL import Image

    from rsitr.index.searcher import fused_scores

    rng = np.random.default_rng(seed)
    probe = encoder.encode_images([Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8))])
    patches, dim = probe.tokens.shape[1:]
    chip_bytes = patches * dim * 2
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        conn = sqlite3.connect(Path(tmp) / "tokens.sqlite")
        conn.execute("CREATE TABLE chips (id INTEGER PRIMARY KEY, tokens BLOB)")
        for start in range(0, chips, 10_000):
            block = rng.standard_normal((10_000, patches, dim), dtype=np.float32).astype(np.float16)
            conn.executemany("INSERT INTO chips VALUES (?, ?)",
                             ((start + i, block[i].tobytes()) for i in range(min(10_000, chips - start))))
        conn.commit()
        conn.close()
        db_bytes = (Path(tmp) / "tokens.sqlite").stat().st_size
        conn = sqlite3.connect(Path(tmp) / "tokens.sqlite")
        read_ms, score_ms = [], []
        for caption in captions:
            ids = rng.choice(chips, CANDIDATES, replace=False).tolist()
            begin = time.perf_counter()
            rows = dict(conn.execute(f"SELECT id, tokens FROM chips WHERE id IN ({','.join('?' * len(ids))})", ids))
            tokens = np.stack([np.frombuffer(rows[i], np.float16).reshape(patches, dim) for i in ids]).astype(np.float32)
            read_ms.append((time.perf_counter() - begin) * 1e3)
            query = encoder.encode_text(caption)
            begin = time.perf_counter()
            fused_scores(rng.random(CANDIDATES).astype(np.float32), tokens, query, encoder.recipe)
            score_ms.append((time.perf_counter() - begin) * 1e3)
        conn.close()
    return {"patches": int(patches), "dim": int(dim), "bytes_per_chip_fp16": int(chip_bytes),
            "sqlite_bytes_per_chip": db_bytes / chips, "table_chips": chips,
            "read_100_p50_ms": float(np.percentile(read_ms, 50)), "read_100_p95_ms": float(np.percentile(read_ms, 95)),
            "score_100_p50_ms": float(np.percentile(score_ms, 50)),
            "score_100_p95_ms": float(np.percentile(score_ms, 95))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--types", nargs="+", default=["exact", "ivf", "hnsw", "ivfpq"])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--images", type=Path, default=UCM / "images", help="real chips to take statistics from")
    parser.add_argument("--captions", type=Path, default=UCM / "captions_ucm.csv", help="real text queries")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "rsitr-bench")
    parser.add_argument("--clusters", type=int, default=32)
    parser.add_argument("--rerank-chips", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch / build threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not args.images.is_dir() or not args.captions.is_file():
        sys.exit(f"index_scale: the real data is not at {args.images} / {args.captions} (../shared/data); pass "
                 f"--images and --captions")
    import csv

    import torch

    from rsitr.inference.encoder import Encoder
    from rsitr.models import DEFAULT_PRETRAINED, create_model
    from rsitr.retrieval.vector_index import choose_index_type

    torch.set_num_threads(args.threads)
    cpu = cpu_model()
    print(f"CPU: {cpu}; {len(os.sched_getaffinity(0))} cores; model {DEFAULT_PRETRAINED}")
    args.cache.mkdir(parents=True, exist_ok=True)
    real = real_embeddings(args.images, args.cache)
    mixture = fit_mixture(real, args.clusters, args.seed)
    rng = np.random.default_rng(args.seed)
    stats = {"real": mean_cosines(real, rng), "synthetic": mean_cosines(synthetic(mixture, len(real), args.seed + 1),
                                                                        rng)}
    print(f"{len(real)} real vectors (dim {real.shape[1]}) from {args.images}; mean pair cosine / nearest-neighbour "
          f"cosine: real {stats['real'][0]:.3f} / {stats['real'][1]:.3f}, synthetic {stats['synthetic'][0]:.3f} / "
          f"{stats['synthetic'][1]:.3f}")

    with args.captions.open() as handle:
        captions = list(dict.fromkeys(row["caption"] for row in csv.DictReader(handle)
                                      if row["split"] == "test" and row["caption"].strip()))[:args.queries]
    encoder = Encoder(create_model(None, DEFAULT_PRETRAINED))
    encoder.encode_text(captions[0])
    encode_ms, queries = [], []
    for caption in captions:
        begin = time.perf_counter()
        queries.append(encoder.encode_text(caption).embedding)
        encode_ms.append((time.perf_counter() - begin) * 1e3)
    queries = np.stack(queries).astype(np.float32)
    encode_ms = np.asarray(encode_ms)
    print(f"{len(captions)} UCM test captions as text queries; text encode p50 {np.percentile(encode_ms, 50):.1f} ms "
          f"p95 {np.percentile(encode_ms, 95):.1f} ms ({args.threads} torch threads)")

    results = {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "model": DEFAULT_PRETRAINED,
               "vectors": f"synthetic: Gaussian mixture fitted to {len(real)} real embeddings of {args.images.name} "
                          f"({args.clusters} k-means clusters, pooled within-cluster covariance)",
               "cosine_stats": stats, "queries": len(captions),
               "text_encode_ms": {"p50": float(np.percentile(encode_ms, 50)),
                                  "p95": float(np.percentile(encode_ms, 95))},
               "sizes": {}}
    print(f"{'size':>9s} {'type':6s} {'breadth':>7s} {'build s':>8s} {'build RAM':>10s} {'index RAM':>10s} "
          f"{'disk':>9s} {'p50 ms':>7s} {'p95 ms':>7s} {'e2e p50':>7s} {'e2e p95':>7s} {'R@10':>5s}")
    with tempfile.TemporaryDirectory(dir=args.cache) as workdir:
        for size in args.sizes:
            rows, exact = [], None
            for index_type in sorted(args.types, key=lambda t: t != "exact"):  # exact first: the reference
                measured = measure_type(index_type, mixture, size, args.seed, queries, workdir)
                for row in measured["rows"]:
                    if index_type == "exact":
                        exact = row["found"]
                    recall = None if exact is None else float(np.mean(
                        [len(set(f) & set(e)) / K for f, e in zip(row["found"], exact)]))
                    latencies, e2e = row["latencies_ms"], row["latencies_ms"] + encode_ms
                    entry = {"type": index_type, "breadth": row["breadth"], "build_s": measured["build_s"],
                             "build_peak_mib": measured["build_peak_mib"], "index_ram_mib": measured["index_ram_mib"],
                             "disk_bytes": measured["disk_bytes"], "p50_ms": float(np.percentile(latencies, 50)),
                             "p95_ms": float(np.percentile(latencies, 95)),
                             "e2e_p50_ms": float(np.percentile(e2e, 50)), "e2e_p95_ms": float(np.percentile(e2e, 95)),
                             "recall_at_10": recall}
                    rows.append(entry)
                    print(f"{size:9d} {index_type:6s} {str(row['breadth'] or '-'):>7s} {entry['build_s']:8.1f} "
                          f"{entry['build_peak_mib']:8.0f}MB {entry['index_ram_mib']:8.0f}MB "
                          f"{entry['disk_bytes'] / 2**20:7.0f}MB {entry['p50_ms']:7.2f} {entry['p95_ms']:7.2f} "
                          f"{entry['e2e_p50_ms']:7.1f} {entry['e2e_p95_ms']:7.1f} "
                          f"{'-' if recall is None else f'{recall:.3f}':>5s}", flush=True)
            results["sizes"][str(size)] = {"auto": choose_index_type(size), "rows": rows}
            print(f"auto choice at {size}: {choose_index_type(size)}")
    results["rerank"] = rerank_cost(encoder, captions, args.rerank_chips, args.seed)
    rerank = results["rerank"]
    print(f"re-rank: tokens {rerank['patches']} x {rerank['dim']} fp16 = {rerank['bytes_per_chip_fp16'] / 1e3:.1f} KB a "
          f"chip ({rerank['sqlite_bytes_per_chip'] / 1e3:.1f} KB in SQLite; 1M chips: "
          f"{rerank['sqlite_bytes_per_chip'] * 1e6 / 1e9:.1f} GB on disk, none in RAM); per query, 100 candidates: "
          f"read p50 {rerank['read_100_p50_ms']:.1f} / p95 {rerank['read_100_p95_ms']:.1f} ms from a "
          f"{rerank['table_chips']}-chip table, score p50 {rerank['score_100_p50_ms']:.1f} / p95 "
          f"{rerank['score_100_p95_ms']:.1f} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
