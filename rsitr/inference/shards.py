"""Resumable folders of Parquet shards, as clip-retrieval's writer leaves them: ``part-NNNNN.parquet`` files, each
written atomically, and ``_manifest.json``, what they were made from. A run that finds the same manifest keeps the
shards there and writes only the missing ones; another manifest is refused (``rsitr embed``) or starts the folder
over (the index's chip cache, :mod:`rsitr.index.chip_shards`). The workers writing shards are run by a distributor
(:mod:`rsitr.inference.distributors`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterable, Sequence

from rsitr.atomic import write_atomic
from rsitr.documents import expect_mapping, read_json
from rsitr.errors import UserError
from rsitr.inference.encoder import Fingerprint

MANIFEST = "_manifest.json"  # "_" so that Parquet readers of the folder skip it
SHARD_NAME = "part-{:05d}.parquet"
SKIPPED_KEY = b"rsitr.skipped"
"""A shard's Parquet metadata key: the inputs it holds no row of (unreadable)."""


class ShardFolder:
    """A folder of Parquet shards and their manifest (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def shard(self, number: int) -> Path:
        return self.path / SHARD_NAME.format(number)

    def shards(self) -> list[Path]:
        return sorted(self.path.glob("part-*.parquet"))

    def strays(self, numbers: Iterable[int]) -> list[Path]:
        """The Parquet files of the folder that are no shard ``numbers`` of this run (a copied ``part-00007``):
        a reader of the whole folder would read their rows too."""
        expected = {self.shard(number).name for number in numbers}
        return sorted(path for path in self.path.glob("*.parquet") if path.name not in expected)

    def resume(self, manifest: dict, compared: Sequence[str], restart: bool = False) -> None:
        """Keep the shards of a run whose manifest has the same ``compared`` keys and a matching model fingerprint;
        otherwise refuse with a :class:`UserError` naming the difference, or with ``restart`` delete them."""
        path = self.path / MANIFEST
        if not path.is_file():
            problem = f"{self.path} holds Parquet shards but no {MANIFEST}; pass an empty or new `out_dir`" \
                if self.shards() else None
        else:
            try:
                old = expect_mapping(read_json(path, "manifest"), f"manifest {path}")
                same_model = Fingerprint.from_dict(old["fingerprint"]).matches(
                    Fingerprint.from_dict(manifest["fingerprint"]))
            except (ValueError, KeyError, TypeError, AttributeError) as err:  # DocumentError, not a manifest
                old, same_model = None, False
                problem = (f"{path} is no manifest rsitr can read ({type(err).__name__}: {str(err)[:160]}); pass "
                           f"another `out_dir`, or delete {self.path} to start over")
            if old is not None:
                changed = [key for key in compared if old.get(key) != manifest[key]]
                if not same_model:
                    changed.append("model (fingerprint)")
                problem = (f"{self.path} holds embeddings made with other {', '.join(changed)}; pass another "
                           f"`out_dir`, or delete it to start over (the same command resumes an interrupted run)"
                           ) if changed else None
        if problem is not None:
            if not restart:
                raise UserError(problem, parameters=("out_dir",))
            self.clear()

    def write_manifest(self, manifest: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path / MANIFEST, lambda temporary: Path(temporary).write_text(json.dumps(manifest, indent=2)))

    def write(self, number: int, table) -> None:
        """Write ``table`` (a pyarrow Table) as shard ``number``, atomically: it is there whole or not at all."""
        import pyarrow.parquet as pq

        write_atomic(self.shard(number), lambda temporary: pq.write_table(table, temporary))

    def clear(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
