"""Image encoding speed of the default model against the previous one, side by side in one run, on real images.

What `rsitr index` does per chip (the index's Encoder: decode, preprocess, the image tower, the projection), on
the 210 UC Merced images bundled with rsitr, for each model and precision: chips/s and the ratio to the previous
default (:data:`PREVIOUS`) in fp32 and `auto` (bf16 autocast where the CPU has native bf16, as `rsitr index` runs
by default). Both run channels-last (rsitr's timm towers always do). The new default's tower is also timed through
ONNX Runtime (fp32, exported from the same PyTorch module), to see whether it beats PyTorch here. Round 3 of the
default model kept its architecture (EfficientNet-Lite0 at 224 px, trained on 4 cached orientations instead of 2),
so the two models' speeds differ only by measurement noise; the figures before it compared the ResNet-18 default
(`rsitr-minilm-r18-rsicd-ucm-text2`, 128 px, no longer shipped). Prints the CPU model; writes
benchmarks/results/default_encode_speed.json.

    python benchmarks/default_encode_speed.py [--repeats 2] [--batch 32] [--candidate RUN_FOLDER ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from rsitr.inference.encoder import Encoder
from rsitr.models import DEFAULT_PRETRAINED, create_model

sys.path.insert(0, str(Path(__file__).parent))

from _measure import cpu_model  # noqa: E402

PREVIOUS = "rsitr-minilm-lite0-rsicd-ucm"
"""The default before round 3 of the default model."""
DEMO = Path(__file__).resolve().parents[1] / "rsitr" / "demo_data" / "ucm"
RESULT = Path(__file__).parent / "results" / "default_encode_speed.json"


def chips_per_second(encode, images: list[Image.Image], batch: int, repeats: int) -> float:
    encode(images[:batch])  # warm-up (oneDNN primitives)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for offset in range(0, len(images), batch):
            encode(images[offset:offset + batch])
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def onnx_encoder(encoder: Encoder, batch: int):
    """The image tower and projection exported to ONNX and run by ONNX Runtime on all cores, or None without it."""
    try:
        import onnxruntime
    except ImportError:
        return None
    model = encoder.model.eval()

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.model.encode_image(images).global_

    path = Path(tempfile.mkdtemp()) / "tower.onnx"
    with torch.no_grad():
        torch.onnx.export(Tower(), torch.randn(batch, 3, 224, 224), path, input_names=["images"],
                          output_names=["emb"], dynamic_axes={"images": {0: "batch"}}, dynamo=False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def encode(images: list[Image.Image]):
        pixels = torch.stack([model.preprocess_val(image) for image in images]).numpy()
        return session.run(None, {"images": pixels})[0]
    return encode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--candidate", action="append", default=[],
                        help="another model to time beside the two (a tag, checkpoint or run folder); repeatable")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = [Image.open(path).convert("RGB") for path in sorted(DEMO.glob("*.jpg"))]
    print(f"CPU: {cpu_model()}; {args.threads} threads; {len(images)} UC Merced images; load {os.getloadavg()[0]:.2f}")
    rows = {}
    for tag in dict.fromkeys([PREVIOUS, DEFAULT_PRETRAINED, *args.candidate]):
        for precision in ("fp32", "auto"):
            encoder = Encoder(create_model(None, tag), precision=precision)
            rows[f"{tag} {precision} ({encoder.precision})"] = chips_per_second(
                encoder.encode_images, images, args.batch, args.repeats)
        if tag == DEFAULT_PRETRAINED:
            onnx = onnx_encoder(encoder, args.batch)
            if onnx is not None:
                rows[f"{tag} ONNX Runtime fp32"] = chips_per_second(onnx, images, args.batch, args.repeats)
    reference = rows[next(key for key in rows if key.startswith(f"{PREVIOUS} auto"))]
    for name, speed in rows.items():
        print(f"{name:64s} {speed:7.1f} chips/s  {speed / reference:5.2f}x the previous default (auto)")
    RESULT.parent.mkdir(exist_ok=True)
    RESULT.write_text(json.dumps({"cpu": cpu_model(), "threads": args.threads, "load_average": os.getloadavg()[0],
                                  "images": len(images), "batch": args.batch, "previous_default": PREVIOUS,
                                  "default": DEFAULT_PRETRAINED,
                                  "chips_per_second": rows,
                                  "ratio_to_previous_auto": {k: v / reference for k, v in rows.items()}}, indent=1))
    print(f"written to {RESULT}")


if __name__ == "__main__":
    main()
