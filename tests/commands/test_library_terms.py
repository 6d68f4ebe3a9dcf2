"""Library errors speak the library's terms (arguments in backticks, listed in ``parameters``); the command line
turns them into its flags in one place (:func:`rsitr.terminal.in_flags`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rsitr.cli import main
from rsitr.terminal import in_flags
from rsitr.errors import RsitrWarning, UserError
from support.errors import assert_user_error


def test_named_arguments_become_their_flags() -> None:
    err = UserError("`runtime='onnx'`: runs in fp32, not bf16; pass `precision='fp32'` or `runtime='torch'`; "
                    "`rsitr models` lists them; `k` results, `find_all`, `output_dir`, `strict=True`",
                    parameters=("runtime", "precision", "k", "find_all", "output_dir", "strict"))
    assert in_flags(err) == ("--runtime onnx: runs in fp32, not bf16; pass --precision fp32 or --runtime torch; "
                             "`rsitr models` lists them; --top-k results, --all, --out, --strict")


def test_only_the_listed_arguments_are_rewritten() -> None:
    assert in_flags(UserError("`threads` and `device`", parameters=("threads",))) == "--threads and `device`"
    assert in_flags(UserError("`threads` must be at least 1")) == "`threads` must be at least 1"  # none listed
    assert in_flags("a plain `threads` string") == "a plain `threads` string"


@pytest.mark.parametrize("call, parameters", [
    (lambda: __import__("rsitr.runtime", fromlist=["set_threads"]).set_threads(0), ("threads",)),
    (lambda: __import__("rsitr.models.pretrained", fromlist=["shipped_weights"]).shipped_weights(
        "ViT-B-32", "rsitr-small-rsicd"), ("model",)),
    (lambda: __import__("rsitr.data.classes", fromlist=["read_labeled_images"]).read_labeled_images(
        Path(__file__).parent / "test_library_terms.py"), ("images_root",)),
])
def test_library_errors_name_no_flag_and_list_their_arguments(call, parameters: tuple[str, ...]) -> None:
    with pytest.raises(UserError) as raised:
        call()
    assert raised.value.parameters == parameters
    assert "--" not in str(raised.value) and f"`{parameters[0]}" in str(raised.value), str(raised.value)
    assert "--" in in_flags(raised.value)


def test_the_command_line_adds_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A caption file given to classify without its image folder: the library says `images_root`, the line --images."""
    captions = tmp_path / "c.csv"
    captions.write_text("filename,caption,split\na.jpg,a field,test\n")
    assert_user_error(main(["classify", str(captions), "--model", "RN50"]), capsys.readouterr().err, "classify",
                      "relative to (--images)")


def test_warnings_name_their_flag_on_the_command_line(tmp_path: Path) -> None:
    from rsitr.data.loaders import load_corpus

    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "c.csv").write_text("filename,caption,split\na.jpg,,test\na.jpg,a field,test\n")
    with pytest.warns(RsitrWarning) as said:
        load_corpus(tmp_path / "c.csv", tmp_path)
    assert "`strict=True`" in str(said[0].message) and in_flags(said[0].message).endswith("with --strict")


def test_an_index_scale_error_says_scale_in_the_library_and_the_flag_on_the_command_line(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`scale='statistics'` asked of a plain folder (no STAC statistics): the library names the argument and its
    value, the command line the flag (the line ``rsitr index --scale statistics`` printed before the conversion)."""
    from rsitr.index.sources import ListingError, new_index_scale, open_archive
    from rsitr.models import TINY_MODEL

    with pytest.raises(ListingError) as raised:
        new_index_scale(open_archive(tmp_path), "statistics")
    assert raised.value.parameters == ("scale",) and "--" not in str(raised.value)
    assert str(raised.value).startswith("`scale='statistics'` scales by STAC raster:bands statistics, and a folder")
    assert str(raised.value).endswith("use `scale='range LOW HIGH'`")
    assert in_flags(raised.value).startswith("--scale statistics scales by STAC raster:bands statistics")
    assert in_flags(raised.value).endswith("use --scale range LOW HIGH")
    (tmp_path / "images").mkdir()
    out = tmp_path / "index"
    code = main(["index", str(tmp_path / "images"), "--scale", "statistics", "--out", str(out), "--model", TINY_MODEL])
    assert_user_error(code, capsys.readouterr().err, "index", "--scale statistics scales by STAC raster:bands",
                      "use --scale range LOW HIGH")
    assert not out.exists()
