"""INT8 dynamic quantization of the default model's ONNX towers (issue 39): what RSICD test mR it costs, what it saves.

Exports the shipped default model (into a temporary $RSITR_CACHE_DIR), quantizes both towers with ONNX Runtime's
``quantize_dynamic`` (weights int8, activations quantized per batch; :func:`onnx_runtime._quantized`), and runs the
RSICD test split through the `rsitr eval` pipeline (:func:`rsitr.evaluate.runner.encode_corpus`, the model's recipe)
with the fp32 towers and with the int8 ones, in one process: mR of each mix (int8 image tower for indexing, int8 text
tower for queries, both) and each tower's encode seconds. Keep a quantized tower only where mR moves < 0.3 and it is
faster. Prints the CPU model and writes benchmarks/results/onnx_int8.json.

    python benchmarks/onnx_int8.py [--data ../shared/data/rsicd/dataset_rsicd.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import cpu_model, write_report  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "onnx_int8.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "rsicd" / "dataset_rsicd.json"))
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    os.environ["RSITR_CACHE_DIR"] = tempfile.mkdtemp()
    from dataclasses import replace

    from onnx_runtime import _quantized

    from rsitr.config import EvalConfig
    from rsitr.data import load_corpus
    from rsitr.evaluate.runner import encode_corpus, evaluate_encoded
    from rsitr.inference.encoder import Encoder
    from rsitr.models import create_model
    from rsitr.models.onnx_model import OnnxRuntimeModel

    corpus = load_corpus(args.data, Path(args.data).parent / "images").split("test")
    loaded = create_model()
    fp32 = Encoder(loaded, runtime="onnx").towers
    towers = {"fp32": fp32, "int8": _quantized(fp32)}
    encoded = {name: encode_corpus(OnnxRuntimeModel(loaded.model, runtime), corpus, args.batch_size, progress=False,
                                   keep_padding=loaded.recipe.keeps_padding)
               for name, runtime in towers.items()}
    config = EvalConfig(split="test", batch_size=args.batch_size)
    result: dict = {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
                    "model": loaded.pretrained, "data": f"{corpus.name} test ({len(corpus)} images, "
                                                        f"{len(corpus.captions)} captions)", "mR": {}}
    for image in towers:
        for text in towers:
            mixed = replace(encoded[image], text=encoded[text].text)
            rows = evaluate_encoded(mixed, loaded.recipe, config).rows
            result["mR"][f"image {image}, text {text}"] = round(next(iter(rows.values()))["mR"], 2)
    result["encode_seconds"] = {name: {"images": round(value.image_seconds, 1), "captions": round(value.text_seconds, 1)}
                                for name, value in encoded.items()}
    result["file_mb"] = {name: {file: round((runtime.directory / file).stat().st_size / 1e6, 1)
                                for file in ("image.onnx", "text.onnx")} for name, runtime in towers.items()}
    write_report(result, RESULTS)


if __name__ == "__main__":
    main()
