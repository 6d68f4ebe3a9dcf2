"""The encoders on ONNX Runtime against PyTorch (issue 39), every ratio measured side by side in one run.

With the shipped default model (its ONNX export made first, into a temporary $RSITR_CACHE_DIR):

- towers: image chips/s (batch 32, 64 demo chips) on ONNX Runtime fp32 (and INT8 dynamic quantization with
  --int8), PyTorch fp32 and PyTorch bf16 autocast (where the CPU has native bf16); a query's text encode p50;
- index: `rsitr index` of the 210 demo images (real UC Merced images), whole process, on ONNX Runtime, on PyTorch
  fp32 and on PyTorch at its auto precision, against a plain script that decodes them with PIL and runs the same
  image tower in ONNX Runtime fp32 (interleaved, --repeats times, medians);
- start-up: a one-shot `rsitr search` of that index against `python -c "import torch"` (interleaved);
- serve: query p50 over HTTP of `rsitr serve` on each runtime against a plain PyTorch encode of the same query with
  the same text tower (in process), and each server's peak RSS (``VmHWM``) after the queries.

Prints the CPU model and writes benchmarks/results/onnx_runtime.json.

    python benchmarks/onnx_runtime.py [--repeats 3] [--queries 30] [--int8]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _measure import cpu_model, serving, write_report  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "rsitr" / "demo_data" / "ucm"
RESULTS = Path(__file__).parent / "results" / "onnx_runtime.json"
QUERY = "a baseball field next to green trees"
PLAIN_ORT = """
import sys, numpy as np, onnxruntime as ort
from pathlib import Path
from PIL import Image
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
paths = sorted(p for p in Path(sys.argv[2]).iterdir() if p.suffix in (".jpg", ".tif", ".png"))
def pixels(path):
    image = Image.open(path).convert("RGB")
    w, h = image.size
    s = 224 / min(w, h)
    image = image.resize((max(224, round(w * s)), max(224, round(h * s))), Image.Resampling.BICUBIC)
    w, h = image.size
    left, top = (w - 224) // 2, (h - 224) // 2
    x = np.asarray(image.crop((left, top, left + 224, top + 224)), np.float32) / 127.5 - 1.0
    return x.transpose(2, 0, 1)
for start in range(0, len(paths), 32):
    session.run(None, {"pixels": np.stack([pixels(p) for p in paths[start:start + 32]])})
"""


def timed(argv: list[str], env: dict) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one fresh process, which must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def interleaved(cases: dict[str, object], repeats: int, env: dict) -> dict[str, dict]:
    """Median wall and CPU seconds of each case (an argv, or a function giving one per run), run in turn."""
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, argv in cases.items():
            runs[name].append(timed(argv() if callable(argv) else argv, env))
    return {name: {"wall_s": round(statistics.median(w for w, _ in times), 2),
                   "cpu_s": round(statistics.median(c for _, c in times), 2)} for name, times in runs.items()}


def towers(int8: bool) -> dict:
    """Image chips/s per runtime and precision, and a query's text encode p50, in this process."""
    import numpy as np
    from PIL import Image

    from rsitr.inference.encoder import Encoder
    from rsitr.models import create_model
    from rsitr.models.precision import cpu_supports_bf16
    from rsitr.models.torch_towers import TorchTowers

    loaded = create_model()
    onnx = Encoder(loaded, runtime="onnx").towers
    images = [Image.open(path).convert("RGB") for path in sorted(DEMO.glob("*.jpg"))[:64]]
    variants = {"onnx fp32": onnx, "torch fp32": TorchTowers(loaded.model, precision="fp32")}
    if cpu_supports_bf16():
        variants["torch bf16"] = TorchTowers(loaded.model, precision="bf16")
    if int8:
        variants["onnx int8"] = _quantized(onnx)
    result = {}
    for name, runtime in variants.items():
        runtime.encode_images(images[:32])  # warm-up
        start = time.perf_counter()
        for first in range(0, len(images), 32):
            runtime.encode_images(images[first:first + 32])
        chips = len(images) / (time.perf_counter() - start)
        times = []
        for _ in range(20):
            start = time.perf_counter()
            runtime.encode_text(QUERY)
            times.append(time.perf_counter() - start)
        result[name] = {"chips_per_s": round(chips, 1), "query_ms_p50": round(1000 * statistics.median(times), 1)}
    if int8:
        fp32, quantized = onnx.encode_images(images[:32])[0], variants["onnx int8"].encode_images(images[:32])[0]
        cosine = (fp32 * quantized).sum(-1) / np.linalg.norm(fp32, axis=-1) / np.linalg.norm(quantized, axis=-1)
        result["onnx int8"]["image_cosine_to_fp32_min"] = round(float(cosine.min()), 4)
    return result


def _quantized(onnx):
    """The export's two towers with INT8 dynamic quantization (weights int8, activations quantized per batch)."""
    import shutil

    from onnxruntime.quantization import QuantType, quantize_dynamic

    from rsitr.models.onnx_runtime import IMAGE_FILE, MANIFEST, TEXT_FILE, OnnxTowers, file_sha256

    folder = Path(tempfile.mkdtemp())
    manifest = json.loads((onnx.directory / MANIFEST).read_text())
    for name in manifest["files"]:
        source = onnx.directory / name
        if name in (IMAGE_FILE, TEXT_FILE):
            quantize_dynamic(str(source), str(folder / name), weight_type=QuantType.QInt8)
        else:
            shutil.copy(source, folder / name)
        manifest["files"][name] = [(folder / name).stat().st_size, file_sha256(folder / name)]
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return OnnxTowers(folder)


def serve_queries(index: Path, runtime: str, queries: int, env: dict) -> dict:
    """Query p50 over HTTP and the peak RSS of `rsitr serve INDEX --runtime RUNTIME`."""
    with serving(index, "--runtime", runtime, env=env) as (url, pid):
        times = []
        with httpx.Client(base_url=url, timeout=60) as client:
            client.get("/api/search", params={"q": QUERY, "k": 10}).raise_for_status()
            for number in range(queries):
                start = time.perf_counter()
                client.get("/api/search", params={"q": f"{QUERY} {number}", "k": 10}).raise_for_status()
                times.append(time.perf_counter() - start)
        with open(f"/proc/{pid}/status") as handle:
            peak = next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:")) / 1024
    return {"query_ms_p50": round(1000 * statistics.median(times), 1), "peak_rss_mib": round(peak)}


def plain_torch_query_ms(queries: int) -> float:
    """A plain PyTorch encode of the query (tokenize + encode_text, fp32) with the same text tower, p50."""
    import torch

    from rsitr.models import create_model

    model = create_model().model.eval()
    times = []
    with torch.no_grad():
        for number in range(queries + 1):
            start = time.perf_counter()
            model.encode_text(model.tokenize([f"{QUERY} {number}"]))
            times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times[1:]), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--int8", action="store_true", help="also INT8 dynamic quantization of both towers")
    args = parser.parse_args()
    rsitr = [sys.executable, "-m", "rsitr.cli"]
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "RSITR_CACHE_DIR": str(Path(folder) / "cache"), "PYTHONPATH": str(ROOT)}
        os.environ["RSITR_CACHE_DIR"] = env["RSITR_CACHE_DIR"]
        result = {"cpu": cpu_model(), "cores": os.cpu_count(), "model": "the shipped default",
                  "towers": towers(args.int8)}
        from rsitr.models.onnx_runtime import onnx_cache_root

        image_onnx = next(onnx_cache_root().glob("*/image.onnx"))
        runs = iter(range(10**6))
        out = Path(folder)
        index_cases = {
            "plain ONNX Runtime script": [sys.executable, "-c", PLAIN_ORT, str(image_onnx), str(DEMO)],
            "rsitr index --runtime onnx": lambda: [*rsitr, "index", str(DEMO), "--out", str(out / f"o{next(runs)}"),
                                                   "--no-progress", "--runtime", "onnx"],
            "rsitr index --runtime torch --precision fp32": lambda: [
                *rsitr, "index", str(DEMO), "--out", str(out / f"t{next(runs)}"), "--no-progress", "--runtime",
                "torch", "--precision", "fp32"],
            "rsitr index --runtime torch (auto precision)": lambda: [
                *rsitr, "index", str(DEMO), "--out", str(out / f"a{next(runs)}"), "--no-progress", "--runtime",
                "torch"],
        }
        result["index_210"] = interleaved(index_cases, args.repeats, env)
        plain = result["index_210"]["plain ONNX Runtime script"]["wall_s"]
        result["index_over_plain_script"] = {name: round(plain / value["wall_s"], 2)
                                             for name, value in result["index_210"].items()}
        index = out / "o0"
        result["startup"] = interleaved({"import torch": [sys.executable, "-c", "import torch"],
                                         "rsitr search": [*rsitr, "search", str(index), QUERY, "--top-k", "5"]},
                                        max(args.repeats, 3), env)
        result["search_over_import_torch"] = round(result["startup"]["rsitr search"]["wall_s"]
                                                   / result["startup"]["import torch"]["wall_s"], 2)
        result["serve"] = {runtime: serve_queries(index, runtime, args.queries, env) for runtime in ("onnx", "torch")}
        result["plain_torch_query_ms_p50"] = plain_torch_query_ms(args.queries)
        result["serve_query_over_plain_torch"] = {
            runtime: round(value["query_ms_p50"] / result["plain_torch_query_ms_p50"], 2)
            for runtime, value in result["serve"].items()}
        result["load_average_1m"] = round(os.getloadavg()[0], 2)
    write_report(result, RESULTS)


if __name__ == "__main__":
    main()
