"""The real RSICD and UCM-Captions files of ../shared/data load as they are, inspect, merge and evaluate.

Skipped (see the ``shared_data`` fixture) where the data is absent. Hashing the 13k images once takes about
25 s of CPU time; the hashes are shared by the tests through one session cache file.
"""

import csv
import json
import warnings
from pathlib import Path

import imagehash
import pytest
from PIL import Image

from rsitr.cli import main
from rsitr.data import CaptionCorpus, load_corpus, merge_corpora
from rsitr.data.inspect import KINDS, InspectReport, inspect_datasets
from rsitr.data.phash import HashCache
from rsitr.models import TINY_MODEL

RSICD_EMPTY = ("bridge_218.jpg", "bridge_59.jpg", "parking_211.jpg")


def _load(path: Path, images: Path, **kwargs) -> CaptionCorpus:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_corpus(path, images, **kwargs)


@pytest.fixture(scope="session")
def rsicd(shared_data: Path) -> Path:
    return shared_data / "rsicd"


@pytest.fixture(scope="session")
def ucm(shared_data: Path) -> Path:
    return shared_data / "ucm"


@pytest.fixture(scope="session")
def hash_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("phash") / "phash-cache.json"


@pytest.fixture(scope="session")
def inspected(rsicd: Path, ucm: Path, hash_cache: Path) -> InspectReport:
    return inspect_datasets([(rsicd / "dataset_rsicd.json", rsicd / "images"), (ucm / "dataset_ucm.json", ucm / "images")],
                            cache=HashCache(hash_cache), progress=False)


def test_rsicd_json_loads_with_its_three_empty_captions_reported(rsicd: Path) -> None:
    with pytest.warns(UserWarning, match="dropped 3 empty caption") as caught:
        corpus = load_corpus(rsicd / "dataset_rsicd.json", rsicd / "images")
    message = next(str(w.message) for w in caught if "empty" in str(w.message))
    assert all(name in message for name in RSICD_EMPTY)
    assert len(corpus) == 10_921 and len(corpus.captions) == 54_602
    assert {split: c["images"] for split, c in corpus.counts().items()} == {"train": 8_734, "val": 1_094, "test": 1_093}
    by_name = {record.path.name: record for record in corpus.images}
    assert all(len(by_name[name].captions) == 4 for name in RSICD_EMPTY)
    with pytest.raises(ValueError, match="bridge_218.jpg.*caption 0 is empty"):
        load_corpus(rsicd / "dataset_rsicd.json", rsicd / "images", strict=True)


def test_the_three_rsicd_files_agree_on_the_test_split(rsicd: Path) -> None:
    tests = [_load(rsicd / name, rsicd / "images").split("test")
             for name in ("dataset_rsicd.json", "captions_rsicd.csv", "rsicd_test.csv")]
    for corpus in tests:
        assert len(corpus) == 1_093 and len(corpus.captions) == 5_465
    as_sets = [{(record.path.name, record.captions) for record in corpus.images} for corpus in tests]
    assert as_sets[0] == as_sets[1] == as_sets[2]
    assert tests[1].images[0].scene is not None  # the per-caption CSV's scene column


def test_ucm_loads_2100_images_with_its_splits(ucm: Path) -> None:
    for name in ("dataset_ucm.json", "captions_ucm.csv"):
        corpus = _load(ucm / name, ucm / "images")
        assert len(corpus) == 2_100 and len(corpus.captions) == 10_500
        assert {split: c["images"] for split, c in corpus.counts().items()} == {"train": 1_680, "val": 210, "test": 210}
    assert len({record.scene for record in corpus.images}) == 21


def test_inspect_counts_and_lists_true_near_duplicates(inspected: InspectReport, rsicd: Path) -> None:
    rsicd_stats, ucm_stats = inspected.datasets
    assert (rsicd_stats.name, ucm_stats.name) == ("rsicd", "ucm")
    assert sum(s.empty_captions for s in rsicd_stats.splits.values()) == 3
    assert sum(s.captions for s in rsicd_stats.splits.values()) == 54_602
    assert rsicd_stats.splits["test"].images == 1_093 and ucm_stats.splits["train"].images == 1_680
    assert all(s.missing_images == s.unreadable_images == 0 for d in inspected.datasets for s in d.splits.values())
    assert inspected.pairs, "the shared README says RSICD and UCM hold near-identical images"
    for pair in inspected.pairs:  # each listed pair really is within distance 2, by imagehash itself
        a, b = (imagehash.phash(Image.open(ref.path).convert("RGB")) for ref in (pair.a, pair.b))
        assert a - b == pair.distance <= 2
        assert pair.kind == (KINDS[2] if pair.a.dataset != pair.b.dataset else
                             KINDS[0] if pair.a.split == pair.b.split else KINDS[1])
    summary = inspected.summary()
    assert "verdict:" in summary and all(Path(p.a.path).name in summary for p in inspected.pairs[:10])


def test_merge_removes_exactly_the_listed_images(inspected: InspectReport, rsicd: Path, ucm: Path,
                                                 hash_cache: Path) -> None:
    corpora = [_load(rsicd / "dataset_rsicd.json", rsicd / "images"), _load(ucm / "dataset_ucm.json", ucm / "images")]
    merged, report = merge_corpora(corpora, cache=HashCache(hash_cache), progress=False)
    assert {(d.source, str(d.path)) for d in report.leaked} == {(r.dataset, r.path) for r in inspected.leaked}
    # No chains among the listed training pairs: of each, the later image is dropped.
    training_pairs = [p for p in inspected.pairs if "test" not in (p.a.split, p.b.split)]
    assert sorted((d.source, str(d.path)) for d in report.dropped) == sorted((p.b.dataset, p.b.path)
                                                                            for p in training_pairs)
    assert merged.counts()["test"]["images"] == 1_093 + 210  # test images are never dropped
    assert len(merged) == 10_921 + 2_100 - len(report.leaked) - len(report.dropped)


def test_train_images_that_are_test_images_of_another_dataset_leak(rsicd: Path, ucm: Path, hash_cache: Path,
                                                                   tmp_path: Path) -> None:
    """A second dataset whose test split holds 5 RSICD training images: inspect flags them, merge removes them."""
    rsicd_corpus = _load(rsicd / "dataset_rsicd.json", rsicd / "images")
    borrowed = rsicd_corpus.split("train").images[:5]
    probe = tmp_path / "probe.csv"
    with probe.open("w", newline="") as file:
        csv.writer(file).writerows([("filepath", "caption", "split"),
                                    *((r.path.name, r.captions[0], "test") for r in borrowed)])
    files = [(rsicd / "dataset_rsicd.json", rsicd / "images"), (probe, rsicd / "images")]
    report = inspect_datasets(files, cache=HashCache(hash_cache), progress=False)
    assert {(ref.dataset, Path(ref.path).name) for ref in report.leaked} >= {("rsicd", r.path.name) for r in borrowed}
    assert "LEAKAGE" in report.verdict
    merged, merge_report = merge_corpora([rsicd_corpus, _load(probe, rsicd / "images")], cache=HashCache(hash_cache),
                                         progress=False)
    assert {(d.source, str(d.path)) for d in merge_report.leaked} == {(r.dataset, r.path) for r in report.leaked}
    assert merged.counts()["test"]["images"] == 1_093 + 5


def test_data_inspect_command_prints_and_writes_the_report(rsicd: Path, ucm: Path, hash_cache: Path,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "inspect.json"
    code = main(["data", "inspect", str(rsicd / "dataset_rsicd.json"), "--images", str(rsicd / "images"),
                 str(ucm / "dataset_ucm.json"), "--images", str(ucm / "images"), "--out", str(out),
                 "--cache", str(hash_cache), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "rsicd: " in printed and "ucm: " in printed and "near-duplicate images" in printed and "verdict:" in printed
    report = json.loads(out.read_text())
    assert set(report["near_duplicates"]) == set(KINDS) and report["verdict"] in printed
    assert report["datasets"][0]["splits"]["train"]["empty_captions"] == 2


def _write_subset(source: Path, out: Path, n_images: int = 40) -> Path:
    """The first ``n_images`` test images of a real caption file, written in the file's own layout."""
    if source.suffix == ".json":
        data = json.loads(source.read_text())
        data["images"] = [item for item in data["images"] if item["split"] == "test"][:n_images]
        out.write_text(json.dumps(data))
        return out
    with source.open(newline="") as file:
        rows = list(csv.reader(file))
    header, body = rows[0], rows[1:]
    split = header.index("split") if "split" in header else None
    names = list(dict.fromkeys(row[0] for row in body if split is None or row[split] == "test"))[:n_images]
    with out.open("w", newline="") as file:
        csv.writer(file).writerows([header, *(row for row in body if row[0] in set(names))])
    return out


@pytest.mark.parametrize("dataset, name", [("rsicd", "dataset_rsicd.json"), ("rsicd", "captions_rsicd.csv"),
                                           ("rsicd", "rsicd_test.csv"), ("ucm", "dataset_ucm.json"),
                                           ("ucm", "captions_ucm.csv")])
def test_eval_with_the_tiny_model_runs_on_each_real_layout(shared_data: Path, dataset: str, name: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    subset = _write_subset(shared_data / dataset / name, tmp_path / name)
    code = main(["eval", "--data", str(subset), "--images", str(shared_data / dataset / "images"), "--model", TINY_MODEL,
                 "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "40 images, 200 captions" in out and "mR" in out


def test_eval_runs_on_the_whole_reference_code_test_file_with_author_paths(rsicd: Path, tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture) -> None:
    """rsicd_test.csv as it is, then with the absolute paths (POSIX and Windows) of its author's machine."""
    code = main(["eval", "--data", str(rsicd / "rsicd_test.csv"), "--images", str(rsicd / "images"), "--model",
                 TINY_MODEL, "--global-only", "--batch-size", "256", "--no-progress"])
    assert code == 0 and "rsicd_test/test (1093 images, 5465 captions)" in capsys.readouterr().out
    with (rsicd / "rsicd_test.csv").open(newline="") as file:
        rows = list(csv.reader(file))[:11]
    authored = tmp_path / "rsicd_test.csv"
    with authored.open("w", newline="") as file:
        csv.writer(file).writerows([rows[0], *([("/home/author/RSICD/" if n < 5 else "D:\\data\\RSICD\\") + name, caption]
                                               for n, (name, caption) in enumerate(rows[1:]))])
    corpus = load_corpus(authored, rsicd / "images")
    assert [r.path for r in corpus.images] == [rsicd / "images" / rows[1][0], rsicd / "images" / rows[6][0]]
    assert [r.split for r in corpus.images] == ["test", "test"]
