"""The README's command blocks: every `rsitr` line parses and names files a checkout has; the demo block's search
lines run as written on one demo index, and its feedback example finds what it says it finds."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from rsitr.cli import build_parser, main
from support import REPO, SHARED_DATA

DEMO = "rsitr/demo_data/ucm"


def readme_commands() -> list[tuple[int, str]]:
    """``(block number, command line)`` of every `rsitr` line of the README's bash blocks, continuations joined and
    comments and redirections cut."""
    blocks = re.findall(r"^```bash\n(.*?)^```", (REPO / "README.md").read_text(encoding="utf-8"), re.M | re.S)
    commands = []
    for number, block in enumerate(blocks):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].split(" > ")[0].strip()
            if line.startswith("rsitr "):
                commands.append((number, line))
    return commands


def test_every_readme_command_parses_and_names_files_a_checkout_has() -> None:
    commands = readme_commands()
    assert len(commands) > 10
    for _, line in commands:
        argv = shlex.split(line)[1:]
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"README: {line!r} does not parse")
        for token in argv:
            if token.startswith("../shared/data") and not SHARED_DATA.is_dir():
                continue
            if token.startswith(("configs/", DEMO, "../shared/data")):
                assert (REPO / token).exists(), f"README: {line}: {token} is not in a checkout"


@pytest.mark.slow
def test_the_demo_blocks_search_lines_run_and_the_feedback_example_finds_storage_tanks(tmp_path, monkeypatch, capsys):
    """The first block (`rsitr index rsitr/demo_data/ucm --out ucm.index`, then searches of it) as written, in a
    folder that holds the demo images where a checkout has them; `serve` and `embed` lines are left to their tests."""
    (tmp_path / "rsitr").mkdir()
    (tmp_path / "rsitr" / "demo_data").symlink_to(REPO / "rsitr" / "demo_data")
    monkeypatch.chdir(tmp_path)
    first = min(number for number, line in readme_commands() if line.startswith(f"rsitr index {DEMO} "))
    lines = [line for number, line in readme_commands() if number == first and
             line.split()[1] in ("index", "search")]
    assert any("--all" in line for line in lines) and any("--like" in line for line in lines)
    for line in lines:
        capsys.readouterr()
        argv = shlex.split(line)[1:]
        assert main([*argv, "--json"] if "--all" in argv else argv) == 0, line
        if "--all" in argv:
            found = json.loads(capsys.readouterr().out)
            paths = [Path(hit["path"]).name for hit in found["results"]]
            tanks = sum(path.startswith("storagetanks") for path in paths)
            assert found["count"] >= 3 and tanks >= len(paths) / 2, paths  # what the README says it finds
