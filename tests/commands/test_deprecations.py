"""The one deprecation table (rsitr/deprecations.py): every old spelling a user typed yesterday still works today,
means exactly what its replacement means, warns once with the replacement and the removal release, and is hidden
from ``--help``; library keywords alike."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import pytest

from rsitr import deprecations
from rsitr.cli import build_parser, main
from rsitr.deprecations import DEPRECATIONS, Deprecation
from rsitr.errors import RsitrWarning

REQUIRED = {"rsitr demo": [], "rsitr eval": ["--data", "d.json", "--images", "d"], "rsitr train": ["--config", "c.yaml"],
            "rsitr reproduce": ["--config", "c.yaml"], "rsitr data inspect": ["a.json", "--images", "d"],
            "rsitr index": ["--out", "o"], "rsitr search": ["idx", "q"], "rsitr serve": ["idx"],
            "rsitr classify": ["src"], "rsitr embed": ["src", "--out", "o"], "rsitr models": []}
"""A command line each command accepts, to which the old or the new spelling is added."""

FLAGS = [entry for entry in DEPRECATIONS if entry.old.startswith("--")]
KEYWORDS = [entry for entry in DEPRECATIONS if not entry.old.startswith("--")]


def parsers(parser: argparse.ArgumentParser | None = None):
    parser = parser or build_parser()
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from parsers(sub)


def uses(entry: Deprecation) -> list[tuple[list[str], list[str], list[str]]]:
    """For each command the entry applies to: the command line with the old spelling, with the new one, and the
    flag's value (none for a switch)."""
    pairs = []
    for parser in parsers():
        if parser.prog == "rsitr" or not entry.applies_to(parser.prog):
            continue
        target = next((action for action in parser._actions if entry.new in action.option_strings or
                       (not action.option_strings and action.metavar == entry.new)), None)
        if target is None:
            continue
        value = [] if target.nargs == 0 else ["x.value"]
        command = [*parser.prog.split()[1:], *REQUIRED[parser.prog]]
        new = value if not target.option_strings else [entry.new, *value]
        pairs.append(([*command, entry.old, *value], [*command, *new], value))
    return pairs


@pytest.mark.parametrize("entry", FLAGS, ids=lambda entry: f"{entry.where}:{entry.old}")
def test_every_old_flag_means_its_replacement_and_warns_once(entry: Deprecation) -> None:
    pairs = uses(entry)
    assert pairs, f"{entry} applies to no command: remove it from the table"
    for old, new, value in pairs:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            assert build_parser().parse_args(old) == build_parser().parse_args(new), old
        assert [str(warning.message) for warning in said] == [entry.message], old
        twice = [*old, entry.old, *value]
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            build_parser().parse_args(twice)
        assert len(said) == 1, twice  # typed twice: still one line


@pytest.mark.parametrize("entry", FLAGS, ids=lambda entry: f"{entry.where}:{entry.old}")
def test_old_flags_are_hidden_and_the_message_names_the_replacement_and_the_release(entry: Deprecation) -> None:
    assert entry.message.startswith(f"{entry.old} is deprecated: it is now ")
    assert f"goes in rsitr {entry.removal}" in entry.message
    for parser in parsers():
        if parser.prog != "rsitr" and entry.applies_to(parser.prog):
            assert f"{entry.old} " not in parser.format_help().replace(f"{entry.old}-", ""), parser.prog


def test_the_command_line_shows_one_warning_line_and_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`rsitr data inspect ... --json FILE` (yesterday's spelling) writes the report and says the new flag once."""
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8), "green").save(tmp_path / "images" / "a.png")
    captions = tmp_path / "c.csv"
    captions.write_text("filename,caption,split\na.png,a green field,test\n")
    code = main(["data", "inspect", str(captions), "--images", str(tmp_path / "images"), "--json",
                 str(tmp_path / "r.json"), "--cache", str(tmp_path / "phash.json"), "--no-progress"])
    err = capsys.readouterr().err
    warning = deprecations.deprecation("rsitr data inspect", "--json").message
    assert code == 0 and err.splitlines() == [f"rsitr data: warning: {warning}"], err
    assert (tmp_path / "r.json").is_file()


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deprecations, "_warned", set())


@pytest.mark.parametrize("entry", KEYWORDS, ids=lambda entry: f"{entry.where}:{entry.old}")
def test_old_keywords_warn_once_per_process_and_pass_their_value(entry: Deprecation, fresh: None) -> None:
    with pytest.warns(RsitrWarning, match=f"^{entry.old} is deprecated: it is now {entry.new} "):
        assert deprecations.renamed(entry.where, entry.old, "m.pt", None) == "m.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert deprecations.renamed(entry.where, entry.old, "m.pt", None) == "m.pt"  # no second warning
        assert deprecations.renamed(entry.where, entry.old, None, "n.pt") == "n.pt"
    with pytest.raises(TypeError, match=f"both {entry.new} and its deprecated spelling {entry.old}"):
        deprecations.renamed(entry.where, entry.old, "m.pt", "n.pt")


def test_archive_index_open_and_create_app_take_the_old_keyword(fresh: None, tmp_path: Path) -> None:
    """The functions themselves route ``pretrained=`` through the table (warned before the missing index is found)."""
    from rsitr.api.app import create_app
    from rsitr.errors import UserError
    from rsitr.index import ArchiveIndex

    for call, where in ((lambda: ArchiveIndex.open(tmp_path / "none", pretrained="m.pt"), "ArchiveIndex.open"),
                        (lambda: create_app(tmp_path / "none", pretrained="m.pt"), "create_app")):
        with pytest.warns(RsitrWarning, match=deprecations.deprecation(where, "pretrained").message.split(" (")[0]):
            with pytest.raises((UserError, OSError)):
                call()


def test_each_library_entry_is_a_keyword_of_its_function_beside_its_replacement() -> None:
    import inspect

    from rsitr.api.app import create_app
    from rsitr.index import ArchiveIndex

    functions = {"create_app": create_app, **{f"ArchiveIndex.{name}": getattr(ArchiveIndex, name)
                                              for name in ("open", "search", "probe", "find_all", "scene_scores")}}
    for entry in KEYWORDS:
        parameters = inspect.signature(functions[entry.where]).parameters
        assert parameters[entry.old].kind is parameters[entry.new].kind is inspect.Parameter.KEYWORD_ONLY, entry
        assert parameters[entry.old].default is None, entry
