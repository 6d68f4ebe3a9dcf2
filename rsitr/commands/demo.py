"""Search real aerial images by text, offline, in under a minute on a CPU.

Indexes the 210 UC Merced Land Use images shipped with rsitr (public-domain USGS orthoimagery, 10 per class)
with the shipped default model (`rsitr models` says what it is and how it was trained), runs a few text queries
and prints the best hits with their land-use classes, then says how to browse the index in `rsitr serve`.

`rsitr demo --synthetic` runs the training path instead: it writes small coloured-shape "aerial" images and
captions, evaluates the tiny random OpenCLIP model, fine-tunes it with the full EBAKER objective (global + local
InfoNCE, EBA, KER) for a few epochs, and prints the paper-style table before and after (with SAR).

Examples:
  rsitr demo
  rsitr demo --synthetic --out rsitr-demo-synthetic
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rsitr.commands import positive_int
from rsitr.commands.options import add_batch_size_argument, add_inference_arguments, add_progress_argument
from rsitr.models import DEFAULT_PRETRAINED

DEMO_IMAGES = Path(__file__).resolve().parent.parent / "demo_data" / "ucm"
# (query, the UC Merced class a person would expect it to find)
DEMO_QUERIES = [
    ("many planes are parked near the terminal of an airport", "airplane"),
    ("a baseball field next to green trees", "baseballdiamond"),
    ("a beach with blue sea water and white waves", "beach"),
    ("a dense forest of green trees", "forest"),
    ("many cars are parked in a parking lot", "parkinglot"),
    ("a river passes through green trees", "river"),
    ("several white storage tanks", "storagetanks"),
]
SYNTHETIC_SETTINGS = [
    "model.name=rsitr-tiny-ViT", "model.pretrained=null",
    "data.synthetic.n_images=150", "data.synthetic.image_size=32",
    "method.drop_epoch=2", "method.drop_ratio=0.02", "method.keywords_top_k=32",
    "train.epochs=3", "train.batch_size=25", "train.lr=1e-3", "train.weight_decay=0.01", "train.warmup_steps=5",
    "eval.sar=true", "eval.sar_top_k=5",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="rsitr-demo", help="folder for the index (or generated data and run)")
    parser.add_argument("--top-k", type=positive_int, default=5, help="hits printed per query (default 5)")
    parser.add_argument("--synthetic", action="store_true",
                        help="the training demo on generated shapes with the tiny model instead")
    parser.add_argument("--epochs", type=positive_int, default=3, help="--synthetic: fine-tuning epochs")
    parser.add_argument("--seed", type=int, default=0, help="--synthetic: seed")
    add_batch_size_argument(parser)
    add_inference_arguments(parser)
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    return run_synthetic(args) if args.synthetic else run_search(args)


def run_search(args: argparse.Namespace) -> int:
    import time

    from rsitr.index import ArchiveIndex, BuildOptions
    from rsitr.models import get_pretrained_cfg, list_pretrained
    from rsitr.runtime import resolve_device, set_threads

    start = time.perf_counter()
    device = str(resolve_device(args.device))
    set_threads(args.threads)
    if DEFAULT_PRETRAINED not in list_pretrained():
        from rsitr.errors import UserError

        raise UserError(f"this installation ships no {DEFAULT_PRETRAINED!r} weights; run `rsitr demo --synthetic` "
                        f"instead")
    packaged = get_pretrained_cfg(DEFAULT_PRETRAINED)
    print(f"model: {packaged.architecture}, pretrained {DEFAULT_PRETRAINED}: {packaged.description}")
    index_dir = Path(args.out) / "ucm-index"
    # the demo's index covers the demo images of whichever installation runs it (a new virtual environment, a
    # fresh clone): relocated to this one's, its unchanged files are kept, matched by their path inside the folder
    index, _ = ArchiveIndex.build(index_dir, DEMO_IMAGES, packaged.architecture, DEFAULT_PRETRAINED,
                                  BuildOptions(batch_size=args.batch_size, device=device, precision=args.precision),
                                  progress=not args.no_progress, relocate=True)
    info = index.info()
    print(f"indexed {info['chips']} UC Merced images (10 per land-use class) into {index_dir}\n")
    found = 0
    for query, expected in DEMO_QUERIES:
        hits = index.search(query, args.top_k)
        classes = [Path(hit.path).stem.rsplit("_", 1)[0] for hit in hits]
        found += sum(c == expected for c in classes)
        print(f'"{query}"  ({sum(c == expected for c in classes)}/{len(hits)} of class {expected})')
        for rank, (hit, scene) in enumerate(zip(hits, classes), 1):
            print(f"  {rank}. {hit.score:7.3f}  {scene:18s} {hit.path}")
    index.close()
    total = len(DEMO_QUERIES) * args.top_k
    print(f"\n{found}/{total} hits of the expected class (chance {total / 21:.1f}); "
          f"{time.perf_counter() - start:.1f}s to load the model, index and search (after Python start-up)")
    print(f"Browse it: rsitr serve {index_dir}   (then open http://127.0.0.1:8000)")
    return 0


def run_synthetic(args: argparse.Namespace) -> int:
    import time

    from rsitr.config import load_config
    from rsitr.evaluate.report import format_table, write_reports
    from rsitr.evaluate.runner import evaluate_model
    from rsitr.runtime import set_threads
    from rsitr.training.trainer import Trainer

    start = time.perf_counter()
    set_threads(args.threads)
    config = load_config(None, SYNTHETIC_SETTINGS + [f"output_dir={args.out}", f"train.epochs={args.epochs}",
                                                     f"train.seed={args.seed}", f"device={args.device}",
                                                     f"precision={args.precision}", f"eval.batch_size={args.batch_size}"])
    trainer = Trainer(config, progress=not args.no_progress, overwrite=True)  # --out is the demo's own folder
    print(trainer.corpus.summary())
    test = trainer.corpus.split("test")
    before = evaluate_model(trainer.model, test, trainer.recipe, config.eval, name="tiny CLIP, random init",
                            progress=False, precision=trainer.precision)
    trainer.fit()
    after = evaluate_model(trainer.model, test, trainer.recipe, config.eval,
                           name=f"+ EBAKER fine-tuning ({args.epochs} epochs)", progress=False,
                           precision=trainer.precision)
    rows = {**before.rows, **after.rows}
    print(format_table(rows, title=f"test split of generated data ({len(test)} images, {len(test.captions)} captions)"))
    print("timings: " + ", ".join(f"{k} {v:.3f}s" for k, v in after.timings.items()))
    json_path, _ = write_reports(rows, args.out, {"timings": after.timings})
    print(f"results in {json_path}; total {time.perf_counter() - start:.1f}s")
    return 0
