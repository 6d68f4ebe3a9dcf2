"""FTF two-stage retrieval vs exhaustive fine scoring: time per query and mR, side by side in one run.

The gallery is generated: ``--scenes`` scene clusters and a vocabulary of ``--objects`` object vectors.
Each image belongs to one scene and shows a few objects; its patches are its objects and its scene plus
noise, its global embedding the scene plus a weak trace of its objects plus noise (so the global embedding
finds the scene reliably but the exact image only sometimes). Each query is a planted caption of one
gallery image: words naming some of that image's objects and its scene, and a global embedding built the
same way. Stage 1 must keep the right image in its top K; stage 2 must then pick it out by its objects.

mR: text->image recall over the whole gallery; image->text recall for the images that have a caption,
over all captions (images without one have nothing to retrieve).

    python benchmarks/two_stage.py [--gallery 10000] [--queries 100] [--recall-k 100] [--index exact]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from rsitr.evaluate.metrics import KS, image_to_text_ranks, text_to_image_ranks
from rsitr.retrieval.ftf_two_stage import exhaustive_fine_similarity, two_stage_similarity
from rsitr.retrieval.vector_index import INDEX_TYPES
from rsitr.similarity import global_similarity


def _unit(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=generator), dim=-1)


def make_retrieval_problem(args: argparse.Namespace) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Features ``two_stage_similarity`` takes, and ``caption_image [M]``: each caption's gallery image."""
    generator = torch.Generator().manual_seed(args.seed)
    dim, patches, words, objects_per_image = args.dim, args.patches, args.words, 4
    scenes = _unit((args.scenes, dim), generator)
    vocabulary = _unit((args.objects, dim), generator)
    image_scene = torch.randint(0, args.scenes, (args.gallery,), generator=generator)
    image_objects = torch.randint(0, args.objects, (args.gallery, objects_per_image), generator=generator)

    # Patches: every patch shows one of the image's objects or its scene (slot objects_per_image).
    visible = torch.cat([vocabulary[image_objects], scenes[image_scene].unsqueeze(1)], dim=1)
    shown = torch.randint(0, objects_per_image + 1, (args.gallery, patches), generator=generator)
    image_tokens = visible.gather(1, shown.unsqueeze(-1).expand(-1, -1, dim))
    image_tokens += args.token_noise * _unit((args.gallery, patches, dim), generator)
    object_trace = vocabulary[image_objects].mean(dim=1)
    image_global = scenes[image_scene] + args.object_trace * object_trace
    image_global += args.global_noise * _unit((args.gallery, dim), generator)

    caption_image = torch.randperm(args.gallery, generator=generator)[:args.queries]
    # Captions name 3 of the image's 4 objects and its scene, in a random order, then pad.
    named = torch.rand(args.queries, objects_per_image + 1, generator=generator).argsort(dim=1)[:, :3]
    named = torch.cat([named, torch.full((args.queries, 1), objects_per_image)], dim=1)
    said = named.gather(1, torch.randint(0, 4, (args.queries, words), generator=generator))
    text_tokens = visible[caption_image].gather(1, said.unsqueeze(-1).expand(-1, -1, dim))
    text_tokens += args.token_noise * _unit((args.queries, words, dim), generator)
    lengths = torch.randint(words // 2, words + 1, (args.queries, 1), generator=generator)
    text_mask = torch.arange(words) < lengths
    text_global = scenes[image_scene[caption_image]] + args.object_trace * object_trace[caption_image]
    text_global += args.global_noise * _unit((args.queries, dim), generator)
    features = dict(image_global=image_global, image_tokens=image_tokens, text_global=text_global,
                    text_tokens=text_tokens, text_mask=text_mask)
    return features, caption_image


def mean_recall(similarity: torch.Tensor, caption_image: torch.Tensor) -> float:
    """mR: R@1/5/10 text->image over the gallery and image->text over the captioned images, averaged."""
    captioned = caption_image.sort().values
    row_of = torch.full((similarity.shape[0],), -1, dtype=torch.long)
    row_of[captioned] = torch.arange(captioned.numel())
    i2t = image_to_text_ranks(similarity[captioned], row_of[caption_image])
    t2i = text_to_image_ranks(similarity, caption_image)
    recalls = [(ranks < k).float().mean().item() for ranks in (i2t, t2i) for k in KS]
    return 100.0 * sum(recalls) / len(recalls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gallery", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--recall-k", type=int, default=100)
    parser.add_argument("--index", choices=INDEX_TYPES, default="exact")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--patches", type=int, default=49)
    parser.add_argument("--words", type=int, default=20)
    parser.add_argument("--scenes", type=int, default=30)
    parser.add_argument("--objects", type=int, default=60)
    parser.add_argument("--object-trace", type=float, default=0.3, help="weight of objects in global embeddings")
    parser.add_argument("--global-noise", type=float, default=0.4)
    parser.add_argument("--token-noise", type=float, default=1.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    features, caption_image = make_retrieval_problem(args)
    print(f"gallery {args.gallery} images x {args.patches} patches, {args.queries} queries x <= {args.words} "
          f"words, D = {args.dim}, K = {args.recall_k}, index {args.index}, {torch.get_num_threads()} threads")

    started = time.perf_counter()
    exhaustive = exhaustive_fine_similarity(**features)
    exhaustive_seconds = time.perf_counter() - started
    result = two_stage_similarity(**features, recall_k=args.recall_k, index=args.index)
    two_stage_seconds = result.stage1_seconds + result.stage2_seconds

    coarse_mr = mean_recall(global_similarity(features["image_global"], features["text_global"]), caption_image)
    per_query = 1000.0 / args.queries
    shortlisted = (result.candidates == caption_image.unsqueeze(1)).any(dim=1).float().mean().item()
    print(f"global only (coarse) mR {coarse_mr:6.2f}   stage 1 keeps the true image for {100 * shortlisted:.1f}% "
          f"of queries")
    print(f"exhaustive fine      mR {mean_recall(exhaustive, caption_image):6.2f}   "
          f"{exhaustive_seconds * per_query:8.3f} ms/query")
    print(f"two-stage FTF        mR {mean_recall(result.similarity, caption_image):6.2f}   "
          f"{two_stage_seconds * per_query:8.3f} ms/query  (stage 1 {result.stage1_seconds * per_query:.3f}, "
          f"stage 2 {result.stage2_seconds * per_query:.3f}; index build {result.index_seconds:.2f} s once)")
    print(f"speed-up (exhaustive / two-stage time per query): {exhaustive_seconds / two_stage_seconds:.1f}x")


if __name__ == "__main__":
    main()
