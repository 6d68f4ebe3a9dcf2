"""``rsitr embed --engine ray`` and ``rsitr index --engine ray``: the encode pipeline's shards
(:mod:`rsitr.index.pipeline`) written by a Ray actor pool. This module is only the distributor: the workers are the
embedded path's own.

:class:`RayDistributor` turns the shards still missing into a Ray dataset and maps them with ``map_batches`` onto a
pool of actors, each holding one worker (one copy of the model, shipped through Ray's object store, so workers need
the data paths but no model files). A worker encodes its shard with the embedded path's code and writes it
atomically under the output folder, which must be shared by every node (NFS, or a mounted bucket). So:

- the files are those of the embedded path (names, columns, manifest, vectors): :func:`embed_with_ray` is
  :func:`rsitr.embeddings.embed_to_parquet` (its :class:`~rsitr.embeddings.ShardEncoder` workers) on Ray;
- a shard is there completely or not at all: a worker dying mid-job loses only the shard it was writing (Ray
  retries it on another actor), and running the command again encodes only the shards still missing;
- the manifest is written first and completed last, as by the embedded path, which can resume a Ray run and
  vice versa.

``address`` joins a running cluster (``ray start --head`` / ``ray://``); without it a local one is started with
``num_cpus`` CPUs.

``rsitr index --engine ray`` (:func:`build_index_with_ray`): the indexer plans the files to (re-)encode as for the
embedded path and hands them to :class:`RayChipEncoder`, the chip shards of :mod:`rsitr.index.chip_shards` written
by this pool (``<index>/ray_chips/``): the index ingests them file by file in its own order, with the embedded
path's store calls, so chips, ids and vectors are the embedded path's; a rerun after a crash encodes only the files
no shard holds, and the shards are deleted once the index is written.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

from torch import nn

from rsitr.embeddings import EmbedInput, EmbedSettings, EmbedSummary, embed_to_parquet
from rsitr.errors import MissingExtraError, UserError
from rsitr.index.archive_index import ArchiveIndex
from rsitr.index.chip_shards import ShardedChipEncoder
from rsitr.index.indexer import UpdateReport
from rsitr.index.pipeline import ShardTask, ShardWorker


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
    _quiet_ray_data(quiet["logging_level"])
    return ray


def _quiet_ray_data(level: int) -> None:
    """Ray Data sets its own logger to DEBUG with a console handler when imported, and draws progress bars: above
    INFO (a run without --verbose) its lines and bars stay off the terminal too."""
    if level <= logging.INFO:
        return
    import ray.data

    logging.getLogger("ray.data").setLevel(level)
    ray.data.DataContext.get_current().enable_progress_bars = False


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


class _ShardActor:
    """A Ray actor: one worker (one model), writing the shards it is handed."""

    def __init__(self, make_worker: Callable[[], ShardWorker]) -> None:
        self.worker = make_worker()

    def __call__(self, batch: dict) -> dict:
        for number, spec in zip(batch["number"], batch["spec"]):
            self.worker(ShardTask(int(number), str(spec)))
        return {"number": batch["number"]}


class RayDistributor:
    """The encode pipeline's distributor on Ray: the shards to write as a dataset, mapped onto a pool of at most
    ``actors`` CPU actors (no more than there are shards), each holding one worker; the cluster at ``address``, or a
    local one of ``num_cpus`` CPUs, is joined when there is a shard to write."""

    workers_device = "cpu"

    def __init__(self, actors: int = 2, address: str | None = None, num_cpus: int | None = None) -> None:
        self.actors, self.address, self.num_cpus = actors, address, num_cpus

    def __call__(self, make_worker: Callable[[], ShardWorker], tasks: Sequence[ShardTask],
                 done: Callable[[ShardTask], None]) -> None:
        if not tasks:
            return
        ray = start_ray(self.address, self.num_cpus)
        pool = ray.data.ActorPoolStrategy(size=max(1, min(self.actors, len(tasks))))
        ray.data.from_items([asdict(task) for task in tasks]).map_batches(
            _ShardActor, batch_size=1, compute=pool, num_cpus=1,
            fn_constructor_kwargs={"make_worker": make_worker}).materialize()
        for task in tasks:
            done(task)


def embed_with_ray(model: nn.Module, data: EmbedInput, out_dir: str | Path, settings: EmbedSettings,
                   model_name: str, pretrained: str | None, batch_size: int = 64, address: str | None = None,
                   num_cpus: int | None = None, actors: int = 2) -> EmbedSummary:
    """Encode ``data`` into ``out_dir`` as :func:`rsitr.embeddings.embed_to_parquet` does, on Ray."""
    if "text" in settings.modalities:
        raise UserError("--engine ray embeds images only; embed captions with the default engine")
    return embed_to_parquet(model.cpu(), data, Path(out_dir).resolve(), settings, model_name, pretrained, batch_size,
                            "cpu", progress=False, distributor=RayDistributor(actors, address, num_cpus))


# -- rsitr index --engine ray -------------------------------------------------------------------------------------
class RayChipEncoder(ShardedChipEncoder):
    """The indexer's chip encoder on Ray (see the module docstring): one shard per ``files_per_shard`` files."""

    def __init__(self, directory: str | Path, actors: int = 2, files_per_shard: int = 64) -> None:
        super().__init__(directory, RayDistributor(actors), files_per_shard)


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
