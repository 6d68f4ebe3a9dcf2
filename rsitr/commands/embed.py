"""Compute image and/or caption embeddings of a folder, an image list or a caption file into Parquet shards.

Writes <out>/part-00000.parquet ... (columns id, path, [caption], image_embedding / text_embedding) and
<out>/_manifest.json; read them with pandas.read_parquet(out) or pyarrow.parquet.read_table(out). One row per
image (folder, list: one path per line) or per caption (caption file). The vectors are the model's own global
embeddings, L2-normalised unless --no-normalize. Unreadable images are skipped and counted. Running the same
command again resumes an interrupted run at the first missing shard. With neither --model nor --pretrained the
shipped model is used (`rsitr models` lists it); --model ViT-B-32 --pretrained openai (an OpenCLIP tag) needs
those weights in the Hugging Face cache or a connection, --pretrained runs/x/checkpoints/latest.pt an `rsitr train`
run.

Examples:
  rsitr embed rsitr/demo_data/ucm --out ucm_emb
  rsitr embed ../shared/data/ucm/captions_ucm.csv --images ../shared/data/ucm/images --split test --out ucm_emb_test \
      --modality both --dtype fp32
"""

from __future__ import annotations

import argparse

from rsitr.commands import positive_int
from rsitr.commands.options import (SPLIT_CHOICES, add_batch_size_argument, add_engine_arguments,
                                    add_inference_arguments, add_model_arguments, add_progress_argument,
                                    add_workers_argument, check_readable, model_arguments)
from rsitr.terminal import printable

INTERRUPTED_HINT = "Run the same command again to resume: finished shards are kept."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="folder of images, image list (one path per line) or caption file")
    parser.add_argument("--out", required=True, help="output folder for the Parquet shards")
    parser.add_argument("--images", default=None,
                        help="image folder of a caption file; root of an image list's relative paths")
    parser.add_argument("--split", choices=SPLIT_CHOICES, default=None,
                        help="only this split of a caption file (default: every image)")
    add_model_arguments(parser)
    parser.add_argument("--modality", choices=("image", "text", "both"), default=None,
                        help="what to embed (default: both for a caption file, else image)")
    parser.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16", help="stored vector type (default fp16)")
    parser.add_argument("--no-normalize", action="store_true", help="store the vectors as the model gives them")
    parser.add_argument("--shard-size", type=positive_int, default=10_000, help="rows per Parquet shard (default 10000)")
    add_batch_size_argument(parser)
    add_workers_argument(parser)
    add_engine_arguments(parser, "shards encoded by a Ray actor pool (images only; needs `pip install 'rsitr[ray]'`; "
                                 "--out must be shared by the cluster's nodes)")
    add_inference_arguments(parser, runtime=True)
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    check_readable(("source", args.source), ("--images", args.images))
    model_name, pretrained = model_arguments(args)
    if args.engine == "ray":
        from rsitr.inference.distributors import check_engine

        check_engine(args.address)  # a missing extra or a dead address is one line before the model loads
    from rsitr.inference.embed import EmbedSettings, embed_to_parquet, read_embed_input
    from rsitr.models import create_model
    from rsitr.models.onnx_model import on_runtime
    from rsitr.runtime import resolve_device, set_threads

    data = read_embed_input(args.source, args.images, args.split)
    modality = args.modality or ("both" if data.kind == "captions" else "image")
    settings = EmbedSettings(modalities=("image", "text") if modality == "both" else (modality,), dtype=args.dtype,
                             normalize=not args.no_normalize, shard_size=args.shard_size, precision=args.precision)
    set_threads(args.threads)
    device = resolve_device(args.device)
    loaded = create_model(model_name, pretrained, device=device)  # a checkpoint's path made absolute for the manifest
    model, name, pretrained = on_runtime(loaded, device, args.precision, args.runtime), loaded.name, loaded.pretrained
    print(f"{args.source}: {len(data.items)} rows ({data.kind}); embedding {modality} with {name}, pretrained "
          f"{pretrained}")
    if args.engine == "ray":
        from rsitr.inference.embed import embed_with_ray

        summary = embed_with_ray(model.cpu(), data, args.out, settings, name, pretrained, args.batch_size,
                                 args.address, args.threads, args.ray_actors)
    else:
        summary = embed_to_parquet(model, data, args.out, settings, name, pretrained, args.batch_size, device,
                                   args.workers, progress=not args.no_progress)
    resumed = f" ({summary.reused_shards} kept from an earlier run)" if summary.reused_shards else ""
    print(f"written {summary.rows} rows in {summary.shards} shard(s){resumed} to {summary.out_dir}")
    if summary.skipped:
        print(f"skipped {len(summary.skipped)} unreadable image(s), e.g. {printable(summary.skipped[0])} "
              f"(listed in {summary.out_dir}/_manifest.json)")
    return 0
