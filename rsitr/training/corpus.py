"""The corpus a run trains and evaluates on, from its data config: caption files (merged) or generated data."""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from rsitr.config import DataConfig
from rsitr.data import CaptionCorpus, DataError, load_corpus, make_synthetic_dataset, merge_corpora
from rsitr.data.phash import HashCache


def build_corpus(config: DataConfig, output_dir: Path, seed: int = 0, progress: bool = True) -> CaptionCorpus:
    """Load every configured caption file; several are merged without test leakage or near-duplicates (reported).

    The images' pHashes are cached in ``output_dir/phash-cache.json``, so a resumed run does not hash again.
    """
    corpora = [load_corpus(spec.captions, spec.images, name=spec.name, seed=config.split_seed, strict=config.strict)
               for spec in config.datasets]
    if config.synthetic.n_images > 0:
        spec = config.synthetic
        # One folder per setting, written once: resumed runs and other ranks reuse it instead of rewriting it.
        root = Path(output_dir) / "synthetic-data" / f"n{spec.n_images}-px{spec.image_size}-seed{seed}"
        caption_file = root / "dataset_synthetic.json"
        if not caption_file.is_file():
            make_synthetic_dataset(root, spec.n_images, spec.image_size, seed=seed)
        corpora.append(load_corpus(caption_file, root / "images", name="synthetic"))
    if len(corpora) == 1:
        corpus = corpora[0]
    else:
        corpus, report = merge_corpora(corpora, max_distance=config.dedup_max_distance, progress=progress,
                                       cache=HashCache(Path(output_dir) / "phash-cache.json"))
        tqdm.write(report.summary())
    if not corpus.counts()["train"]["images"]:
        raise DataError(f"{corpus.name} has no training images",
                        fix="give the caption files' entries split 'train' (a file without splits gets a seeded "
                            "80/10/10 split), or add a dataset with a train split")
    return corpus
