"""Distributors: what runs the workers that write a shard folder's missing shards (:mod:`.shards`), as
clip-retrieval's distributors do. A worker is made once per process (it holds the model) and called once per shard,
so both distributors write the same files:

- :data:`in_process` runs one worker here, task after task;
- :class:`RayDistributor` turns the tasks into a Ray dataset mapped with ``map_batches`` onto a pool of actors, each
  holding one worker (one copy of the model, shipped through Ray's object store, so workers need the data paths but
  no model files). A worker writes its shard atomically under the output folder, which every node must share (NFS,
  or a mounted bucket): a worker dying mid-job loses only the shard it was writing (Ray retries it on another
  actor), and running the command again writes only the shards still missing. Ray is imported only when a Ray
  distributor runs (or :func:`check_engine` checks it is there); ``address`` joins a running cluster
  (``ray start --head`` / ``ray://``), without it a local one is started with ``num_cpus`` CPUs.

Used by ``rsitr embed`` (:func:`rsitr.inference.embed.embed_to_parquet`) and the index's chip shards
(:mod:`rsitr.index.chip_shards`, ``rsitr index --engine ray``).
"""

from __future__ import annotations

import logging
import socket
from dataclasses import asdict, dataclass
from typing import Callable, Protocol, Sequence

from rsitr.errors import MissingExtraError, UserError


@dataclass(frozen=True)
class ShardTask:
    """A shard to write: its number and what it holds, as its worker reads it (JSON: a row range, a file list)."""

    number: int
    spec: str


ShardWorker = Callable[[ShardTask], None]
"""Encodes and writes one shard; made once per process (or Ray actor), so it holds the model."""


class Distributor(Protocol):
    workers_device: str | None
    """The device the workers encode on (None: the caller's encoder as it is)."""

    def __call__(self, make_worker: Callable[[], ShardWorker], tasks: Sequence[ShardTask],
                 done: Callable[[ShardTask], None]) -> None:
        """Run a worker made by ``make_worker`` over every task (``done`` after each one written)."""


class InProcess:
    """The distributor that runs one worker here, task after task."""

    workers_device: str | None = None

    def __call__(self, make_worker: Callable[[], ShardWorker], tasks: Sequence[ShardTask],
                 done: Callable[[ShardTask], None]) -> None:
        if tasks:
            worker = make_worker()
            for task in tasks:
                worker(task)
                done(task)


in_process = InProcess()


def import_ray():
    try:
        import ray
    except ImportError:
        raise MissingExtraError("running on Ray needs the ray package: pip install 'rsitr[ray]'") from None
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
                                      f"leave out `address` for a local one", parameters=("address",)) from None
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
                                      f"with `ray start --head`, or leave out `address` for a local one",
                                      parameters=("address",)) from None


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
