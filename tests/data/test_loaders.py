"""Caption file loaders: the three layouts, splits, scenes and every bad-input error."""

import json
import warnings
from pathlib import Path

import pytest

from rsitr.terminal import in_flags
from rsitr.data import (CaptionCorpus, DataError, ImageRecord, load_corpus, make_synthetic_dataset, random_splits,
                        scene_from_filename)


def touch_images(root: Path, *names: str) -> None:
    """Loaders only check that image files exist, so empty files are enough here."""
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).touch()


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def karpathy_image(filename: str, captions: list[str], split: str | None = "train") -> dict:
    entry = {"filename": filename, "imgid": 0, "sentences": [{"raw": c, "tokens": c.split()} for c in captions]}
    return entry if split is None else {**entry, "split": split}


FIVE = ["one", "two", "three", "four", "five"]


def assert_data_error(excinfo: pytest.ExceptionInfo, path: Path, *fragments: str) -> None:
    message = str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)
    assert str(path) in message and "Fix:" in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize("fmt", ["karpathy", "nwpu", "csv"])
def test_each_layout_loads_the_generated_corpus_identically(tmp_path: Path, fmt: str) -> None:
    reference = load_corpus(make_synthetic_dataset(tmp_path / "ref", n_images=20), tmp_path / "ref" / "images")
    caption_file = make_synthetic_dataset(tmp_path / fmt, n_images=20, fmt=fmt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 5 captions everywhere: no warning
        corpus = load_corpus(caption_file, tmp_path / fmt / "images")
    assert corpus.name == "synthetic" and len(corpus) == 20 and len(corpus.captions) == 100
    assert load_corpus(caption_file, tmp_path / fmt / "images", fmt=fmt) == corpus  # explicit == auto-detected

    def content(c: CaptionCorpus) -> set:
        return {(r.path.name, r.captions, r.split, r.scene, r.source) for r in c.images}

    assert content(corpus) == content(reference)
    assert all(record.path.is_file() and record.path.name.startswith(f"{record.scene}_") for record in corpus.images)


def test_karpathy_rsicd_style_file(tmp_path: Path) -> None:
    touch_images(tmp_path, "airport_12.jpg", "denseresidential34.jpg", "00001.jpg")
    caption_file = write_json(tmp_path / "dataset_rsicd.json", {"dataset": "rsicd", "images": [
        karpathy_image("airport_12.jpg", [" many planes are parked . ", *FIVE[1:]], "train"),
        karpathy_image("denseresidential34.jpg", FIVE, "val"),
        karpathy_image("00001.jpg", FIVE[:4], "validation"),
    ]})
    with pytest.warns(UserWarning, match=r"dataset_rsicd\.json: 1 of 3 images .*entry 2 \(00001\.jpg\): 4"):
        corpus = load_corpus(caption_file, tmp_path)
    assert corpus.images[0] == ImageRecord(tmp_path / "airport_12.jpg", ("many planes are parked .", *FIVE[1:]),
                                           "train", "airport", "rsicd")
    assert [r.scene for r in corpus.images] == ["airport", "denseresidential", None]
    assert [r.split for r in corpus.images] == ["train", "val", "val"]
    assert corpus.captions[5:] == FIVE + FIVE[:4]
    assert corpus.caption_image == [0] * 5 + [1] * 5 + [2] * 4


def test_nwpu_file_orders_raw_keys_and_falls_back_to_flat_image_folder(tmp_path: Path) -> None:
    touch_images(tmp_path, "airplane/airplane_001.jpg", "airport_001.jpg")
    entry = {"filename": "airplane_001.jpg", "split": "test", "raw_2": "c", "raw": "a", "raw_1": "b", "raw_4": "e",
             "raw_3": "d", "imgid": 0, "sentids": [0, 1, 2, 3, 4]}
    caption_file = write_json(tmp_path / "dataset_nwpu.json", {
        "airplane": [entry], "airport": [{**entry, "filename": "airport_001.jpg", "split": "train"}]})
    corpus = load_corpus(caption_file, tmp_path, name="nwpu-captions")
    assert [(r.path, r.scene, r.split, r.source) for r in corpus.images] == [
        (tmp_path / "airplane" / "airplane_001.jpg", "airplane", "test", "nwpu-captions"),
        (tmp_path / "airport_001.jpg", "airport", "train", "nwpu-captions")]
    assert corpus.images[0].captions == ("a", "b", "c", "d", "e")


def test_csv_groups_rows_by_filepath_and_reads_scene_column(tmp_path: Path) -> None:
    touch_images(tmp_path, "x/a.png", "b.png")
    rows = ["filepath,caption,split,scene"] + [f"x/a.png,a {n},train,beach" for n in range(5)]
    rows += [f"b.png,b {n},validation," for n in range(5)] + ['x/a.png,"a, with comma",train,beach']
    (tmp_path / "captions.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="line 2 \\(x/a.png\\): 6"):
        corpus = load_corpus(tmp_path / "captions.csv", tmp_path)
    assert corpus.name == "captions"
    assert [(r.path, r.split, r.scene, len(r.captions)) for r in corpus.images] == [
        (tmp_path / "x" / "a.png", "train", "beach", 6), (tmp_path / "b.png", "val", None, 5)]
    assert corpus.images[0].captions[-1] == "a, with comma"


def test_csv_without_split_or_scene_columns_gets_seeded_splits_and_file_name_scenes(tmp_path: Path) -> None:
    names = [f"forest_{n}.png" for n in range(10)]
    touch_images(tmp_path, *names)
    (tmp_path / "c.csv").write_text("filepath,caption\n" + "".join(f"{n},a forest\n" for n in names), encoding="utf-8")
    with pytest.warns(UserWarning):  # one caption per image
        corpus = load_corpus(tmp_path / "c.csv", tmp_path, seed=3)
    assert [r.split for r in corpus.images] == random_splits(10, seed=3)
    assert {r.scene for r in corpus.images} == {"forest"}


def test_seeded_split_is_reproducible_and_80_10_10(tmp_path: Path) -> None:
    names = [f"img_{n}.jpg" for n in range(200)]
    touch_images(tmp_path, *names)
    caption_file = write_json(tmp_path / "unsplit.json", {"images": [karpathy_image(n, FIVE, None) for n in names]})
    splits = {seed: [r.split for r in load_corpus(caption_file, tmp_path, seed=seed).images] for seed in (0, 1)}
    assert [r.split for r in load_corpus(caption_file, tmp_path, seed=0).images] == splits[0]
    assert splits[1] != splits[0]
    for split_list in splits.values():
        assert [split_list.count(s) for s in ("train", "val", "test")] == [160, 20, 20]
    assert [random_splits(10, seed=0).count(s) for s in ("train", "val", "test")] == [8, 1, 1]


@pytest.mark.parametrize(("filename", "scene"), [
    ("airport_12.jpg", "airport"), ("denseresidential34.jpg", "denseresidential"), ("00001.jpg", None),
    ("baseballfield_452.tif", "baseballfield"), ("bridge.png", "bridge"), ("storage_tanks_7.jpg", "storage_tanks"),
    ("Beach3.jpg", "beach"), ("_12.jpg", None)])
def test_scene_from_filename(filename: str, scene: str | None) -> None:
    assert scene_from_filename(filename) == scene


def test_corpus_split_counts_and_summary(synthetic_corpus: CaptionCorpus) -> None:
    test = synthetic_corpus.split("test")
    assert test.name == "synthetic/test" and len(test) == 6 and {r.split for r in test.images} == {"test"}
    assert len(synthetic_corpus.split("validation")) == 6
    assert test.caption_image == [i for i in range(6) for _ in range(5)]
    assert synthetic_corpus.counts() == {"train": {"images": 48, "captions": 240}, "val": {"images": 6, "captions": 30},
                                         "test": {"images": 6, "captions": 30}}
    assert synthetic_corpus.summary() == ("synthetic: 60 images, 300 captions (train 48 / val 6 / test 6 images); "
                                          "sources: synthetic 60")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        synthetic_corpus.split("dev")


# --- bad input: every case names the file, the entry and the fix ---------------------------------------------


def test_missing_caption_file(tmp_path: Path) -> None:
    with pytest.raises(DataError) as excinfo:
        load_corpus(tmp_path / "nope.json", tmp_path)
    assert_data_error(excinfo, tmp_path / "nope.json", "caption file not found")


def test_invalid_json(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"images": [\n  {"filename": }\n]}', encoding="utf-8")
    with pytest.raises(DataError) as excinfo:
        load_corpus(tmp_path / "bad.json", tmp_path)
    assert_data_error(excinfo, tmp_path / "bad.json", "invalid JSON", "line 2")


@pytest.mark.parametrize(("data", "found"), [({"annotations": [], "info": {}}, "['annotations', 'info']"),
                                             ([1, 2], "a JSON list")])
def test_unknown_layout_lists_found_keys_and_accepted_layouts(tmp_path: Path, data: object, found: str) -> None:
    caption_file = write_json(tmp_path / "coco.json", data)
    with pytest.raises(DataError) as excinfo:
        load_corpus(caption_file, tmp_path)
    assert_data_error(excinfo, caption_file, "unknown caption file layout", found, "Karpathy", "NWPU", "CSV")


@pytest.mark.parametrize(("entry", "fragments"), [
    ({"filename": "b.jpg", "split": "train"}, ("entry 1 (b.jpg)", "missing key 'sentences'")),
    ({"sentences": [{"raw": "x"}]}, ("entry 1", "missing key 'filename'")),
    (karpathy_image("b.jpg", ["fine", "  "]), ("entry 1 (b.jpg)", "caption 1 is empty")),
    ({"filename": "b.jpg", "sentences": [{"raw": "x"}, {"tokens": ["x"]}]}, ("entry 1 (b.jpg) sentence 1", "'raw'")),
    (karpathy_image("b.jpg", []), ("entry 1 (b.jpg)", "has no captions")),
    (karpathy_image("b.jpg", FIVE, "dev"), ("entry 1 (b.jpg)", "unknown split 'dev'")),
    (karpathy_image("missing.jpg", FIVE), ("entry 1 (missing.jpg)", "image file not found", "missing.jpg")),
    (karpathy_image("b.jpg", FIVE, None), ("entry 1 (b.jpg)", "no split while other entries do")),
])
def test_bad_karpathy_entry(tmp_path: Path, entry: dict, fragments: tuple[str, ...]) -> None:
    touch_images(tmp_path, "a.jpg", "b.jpg")
    caption_file = write_json(tmp_path / "dataset_rsicd.json", {"images": [karpathy_image("a.jpg", FIVE), entry]})
    with pytest.raises(DataError) as excinfo:
        load_corpus(caption_file, tmp_path, strict=True)
    assert_data_error(excinfo, caption_file, *fragments)
    assert excinfo.value.path == caption_file and excinfo.value.fix


def test_empty_captions_are_dropped_with_one_warning_and_captionless_images_too(tmp_path: Path) -> None:
    touch_images(tmp_path, "a.jpg", "b.jpg", "c.jpg")
    caption_file = write_json(tmp_path / "dataset_rsicd.json", {"images": [
        karpathy_image("a.jpg", FIVE), karpathy_image("b.jpg", ["fine", "  ", "good"]), karpathy_image("c.jpg", [""])]})
    with pytest.warns(UserWarning, match=r"dropped 2 empty caption\(s\) \(e.g. entry 1 \(b.jpg\) caption 1; "
                                         r"entry 2 \(c.jpg\) caption 0\); 1 image\(s\) left without captions"):
        corpus = load_corpus(caption_file, tmp_path)
    assert [len(image.captions) for image in corpus.images] == [5, 2]
    assert corpus.images[1].captions == ("fine", "good")


@pytest.mark.parametrize(("entry", "fragments"), [
    ({"filename": "b.jpg", "split": "train", "raw_1": "x"}, ("entry airport[1] (b.jpg)", "missing key 'raw'")),
    ({"filename": "c.jpg", "split": "train", "raw": "x"}, ("entry airport[1] (c.jpg)", "image file not found",
                                                          "airport/c.jpg")),
])
def test_bad_nwpu_entry(tmp_path: Path, entry: dict, fragments: tuple[str, ...]) -> None:
    touch_images(tmp_path, "airport/a.jpg", "airport/b.jpg")
    good = {"filename": "a.jpg", "split": "train", "raw": "x"}
    caption_file = write_json(tmp_path / "nwpu.json", {"airport": [good, entry]})
    with pytest.raises(DataError) as excinfo:
        load_corpus(caption_file, tmp_path, fmt="nwpu")
    assert_data_error(excinfo, caption_file, *fragments)


@pytest.mark.parametrize(("text", "fragments"), [
    ("path,caption\na.png,x\n", ("header", "missing CSV columns ['filepath']")),
    ("filepath,caption\na.png,x\na.png,   \n", ("line 3 (a.png)", "caption 0 is empty")),
    ("filepath,caption\na.png,x\n,y\n", ("line 3", "empty filepath")),
    ("filepath,caption,split\na.png,x,train\na.png,y,test\n", ("line 3 (a.png)", "split 'test' differs")),
    ("filepath,caption\nb.png,x\n", ("line 2 (b.png)", "image file not found")),
])
def test_bad_csv_row(tmp_path: Path, text: str, fragments: tuple[str, ...]) -> None:
    touch_images(tmp_path, "a.png")
    (tmp_path / "c.csv").write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as excinfo:
        load_corpus(tmp_path / "c.csv", tmp_path, strict=True)
    assert_data_error(excinfo, tmp_path / "c.csv", *fragments)


def test_unknown_format_argument(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown caption file format 'xml'"):
        load_corpus(tmp_path / "x.xml", tmp_path, fmt="xml")


def title_csv(path: Path, names: list[str], extra: str = "", values: str = "") -> Path:
    """A CSV in the EBAKER reference code's layout: filename,title (five rows per image)."""
    rows = [f"filename,title{extra}"] + [f"{name},{name} caption {n}{values}" for name in names for n in range(5)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(("file_name", "split_arg", "split"), [
    ("rsicd_test.csv", None, "test"), ("rsitmd_train.csv", None, "train"), ("val-captions.csv", None, "val"),
    ("captions.csv", None, "test"),  # nothing says which: test, as the reference code's files are
    ("rsicd_test.csv", "validation", "val"),  # --split wins over the file name
])
def test_reference_code_csv_takes_its_split_from_split_argument_file_name_or_test(
        tmp_path: Path, file_name: str, split_arg: str | None, split: str) -> None:
    touch_images(tmp_path, "airport_1.jpg", "00002.jpg")
    corpus = load_corpus(title_csv(tmp_path / file_name, ["airport_1.jpg", "00002.jpg"]), tmp_path, split=split_arg)
    assert [(r.path.name, r.split, r.scene, len(r.captions)) for r in corpus.images] == [
        ("airport_1.jpg", split, "airport", 5), ("00002.jpg", split, None, 5)]
    assert corpus.images[0].captions[0] == "airport_1.jpg caption 0"


def test_reference_code_csv_with_a_split_column_keeps_it(tmp_path: Path) -> None:
    touch_images(tmp_path, "a.jpg")
    corpus = load_corpus(title_csv(tmp_path / "x_test.csv", ["a.jpg"], ",split", ",train"), tmp_path, split="test")
    assert corpus.images[0].split == "train"


def test_author_paths_are_looked_up_by_file_name_in_the_image_folder(tmp_path: Path) -> None:
    touch_images(tmp_path, "a.jpg", "b.jpg", "sub/c.jpg")
    names = ["/home/author/RSICD_images/a.jpg", "C:\\Users\\author\\RSICD\\b.jpg", "sub/c.jpg"]
    corpus = load_corpus(title_csv(tmp_path / "t.csv", names), tmp_path)
    assert [r.path for r in corpus.images] == [tmp_path / "a.jpg", tmp_path / "b.jpg", tmp_path / "sub" / "c.jpg"]
    with pytest.raises(DataError) as excinfo:
        load_corpus(title_csv(tmp_path / "t.csv", ["/home/author/d.jpg"]), tmp_path)
    assert_data_error(excinfo, tmp_path / "t.csv", "image file not found", "/home/author/d.jpg", str(tmp_path / "d.jpg"))


def test_missing_image_folder_is_named_before_any_entry(tmp_path: Path) -> None:
    caption_file = write_json(tmp_path / "c.json", {"images": [karpathy_image("a.png", FIVE)]})
    with pytest.raises(DataError) as excinfo:
        load_corpus(caption_file, tmp_path / "no-such-folder")
    assert_data_error(excinfo, tmp_path / "no-such-folder", "image folder not found", "`images_root`")
    assert excinfo.value.parameters == ("images_root",) and "(--images)" in in_flags(excinfo.value)


def test_unchecked_load_keeps_empty_captions_and_missing_images(tmp_path: Path) -> None:
    touch_images(tmp_path, "a.png")
    caption_file = write_json(tmp_path / "c.json", {"images": [karpathy_image("a.png", ["", *FIVE[1:]]),
                                                               karpathy_image("gone.png", FIVE, "test")]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and nothing is warned about
        corpus = load_corpus(caption_file, tmp_path, check=False)
    assert [(r.path, r.captions[0]) for r in corpus.images] == [(tmp_path / "a.png", ""), (tmp_path / "gone.png", "one")]
