"""PairDataset / ImageDataset items, collate shapes (with the tiny model's transform) and bad images."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from rsitr.data import CaptionCorpus, DataError, ImageDataset, ImageRecord, PairDataset, collate, verify_images
from rsitr.models import TINY_MODEL, create_model


@pytest.fixture(scope="module")
def preprocess_val():
    return create_model(TINY_MODEL).model.preprocess_val  # tiny model: 32 x 32 images


def test_pair_dataset_items_follow_flat_caption_order(synthetic_corpus: CaptionCorpus, preprocess_val) -> None:
    pairs = PairDataset(synthetic_corpus, preprocess_val)
    assert len(pairs) == 300
    item = pairs[7]
    assert set(item) == {"image", "caption", "image_id", "caption_id"}
    assert item["image_id"] == 1 and item["caption_id"] == 7
    assert item["caption"] == synthetic_corpus.images[1].captions[2]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert torch.equal(item["image"], pairs[5]["image"])  # same image behind captions 5..9


def test_image_dataset_yields_each_image_once(synthetic_corpus: CaptionCorpus, preprocess_val) -> None:
    images = ImageDataset(synthetic_corpus, preprocess_val)
    assert len(images) == 60
    assert images[59]["image_id"] == 59 and set(images[59]) == {"image", "image_id"}
    assert torch.equal(images[1]["image"], PairDataset(synthetic_corpus, preprocess_val)[7]["image"])


def test_collate_stacks_images_and_keeps_captions_as_list(synthetic_corpus: CaptionCorpus, preprocess_val) -> None:
    loader = DataLoader(PairDataset(synthetic_corpus, preprocess_val), batch_size=4, collate_fn=collate)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 32, 32)
    assert batch["caption"] == synthetic_corpus.captions[:4]
    assert batch["image_id"].dtype == torch.long and batch["image_id"].tolist() == [0, 0, 0, 0]
    assert batch["caption_id"].tolist() == [0, 1, 2, 3]
    image_batch = collate([ImageDataset(synthetic_corpus, preprocess_val)[i] for i in (3, 5)])
    assert image_batch["image"].shape == (2, 3, 32, 32) and image_batch["image_id"].tolist() == [3, 5]


def single_image_corpus(path: Path) -> CaptionCorpus:
    return CaptionCorpus("one", [ImageRecord(path, ("a caption",), "test", None, "one")])


@pytest.mark.parametrize(("name", "mode"), [("rgb.tif", "RGB"), ("gray.png", "L"), ("rgba.png", "RGBA")])
def test_tiff_grayscale_and_alpha_images_become_rgb(tmp_path: Path, preprocess_val, name: str, mode: str) -> None:
    Image.new(mode, (40, 48), 128).save(tmp_path / name)
    image = ImageDataset(single_image_corpus(tmp_path / name), preprocess_val)[0]["image"]
    assert image.shape == (3, 32, 32)


def test_corrupt_and_truncated_images_raise_data_error_and_are_listed(synthetic_corpus: CaptionCorpus,
                                                                      tmp_path: Path, preprocess_val) -> None:
    (tmp_path / "garbage.png").write_bytes(b"not an image at all")
    Image.new("RGB", (64, 64), (200, 10, 10)).save(tmp_path / "full.jpg", quality=85)
    (tmp_path / "truncated.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:300])
    good = synthetic_corpus.images[:2]
    corpus = CaptionCorpus("mixed", [*good, replace(good[0], path=tmp_path / "garbage.png"),
                                     replace(good[0], path=tmp_path / "truncated.jpg"),
                                     replace(good[0], path=tmp_path / "gone.png")])
    with pytest.raises(DataError, match=r"garbage\.png, image 2 of mixed: corrupt or unreadable image.*Fix:"):
        PairDataset(corpus, preprocess_val)[10]
    with pytest.raises(DataError, match=r"truncated\.jpg, image 3 of mixed: corrupt"):
        ImageDataset(corpus, preprocess_val)[3]
    problems = verify_images(corpus)
    assert [(p.path.name, p.entry) for p in problems] == [
        ("garbage.png", "image 2 of mixed"), ("truncated.jpg", "image 3 of mixed"), ("gone.png", "image 4 of mixed")]
    assert "image file not found" in str(problems[2])
    assert verify_images(synthetic_corpus) == []
