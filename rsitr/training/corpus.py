"""The corpus a run trains and evaluates on, from its data config: caption files (merged) or generated data."""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from rsitr.config import DataConfig
from rsitr.data import CaptionCorpus, DataError, load_corpus, make_synthetic_dataset, merge_corpora
from rsitr.data.phash import HashCache


def check_files(config: DataConfig) -> None:
    """Raise :class:`DataError` naming every configured caption file or image folder that does not exist."""
    missing = [f"{spec.name or Path(spec.captions).stem}: {path}" for spec in config.datasets
               for path in (spec.captions, spec.images) if not Path(path).exists()]
    if missing:
        raise DataError("missing dataset files: " + "; ".join(missing) + ". Fix: download the datasets and put "
                        "them where configs/data/*.yaml point, or override the paths in the config")


def _load_each(config: DataConfig, output_dir: Path, seed: int) -> list[CaptionCorpus]:
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
    return corpora


def build_corpus(config: DataConfig, output_dir: Path, seed: int = 0, progress: bool = True) -> CaptionCorpus:
    """Load every configured caption file; several are merged without test leakage or near-duplicates (reported).

    The images' pHashes are cached in ``output_dir/phash-cache.json``, so a resumed run does not hash again.
    """
    corpora = _load_each(config, output_dir, seed)
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


def dataset_splits(config: DataConfig, output_dir: Path, split: str, seed: int = 0) -> dict[str, CaptionCorpus]:
    """Each configured dataset's own ``split`` (not the merged union), by dataset name.

    Papers that train one model on merged datasets report it on each dataset's own test split, with every
    test image of that split (de-duplication only decides what a merged *training* set holds).
    """
    return {corpus.name: corpus.split(split) for corpus in _load_each(config, output_dir, seed)}
