"""Zero-shot scene classification of labelled images: top-1, top-5 and mean per-class recall.

The input is a folder with one sub-folder per class (UC Merced Land Use, AID, NWPU-RESISC45 as they ship), or a
caption file whose images carry scenes (a CSV scene column, NWPU-Captions groups, <scene>_<n>.jpg file names).
Class names are the cleaned folder names (baseball_diamond -> "baseball diamond") unless --names gives them:
one name per line in sorted folder order, or '<folder>: <name>' lines. Each class's classifier is the normalised
mean of its prompts' text embeddings (default templates: rsitr/evaluate/zero_shot_templates.txt). --orientations 4
averages each image's embedding over its 4 rotations (aerial images have no up), for 4x the image encodes.
With neither --model nor --pretrained the shipped model is used (`rsitr models` lists it). UC Merced Land Use,
AID and NWPU-RESISC45 are not shipped; their folders go where ../shared/data/... goes below.

Examples:
  rsitr classify ../shared/data/ucm/captions_ucm.csv --images ../shared/data/ucm/images --split test
  rsitr classify ../shared/data/ucm/captions_ucm.csv --images ../shared/data/ucm/images --split test \
      --out ucm_zero_shot.json --confusion ucm_confusion.png
"""

from __future__ import annotations

import argparse

from rsitr.commands.options import (SPLIT_CHOICES, add_batch_size_argument, add_inference_arguments,
                                    add_model_arguments, add_orientations_argument, add_progress_argument,
                                    add_workers_argument, check_readable, model_arguments)
from rsitr.terminal import printable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="folder of class sub-folders, or a caption file with scene classes")
    parser.add_argument("--images", default=None, help="image folder of a caption file")
    parser.add_argument("--split", choices=SPLIT_CHOICES, default=None,
                        help="only this split of a caption file (default: every image)")
    add_model_arguments(parser)
    parser.add_argument("--names", default=None, help="class names file (one per line, or '<folder>: <name>')")
    parser.add_argument("--templates", default=None, help="prompt templates file, one per line with {} for the name")
    parser.add_argument("--out", default=None, metavar="FILE",
                        help="write metrics, per-class figures and every image's top-5 to this JSON file")
    parser.add_argument("--confusion", default=None, metavar="IMAGE", help="draw the confusion matrix (e.g. out.png)")
    add_batch_size_argument(parser)
    add_workers_argument(parser)
    add_inference_arguments(parser, runtime=True)
    add_orientations_argument(parser)
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    check_readable(("source", args.source), ("--images", args.images), ("--names", args.names),
                   ("--templates", args.templates))
    model_name, pretrained = model_arguments(args)
    from rsitr.data.classes import class_names, read_labeled_images

    images = read_labeled_images(args.source, args.images, args.split)  # before torch and the model load
    names = class_names(images.classes, args.names)
    from rsitr.evaluate.report import plot_confusion
    from rsitr.evaluate.zero_shot import classify_images, read_templates
    from rsitr.models import create_model
    from rsitr.models.onnx_model import on_runtime
    from rsitr.runtime import resolve_device, set_threads

    templates = read_templates(args.templates)
    set_threads(args.threads)
    device = resolve_device(args.device)
    loaded = create_model(model_name, pretrained, device=device)
    model, pretrained = on_runtime(loaded, device, args.precision, args.runtime), loaded.pretrained
    print(f"model: {model.model_name}, pretrained {pretrained}")
    print(f"{args.source}: {len(images)} images in {len(names)} classes; {len(templates)} prompt templates")
    classification = classify_images(model, images, names, templates, args.batch_size, device, args.precision,
                                     args.workers, progress=not args.no_progress, orientations=args.orientations)
    result = classification.result
    if classification.skipped:
        print(f"skipped {len(classification.skipped)} unreadable image(s), e.g. {printable(classification.skipped[0])}")
    width = max(len(name) for name in names)
    for name, count, recall in zip(names, result.confusion.sum(dim=1).tolist(), result.per_class_recall):
        print(f"  {name:<{width}}  {count:5d} images  recall {'-' if count == 0 else f'{100 * recall:5.1f}%'}")
    top5 = f"{100 * result.top5:.2f}%" if result.top5 is not None else "n/a (5 classes or fewer)"
    print(f"top-1 {100 * result.top1:.2f}%  top-5 {top5}  mean per-class recall "
          f"{100 * result.mean_per_class_recall:.2f}%  (chance {100 * result.chance:.2f}%, "
          f"{len(classification.kept)} images)")
    if args.out:
        record = {"source": str(args.source), "model": model.model_name,
                  "pretrained": pretrained, "precision": args.precision, "orientations": args.orientations,
                  "templates": templates,
                  **classification.to_dict(images)}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=2))
        print(f"written {args.out}")
    if args.confusion:
        title = f"{Path(args.source).name}: top-1 {100 * result.top1:.1f}%"
        print(f"written {plot_confusion(result.confusion.tolist(), names, args.confusion, title)}")
    return 0
