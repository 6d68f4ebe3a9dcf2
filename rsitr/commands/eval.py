"""Evaluate a model on a dataset split and print the paper-style R@K / mR table.

The --pretrained value is a shipped tag, an OpenCLIP tag, an OpenCLIP checkpoint file, or an `rsitr train`
checkpoint or run folder (its architecture and scoring recipe, e.g. its fusion weights, are taken from the
checkpoint). With neither --model nor --pretrained the shipped model is used (`rsitr models` lists it). An OpenCLIP
tag (--model ViT-B-32 --pretrained openai) needs its weights in the Hugging Face cache or a connection.

Examples (RSICD and UCM-Captions lie in ../shared/data in a checkout):
  rsitr eval --data ../shared/data/ucm/dataset_ucm.json --images ../shared/data/ucm/images --sar
  rsitr eval --data ../shared/data/ucm/captions_ucm.csv --images ../shared/data/ucm/images --two-stage --recall-k 50
  rsitr eval --data ../shared/data/rsicd/dataset_rsicd.json --images ../shared/data/rsicd/images \
      --pretrained runs/ucm   # its best epoch by validation mR, after the first `rsitr train --help` example
"""

from __future__ import annotations

import argparse

from rsitr.commands import positive_int
from rsitr.commands.options import (SPLIT_CHOICES, add_batch_size_argument, add_inference_arguments,
                                    add_model_arguments, add_orientations_argument, add_progress_argument,
                                    add_workers_argument, check_readable, model_arguments)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True,
                        help="caption file: Karpathy JSON, NWPU-Captions JSON, CSV filepath,caption[,split][,scene] "
                             "or the reference code's CSV filename,title (its rows are taken as --split)")
    parser.add_argument("--images", required=True, help="folder the caption file's image names are relative to")
    add_model_arguments(parser)
    parser.add_argument("--split", default="test", choices=SPLIT_CHOICES,
                        help="split to evaluate (default test)")
    parser.add_argument("--strict", action="store_true",
                        help="refuse a caption file with empty captions (default: drop them with a warning)")
    add_batch_size_argument(parser)
    add_workers_argument(parser)
    add_inference_arguments(parser, runtime=True)
    add_orientations_argument(parser)
    parser.add_argument("--global-only", action="store_true", help="score with the global cosine only (no local)")
    parser.add_argument("--sar", action="store_true", help="also report SAR (sort after reversed retrieval; on without it for a model whose "
                             "training run evaluated with SAR)")
    parser.add_argument("--sar-top-k", type=positive_int, default=30,
                        help="--sar: candidates per query re-sorted by the reverse retrieval (default 30)")
    parser.add_argument("--sar-variant", choices=("rank_sum", "reverse_rank"), default="rank_sum",
                        help="rank_sum: rsitr's reading of SAR (not in the released code); reverse_rank: GaLR's "
                             "re-sort of the top-k by reverse rank")
    parser.add_argument("--scene-prior", type=float, default=0.0, metavar="WEIGHT",
                        help="also report CMER's scene prior: add WEIGHT x P(caption speaks of the image's scene); "
                             "needs scene classes (RSICD/RSITMD file names, NWPU classes or a CSV scene column). "
                             "It uses the gallery's scene labels, which the standard protocol does not give a model")
    parser.add_argument("--two-stage", action="store_true",
                        help="also report FTF two-stage retrieval (coarse recall, fine re-ranking)")
    parser.add_argument("--recall-k", type=positive_int, default=100, help="candidates per query for --two-stage")
    parser.add_argument("--out", default=None, help="folder for results.json / results.csv")
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    check_readable(("--data", args.data), ("--images", args.images))
    model_name, pretrained = model_arguments(args)
    from rsitr.data import DataError, load_corpus

    # The data is read before torch and the model load: a wrong file or folder is one line at once.
    corpus = load_corpus(args.data, args.images, strict=args.strict, split=args.split).split(args.split)
    if len(corpus) == 0:
        raise DataError(f"has no images in split {args.split!r}", path=args.data,
                        fix="pick another --split (the summary of `rsitr data inspect` lists the splits)")
    from dataclasses import replace

    from rsitr.config import EvalConfig
    from rsitr.evaluate.report import format_table, write_reports
    from rsitr.evaluate.runner import encode_corpus, evaluate_encoded
    from rsitr.models import create_model
    from rsitr.models.onnx_model import on_runtime
    from rsitr.data.augment import ORIENTATION_COUNTS
    from rsitr.models.precision import resolve_precision
    from rsitr.runtime import resolve_device, set_threads

    set_threads(args.threads)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    loaded = create_model(model_name, pretrained, device=device)
    # a trained checkpoint's rows name its run, not the model's name
    model, name = on_runtime(loaded, device, args.precision, args.runtime), loaded.label
    if loaded.pretrained:
        print(f"model: {loaded.name}, weights from {loaded.pretrained}")
    else:
        print(f"model: {name} with RANDOM weights (no --pretrained): the figures below are chance level")
    recipe = replace(loaded.recipe, local=False) if args.global_only else loaded.recipe
    config = EvalConfig(split=args.split, batch_size=args.batch_size, sar=args.sar or recipe.sar,
                        sar_top_k=args.sar_top_k, sar_variant=args.sar_variant, scene_prior=args.scene_prior,
                        two_stage=args.two_stage, recall_k=args.recall_k)
    print(corpus.summary())
    encoded = encode_corpus(model, corpus, args.batch_size, device, args.workers, progress=not args.no_progress,
                            scenes=args.scene_prior > 0, precision=precision,
                            keep_padding=recipe.keeps_padding, image_views=ORIENTATION_COUNTS[args.orientations])
    evaluation = evaluate_encoded(encoded, recipe, config, name=name)
    print(format_table(evaluation.rows, title=f"{corpus.name} ({len(corpus)} images, {encoded.caption_image.numel()} captions)"))
    print("timings: " + ", ".join(f"{k} {v:.3f}s" for k, v in evaluation.timings.items()))
    if args.out:
        json_path, csv_path = write_reports(evaluation.rows, args.out, {"timings": evaluation.timings})
        print(f"written {json_path} and {csv_path}")
    return 0
