"""Training-step time of candidate image towers for 2 CPU cores, side by side in one run.

Each tower is a timm model without pretrained weights (as `vision_cfg.timm_model_name` builds it) or rsitr-small's
64 px ViT, timed for a forward + backward + AdamW step on a batch of random images, in fp32 and in bf16 autocast
with channels-last memory (what rsitr's CNN towers use). Prints the CPU model, the load average and, per tower, the
seconds per step of 128 images and the minutes one epoch over RSICD + UC Merced train captions (52,000 pairs,
407 steps) would take. Writes benchmarks/results/image_towers.json.

    python benchmarks/image_towers.py [--batch 128] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from _measure import cpu_model  # noqa: E402

TOWERS = [("resnet18", 96), ("resnet18", 128), ("resnet26", 112), ("convnext_atto", 128), ("convnext_femto", 128),
          ("efficientnet_b0", 128)]
STEPS_PER_EPOCH = 407


def build(name: str) -> torch.nn.Module:
    from rsitr._compat import open_clip  # noqa: F401  (torchvision import fix, before timm)
    import timm

    return timm.create_model(name, num_classes=0, pretrained=False)


def step_seconds(model: torch.nn.Module, size: int, batch: int, steps: int, bf16: bool) -> float:
    images = torch.randn(batch, 3, size, size)
    if bf16:
        model, images = model.to(memory_format=torch.channels_last), images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters())
    times = []
    for _ in range(steps + 1):  # the first step warms up oneDNN
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(images).float().square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return min(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"CPU: {cpu_model()}; torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f} "
          f"(above 2 the 2 cores were shared); batch {args.batch}, best of {args.steps} steps")
    rows = []
    for name, size in TOWERS:
        model = build(name)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        row = {"tower": name, "pixels": size, "params_m": params}
        for label, bf16 in (("fp32", False), ("bf16_channels_last", True)):
            row[label] = step_seconds(model, size, args.batch, args.steps, bf16)
        rows.append(row)
        print(f"{name:16s} {size:4d} px {params:5.1f} M  fp32 {row['fp32']:6.2f} s/step  bf16+channels-last "
              f"{row['bf16_channels_last']:6.2f} s/step ({row['fp32'] / row['bf16_channels_last']:.1f}x)  "
              f"epoch {row['bf16_channels_last'] * STEPS_PER_EPOCH / 60:5.1f} min", flush=True)
    out = Path(__file__).parent / "results" / "image_towers.json"
    out.write_text(json.dumps({"cpu": cpu_model(), "load_average_1min": os.getloadavg()[0], "batch": args.batch,
                               "rows": rows}, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
