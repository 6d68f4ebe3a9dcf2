"""``rsitr embed --engine ray``: the Parquet shards of :mod:`rsitr.embeddings`, encoded on a Ray cluster.

Ray Data turns the shards still missing (input row ranges of the file list) into a dataset and maps them with
``map_batches`` onto a pool of actors, each holding one copy of the model (shipped through Ray's object store, so
workers need the data paths but no model files). Each actor encodes a shard with the embedded path's own code
(:func:`rsitr.embeddings._encode_shard`, same batches, same preprocessing) and writes it atomically under
the output folder, which must be shared by every node (NFS, or a mounted bucket). So:

- the files are those of ``rsitr embed`` (names, columns, manifest) and the vectors the embedded path's;
- a shard is there completely or not at all: a worker dying mid-job loses only the shard it was writing (Ray
  retries it on another actor), and running the command again encodes only the shards still missing;
- the manifest is written first and completed last, as by the embedded path, which can resume a Ray run and
  vice versa.

``address`` joins a running cluster (``ray start --head`` / ``ray://``); without it a local one is started with
``num_cpus`` CPUs.

``rsitr index --engine ray`` (:func:`build_index_with_ray`): the indexer plans the files to (re-)encode as for the
embedded path and hands them to :class:`RayChipEncoder`, whose actors run the indexer's own
:func:`rsitr.index.indexer.encode_files` on groups of files and write each group's chips as one Parquet shard in
the embed layout (``part-NNNNN.parquet`` + ``_manifest.json``, in ``<index>/ray_chips/``; columns ``id``,
``path``, ``image_embedding`` plus ``sha256``, the chip window, its bounds and ``tokens``). The index then ingests
the shards file by file in its own order, with the embedded path's store calls, so chips, ids and vectors are the
embedded path's. The shards are a cache keyed by file path and content hash: a rerun after a crash (a worker or
the driver dying) encodes only the files no shard holds; they are deleted once the index is written.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import socket
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import numpy as np

from torch import nn

from rsitr.atomic import write_atomic
from rsitr.embeddings import (MANIFEST, SHARD_NAME, SKIPPED_KEY, EmbedInput, EmbedSettings, EmbedSummary,
                              _check_resumable, _encode_shard, _manifest, _shard_info, _write_manifest, _write_table)
from rsitr.errors import UserError
from rsitr.index.archive_index import ArchiveIndex
from rsitr.index.compatibility import CHANGEABLE
from rsitr.index.index_encoder import Encoder, Fingerprint
from rsitr.index.indexer import EncodedChip, EncodedFile, FileToEncode, IndexSettings, UpdateReport, encode_files
from rsitr.index.lance_store import MissingExtraError
from rsitr.index.tiling import Window
from rsitr.models.factory import LoadedModel


def import_ray():
    try:
        import ray
    except ImportError:
        raise MissingExtraError("--engine ray needs the ray package: pip install 'rsitr[ray]'") from None
    return ray


class UnreachableClusterError(UserError):
    """``--address`` names no running Ray cluster."""


def start_ray(address: str | None, num_cpus: int | None):
    """Join the cluster at ``address``, or start a local one; an unreachable address is a :class:`UserError`."""
    ray = import_ray()
    if address and address != "auto":
        _check_reachable(address)  # also when this process is already attached to a cluster
    if ray.is_initialized():
        return ray
    # Ray's own log lines at the level of the root logger (the command line's: ERROR unless --verbose)
    quiet = {"log_to_driver": False, "include_dashboard": False,
             "logging_level": logging.getLogger().getEffectiveLevel()}
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(num_cpus=num_cpus, **quiet)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as err:
        raise UnreachableClusterError(f"cannot join the Ray cluster at {address or 'a new local cluster'} "
                                      f"({str(err).splitlines()[0][:200]}); start it with `ray start --head` or "
                                      f"leave out --address for a local one") from None
    return ray


def check_engine(address: str | None) -> None:
    """Fail before any input is read or model loaded: the ray extra is missing, or ``address`` answers nothing."""
    import_ray()
    if address and address != "auto":
        _check_reachable(address)


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse an address whose head port does not answer: ``ray.init`` would retry it for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as err:
        raise UnreachableClusterError(f"cannot reach the Ray cluster at {address} ({err or 'no port'}); start it "
                                      f"with `ray start --head`, or leave out --address for a local one") from None


def _actor_pool(ray, actors: int, tasks: int):
    """A pool of at most ``actors`` model holders, no more than there are shards to write."""
    return ray.data.ActorPoolStrategy(size=max(1, min(actors, tasks)))


class _ShardWriter:
    """A Ray actor: one model, encoding and writing the shards it is handed."""

    def __init__(self, model: nn.Module, model_name: str, pretrained: str | None, data: EmbedInput, out_dir: str,
                 settings: EmbedSettings, batch_size: int) -> None:
        self.encoder = Encoder(LoadedModel(model, model_name, pretrained), "cpu")
        self.data, self.out_dir, self.settings, self.batch_size = data, Path(out_dir), settings, batch_size

    def __call__(self, batch: dict) -> dict:
        for number, start, stop in zip(batch["shard"], batch["start"], batch["stop"]):
            table = _encode_shard(self.encoder, self.data, int(start), int(stop), self.settings, self.batch_size, 0)
            write_atomic(self.out_dir / SHARD_NAME.format(int(number)),
                         lambda temporary, table=table: _write_table(table, temporary))
        return {"shard": batch["shard"]}


def embed_with_ray(model: nn.Module, data: EmbedInput, out_dir: str | Path, settings: EmbedSettings,
                   model_name: str, pretrained: str | None, batch_size: int = 64, address: str | None = None,
                   num_cpus: int | None = None, actors: int = 2) -> EmbedSummary:
    """Encode ``data`` into ``out_dir`` as :func:`rsitr.embeddings.embed_to_parquet` does, on Ray."""
    if "text" in settings.modalities:
        raise UserError("--engine ray embeds images only; embed captions with the default engine")
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    encoder = Encoder(LoadedModel(model, model_name, pretrained), "cpu")
    manifest = _manifest(encoder, data, settings)
    _check_resumable(out_dir, manifest)
    ray = start_ray(address, num_cpus)
    _write_manifest(out_dir, manifest)
    ranges = [(number, start, min(start + settings.shard_size, len(data.items)))
              for number, start in enumerate(range(0, len(data.items), settings.shard_size))]
    missing = [r for r in ranges if not (out_dir / SHARD_NAME.format(r[0])).is_file()]
    if missing:
        shards = ray.data.from_items([{"shard": n, "start": s, "stop": e} for n, s, e in missing])
        shards.map_batches(_ShardWriter, batch_size=1, compute=_actor_pool(ray, actors, len(missing)), num_cpus=1,
                           fn_constructor_kwargs={"model": model, "model_name": model_name, "pretrained": pretrained,
                                                  "data": data, "out_dir": str(out_dir), "settings": settings,
                                                  "batch_size": batch_size}).materialize()
    summary = EmbedSummary(out_dir, 0, len(ranges), len(ranges) - len(missing))
    for number, start, stop in ranges:
        info = _shard_info(out_dir / SHARD_NAME.format(number), start, stop)
        summary.rows += info["rows"]
        summary.skipped += info["skipped"]
    _write_manifest(out_dir, {**manifest, "complete": True, "shards": summary.shards, "rows_written": summary.rows,
                              "skipped": summary.skipped})
    return summary



# -- rsitr index --engine ray -------------------------------------------------------------------------------------
CHIP_SHARDS = "ray_chips"
"""The shard folder inside the index directory (so it is on the storage the cluster shares with the index)."""
CHIP_FORMAT = "rsitr-index-chips-v1"
FILES_KEY = b"rsitr.files"
_WINDOW = ("x", "y", "width", "height")
_BOUNDS = ("left", "bottom", "right", "top")


class _ChipShardWriter:
    """A Ray actor: one model, encoding groups of archive files with the indexer's code, one shard a group."""

    def __init__(self, model: nn.Module, model_name: str, pretrained: str | None, precision: str, root: str,
                 out_dir: str, settings: IndexSettings, batch_size: int) -> None:
        self.encoder = Encoder(LoadedModel(model, model_name, pretrained), "cpu", precision)
        self.root, self.out_dir, self.settings, self.batch_size = Path(root), Path(out_dir), settings, batch_size

    def __call__(self, batch: dict) -> dict:
        for number, spec in zip(batch["shard"], batch["files"]):
            files = [FileToEncode(**file) for file in json.loads(spec)]
            encoded = encode_files(self.encoder, self.root, self.settings, [f.path for f in files], self.batch_size)
            table = _chip_table(files, encoded, self.encoder.dim)
            write_atomic(self.out_dir / SHARD_NAME.format(int(number)),
                         lambda temporary, table=table: _write_table(table, temporary))
        return {"shard": batch["shard"]}


def _chip_table(files: list[FileToEncode], encoded: list[EncodedFile], dim: int):
    """One shard: a row per chip (embed's ``id``, ``path``, ``image_embedding``, then ``sha256``, the window, the
    bounds and ``tokens``); the files it holds (size, CRS or the error that made one unreadable) in its metadata."""
    import pyarrow as pa

    chips = [(file, chip) for file, encoded_file in zip(files, encoded) for chip in encoded_file.chips]
    arrays = {"id": pa.array(range(len(chips)), pa.int64()),
              "path": pa.array([file.path for file, _ in chips], pa.string()),
              "sha256": pa.array([file.sha256 for file, _ in chips], pa.string())}
    for name in _WINDOW:
        arrays[name] = pa.array([getattr(chip.window, name) for _, chip in chips], pa.int64())
    for position, name in enumerate(_BOUNDS):
        arrays[name] = pa.array([None if chip.bounds is None else chip.bounds[position] for _, chip in chips],
                                pa.float64())
    flat = np.concatenate([chip.embedding for _, chip in chips]) if chips else np.zeros(0)
    arrays["image_embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(flat.astype(np.float32)), dim)
    if chips and chips[0][1].tokens is not None:
        tokens = np.stack([chip.tokens for _, chip in chips]).astype(np.float16)
        arrays["tokens"] = pa.FixedSizeListArray.from_arrays(pa.array(tokens.reshape(-1)), int(tokens[0].size))
    listing = [{"path": file.path, "sha256": file.sha256, "width": e.width, "height": e.height, "crs": e.crs,
                "error": e.error} for file, e in zip(files, encoded)]
    skipped = [file.path for file, e in zip(files, encoded) if e.error is not None]
    return pa.table(arrays).replace_schema_metadata({FILES_KEY: json.dumps(listing).encode(),
                                                     SKIPPED_KEY: json.dumps(skipped).encode()})


def _shard_files(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return json.loads(pq.read_schema(path).metadata[FILES_KEY])


def _read_chip_shard(path: Path, dim: int) -> dict[tuple[str, str], EncodedFile]:
    """The files of a shard with their chips, keyed by ``(path, sha256)``."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    files = {(f["path"], f["sha256"]): EncodedFile(f["path"], f["width"], f["height"], f["crs"], [], f["error"])
             for f in json.loads(table.schema.metadata[FILES_KEY])}
    columns = {name: table.column(name).to_pylist() for name in ("path", "sha256", *_WINDOW, *_BOUNDS)}
    vectors = table.column("image_embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    tokens = None
    if "tokens" in table.column_names:
        tokens = table.column("tokens").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        tokens = tokens.reshape(len(vectors), -1, dim)
    for row in range(table.num_rows):
        bounds = tuple(columns[name][row] for name in _BOUNDS)
        files[columns["path"][row], columns["sha256"][row]].chips.append(EncodedChip(
            Window(*(columns[name][row] for name in _WINDOW)), None if bounds[0] is None else bounds, vectors[row],
            None if tokens is None else tokens[row]))
    return files


class RayChipEncoder:
    """The indexer's chip encoder on Ray (see the module docstring): one shard per ``files_per_shard`` files."""

    def __init__(self, directory: str | Path, actors: int = 2, files_per_shard: int = 64) -> None:
        self.out_dir = Path(directory).resolve() / CHIP_SHARDS
        self.actors, self.files_per_shard = actors, files_per_shard
        self.encoded_shards = 0
        """Shards written by the last call (the others were kept from an earlier, interrupted run)."""

    def __call__(self, encoder: Encoder, root: Path, settings: IndexSettings, files: list[FileToEncode],
                 batch_size: int) -> Iterator[EncodedFile]:
        ray = import_ray()
        manifest = json.loads(json.dumps({
            "format": CHIP_FORMAT, "model": encoder.model_name, "pretrained": encoder.pretrained,
            "fingerprint": encoder.fingerprint().to_dict(),
            "settings": {key: value for key, value in asdict(settings).items()  # what changes a chip's rows
                         if key not in CHANGEABLE},
            "precision": encoder.precision}))
        self._reset_unless(manifest)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        _write_manifest(self.out_dir, manifest)
        shards = sorted(self.out_dir.glob("part-*.parquet"))
        where = {(f["path"], f["sha256"]): shard for shard in shards for f in _shard_files(shard)}
        missing = [file for file in files if (file.path, file.sha256) not in where]
        first = 1 + max((int(shard.stem.split("-")[1]) for shard in shards), default=-1)
        groups = [missing[start:start + self.files_per_shard]
                  for start in range(0, len(missing), self.files_per_shard)]
        self.encoded_shards = len(groups)
        if groups:
            on_cpu = encoder.device.type == "cpu"
            model = encoder.model if on_cpu else copy.deepcopy(encoder.model).cpu()
            items = [{"shard": first + n, "files": json.dumps([asdict(f) for f in group])}
                     for n, group in enumerate(groups)]
            ray.data.from_items(items).map_batches(
                _ChipShardWriter, batch_size=1, compute=_actor_pool(ray, self.actors, len(groups)), num_cpus=1,
                fn_constructor_kwargs={"model": model, "model_name": encoder.model_name,
                                       "pretrained": encoder.pretrained,
                                       "precision": encoder.precision if on_cpu else "auto", "root": str(root),
                                       "out_dir": str(self.out_dir), "settings": settings,
                                       "batch_size": batch_size}).materialize()
            where.update({(file.path, file.sha256): self.out_dir / SHARD_NAME.format(first + n)
                          for n, group in enumerate(groups) for file in group})
        loaded: dict[Path, dict] = {}
        for file in files:
            shard = where[file.path, file.sha256]
            if shard not in loaded:
                loaded = {shard: _read_chip_shard(shard, encoder.dim)}  # files come in shard order: one at a time
            yield loaded[shard][file.path, file.sha256]

    def _reset_unless(self, manifest: dict) -> None:
        """Drop shards made with another model or other settings."""
        path = self.out_dir / MANIFEST
        if path.is_file():
            old = json.loads(path.read_text())
            if {k: v for k, v in old.items() if k != "fingerprint"} == \
                    {k: v for k, v in manifest.items() if k != "fingerprint"} and \
                    Fingerprint.from_dict(old["fingerprint"]).matches(Fingerprint.from_dict(manifest["fingerprint"])):
                return
        self.clear()

    def clear(self) -> None:
        shutil.rmtree(self.out_dir, ignore_errors=True)


def build_index_with_ray(directory: str | Path, images: str | Path, model_name: str | None = None,
                         pretrained: str | None = None, *, address: str | None = None, num_cpus: int | None = None,
                         actors: int = 2, files_per_shard: int = 64, **build_arguments
                         ) -> tuple[ArchiveIndex, UpdateReport]:
    """:meth:`ArchiveIndex.build` with the chips encoded on Ray (the same index); the shards are deleted once it is
    written. An unreachable ``address`` is refused before anything is written."""
    start_ray(address, num_cpus)
    chip_encoder = RayChipEncoder(directory, actors, files_per_shard)
    result = ArchiveIndex.build(directory, images, model_name, pretrained, chip_encoder=chip_encoder,
                                **build_arguments)
    chip_encoder.clear()
    return result
