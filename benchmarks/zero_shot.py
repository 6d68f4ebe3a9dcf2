"""Zero-shot scene classification of a model on the shared data: UC Merced (21 classes) and RSICD (31 scenes).

Fills docs/RESULTS.md's zero-shot table: runs ``rsitr classify``'s logic (default remote-sensing templates) on the
test split of each caption file (images the model did not train on), prints the CPU model, each dataset's
top-1 / mean per-class recall next to chance, and the table's row; writes everything to
``benchmarks/results/zero_shot.json`` under ``--label`` (other labels' entries are kept).

    python benchmarks/zero_shot.py --model rsitr-small --pretrained runs/small/checkpoints/latest.pt \\
        --label "rsitr-small, from scratch"
    python benchmarks/zero_shot.py --model rsitr-tiny-ViT --label "rsitr-tiny-ViT, random init"
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _measure import cpu_model  # noqa: E402
from rsitr.commands.options import add_device_argument  # noqa: E402
from rsitr.data.classes import class_names, read_labeled_images  # noqa: E402
from rsitr.evaluate.zero_shot import classify_images, read_templates  # noqa: E402
from rsitr.models import create_model  # noqa: E402
from rsitr.runtime import resolve_device, set_threads  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATASETS = {"ucm": ("ucm/captions_ucm.csv", "ucm/images"), "rsicd": ("rsicd/captions_rsicd.csv", "rsicd/images")}
RESULTS = Path(__file__).resolve().parent / "results" / "zero_shot.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="rsitr-tiny-ViT")
    parser.add_argument("--pretrained", default=None, help="OpenCLIP tag / checkpoint or rsitr checkpoint")
    parser.add_argument("--label", required=True, help="the table row's name, e.g. 'rsitr-small, from scratch'")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder holding ucm/ and rsicd/")
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch-size", type=int, default=128)
    add_device_argument(parser)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--orientations", type=int, choices=(1, 4, 8), default=1,
                        help="average each image's embedding over this many orientations (rsitr classify's option)")
    args = parser.parse_args()

    data = Path(args.data)
    if not all((data / captions).is_file() for captions, _ in DATASETS.values()):
        raise SystemExit(f"{data} lacks ucm/captions_ucm.csv or rsicd/captions_rsicd.csv; pass --data")
    set_threads(args.threads)
    device = resolve_device(args.device)
    model = create_model(args.model, args.pretrained, device=device).model
    templates = read_templates()
    print(f"CPU: {cpu_model()}; device {device}; model {args.model} ({args.pretrained or 'random init'}); "
          f"precision {args.precision}; {len(templates)} default templates; split {args.split}; "
          f"{args.orientations} orientation(s)")
    entry = {"model": args.model, "pretrained": args.pretrained, "split": args.split, "cpu": cpu_model(),
             "orientations": args.orientations}
    for name, (captions, images_dir) in DATASETS.items():
        images = read_labeled_images(data / captions, data / images_dir, args.split)
        start = time.perf_counter()
        run = classify_images(model, images, class_names(images.classes), templates, args.batch_size, device,
                              args.precision, progress=False, orientations=args.orientations)
        result = run.result
        entry[name] = {**result.metrics(), "classes": len(images.classes), "images": len(run.kept),
                       "skipped": len(run.skipped), "seconds": round(time.perf_counter() - start, 1)}
        print(f"{name}: {len(run.kept)} images, {len(images.classes)} classes: top-1 {100 * result.top1:.1f}% "
              f"(chance {100 * result.chance:.1f}%), top-5 {100 * result.top5:.1f}%, mean per-class recall "
              f"{100 * result.mean_per_class_recall:.1f}%")
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results[args.label] = entry
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    ucm, rsicd = entry["ucm"], entry["rsicd"]
    print(f"written {RESULTS}\ndocs/RESULTS.md row:\n"
          f"| {args.label} | {100 * ucm['top1']:.1f} (chance {100 * ucm['chance_top1']:.1f}) "
          f"| {100 * rsicd['top1']:.1f} (chance {100 * rsicd['chance_top1']:.1f}) |")


if __name__ == "__main__":
    main()
