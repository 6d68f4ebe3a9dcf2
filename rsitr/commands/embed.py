"""Compute image and/or caption embeddings of a folder, an image list or a caption file into Parquet shards.

Examples:
  rsitr embed /data/scenes --out scenes_emb --pretrained runs/ebaker/checkpoints/latest.pt
  rsitr embed captions_ucm.csv --images ucm/images --out ucm_emb --pretrained ckpt.pt --modality both --dtype fp32
  rsitr embed my_images.txt --images /data --out emb --model ViT-B-32 --pretrained openai --no-normalize
Writes <out>/part-00000.parquet ... (columns id, path, [caption], image_embedding / text_embedding) and
<out>/_manifest.json; read them with pandas.read_parquet(out) or pyarrow.parquet.read_table(out). One row per
image (folder, list: one path per line) or per caption (caption file). The vectors are the model's own global
embeddings, L2-normalised unless --no-normalize. Unreadable images are skipped and counted. Running the same
command again resumes an interrupted run at the first missing shard.
"""

from __future__ import annotations

import argparse

INTERRUPTED_HINT = "Run the same command again to resume: finished shards are kept."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rsitr.commands.options import add_inference_arguments

    parser.add_argument("source", help="folder of images, image list (one path per line) or caption file")
    parser.add_argument("--out", required=True, help="output folder for the Parquet shards")
    parser.add_argument("--images", default=None,
                        help="image folder of a caption file; root of an image list's relative paths")
    parser.add_argument("--model", default="ViT-B-32", help="OpenCLIP model name (default ViT-B-32)")
    parser.add_argument("--pretrained", default=None, help="OpenCLIP tag, OpenCLIP checkpoint or rsitr checkpoint")
    parser.add_argument("--modality", choices=("image", "text", "both"), default=None,
                        help="what to embed (default: both for a caption file, else image)")
    parser.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16", help="stored vector type (default fp16)")
    parser.add_argument("--no-normalize", action="store_true", help="store the vectors as the model gives them")
    parser.add_argument("--shard-size", type=int, default=10_000, help="rows per Parquet shard (default 10000)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="image loading processes (default 0)")
    add_inference_arguments(parser)
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rsitr.index.embeddings import EmbedSettings, embed_to_parquet, read_embed_input
    from rsitr.models.factory import load_model
    from rsitr.models.precision import set_threads
    from rsitr.training.trainer import resolve_device

    data = read_embed_input(args.source, args.images)
    modality = args.modality or ("both" if data.kind == "captions" else "image")
    settings = EmbedSettings(modalities=("image", "text") if modality == "both" else (modality,), dtype=args.dtype,
                             normalize=not args.no_normalize, shard_size=args.shard_size, precision=args.precision)
    set_threads(args.threads)
    device = resolve_device(args.device)
    pretrained = str(Path(args.pretrained).resolve()) if args.pretrained and Path(args.pretrained).is_file() \
        else args.pretrained
    model, _ = load_model(args.model, pretrained, device)
    name = getattr(model, "model_name", args.model)
    print(f"{args.source}: {len(data.items)} rows ({data.kind}); embedding {modality} with {name}")
    summary = embed_to_parquet(model, data, args.out, settings, name, pretrained, args.batch_size, device,
                               args.workers, progress=not args.no_progress)
    resumed = f" ({summary.reused_shards} kept from an earlier run)" if summary.reused_shards else ""
    print(f"written {summary.rows} rows in {summary.shards} shard(s){resumed} to {summary.out_dir}")
    if summary.skipped:
        print(f"skipped {len(summary.skipped)} unreadable image(s), e.g. {summary.skipped[0]} "
              f"(listed in {summary.out_dir}/_manifest.json)")
    return 0
