"""How long `rsitr eval` of the packaged default model takes on the whole RSICD test split, and what it reaches.

Times each stage in one process: model load (weights from the package, the text tower from its own package),
image encoding (1,093 JPEGs decoded, resized and encoded), caption encoding (5,465 captions through the text
tower) and scoring, with the CPU model and the load average (the time is only a speed on free cores). Writes
benchmarks/results/default_model_eval.json.

    python benchmarks/default_model_eval.py [--pretrained TAG] [--data ../shared/data/rsicd/dataset_rsicd.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _measure import cpu_model  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    from rsitr.config import EvalConfig
    from rsitr.data import load_corpus
    from rsitr.evaluate.runner import encode_corpus, evaluate_encoded
    from rsitr.models import DEFAULT_PRETRAINED, create_model, list_pretrained
    from rsitr.models.precision import resolve_precision

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", default=DEFAULT_PRETRAINED, choices=list_pretrained())
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "rsicd" / "dataset_rsicd.json"))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "default_model_eval.json"))
    args = parser.parse_args()
    data = Path(args.data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RSICD's 3 empty captions: reported by `rsitr data inspect`
        corpus = load_corpus(data, data.parent / "images").split("test")
    start = time.perf_counter()
    loaded = create_model(None, args.pretrained)
    model = loaded.model
    load_seconds = time.perf_counter() - start
    precision = resolve_precision("auto", "cpu")
    encoded = encode_corpus(model, corpus, args.batch_size, progress=False, precision=precision)
    evaluation = evaluate_encoded(encoded, loaded.recipe, EvalConfig(), name=args.pretrained)
    total = time.perf_counter() - start
    result = {"cpu": cpu_model(), "load_average_1min": os.getloadavg()[0], "model": args.pretrained,
              "precision": precision, "images": len(corpus), "captions": int(encoded.caption_image.numel()),
              "seconds": {"load_model": load_seconds, "encode_images": encoded.image_seconds,
                          "encode_captions": encoded.text_seconds, "score": evaluation.timings.get("score_seconds"),
                          "total": total},
              "metrics": evaluation.rows[args.pretrained]}
    print(f"CPU: {result['cpu']}; load average {result['load_average_1min']:.1f} (2 cores: above 2 the cores "
          f"were shared); {args.pretrained}, precision {precision}")
    print(", ".join(f"{k} {v:.1f}s" for k, v in result["seconds"].items() if v is not None)
          + f"; RSICD test mR {result['metrics']['mR']:.2f}")
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
