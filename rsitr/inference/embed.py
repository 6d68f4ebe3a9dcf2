"""Embeddings as Parquet shards: the file stage between encoding and indexing, as clip-retrieval's inference writes.

``rsitr embed`` encodes a folder of images, an image list or a caption file into ``<out>/part-NNNNN.parquet``
shards plus ``<out>/_manifest.json`` (the manifest: model, its fingerprint, settings, input digest). One row per
image (folder, list) or per caption (caption file), with columns

- ``id`` (int64): the row's position in the input (a caption file: the caption's flat index),
- ``path`` (string): the image path relative to the input root, POSIX separators,
- ``caption`` (string, caption files only),
- ``image_embedding`` / ``text_embedding``: fixed-size lists of float16 or float32, the model's own
  ``encode_image`` / ``encode_text`` global vectors, L2-normalised unless asked otherwise.

Shards are written atomically in input order, so an interrupted run resumes at the first missing shard (the
manifest must match: same input, settings and model fingerprint). Unreadable images get no row; each shard's
Parquet metadata lists them (``rsitr.skipped``). Any Parquet reader reads the folder: ``pandas.read_parquet(out)``
or ``pyarrow.parquet.read_table(out)``; :func:`read_embeddings` also returns the matrices. A later index stage
only needs these files. ``--engine ray`` (:func:`embed_with_ray`) writes the same shards with the same workers on a
Ray actor pool (:class:`~rsitr.inference.distributors.RayDistributor`), so either engine resumes the other's run.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from rsitr.data import DataError, load_corpus
from rsitr.data.classes import IMAGE_SUFFIXES
from rsitr.documents import expect_mapping, read_json
from rsitr.errors import RsitrWarning, UserError
from rsitr.inference.columns import vector_column, vector_matrix
from rsitr.inference.distributors import Distributor, RayDistributor, ShardTask, in_process
from rsitr.inference.encoder import Encoder
from rsitr.inference.images import encode_image_files
from rsitr.inference.shards import MANIFEST, SKIPPED_KEY, ShardFolder
from rsitr.models.encoding import encode_texts
from rsitr.models.factory import LoadedModel

FORMAT = "rsitr-embeddings-v1"
RESUMED_IF_SAME = ("format", "settings", "input")
"""What a resumed run's manifest must repeat (and a model of the same fingerprint): the model's name may be spelled
otherwise."""
MODALITIES = ("image", "text")
DTYPES = ("fp16", "fp32")
CAPTION_SUFFIXES = frozenset({".json", ".csv"})


@dataclass(frozen=True)
class EmbedItem:
    """One output row before encoding: the image file, its path relative to the root, and a caption (or None)."""

    path: Path
    relative: str
    caption: str | None = None


@dataclass
class EmbedInput:
    """What to encode: ``kind`` is ``folder``, ``list`` or ``captions``; rows in ``items`` order."""

    source: Path
    root: Path
    kind: str
    items: list[EmbedItem]

    def digest(self) -> str:
        """sha256 of the rows (paths and captions): a resumed run must see the same input."""
        hasher = hashlib.sha256()
        for item in self.items:
            hasher.update(f"{item.relative}\0{item.caption or ''}\n".encode())
        return hasher.hexdigest()


@dataclass(frozen=True)
class EmbedSettings:
    modalities: tuple[str, ...] = ("image",)
    dtype: str = "fp16"
    normalize: bool = True
    shard_size: int = 10_000
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if not self.modalities or any(m not in MODALITIES for m in self.modalities):
            raise UserError(f"modalities must be some of {', '.join(MODALITIES)} (got {self.modalities})")
        if self.dtype not in DTYPES:
            raise UserError(f"unknown embedding dtype {self.dtype!r}; choose {' or '.join(DTYPES)}")
        if self.shard_size < 1:
            raise UserError(f"shard size must be at least 1 (got {self.shard_size})")


@dataclass
class EmbedSummary:
    out_dir: Path
    rows: int
    shards: int
    reused_shards: int
    skipped: list[str] = field(default_factory=list)


def read_embed_input(source: str | Path, images_root: str | Path | None = None,
                     split: str | None = None) -> EmbedInput:
    """A folder (images found recursively, sorted), a caption file (JSON / CSV: one row per caption; ``split``
    keeps one of its splits, None every image) or an image list (a text file, one path per line, relative to
    ``images_root`` or else to the list's folder)."""
    source = Path(source)
    is_captions = source.is_file() and source.suffix.lower() in CAPTION_SUFFIXES
    if split is not None and not is_captions:
        raise DataError("is no caption file, so it has no splits", path=source,
                        fix="leave out `split`, or pass a caption file (.json / .csv)", parameters=("split",))
    if source.is_dir():
        root = source
        paths = sorted((path for path in source.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()),
                       key=lambda path: path.relative_to(root).as_posix())
        if not paths:
            raise DataError(f"holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})", path=source,
                            fix="pass a folder of images, an image list or a caption file")
        return EmbedInput(source, root, "folder", [EmbedItem(path, path.relative_to(root).as_posix()) for path in paths])
    if not source.is_file():
        raise DataError("not found", path=source, fix="pass a folder of images, an image list or a caption file")
    if is_captions:
        if images_root is None:
            raise DataError("is a caption file, so its image folder is needed", path=source,
                            fix="pass the folder the caption file's image names are relative to (`images_root`)",
                            parameters=("images_root",))
        root = Path(images_root)
        corpus = load_corpus(source, root, split=split)
        if split is not None:
            corpus = corpus.split(split)
            if not corpus.images:
                raise DataError(f"has no images in split {split!r}", path=source,
                                fix="pick another `split` (`rsitr data inspect` lists the splits)", parameters=("split",))
        return EmbedInput(source, root, "captions",
                          [EmbedItem(record.path, _relative(record.path, root), caption)
                           for record in corpus.images for caption in record.captions])
    return _image_list(source, Path(images_root) if images_root is not None else source.parent)


def _relative(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _image_list(source: Path, root: Path) -> EmbedInput:
    try:
        lines = [line.strip() for line in source.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as err:
        raise DataError("is not a UTF-8 text file of image paths", path=source,
                        fix="pass a folder, a caption file (.json / .csv) or a text file with one image path per line") from err
    paths = [Path(line) if Path(line).is_absolute() else root / line for line in lines if line and not line.startswith("#")]
    if not paths:
        raise DataError("lists no images", path=source, fix="write one image path per line")
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise DataError(f"{len(missing)} listed image(s) not found (first: {missing[0]})", path=source,
                        fix=f"paths are relative to {root}; pass another `images_root`, or fix the list",
                        parameters=("images_root",))
    return EmbedInput(source, root, "list", [EmbedItem(path, _relative(path, root)) for path in paths])


def embed_to_parquet(model: nn.Module, data: EmbedInput, out_dir: str | Path, settings: EmbedSettings,
                     model_name: str, pretrained: str | None, batch_size: int = 64,
                     device: str | torch.device = "cpu", num_workers: int = 0, progress: bool = True,
                     distributor: Distributor = in_process) -> EmbedSummary:
    """Encode ``data`` into Parquet shards under ``out_dir``, skipping the shards a previous run finished; the
    shards still missing are written by :class:`ShardEncoder` workers that ``distributor`` runs (here by default;
    :func:`embed_with_ray` on Ray)."""
    if "text" in settings.modalities and data.kind != "captions":
        raise UserError(f"{data.source} has no captions to embed as text; pass a caption file, or embed images only")
    folder = ShardFolder(out_dir)
    folder.path.mkdir(parents=True, exist_ok=True)
    encoder = Encoder(LoadedModel(model, model_name, pretrained), device)
    manifest = _manifest(encoder, data, settings)
    folder.resume(manifest, RESUMED_IF_SAME)
    ranges = {number: (start, min(start + settings.shard_size, len(data.items)))
              for number, start in enumerate(range(0, len(data.items), settings.shard_size))}
    strays = folder.strays(ranges)
    if strays:
        raise UserError(f"{folder.path} holds {len(strays)} Parquet file(s) this run does not write (first: "
                        f"{strays[0].name}, a copy or another run's shard): a reader of the folder would read their "
                        f"rows too; move them away or pass another `out_dir`", parameters=("out_dir",))
    folder.write_manifest(manifest)
    missing = [ShardTask(number, json.dumps(rows)) for number, rows in ranges.items()
               if not folder.shard(number).is_file()]
    rows = {number: stop - start for number, (start, stop) in ranges.items()}
    bar = tqdm(total=len(data.items), desc=f"embed {data.source.name}", unit="row", disable=not progress)
    bar.update(sum(rows[number] for number in set(ranges) - {task.number for task in missing}))  # kept shards
    distributor(partial(ShardEncoder, encoder, data, settings, batch_size, num_workers, folder), missing,
                lambda task: bar.update(rows[task.number]))
    bar.close()
    summary = EmbedSummary(folder.path, 0, len(ranges), len(ranges) - len(missing))
    for number, (start, stop) in ranges.items():
        metadata = _shard_info(folder.shard(number), start, stop)
        summary.rows += metadata["rows"]
        summary.skipped += metadata["skipped"]
    folder.write_manifest({**manifest, "complete": True, "shards": summary.shards, "rows_written": summary.rows,
                           "skipped": summary.skipped, "files": [folder.shard(number).name for number in ranges]})
    return summary


def embed_with_ray(model: nn.Module, data: EmbedInput, out_dir: str | Path, settings: EmbedSettings,
                   model_name: str, pretrained: str | None, batch_size: int = 64, address: str | None = None,
                   num_cpus: int | None = None, actors: int = 2) -> EmbedSummary:
    """Encode ``data`` into ``out_dir`` as :func:`embed_to_parquet` does, on Ray."""
    if "text" in settings.modalities:
        raise UserError("Ray embeds images only; embed captions on the default engine (without Ray)")
    return embed_to_parquet(model.cpu(), data, Path(out_dir).resolve(), settings, model_name, pretrained, batch_size,
                            "cpu", progress=False, distributor=RayDistributor(actors, address, num_cpus))


def _manifest(encoder: Encoder, data: EmbedInput, settings: EmbedSettings) -> dict:
    """What a run's shards were made from: a resumed run (on either engine) must find the same."""
    manifest = {"format": FORMAT, "model": encoder.model_name, "pretrained": encoder.pretrained,
                "fingerprint": encoder.fingerprint().to_dict(), "settings": asdict(settings),
                "input": {"source": str(data.source), "root": str(data.root), "kind": data.kind,
                          "rows": len(data.items), "digest": data.digest()}}
    return json.loads(json.dumps(manifest))  # tuples as lists, as a resumed run reads them back


def _vectors(embeddings: torch.Tensor, settings: EmbedSettings) -> np.ndarray:
    if settings.normalize:
        embeddings = F.normalize(embeddings, dim=-1)
    return embeddings.numpy().astype(np.float16 if settings.dtype == "fp16" else np.float32)


class ShardEncoder:
    """The worker of both engines: encodes the rows of a shard (a JSON ``[start, stop]``) and writes it."""

    def __init__(self, encoder: Encoder, data: EmbedInput, settings: EmbedSettings, batch_size: int,
                 num_workers: int, folder: ShardFolder) -> None:
        self.encoder, self.data, self.settings, self.folder = encoder, data, settings, folder
        self.batch_size, self.num_workers = batch_size, num_workers

    def __call__(self, task: ShardTask) -> None:
        start, stop = json.loads(task.spec)
        self.folder.write(task.number, self.table(start, stop))

    def table(self, start: int, stop: int):
        """The rows ``start:stop`` as a pyarrow Table (unreadable images dropped, listed in its metadata)."""
        import pyarrow as pa

        model, device, items, settings = self.encoder.model, self.encoder.device, self.data.items, self.settings
        rows = list(range(start, stop))
        columns: dict[str, list[np.ndarray]] = {}
        skipped: list[str] = []
        if "image" in settings.modalities:
            # Each distinct image once (a caption file repeats an image on each of its captions' rows).
            images = list(dict.fromkeys(items[row].path for row in rows))
            encoded = encode_image_files(model, images, self.batch_size, device, settings.precision,
                                         self.num_workers, progress=False)
            skipped = [_relative(images[position], self.data.root) for position in sorted(encoded.skipped)]
            vectors = dict(zip((images[i] for i in encoded.indices.tolist()), _vectors(encoded.embeddings, settings)))
            rows = [row for row in rows if items[row].path in vectors]
            columns["image_embedding"] = [vectors[items[row].path] for row in rows]
        if "text" in settings.modalities:
            texts = encode_texts(model, [items[row].caption or "" for row in rows], self.batch_size, device,
                                 settings.precision)
            columns["text_embedding"] = list(_vectors(texts, settings)) if rows else []
        dtype = np.float16 if settings.dtype == "fp16" else np.float32
        arrays = {"id": pa.array(rows, pa.int64()),
                  "path": pa.array([items[row].relative for row in rows], pa.string())}
        if items[start].caption is not None:
            arrays["caption"] = pa.array([items[row].caption for row in rows], pa.string())
        for name, vectors in columns.items():
            arrays[name] = vector_column(np.stack(vectors) if vectors else np.zeros((0, self.encoder.dim)), dtype)
        return pa.table(arrays).replace_schema_metadata({SKIPPED_KEY: json.dumps(skipped).encode()})


def _shard_info(path: Path, start: int, stop: int) -> dict:
    """The row count and skipped images of the shard of input rows ``start:stop``; a :class:`UserError` line when
    it is unreadable or holds other rows (a shard of another run: its ids would be duplicated and others lost)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        ids = pq.read_table(path, columns=["id"]).column("id").to_numpy()
        metadata = pq.read_metadata(path)
        skipped = json.loads((metadata.schema.to_arrow_schema().metadata or {}).get(SKIPPED_KEY, b"[]"))
    except (OSError, ValueError, KeyError, pa.ArrowException) as err:  # not Parquet, truncated, no id column
        raise UserError(f"{path} is no shard rsitr can read ({type(err).__name__}: {str(err)[:120]}); delete it "
                        f"and run the same command again to encode its rows anew") from None
    if len(ids) and (ids[0] < start or ids[-1] >= stop or np.any(np.diff(ids) <= 0)):
        raise UserError(f"{path} holds rows {int(ids.min())}-{int(ids.max())}, not of rows {start}-{stop - 1} of "
                        f"this input: it is another run's shard; delete it (the same command encodes it anew) or "
                        f"pass another `out_dir`", parameters=("out_dir",))
    return {"rows": len(ids), "skipped": skipped}


def _listed_shards(out_dir: Path) -> list[Path]:
    """The shards a finished run's manifest names (``files``); other Parquet files of the folder are left out with
    a warning. A folder without such a manifest (an earlier rsitr's, or a run not finished): its part-* files."""
    path = out_dir / MANIFEST
    manifest = expect_mapping(read_json(path, "manifest"), f"manifest {path}") if path.is_file() else {}
    files = manifest.get("files")
    if not isinstance(files, list) or not all(isinstance(name, str) and "/" not in name for name in files):
        return sorted(out_dir.glob("part-*.parquet"))
    strays = ShardFolder(out_dir).strays(range(len(files)))
    if strays:
        warnings.warn(f"{out_dir}: {len(strays)} Parquet file(s) its manifest does not name were left out (first: "
                      f"{strays[0].name})", RsitrWarning, stacklevel=3)
    return [out_dir / name for name in files]


def read_embeddings(out_dir: str | Path, column: str = "image_embedding"):
    """The rows of an ``rsitr embed`` folder (the shards its manifest names) as a pyarrow Table, and ``column`` as a
    float32 ``[N, D]`` array."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shards = _listed_shards(Path(out_dir))
    if not shards:
        raise UserError(f"{out_dir} holds no part-*.parquet shards; write them with `rsitr embed`")
    table = pa.concat_tables([pq.read_table(shard) for shard in shards])
    if column not in table.column_names:
        raise UserError(f"{out_dir} has no {column!r} column (columns: {', '.join(table.column_names)})")
    return table, vector_matrix(table.column(column)).astype(np.float32)
