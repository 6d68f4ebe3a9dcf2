"""`rsitr data inspect` on a hand-made pair of caption files: every count and every near-duplicate pair known."""

import json
from pathlib import Path

import pytest
from PIL import Image

from rsitr.data import CaptionCorpus
from rsitr.data.inspect import InspectReport, inspect_datasets
from rsitr.data.phash import HashCache


@pytest.fixture
def inspected(synthetic_corpus: CaptionCorpus, tmp_path: Path) -> InspectReport:
    """``a.json``: a0 train (an empty and a repeated caption), a1 test, a2 val (file missing), a3 train (corrupt),
    a4 val. ``b.csv``: b0 train = copy of a1, b1 test = a0 re-encoded as JPEG, b2 test = copy of a4."""
    source = [Image.open(record.path) for record in synthetic_corpus.images[:5]]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for n in (0, 1, 4):
        source[n].save(tmp_path / "a" / f"a{n}.png")
    (tmp_path / "a" / "a3.png").write_bytes(b"\x89PNG not really")
    source[1].save(tmp_path / "b" / "b0.png")
    source[0].save(tmp_path / "b" / "b1.jpg", quality=90)
    source[4].save(tmp_path / "b" / "b2.png")
    five = ["one", "two", "three", "four", "five"]
    images = [("a0.png", "train", ["", "One ", "one", "two", "three"]), ("a1.png", "test", five),
              ("a2.png", "val", five), ("a3.png", "train", five), ("a4.png", "val", five[:4])]
    (tmp_path / "a.json").write_text(json.dumps({"images": [
        {"filename": name, "split": split, "sentences": [{"raw": c} for c in captions]}
        for name, split, captions in images]}))
    (tmp_path / "b.csv").write_text("filepath,caption,split,scene\n" + "".join(
        f"{name},{caption},{split},farm\n" for name, split in (("b0.png", "train"), ("b1.jpg", "test"), ("b2.png", "test"))
        for caption in five))
    return inspect_datasets([(tmp_path / "a.json", tmp_path / "a"), (tmp_path / "b.csv", tmp_path / "b")],
                            cache=HashCache(tmp_path / "cache.json"), progress=False)


def test_counts_per_dataset_and_split(inspected: InspectReport) -> None:
    a, b = inspected.datasets
    assert (a.name, b.name) == ("a", "b") and list(a.splits) == ["train", "val", "test"]
    train = a.splits["train"]
    assert (train.images, train.captions, train.min_captions, train.max_captions) == (2, 9, 4, 5)
    assert (train.empty_captions, train.duplicate_captions, train.missing_images, train.unreadable_images) == (1, 1, 0, 1)
    assert (a.splits["val"].images, a.splits["val"].missing_images, a.splits["val"].captions) == (2, 1, 9)
    assert b.splits["test"].scenes == {"farm": 2}
    assert a.splits["train"].scenes == {"a": 2}  # scene from the file name: "a0.png" -> "a"


def test_near_duplicates_by_kind_and_the_leaked_training_images(inspected: InspectReport) -> None:
    found = {(Path(p.a.path).name, Path(p.b.path).name, p.kind) for p in inspected.pairs}
    assert found == {("a0.png", "b1.jpg", "across datasets"), ("a1.png", "b0.png", "across datasets"),
                     ("a4.png", "b2.png", "across datasets")}
    assert [p.distance for p in inspected.pairs if p.b.path.endswith("b0.png")] == [0]
    # a0 (train) ~ b1 (test), b0 (train) ~ a1 (test), a4 (val) ~ b2 (test); a2 and a3 cannot be compared.
    assert [(r.dataset, Path(r.path).name) for r in inspected.leaked] == [("a", "a0.png"), ("a", "a4.png"), ("b", "b0.png")]
    assert inspected.verdict.startswith("verdict: LEAKAGE: 3 train/val images (a 2, b 1)")
    summary = inspected.summary(limit=2)
    assert "across datasets: 3 pairs" in summary and "... and 1 more" in summary and "within split: 0 pairs" in summary
    assert json.loads(json.dumps(inspected.to_json()))["leaked_train_images"][2]["path"].endswith("b0.png")
