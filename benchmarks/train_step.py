"""Training pairs/s and peak memory of one optimisation step: baseline CLIP vs full EBAKER, same batch.

Baseline: global InfoNCE only. EBAKER: + local similarity InfoNCE, + KER (masked keywords, 4-block head),
+ EBA (eliminating rows). Each variant runs in its own process: one warm-up step, then --steps timed steps
(forward, losses, backward, AdamW). Default model: the ViT-B-32 architecture, randomly initialised (nothing
is downloaded), batch 16, 224 px.

    python benchmarks/train_step.py [--model ViT-B-32 --batch 16 --steps 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _measure import measure  # noqa: E402

CAPTIONS = ["many buildings and green trees are around a playground", "a viaduct shaped like an eight on bare land",
            "several boats are parked in the harbour near a bridge", "a white airplane is parked at the airport"]


def step(model_name: str, batch: int, steps: int, full: bool, prepare: bool, state=None):
    import torch

    from rsitr.config import MethodConfig
    from rsitr.keywords import build_keywords, mask_captions
    from rsitr.losses.eba import EliminateBeforeAlign
    from rsitr.models import create_retrieval_model
    from rsitr.models.ker_head import KERHead
    from rsitr.training.objective import Batch, RetrievalObjective

    if prepare:
        torch.manual_seed(0)
        model = create_retrieval_model(model_name, None)
        method = MethodConfig(local=full, eba=full, ker=full)
        size = model.clip.visual.image_size
        captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(batch)]
        tokens = model.tokenize(captions)
        batch_data = Batch(torch.randn(batch, 3, *size), tokens, torch.arange(batch), torch.arange(batch))
        ker_head = eba = None
        if full:
            keywords = build_keywords({"bench": CAPTIONS}, top_k=16)
            batch_data.masked_tokens, batch_data.mask_labels = mask_captions(
                captions, model.tokenizer, "keyword", keywords, generator=torch.Generator().manual_seed(0))
            ker_head = KERHead(model.embed_dim, model.vocab_size)
            eba = EliminateBeforeAlign(batch, drop_epoch=2, drop_ratio=0.1)
            eba.record(torch.arange(batch), torch.linspace(0, 1, batch))
            eba.start_epoch(2)
        objective = RetrievalObjective(model, method, ker_head, eba)
        objective.eliminating = full
        optimizer = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=1e-5)

        def one_step():
            loss, _ = objective(batch_data)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        one_step()  # warm-up: allocates optimizer state
        return one_step
    for _ in range(steps):
        state()
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    results = {}
    for name, full in (("baseline CLIP", False), ("full EBAKER", True)):
        results[name] = measure(step, args.model, args.batch, args.steps, full)
        rate = args.batch * args.steps / results[name]["seconds"]
        print(f"{name:14s}: {rate:6.1f} pairs/s, peak +{results[name]['peak_mib']:.0f} MiB "
              f"({args.model}, batch {args.batch}, {args.steps} steps)")
    base, full = results["baseline CLIP"], results["full EBAKER"]
    print(f"ratio full/baseline: time per step {full['seconds'] / base['seconds']:.2f}x, "
          f"peak memory {full['peak_mib'] / max(base['peak_mib'], 1e-9):.2f}x")


if __name__ == "__main__":
    main()
