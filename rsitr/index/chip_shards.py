"""The indexer's chip encoder by shards: groups of archive files encoded by :func:`~rsitr.index.indexer.encode_files`
into Parquet shards (:mod:`rsitr.inference.shards`), then handed to the index file by file (``rsitr index --engine
ray`` runs the same workers on a Ray actor pool: :class:`RayChipEncoder`, :func:`build_index_with_ray`).

The shards are ``rsitr embed``'s layout (``part-NNNNN.parquet`` + ``_manifest.json``, in ``<index>/ray_chips/``, on
the storage a cluster shares with the index): a row per chip with ``id``, ``path``, ``image_embedding``, then
``sha256``, the chip window, its bounds and ``tokens``; the files a shard holds (size, CRS or the error that made one
unreadable, the chips left out for nodata) are in its Parquet metadata. They are a cache keyed by file path and content hash: a rerun after a crash
(a worker or the driver dying) encodes only the files no shard holds, and shards made with another model or other
chip settings are deleted first.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Iterator

import numpy as np

from rsitr.index.archive import Archive
from rsitr.index.archive_index import ArchiveIndex
from rsitr.index.chips import Chip
from rsitr.index.compatibility import CHANGEABLE
from rsitr.index.indexer import BuildOptions, EncodedFile, FileToEncode, IndexSettings, UpdateReport, encode_files
from rsitr.index.tiling import Window
from rsitr.inference.columns import vector_column, vector_matrix
from rsitr.inference.distributors import Distributor, RayDistributor, ShardTask, in_process, start_ray
from rsitr.inference.encoder import Encoder
from rsitr.inference.shards import SKIPPED_KEY, ShardFolder
from rsitr.models.factory import LoadedModel

CHIP_SHARDS = "ray_chips"
"""The shard folder inside the index directory (so it is on the storage the cluster shares with the index)."""
CHIP_FORMAT = "rsitr-index-chips-v1"
FILES_KEY = b"rsitr.files"
_WINDOW = ("x", "y", "width", "height")
_BOUNDS = ("left", "bottom", "right", "top")


class ChipShardWriter:
    """The worker: one encoder, encoding groups of archive files with the indexer's code, one shard a group."""

    def __init__(self, encoder: Encoder, archive: Archive, settings: IndexSettings, batch_size: int,
                 folder: ShardFolder) -> None:
        self.encoder, self.archive, self.settings, self.folder = encoder, archive, settings, folder
        self.batch_size = batch_size

    def __call__(self, task: ShardTask) -> None:
        files = [FileToEncode(**file) for file in json.loads(task.spec)]
        encoded = encode_files(self.encoder, self.archive, self.settings, [f.path for f in files], self.batch_size)
        self.folder.write(task.number, chip_table(files, encoded, self.encoder.dim))


def chip_table(files: list[FileToEncode], encoded: list[EncodedFile], dim: int):
    """One shard (see the module docstring) as a pyarrow Table."""
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
    arrays["image_embedding"] = vector_column(np.stack([chip.embedding for _, chip in chips]) if chips else
                                              np.zeros((0, dim)), np.float32)
    if chips and chips[0][1].tokens is not None:
        arrays["tokens"] = vector_column(np.stack([chip.tokens for _, chip in chips]), np.float16)
    listing = [{"path": file.path, "sha256": file.sha256, "width": e.width, "height": e.height, "crs": e.crs,
                "error": e.error, "nodata_chips": e.nodata_chips, "acquired": e.acquired} for file, e in zip(files, encoded)]
    skipped = [file.path for file, e in zip(files, encoded) if e.error is not None]
    return pa.table(arrays).replace_schema_metadata({FILES_KEY: json.dumps(listing).encode(),
                                                     SKIPPED_KEY: json.dumps(skipped).encode()})


def _shard_files(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return json.loads(pq.read_schema(path).metadata[FILES_KEY])


def read_chip_shard(path: Path, dim: int) -> dict[tuple[str, str], EncodedFile]:
    """The files of a shard with their chips, keyed by ``(path, sha256)``."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    files = {(f["path"], f["sha256"]): EncodedFile(f["path"], f["width"], f["height"], f["crs"], [], f["error"],
                                                   f["nodata_chips"], f.get("acquired"))
             for f in json.loads(table.schema.metadata[FILES_KEY])}
    columns = {name: table.column(name).to_pylist() for name in ("path", "sha256", *_WINDOW, *_BOUNDS)}
    vectors = vector_matrix(table.column("image_embedding"))
    tokens = vector_matrix(table.column("tokens")).reshape(len(vectors), -1, dim) \
        if "tokens" in table.column_names else None
    for row in range(table.num_rows):
        bounds = tuple(columns[name][row] for name in _BOUNDS)
        path = columns["path"][row]
        files[path, columns["sha256"][row]].chips.append(Chip(
            path, Window(*(columns[name][row] for name in _WINDOW)), None if bounds[0] is None else bounds,
            embedding=vectors[row], tokens=None if tokens is None else tokens[row]))
    return files


class ShardedChipEncoder:
    """A chip encoder (:data:`rsitr.index.indexer.ChipEncoder`) writing ``files_per_shard`` files a shard under
    ``<directory>/ray_chips``, its workers run by ``distributor``."""

    def __init__(self, directory: str | Path, distributor: Distributor = in_process, files_per_shard: int = 64) -> None:
        self.folder = ShardFolder(Path(directory).resolve() / CHIP_SHARDS)
        self.distributor, self.files_per_shard = distributor, files_per_shard
        self.encoded_shards = 0
        """Shards written by the last call (the others were kept from an earlier, interrupted run)."""

    def __call__(self, encoder: Encoder, archive: Archive, settings: IndexSettings, files: list[FileToEncode],
                 batch_size: int) -> Iterator[EncodedFile]:
        manifest = json.loads(json.dumps({
            "format": CHIP_FORMAT, "model": encoder.model_name, "pretrained": encoder.pretrained,
            "fingerprint": encoder.fingerprint().to_dict(),
            "settings": {key: value for key, value in asdict(settings).items()  # what changes a chip's rows
                         if key not in CHANGEABLE},
            "precision": encoder.precision}))
        self.folder.resume(manifest, [key for key in manifest if key != "fingerprint"], restart=True)
        self.folder.write_manifest(manifest)
        shards = self.folder.shards()
        where = {(f["path"], f["sha256"]): shard for shard in shards for f in _shard_files(shard)}
        missing = [file for file in files if (file.path, file.sha256) not in where]
        first = 1 + max((int(shard.stem.split("-")[1]) for shard in shards), default=-1)
        groups = [missing[start:start + self.files_per_shard]
                  for start in range(0, len(missing), self.files_per_shard)]
        self.encoded_shards = len(groups)
        tasks = [ShardTask(first + n, json.dumps([asdict(f) for f in group])) for n, group in enumerate(groups)]
        self.distributor(partial(ChipShardWriter, self._workers_encoder(encoder), archive, settings, batch_size,
                                 self.folder), tasks, lambda task: None)
        where.update({(file.path, file.sha256): self.folder.shard(first + n)
                      for n, group in enumerate(groups) for file in group})
        loaded: dict[Path, dict] = {}
        for file in files:
            shard = where[file.path, file.sha256]
            if shard not in loaded:
                loaded = {shard: read_chip_shard(shard, encoder.dim)}  # files come in shard order: one at a time
            yield loaded[shard][file.path, file.sha256]

    def _workers_encoder(self, encoder: Encoder) -> Encoder:
        """``encoder``, or a copy on the device the distributor's workers have (Ray's: CPUs) in its default
        precision there. ONNX Runtime towers travel as their export folder (each worker opens its own sessions)."""
        device = self.distributor.workers_device
        if device is None or encoder.model is None or encoder.device.type == device:
            return encoder
        return Encoder(LoadedModel(copy.deepcopy(encoder.model).to(device), encoder.model_name, encoder.pretrained,
                                   encoder.recipe), device, "auto")

    def clear(self) -> None:
        self.folder.clear()


# -- rsitr index --engine ray -------------------------------------------------------------------------------------
class RayChipEncoder(ShardedChipEncoder):
    """The indexer's chip encoder on Ray (see the module docstring): one shard per ``files_per_shard`` files."""

    def __init__(self, directory: str | Path, actors: int = 2, files_per_shard: int = 64) -> None:
        super().__init__(directory, RayDistributor(actors), files_per_shard)


def build_index_with_ray(directory: str | Path, images: str | Path, model_name: str | None = None,
                         pretrained: str | None = None, options: BuildOptions | None = None, *,
                         address: str | None = None, num_cpus: int | None = None, actors: int = 2,
                         files_per_shard: int = 64, **build_arguments) -> tuple[ArchiveIndex, UpdateReport]:
    """:meth:`ArchiveIndex.build` with the chips encoded on Ray (the same index); the shards are deleted once it is
    written. An unreachable ``address`` is refused before anything is written."""
    start_ray(address, num_cpus)
    chip_encoder = RayChipEncoder(directory, actors, files_per_shard)
    result = ArchiveIndex.build(directory, images, model_name, pretrained, options, chip_encoder=chip_encoder,
                                **build_arguments)
    chip_encoder.clear()
    return result
