"""Chunked local similarity (Gram-matrix products) vs a naive einsum over the [N, M, P, L] cosine tensor.

Default: 1,000 images x 5,000 captions, ViT-B/32 sizes (D = 512, 49 patches, 77-token context with 8..30
real tokens). The naive einsum cannot hold the whole 1,000 x 5,000 tensor (about 75 GB), so it runs on the
first --naive-images images against all captions and its pairs/s is compared; its peak memory is for that
slice. Both run in their own process. Prints one line per method and the ratios.

    python benchmarks/similarity.py [--images 1000 --captions 5000 --naive-images 10]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _measure import measure  # noqa: E402


def inputs(images: int, captions: int, dim: int, patches: int, length: int):
    import torch

    generator = torch.Generator().manual_seed(0)
    image_tokens = torch.randn(images, patches, dim, generator=generator)
    text_tokens = torch.randn(captions, length, dim, generator=generator)
    lengths = torch.randint(8, 31, (captions,), generator=generator)
    mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    return image_tokens, text_tokens, mask


def chunked(images, captions, dim, patches, length, prepare, state=None):
    from rsitr.similarity import local_similarity

    if prepare:
        return inputs(images, captions, dim, patches, length)
    image_tokens, text_tokens, mask = state
    return float(local_similarity(image_tokens, text_tokens, mask).sum())


def naive(images, captions, dim, patches, length, prepare, state=None):
    import torch
    import torch.nn.functional as F

    if prepare:
        return inputs(images, captions, dim, patches, length)
    image_tokens, text_tokens, mask = state
    cosines = torch.einsum("npd,mld->nmpl", F.normalize(image_tokens, dim=-1), F.normalize(text_tokens, dim=-1))
    cosines = cosines * mask[None, :, None, :]
    return float(cosines.norm(dim=3).norm(dim=2).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--captions", type=int, default=5000)
    parser.add_argument("--naive-images", type=int, default=10)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--patches", type=int, default=49)
    parser.add_argument("--length", type=int, default=77)
    args = parser.parse_args()
    shape = (args.dim, args.patches, args.length)
    fast = measure(chunked, args.images, args.captions, *shape)
    slow = measure(naive, args.naive_images, args.captions, *shape)
    fast_rate = args.images * args.captions / fast["seconds"]
    slow_rate = args.naive_images * args.captions / slow["seconds"]
    print(f"chunked local similarity: {args.images} x {args.captions} pairs in {fast['seconds']:.2f}s "
          f"= {fast_rate:,.0f} pairs/s, peak +{fast['peak_mib']:.0f} MiB")
    print(f"naive einsum            : {args.naive_images} x {args.captions} pairs in {slow['seconds']:.2f}s "
          f"= {slow_rate:,.0f} pairs/s, peak +{slow['peak_mib']:.0f} MiB "
          f"(full {args.images} x {args.captions} would need "
          f"{args.images * args.captions * args.patches * args.length * 4 / 2**30:,.0f} GiB)")
    print(f"ratio: chunked is {fast_rate / slow_rate:.1f}x the naive throughput, using "
          f"{fast['peak_mib'] / max(slow['peak_mib'], 1e-9):.2f}x its peak memory for {args.images / args.naive_images:.0f}x the pairs")


if __name__ == "__main__":
    main()
