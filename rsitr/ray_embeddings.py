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
"""

from __future__ import annotations

import json
import socket
from dataclasses import asdict
from pathlib import Path

from torch import nn

from rsitr.atomic import write_atomic
from rsitr.embeddings import (FORMAT, SHARD_NAME, EmbedInput, EmbedSettings, EmbedSummary, _check_resumable,
                              _encode_shard, _shard_info, _write_manifest, _write_table)
from rsitr.errors import UserError
from rsitr.index.index_encoder import Encoder
from rsitr.index.lance_store import MissingExtraError


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
    if ray.is_initialized():
        return ray
    if address and address != "auto":
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, log_to_driver=False, include_dashboard=False)
        else:
            ray.init(num_cpus=num_cpus, log_to_driver=False, include_dashboard=False)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as err:
        raise UnreachableClusterError(f"cannot join the Ray cluster at {address or 'a new local cluster'} "
                                      f"({str(err).splitlines()[0][:200]}); start it with `ray start --head` or "
                                      f"leave out --address for a local one") from None
    return ray


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse an address whose head port does not answer: ``ray.init`` would retry it for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as err:
        raise UnreachableClusterError(f"cannot reach the Ray cluster at {address} ({err or 'no port'}); start it "
                                      f"with `ray start --head`, or leave out --address for a local one") from None


class _ShardWriter:
    """A Ray actor: one model, encoding and writing the shards it is handed."""

    def __init__(self, model: nn.Module, model_name: str, pretrained: str | None, data: EmbedInput, out_dir: str,
                 settings: EmbedSettings, batch_size: int) -> None:
        self.encoder = Encoder(model, model_name, pretrained, "cpu")
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
    encoder = Encoder(model, model_name, pretrained, "cpu")
    manifest = {"format": FORMAT, "model": model_name, "pretrained": pretrained,
                "fingerprint": encoder.fingerprint().to_dict(), "settings": asdict(settings),
                "input": {"source": str(data.source), "root": str(data.root), "kind": data.kind,
                          "rows": len(data.items), "digest": data.digest()}}
    manifest = json.loads(json.dumps(manifest))
    _check_resumable(out_dir, manifest)
    ray = start_ray(address, num_cpus)
    _write_manifest(out_dir, manifest)
    ranges = [(number, start, min(start + settings.shard_size, len(data.items)))
              for number, start in enumerate(range(0, len(data.items), settings.shard_size))]
    missing = [r for r in ranges if not (out_dir / SHARD_NAME.format(r[0])).is_file()]
    if missing:
        shards = ray.data.from_items([{"shard": n, "start": s, "stop": e} for n, s, e in missing])
        shards.map_batches(_ShardWriter, batch_size=1, concurrency=max(1, min(actors, len(missing))), num_cpus=1,
                           fn_constructor_kwargs={"model": model, "model_name": model_name, "pretrained": pretrained,
                                                  "data": data, "out_dir": str(out_dir), "settings": settings,
                                                  "batch_size": batch_size}).materialize()
    summary = EmbedSummary(out_dir, 0, len(ranges), len(ranges) - len(missing))
    for number, _, _ in ranges:
        info = _shard_info(out_dir / SHARD_NAME.format(number))
        summary.rows += info["rows"]
        summary.skipped += info["skipped"]
    _write_manifest(out_dir, {**manifest, "complete": True, "shards": summary.shards, "rows_written": summary.rows,
                              "skipped": summary.skipped})
    return summary

