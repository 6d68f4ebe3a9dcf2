"""Training pairs/s and peak memory of one optimisation step: baseline CLIP vs full EBAKER, same batch, each
on today's path (fp32, captions at the full 77-token context) and on the new default (captions trimmed to the
batch's longest real caption, encoders and KER head in the auto precision, scoring and losses in fp32).

Baseline: global InfoNCE only. EBAKER: + local similarity InfoNCE, + KER (masked keywords, 4-block head),
+ EBA (eliminating rows). Each variant runs in its own process: one warm-up step, then --steps timed steps
(forward, losses, backward, AdamW). Default model: the ViT-B-32 architecture, randomly initialised (nothing
is downloaded), batch 32, 224 px.

    python benchmarks/train_step.py [--model ViT-B-32 --batch 32 --steps 2 --methods full]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _measure import cpu_model, measure  # noqa: E402

CAPTIONS = ["many buildings and green trees are around a playground", "a viaduct shaped like an eight on bare land",
            "several boats are parked in the harbour near a bridge", "a white airplane is parked at the airport"]


def step(model_name: str, batch: int, steps: int, full: bool, new_path: bool, threads: int, prepare: bool,
         state=None):
    import torch

    import rsitr.training.objective

    from rsitr.config import MethodConfig
    from rsitr.models.keywords import build_keywords, mask_captions
    from rsitr.losses.eba import EliminateBeforeAlign
    from rsitr.models import create_model
    from rsitr.models.ker_head import KERHead
    from rsitr.models.precision import resolve_precision
    from rsitr.training.objective import Batch, RetrievalObjective

    if prepare:
        torch.set_num_threads(threads)
        precision = resolve_precision("auto", "cpu") if new_path else "fp32"
        if not new_path:  # today's objective encoded the full context
            rsitr.training.objective.trim_padding = lambda model, *tokens: tokens
        torch.manual_seed(0)
        model = create_model(model_name).model
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
        objective = RetrievalObjective(model, method, ker_head, eba, precision=precision)
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
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--methods", choices=("both", "baseline", "full"), default="both")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}, {args.threads} threads; {args.model} randomly initialised, batch {args.batch}, "
          f"{args.steps} timed steps")
    methods = {"baseline CLIP": False, "full EBAKER": True}
    if args.methods != "both":
        methods = {name: full for name, full in methods.items() if full == (args.methods == "full")}
    results = {}
    for name, full in methods.items():
        for path, new_path in (("today", False), ("new default", True)):
            result = measure(step, args.model, args.batch, args.steps, full, new_path, args.threads)
            results[name, path] = result
            rate = args.batch * args.steps / result["seconds"]
            print(f"{name:14s} {path:12s}: {rate:6.2f} pairs/s, peak +{result['peak_mib']:.0f} MiB")
        today, new = results[name, "today"], results[name, "new default"]
        print(f"{name:14s} new/today   : {today['seconds'] / new['seconds']:.2f}x pairs/s, "
              f"{new['peak_mib'] / max(today['peak_mib'], 1e-9):.2f}x peak memory")
    if len(methods) == 2:
        base, full = results["baseline CLIP", "today"], results["full EBAKER", "today"]
        print(f"ratio full/baseline (today): time per step {full['seconds'] / base['seconds']:.2f}x, "
              f"peak memory {full['peak_mib'] / max(base['peak_mib'], 1e-9):.2f}x")


if __name__ == "__main__":
    main()
