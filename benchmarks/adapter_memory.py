"""CMER's claim, measured: training memory and pairs/s of a Focus-Adapter vs full fine-tuning, same batch.

Both variants train the same objective (global InfoNCE) on the same batch of the same model (the ViT-B-32
architecture, randomly initialised: nothing is downloaded). Each runs in its own process; the model and the
batch are built first, then the measured part creates the AdamW optimizer, runs one warm-up step and
--steps timed steps. "Training memory" is the peak resident growth of that part: gradients, optimizer
state and the activations kept for backward, i.e. what training adds on top of the weights. The CMER paper
reports -49% training memory and 1.4x throughput (GPU); on a CPU the ratios differ, which is why both the
paper's figures and ours are printed.

    python benchmarks/adapter_memory.py [--model ViT-B-32 --batch 16 --steps 3 --adapter-dim 128]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _measure import measure  # noqa: E402
from train_step import CAPTIONS  # noqa: E402

CLAIMED_MEMORY_SAVING = 0.49
CLAIMED_SPEEDUP = 1.4


def train(model_name: str, batch: int, steps: int, adapter_dim: int, prepare: bool, state=None):
    import torch

    from rsitr.config import MethodConfig
    from rsitr.models import create_model
    from rsitr.models.focus_adapter import FocusAdapterCLIP
    from rsitr.training.objective import Batch, RetrievalObjective

    if prepare:
        torch.manual_seed(0)
        model = create_model(model_name).model
        size = model.clip.visual.image_size
        if adapter_dim > 0:
            model = FocusAdapterCLIP(model, adapter_dim=adapter_dim)
        tokens = model.tokenize([CAPTIONS[i % len(CAPTIONS)] for i in range(batch)])
        data = Batch(torch.randn(batch, 3, *size), tokens, torch.arange(batch), torch.arange(batch))
        objective = RetrievalObjective(model, MethodConfig(local=False, eba=False, ker=False))
        return objective, data
    objective, data = state
    parameters = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-5)
    objective.train()

    def one_step() -> None:
        loss, _ = objective(data)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    one_step()  # warm-up: allocates gradients and optimizer state
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    return {"step_seconds": (time.perf_counter() - start) / steps,
            "trainable": sum(p.numel() for p in parameters),
            "weights_mib": sum(p.numel() * p.element_size() for p in objective.parameters()) / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--adapter-dim", type=int, default=128)
    args = parser.parse_args()
    results = {}
    for name, adapter_dim in (("full fine-tuning", 0), ("Focus-Adapter", args.adapter_dim)):
        outcome = measure(train, args.model, args.batch, args.steps, adapter_dim)
        result = {**outcome["result"], "peak_mib": outcome["peak_mib"]}
        results[name] = result
        print(f"{name:16s}: {args.batch / result['step_seconds']:6.1f} pairs/s, training memory +{result['peak_mib']:.0f} MiB "
              f"over {result['weights_mib']:.0f} MiB of weights, {result['trainable'] / 1e6:.2f} M trainable parameters "
              f"({args.model}, batch {args.batch}, {args.steps} steps)")
    full, adapter = results["full fine-tuning"], results["Focus-Adapter"]
    saving = 1 - adapter["peak_mib"] / max(full["peak_mib"], 1e-9)
    total = 1 - (adapter["peak_mib"] + adapter["weights_mib"]) / (full["peak_mib"] + full["weights_mib"])
    speedup = full["step_seconds"] / adapter["step_seconds"]
    print(f"Focus-Adapter vs full: training memory {-saving:+.0%}, with the weights {-total:+.0%} "
          f"(CMER claims {-CLAIMED_MEMORY_SAVING:+.0%}), throughput {speedup:.2f}x (CMER claims {CLAIMED_SPEEDUP:.1f}x)")


if __name__ == "__main__":
    main()
