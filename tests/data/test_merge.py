"""pHash merge: re-encoded or resized copies are dropped, different images kept, the report counts them."""

from dataclasses import replace
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

from rsitr.data import CaptionCorpus, DataError, DroppedImage, merge_corpora
from rsitr.data.phash import HashCache, hamming, hash_images, near_pairs


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
    assert ("kept 3 of 6 images; removed 0 train/val images near a test image (leakage) and 3 near-duplicates "
            "(pHash Hamming distance <= 2)") in summary
    assert "second: kept 1, removed 3" in summary and "copy.png (distance 0 to" in summary


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
    assert report.dropped == [DroppedImage(tmp_path / "copy.png", "synthetic", original.path, 0, "train")]
    merged, report = merge_corpora([corpus], max_distance=2, progress=False)
    assert merged.images == [original]
    assert report.dropped[1] == DroppedImage(tmp_path / "lossy.jpg", "synthetic", original.path, lossy_distance, "train")


@pytest.mark.parametrize("hash_size", [8, 16])
def test_hash_words_xor_bit_count_equals_imagehash_distance(synthetic_corpus: CaptionCorpus, hash_size: int) -> None:
    paths = [r.path for r in synthetic_corpus.images[:4]]
    words = hash_images(paths, hash_size, progress=False).words
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


def test_merge_keeps_every_test_image_and_removes_train_and_val_images_near_one(
        corpora: tuple[CaptionCorpus, CaptionCorpus]) -> None:
    """``first``'s image 0 is test; its re-encoded and resized copies in ``second`` are train and val: they leak."""
    first, second = corpora
    first = CaptionCorpus("first", [replace(first.images[0], split="test"), first.images[1]])
    second = CaptionCorpus("second", [replace(second.images[0], split="train"), replace(second.images[1], split="val"),
                                      *second.images[2:]])
    # Order does not matter for leakage: the test image is kept even when its copies come first.
    merged, report = merge_corpora([second, first], progress=False)
    assert [(d.path.name, d.split, d.duplicate_of) for d in report.leaked] == [
        ("reencoded.jpg", "train", first.images[0].path), ("resized.png", "val", first.images[0].path)]
    assert [d.path.name for d in report.dropped] == [first.images[1].path.name]  # copy.png came first and is kept
    assert [r.path.name for r in merged.images] == ["copy.png", second.images[3].path.name, first.images[0].path.name]
    assert report.dropped_per_source == {"second": 2, "first": 1}
    assert "removed 2 train/val images near a test image (leakage) and 1 near-duplicates" in report.summary()


def test_test_images_are_never_dropped_even_as_duplicates_of_each_other(synthetic_corpus: CaptionCorpus,
                                                                        tmp_path: Path) -> None:
    original = replace(synthetic_corpus.images[0], split="test")
    Image.open(original.path).save(tmp_path / "copy.png")
    corpus = CaptionCorpus("c", [original, replace(original, path=tmp_path / "copy.png")])
    merged, report = merge_corpora([corpus], progress=False)
    assert merged.images == corpus.images and report.dropped == report.leaked == []


def test_hash_cache_hashes_once_and_again_when_the_file_changes(synthetic_corpus: CaptionCorpus, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    image = tmp_path / "a.png"
    Image.open(synthetic_corpus.images[0].path).save(image)
    cache_file = tmp_path / "cache" / "phash.json"
    first = hash_images([image], cache=HashCache(cache_file), progress=False).words
    assert cache_file.is_file()
    calls = []
    monkeypatch.setattr(imagehash, "phash", lambda *a, **k: calls.append(a) or pytest.fail("hashed again"))
    assert np.array_equal(hash_images([image, image], cache=HashCache(cache_file), progress=False).words,
                          np.vstack([first, first]))
    monkeypatch.undo()
    Image.open(synthetic_corpus.images[1].path).save(image)  # new content, size and mtime
    changed = hash_images([image], cache=HashCache(cache_file), progress=False).words
    assert np.array_equal(changed, hash_images([synthetic_corpus.images[1].path], progress=False).words)


def test_near_pairs_matches_the_brute_force_pairs() -> None:
    rng = np.random.default_rng(0)
    words = rng.integers(0, 2**63, size=(300, 1), dtype=np.uint64)
    words[100:150] = words[:50] ^ (np.uint64(1) << rng.integers(0, 64, size=(50, 1)).astype(np.uint64))  # distance 1
    words[200] = words[0]
    brute = [(i, j, int(np.bitwise_count(words[i] ^ words[j]).sum())) for i in range(300) for j in range(i + 1, 300)]
    assert near_pairs(words, max_distance=2) == [p for p in brute if p[2] <= 2]
    assert len(near_pairs(words, max_distance=2)) >= 50 + 1 + 1  # the 50 flipped copies, 0~200, 100~200
    across = near_pairs(words[:100], words[100:], max_distance=1)
    assert all(d == hamming(words[i:i + 1], words[100 + j:101 + j])[0, 0] <= 1 for i, j, d in across)
    assert {(i, j) for i, j, _ in across} >= {(i, i) for i in range(50)} | {(0, 100)}
