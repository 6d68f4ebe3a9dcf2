"""User errors of eval, train, data, index and search end as one `rsitr <command>: error:` line, exit code 2, no
traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

from rsitr.cli import main
from rsitr.models import TINY_MODEL

from support import CONFIGS, REPO as ROOT
from support.errors import assert_user_error


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_eval_bad_data_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "bad.json").write_text('{"images": [', encoding="utf-8")
    code, err = run(capsys, "eval", "--data", str(tmp_path / "bad.json"), "--images", str(tmp_path),
                    "--model", TINY_MODEL, "--no-progress")
    assert_user_error(code, err, "eval", "bad.json", "invalid JSON", "Fix:")


def test_eval_reference_csv_with_unknown_columns(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "t.csv").write_text("name,text\na.jpg,x\n", encoding="utf-8")
    code, err = run(capsys, "eval", "--data", str(tmp_path / "t.csv"), "--images", str(tmp_path), "--model", TINY_MODEL)
    assert_user_error(code, err, "eval", "missing CSV columns ['filepath', 'caption']", "filename,title")


def test_eval_missing_image_folder(synthetic_caption_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, err = run(capsys, "eval", "--data", str(synthetic_caption_file), "--images", str(tmp_path / "nowhere"),
                    "--model", TINY_MODEL, "--no-progress")
    assert_user_error(code, err, "eval", "nowhere", "not found", "--images")


def test_eval_split_without_images(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "a.jpg").touch()
    (tmp_path / "s.csv").write_text("filepath,caption,split\na.jpg,x,test\n", encoding="utf-8")
    code, err = run(capsys, "eval", "--data", str(tmp_path / "s.csv"), "--images", str(tmp_path), "--model",
                    TINY_MODEL, "--split", "val")
    assert_user_error(code, err, "eval", "s.csv", "has no images in split 'val'")


def test_eval_strict_refuses_empty_captions(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "a.jpg").touch()
    (tmp_path / "c.csv").write_text("filepath,caption,split\na.jpg,x,test\na.jpg, ,test\n", encoding="utf-8")
    code, err = run(capsys, "eval", "--strict", "--data", str(tmp_path / "c.csv"), "--images", str(tmp_path),
                    "--model", TINY_MODEL)
    assert_user_error(code, err, "eval", "line 3 (a.jpg)", "caption 0 is empty")


def test_train_bad_config_key(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, err = run(capsys, "train", "--config", str(CONFIGS / "data" / "synthetic.yaml"), "--out",
                    str(tmp_path / "run"), "--set", "data.no_such_key=1")
    assert_user_error(code, err, "train", "Key 'no_such_key' not in 'DataConfig' (data.no_such_key)", "rsitr/config.py")
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_train_missing_caption_file_in_a_data_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, err = run(capsys, "train", "--config", str(CONFIGS / "data" / "rsicd.yaml"), "--out",
                    str(tmp_path / "run"), "--strict", "--set",
                    f"data.datasets=[{{captions: {tmp_path}/missing.json, images: {tmp_path}}}]")
    assert_user_error(code, err, "train", "missing.json", "missing dataset files")


def test_data_inspect_needs_a_folder_per_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, err = run(capsys, "data", "inspect", "a.json", "b.json", "--images", str(tmp_path))
    assert_user_error(code, err, "data", "2 caption file(s) but 1 --images folder(s)")
    code, err = run(capsys, "data", "inspect", str(tmp_path / "a.json"), "--images", str(tmp_path))
    assert_user_error(code, err, "data", "a.json", "caption file not found")


@pytest.fixture(scope="module")
def built_index(tmp_path_factory: pytest.TempPathFactory):
    from support.index import build_test_index

    index = build_test_index(tmp_path_factory.mktemp("user_errors"))
    index.close()
    return index.directory


def test_search_in_a_folder_that_is_no_index(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, err = run(capsys, "search", str(tmp_path), "a harbour")
    assert_user_error(code, err, "search", f"{tmp_path} is not an rsitr index", "rsitr index IMAGES --out NEW_INDEX")


def search_image(capsys: pytest.CaptureFixture, index: Path, image: Path) -> tuple[int, str]:
    """``rsitr search INDEX --image IMAGE`` without the test index's own "random weights" warning line."""
    code, err = run(capsys, "search", str(index), "--image", str(image))
    return code, "".join(line for line in err.splitlines(True) if not line.startswith("rsitr search: warning: "))


def test_search_by_a_query_image_that_is_missing_or_not_an_image(built_index: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    code, err = search_image(capsys, built_index, tmp_path / "query.png")
    assert_user_error(code, err, "search", "not found", "query.png")
    (tmp_path / "notes.txt").write_text("not an image")
    code, err = search_image(capsys, built_index, tmp_path / "notes.txt")
    assert_user_error(code, err, "search", "notes.txt: unsupported image type '.txt'", ".png")
    (tmp_path / "broken.png").write_bytes(b"not a PNG")
    code, err = search_image(capsys, built_index, tmp_path / "broken.png")
    assert_user_error(code, err, "search", "broken.png")


def test_index_out_that_is_a_file_loses_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "out").write_text("my notes")
    code, err = run(capsys, "index", str(tmp_path / "images"), "--out", str(tmp_path / "out"),
                    "--model", TINY_MODEL)
    assert_user_error(code, err, "index", str(tmp_path / "out"))
    assert (tmp_path / "out").read_text() == "my notes"


def test_a_real_process_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "rsitr.cli", "data", "inspect", str(tmp_path / "c.json"), "--images",
                           str(tmp_path / "nowhere")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert_user_error(done.returncode, done.stderr, "data", "c.json", "caption file not found")
    assert done.stdout == ""


def test_data_is_a_listed_command(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "data" in capsys.readouterr().out
