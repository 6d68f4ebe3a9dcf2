"""Generated data: deterministic per seed, captions describe the pixels, one caption file per layout."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rsitr.data import CaptionCorpus, load_corpus, make_synthetic_dataset
from rsitr.data.synthetic import COLOURS, SHAPES, synthetic_captions


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        make_synthetic_dataset(tmp_path / name, n_images=10, seed=seed)
    assert file_bytes(tmp_path / "a") == file_bytes(tmp_path / "b")
    assert file_bytes(tmp_path / "a") != file_bytes(tmp_path / "c")


def test_captions_describe_the_image(synthetic_corpus: CaptionCorpus) -> None:
    for record in synthetic_corpus.images:
        colour = next(c for c in COLOURS if f" {c} " in record.captions[0])
        shape = next(s for s in SHAPES if s in record.captions[0])
        assert record.captions == tuple(synthetic_captions(colour, shape, record.scene))
        pixels = np.asarray(Image.open(record.path).convert("RGB")).reshape(-1, 3)
        assert (pixels == COLOURS[colour]).all(axis=1).sum() > 50  # the shape is drawn in the named colour
        assert record.path.name.startswith(f"{record.scene}_") and Image.open(record.path).size == (64, 64)
    assert len({record.captions for record in synthetic_corpus.images}) == 60  # every image is told apart


def test_nwpu_layout_puts_images_in_scene_folders(tmp_path: Path) -> None:
    caption_file = make_synthetic_dataset(tmp_path, n_images=10, image_size=32, fmt="nwpu")
    corpus = load_corpus(caption_file, tmp_path / "images")
    assert all(r.path.parent.name == r.scene for r in corpus.images)
    assert Image.open(corpus.images[0].path).size == (32, 32)


def test_synthetic_captions_use_the_right_article() -> None:
    assert synthetic_captions("orange", "circle", "residential")[0] == "an orange circle on residential area"
    assert synthetic_captions("red", "circle", "farmland")[0] == "a red circle on farmland"


def test_unknown_layout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown caption layout 'xml'"):
        make_synthetic_dataset(tmp_path, fmt="xml")
