"""pHash merge: re-encoded or resized copies are dropped, different images kept, the report counts them."""

from dataclasses import replace
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

from rsitr.data import CaptionCorpus, DataError, DroppedImage, merge_corpora
from rsitr.data.merge import phash_words


@pytest.fixture
def corpora(synthetic_corpus: CaptionCorpus, tmp_path: Path) -> tuple[CaptionCorpus, CaptionCorpus]:
    """``first``: generated images 0 and 1. ``second``: image 0 as JPEG quality 85, image 0 resized to
    48 px, an exact copy of image 1, and image 2 (a different image)."""
    a0, a1, a2 = synthetic_corpus.images[:3]
    original = Image.open(a0.path)
    original.save(tmp_path / "reencoded.jpg", quality=85)
    original.resize((48, 48)).save(tmp_path / "resized.png")
    Image.open(a1.path).save(tmp_path / "copy.png")
    first = CaptionCorpus("first", [replace(r, source="first") for r in (a0, a1)])
    second = CaptionCorpus("second", [replace(a2, path=tmp_path / name, captions=(name,), source="second")
                                      for name in ("reencoded.jpg", "resized.png", "copy.png")]
                           + [replace(a2, source="second")])
    return first, second


def test_merge_drops_reencoded_and_resized_duplicates(corpora: tuple[CaptionCorpus, CaptionCorpus]) -> None:
    first, second = corpora
    merged, report = merge_corpora([first, second], progress=False)
    assert merged.name == "first+second"
    assert merged.images == [*first.images, second.images[3]]
    assert merged.captions == [*first.captions, *second.images[3].captions]  # duplicates' captions are gone
    assert [(d.path.name, d.source, d.duplicate_of) for d in report.dropped] == [
        ("reencoded.jpg", "second", first.images[0].path), ("resized.png", "second", first.images[0].path),
        ("copy.png", "second", first.images[1].path)]
    assert all(d.distance <= 2 for d in report.dropped) and report.dropped[2].distance == 0
    assert report.kept_per_source == {"first": 2, "second": 1}
    assert report.dropped_per_source == {"first": 0, "second": 3}
    summary = report.summary()
    assert "kept 3 of 6 images; dropped 3 near-duplicates (pHash Hamming distance <= 2)" in summary
    assert "second: kept 1, dropped 3" in summary and "copy.png (distance 0 to" in summary


def test_merge_order_decides_which_copy_is_kept(corpora: tuple[CaptionCorpus, CaptionCorpus]) -> None:
    first, second = corpora
    merged, report = merge_corpora([second, first], progress=False)
    assert [r.path.name for r in merged.images] == ["reencoded.jpg", "copy.png", merged.images[2].path.name]
    assert report.kept_per_source == {"second": 3, "first": 0}
    assert [d.path for d in report.dropped] == [second.images[1].path, first.images[0].path, first.images[1].path]


def test_max_distance_decides_what_counts_as_a_duplicate(synthetic_corpus: CaptionCorpus, tmp_path: Path) -> None:
    image = Image.open(synthetic_corpus.images[0].path)
    image.save(tmp_path / "copy.png")
    image.save(tmp_path / "lossy.jpg", quality=50)
    lossy_distance = imagehash.phash(image) - imagehash.phash(Image.open(tmp_path / "lossy.jpg"))
    assert 0 < lossy_distance <= 2  # a near, not exact, copy
    original = synthetic_corpus.images[0]
    corpus = CaptionCorpus("c", [original, *(replace(original, path=tmp_path / n) for n in ("copy.png", "lossy.jpg"))])
    merged, report = merge_corpora([corpus], max_distance=0, progress=False)
    assert [r.path.name for r in merged.images] == [original.path.name, "lossy.jpg"]
    assert report.dropped == [DroppedImage(tmp_path / "copy.png", "synthetic", original.path, 0)]
    merged, report = merge_corpora([corpus], max_distance=2, progress=False)
    assert merged.images == [original]
    assert report.dropped[1] == DroppedImage(tmp_path / "lossy.jpg", "synthetic", original.path, lossy_distance)


@pytest.mark.parametrize("hash_size", [8, 16])
def test_phash_words_xor_bit_count_equals_imagehash_distance(synthetic_corpus: CaptionCorpus, hash_size: int) -> None:
    paths = [r.path for r in synthetic_corpus.images[:4]]
    words = phash_words(paths, hash_size, progress=False)
    assert words.shape == (4, hash_size * hash_size // 64) and words.dtype == np.uint64
    hashes = [imagehash.phash(Image.open(p).convert("RGB"), hash_size=hash_size) for p in paths]
    for i in range(4):
        for j in range(4):
            assert int(np.bitwise_count(words[i] ^ words[j]).sum()) == hashes[i] - hashes[j]


def test_merge_names_an_unreadable_image(synthetic_corpus: CaptionCorpus, tmp_path: Path) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    corpus = CaptionCorpus("c", [replace(synthetic_corpus.images[0], path=tmp_path / "broken.jpg")])
    with pytest.raises(DataError, match="broken.jpg.*corrupt or unreadable"):
        merge_corpora([corpus], progress=False)
