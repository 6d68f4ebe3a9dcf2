"""Whole-split evaluation time: today's path (fp32, captions at the full 77-token context, full D^2 Gram scoring)
vs the new default (captions at their real length in length-sorted batches, encoders in the auto precision,
block upper-triangle Gram or direct local scoring), side by side in one run, plus how far the two
similarity matrices agree (top-10 overlap per query, max abs difference) and their recall.

Default: the RSICD test split of ../shared/data/rsicd with the ViT-B-32 architecture, randomly initialised
(nothing is downloaded; recall is near chance, agreement and time are what count). --limit N keeps the first
N images (quick runs). --out FILE writes the numbers as JSON.

    python benchmarks/eval_speed.py [--data ../shared/data/rsicd/dataset_rsicd.json --limit 100 --out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from rsitr.data import CaptionCorpus, load_corpus
from rsitr.evaluate.metrics import recall_metrics
from rsitr.evaluate.runner import encode_corpus, fused_similarity
from rsitr.models import ScoringRecipe, TextFeatures, create_model
from rsitr.models.precision import resolve_precision
from rsitr.similarity import fuse, global_similarity

sys.path.insert(0, str(Path(__file__).parent))

from _measure import cpu_model  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "rsicd"


@torch.no_grad()
def full_context_captions(model, captions: list[str], batch_size: int) -> TextFeatures:
    """Today's caption encoding: batches in corpus order at the 77-token context, word tokens cut afterwards."""
    global_, tokens, mask = [], [], []
    for i in range(0, len(captions), batch_size):
        features = model.encode_text(model.tokenize(captions[i:i + batch_size]))
        keep = int(features.mask.sum(dim=1).max())
        global_.append(features.global_)
        tokens.append(features.tokens[:, :keep])
        mask.append(features.mask[:, :keep])
    length = max(t.shape[1] for t in tokens)
    return TextFeatures(torch.cat(global_), torch.cat([F.pad(t, (0, 0, 0, length - t.shape[1])) for t in tokens]),
                        torch.cat([F.pad(m, (0, length - m.shape[1])) for m in mask]))


def full_gram_local_similarity(image_tokens, text_tokens, text_mask, chunk: int = 256) -> torch.Tensor:
    """Today's local scoring: flattened full ``D x D`` Gram matrices, one matrix product per block."""
    def gram(tokens, mask=None):
        tokens = F.normalize(tokens, dim=-1)
        if mask is not None:
            tokens = tokens * mask.unsqueeze(-1)
        return torch.einsum("btd,bte->bde", tokens, tokens).flatten(1)

    rows = []
    for i in range(0, image_tokens.shape[0], chunk):
        image = gram(image_tokens[i:i + chunk])
        rows.append(torch.cat([image @ gram(text_tokens[j:j + chunk], text_mask[j:j + chunk]).T
                               for j in range(0, text_tokens.shape[0], chunk)], dim=1))
    return torch.cat(rows).clamp_min(1e-12).sqrt()


def top10_overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over rows of |top-10(a) & top-10(b)| / 10."""
    k = min(10, a.shape[1])
    top_a, top_b = a.topk(k, dim=1).indices, b.topk(k, dim=1).indices
    return float((top_a.unsqueeze(2) == top_b.unsqueeze(1)).any(dim=2).float().mean())


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHARED / "dataset_rsicd.json"))
    parser.add_argument("--images", default=None, help="image folder (default: images/ beside --data)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--precision", default="auto", help="the new path's precision (default auto)")
    parser.add_argument("--limit", type=int, default=0, help="keep the first N images (0 = all)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="torch threads (default: the CPUs this process may use; torch may pick fewer on a busy machine)")
    parser.add_argument("--out", default=None, help="write the results as JSON to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    if not data.is_file():
        raise SystemExit(f"{data} not found: this benchmark needs the RSICD caption file (see ../shared/README.md)")
    corpus = load_corpus(data, args.images or data.parent / "images").split(args.split)
    if args.limit:
        corpus = CaptionCorpus(corpus.name, corpus.images[:args.limit])
    precision = resolve_precision(args.precision, "cpu")
    model = create_model(args.model).model.eval()
    recipe = ScoringRecipe()
    n_images, n_captions = len(corpus), len(corpus.captions)
    print(f"CPU: {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{corpus.name}: {n_images} images, {n_captions} captions; {args.model} randomly initialised (no download); "
          f"new precision {precision}")

    # The fp32 encoding also times captions trimmed but in fp32, separating the two levers.
    fp32, _ = timed(encode_corpus, model, corpus, args.batch_size, progress=False, precision="fp32")
    old_text, old_text_seconds = timed(full_context_captions, model, corpus.captions, args.batch_size)
    new, _ = timed(encode_corpus, model, corpus, args.batch_size, progress=False, precision=precision)

    def old_score() -> torch.Tensor:
        sim = global_similarity(fp32.image.global_, old_text.global_)
        return fuse(sim, full_gram_local_similarity(fp32.image.tokens, old_text.tokens, old_text.mask),
                    recipe.global_weight, recipe.local_weight)

    old_sim, old_score_seconds = timed(old_score)
    new_sim, new_score_seconds = timed(fused_similarity, new, recipe)

    old = {"encode_images_s": fp32.image_seconds, "encode_captions_s": old_text_seconds, "score_s": old_score_seconds}
    new_row = {"encode_images_s": new.image_seconds, "encode_captions_s": new.text_seconds, "score_s": new_score_seconds}
    for row in (old, new_row):
        row["total_s"] = row["encode_images_s"] + row["encode_captions_s"] + row["score_s"]
    caption_image = new.caption_image
    trimmed_fp32_sim = fused_similarity(fp32, recipe)  # isolates the exactness of trimming + the new scoring
    agreement = {
        "fp32_trimmed_top10_overlap_text_to_image": top10_overlap(old_sim.T, trimmed_fp32_sim.T),
        "fp32_trimmed_max_abs_difference": float((old_sim - trimmed_fp32_sim).abs().max()),
        "top10_overlap_image_to_text": top10_overlap(old_sim, new_sim),
        "top10_overlap_text_to_image": top10_overlap(old_sim.T, new_sim.T),
        "max_abs_difference": float((old_sim - new_sim).abs().max()),
        "mR_today": recall_metrics(old_sim, caption_image)["mR"],
        "mR_new": recall_metrics(new_sim, caption_image)["mR"],
    }
    print(f"{'stage':18s} {'today (fp32, 77 ctx)':>21s} {'fp32 trimmed':>13s} {'new (' + precision + ', trimmed)':>22s} {'ratio':>7s}")
    print(f"{'encode images':18s} {old['encode_images_s']:20.2f}s {'':>13s} {new_row['encode_images_s']:21.2f}s "
          f"{old['encode_images_s'] / new_row['encode_images_s']:6.2f}x")
    print(f"{'encode captions':18s} {old['encode_captions_s']:20.2f}s {fp32.text_seconds:12.2f}s "
          f"{new_row['encode_captions_s']:21.2f}s {old['encode_captions_s'] / new_row['encode_captions_s']:6.2f}x")
    print(f"{'score (global+local)':18s} {old['score_s']:18.2f}s {'':>13s} {new_row['score_s']:21.2f}s "
          f"{old['score_s'] / new_row['score_s']:6.2f}x")
    print(f"{'whole evaluation':18s} {old['total_s']:20.2f}s {'':>13s} {new_row['total_s']:21.2f}s "
          f"{old['total_s'] / new_row['total_s']:6.2f}x")
    print("agreement with today's fused similarity matrix: " + ", ".join(f"{k} {v:.4g}" for k, v in agreement.items()))
    if args.out:
        result = {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                  "model": f"{args.model} (randomly initialised)", "split": corpus.name, "images": n_images,
                  "captions": n_captions, "precision": precision, "fp32_trimmed_captions_s": fp32.text_seconds,
                  "today": old, "new": new_row, "agreement": agreement}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"written {args.out}")


if __name__ == "__main__":
    main()
