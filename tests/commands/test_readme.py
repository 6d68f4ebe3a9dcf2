"""The command blocks of the README and of docs/*.md (where its long forms moved), walked line by line: every `rsitr`
line parses and names files a checkout has; each example that runs in a minute or so on a CPU runs as written (in a
checkout-like folder, after the lines above it in its block), and each that does not is skipped with the reason
:data:`NOT_RUN` gives for it, so a new example is either run here or says why not. The demo block's feedback
example finds what the README says it finds."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from rsitr.cli import build_parser, main
from support import REPO, SHARED_DATA

DEMO = "rsitr/demo_data/ucm"

NOT_RUN = {
    "pip install": "installs into the environment (CI's set-up does; `rsitr demo` runs in tests/commands/test_cli.py)",
    "python -m pytest": "the test suite itself",
    "rsitr serve ": "a server that answers until stopped (tests/api/ start it on a free port)",
    "rsitr index sentinel2/": "the reader's own Sentinel-2 scenes (tests/index/test_rasters.py index band GeoTIFFs)",
    "rsitr index search.json": "the reader's STAC search (tests/index/test_remote.py index remote COGs)",
    "rsitr search visual.index":
        "the index of the reader's STAC search above (tests/index/test_where.py tests --bbox, --after, --before)",
    "rsitr train --config configs/data/ucm.yaml": "trains on real data for hours",
    "rsitr train --config configs/data/rsicd_ucm.yaml": "trains on real data for hours",
    "rsitr eval --data ../shared/data/ucm/dataset_ucm.json --images ../shared/data/ucm/images --pretrained runs/ucm":
        "needs runs/ucm, the hours-long training above",
    "rsitr classify data/UCMerced_LandUse/Images": "a folder where the reader unpacked UC Merced, not in a checkout",
    "rsitr reproduce --config configs/paper/ebaker.yaml":
        "needs RSICD, RSITMD, NWPU-Captions and OpenAI's CLIP weights, none of which a checkout has",
    "rsitr data inspect": "perceptual hashes of 12,921 RSICD and UC Merced images: minutes",
    "rsitr eval --data ../shared/data/rsicd": "RSICD's 1,093 test images and 5,465 captions: minutes on a CPU",
}
"""Line prefix (README or docs/*.md) -> why this test does not run it."""

DOCUMENTS = ("README.md", *sorted(str(path.relative_to(REPO)) for path in (REPO / "docs").glob("*.md")))
"""The files whose bash blocks are walked: the README and every document it links into."""


@dataclass(frozen=True)
class Line:
    block: str
    """``FILE:N``: the N-th bash block of that file."""
    number: int
    """The line's place among its block's commands."""
    text: str
    """Continuations joined; the comment cut (the redirection kept)."""

    @property
    def command(self) -> str:
        return self.text.split(" > ")[0].strip()

    @property
    def redirect(self) -> str | None:
        return self.text.split(" > ")[1].strip() if " > " in self.text else None

    @property
    def not_run(self) -> str | None:
        return next((why for prefix, why in NOT_RUN.items() if " ".join(self.command.split()).startswith(prefix)),
                    None)


def readme_lines() -> list[Line]:
    """Every command line of the bash blocks of :data:`DOCUMENTS`, in order."""
    lines = []
    for document in DOCUMENTS:
        blocks = re.findall(r"^```bash\n(.*?)^```", (REPO / document).read_text(encoding="utf-8"), re.M | re.S)
        for block, text in enumerate(blocks):
            commands = [line.split("  #")[0].strip() for line in text.replace("\\\n", " ").splitlines()]
            commands = [command for command in commands if command and not command.startswith("#")]
            lines += [Line(f"{document}:{block}", number, command) for number, command in enumerate(commands)]
    return lines


def test_the_docs_blocks_are_walked() -> None:
    blocks = {line.block.split(":")[0] for line in readme_lines()}
    assert {"README.md", "docs/USAGE.md", "docs/REPRODUCTION.md"} <= blocks


def readme_commands() -> list[tuple[str, str]]:
    """``(block, command line)`` of every `rsitr` line of the bash blocks of :data:`DOCUMENTS`."""
    return [(line.block, line.command) for line in readme_lines() if line.command.startswith("rsitr ")]


def test_every_readme_command_parses_and_names_files_a_checkout_has() -> None:
    commands = readme_commands()
    assert len(commands) > 10
    for block, line in commands:
        argv = shlex.split(line)[1:]
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"{block}: {line!r} does not parse")
        for token in argv:
            if token.startswith("../shared/data") and not SHARED_DATA.is_dir():
                continue
            if token.startswith(("configs/", DEMO, "../shared/data")):
                assert (REPO / token).exists(), f"{block}: {line}: {token} is not in a checkout"


def test_every_line_left_out_has_a_reason_that_still_matches_a_line() -> None:
    lines = readme_lines()
    for prefix in NOT_RUN:
        assert any(" ".join(line.command.split()).startswith(prefix) for line in lines), \
            f"NOT_RUN names {prefix!r}, which no README or docs/*.md line starts with any longer"


class Checkout:
    """A folder laid out as a checkout beside ../shared/data (the demo images, the configs; the real data where this
    machine has it), where README lines run in order: a line runs after the lines above it in its block."""

    def __init__(self, root: Path) -> None:
        self.cwd = root / "checkout"
        (self.cwd / "rsitr").mkdir(parents=True)
        (self.cwd / "rsitr" / "demo_data").symlink_to(REPO / "rsitr" / "demo_data")
        (self.cwd / "configs").symlink_to(REPO / "configs")
        if SHARED_DATA.is_dir():
            (root / "shared").mkdir()
            (root / "shared" / "data").symlink_to(SHARED_DATA)
        self.ran: dict[tuple[str, int], str] = {}

    def run(self, line: Line, monkeypatch, capsys) -> str:
        """``line``'s output (after the lines above it in its block, each once); a failing line fails the test."""
        for earlier in readme_lines():
            if earlier.block == line.block and earlier.number < line.number and earlier.not_run is None and \
                    (earlier.block, earlier.number) not in self.ran:
                self.run(earlier, monkeypatch, capsys)
        if (line.block, line.number) in self.ran:
            return self.ran[line.block, line.number]
        monkeypatch.chdir(self.cwd)
        argv = shlex.split(line.command)
        if argv[0] == "rsitr":
            capsys.readouterr()
            code = main(argv[1:])
            out = capsys.readouterr().out
        else:
            done = subprocess.run([sys.executable, *argv[1:]] if argv[0] == "python" else argv, cwd=self.cwd,
                                  capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin"})
            code, out = done.returncode, done.stdout + done.stderr
        assert code == 0, f"{line.block}: {line.text}: exit {code}\n{out}"
        if line.redirect:
            (self.cwd / line.redirect).write_text(out)
        self.ran[line.block, line.number] = out
        return out


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Checkout:
    return Checkout(tmp_path_factory.mktemp("readme"))


@pytest.mark.slow
@pytest.mark.parametrize("line", readme_lines(), ids=lambda line: f"{line.block}.{line.number}")
def test_the_readme_example_runs_as_written(line: Line, checkout: Checkout, monkeypatch, capsys) -> None:
    if line.not_run:
        pytest.skip(f"{line.block} {line.command[:60]!r}: {line.not_run}")
    if not SHARED_DATA.is_dir():
        # a line runs after the lines above it in its block: one of them reading the real data skips it too
        needing = [earlier for earlier in readme_lines() if earlier.block == line.block and earlier.not_run is None
                   and earlier.number <= line.number and "../shared/data" in earlier.command]
        if needing:
            pytest.skip(f"{line.block} {line.command[:60]!r}: needs the real data in ../shared/data (line "
                        f"{needing[0].number} of its block reads it), absent here")
    out = checkout.run(line, monkeypatch, capsys)
    if line.command.startswith("rsitr search") and "--all" in line.command:  # what the README says it finds
        found = re.findall(r"^\s*\d+\s+\S+\s+(\S+) \[.*\]  chip \d+", out, re.M)  # rank, probability, file
        tanks = sum(Path(path).name.startswith("storagetanks") for path in found)
        assert len(found) >= 3 and tanks >= len(found) / 2, out
    if line.redirect and line.redirect.endswith(".geojson"):
        collection = json.loads((checkout.cwd / line.redirect).read_text())
        assert collection["type"] == "FeatureCollection" and collection["features"]
