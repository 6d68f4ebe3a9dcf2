"""Bringing an index up to date with its image folder: add new files, re-encode changed ones, drop deleted ones.

A file is unchanged when its size and mtime match the record; otherwise its SHA-256 decides (a touched
but identical file only gets its stat refreshed). Chips are encoded in batches and each batch is committed
with the files it completes (:meth:`MetadataStore.add_chips`). A run killed midway leaves files marked
incomplete; the next run keeps their committed chips and encodes only the missing windows, in the same
order, so the result is the same as one uninterrupted run. Files that cannot be read are recorded as
failures and skipped; they are retried on every run. The chips to encode are counted from the image headers
first, so the progress bar has a fixed total.

Both paths run the encode pipeline (:func:`rsitr.index.chips.encode_chips`): a reader (:func:`_tiled_chips`, the
chips of image files; or :func:`_encoded_chips`, chips a chip encoder encoded), the encoder, and the database's
writer (:class:`_StoreWriter`). Encoding elsewhere (``rsitr index --engine ray``): :func:`update_index` given a
``chip_encoder`` plans the same files, hands them (path and content hash) to it, and ingests the
:class:`EncodedFile` results it yields, in the files' order, through the same writer and batch commits as the
embedded path (the same chips, ids and vectors). A chip encoder runs :func:`encode_files` wherever it likes (Parquet
shards written here or by a Ray actor pool: :mod:`rsitr.index.chip_shards`); this module imports nothing of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator

from tqdm import tqdm

from rsitr.data.augment import orientation_views
from rsitr.errors import UserError
from rsitr.index.archive import (Archive, ArchiveFile, ImageTooLargeError, Rendering, as_archive, check_pixels,
                                 open_scene, scene_size)
from rsitr.inference.encoder import Encoder
from rsitr.index.chips import Chip, ChipEvent, FileEnd, FileStart, encode_chips
from rsitr.index.store import FileRecord, MetadataStore, NewChip
from rsitr.index.tiling import Window, chip_count, chip_windows
from rsitr.index.vector_store import BACKENDS
from rsitr.retrieval import vector_index

DEFAULT_MAX_SCENE_PIXELS = 2_000_000_000
"""Pixels per scene (about 44,700 x 44,700): more than the largest single satellite scenes; a sparse TIFF that
declares 10^12 pixels in 11 MB is refused from its header."""
DEFAULT_MAX_CHIPS_PER_FILE = 100_000
"""Chips per file (224 px chips of a 2-gigapixel scene are about 55,000); each chip costs a window, a row and a
vector, so this bounds what one file can make the indexer hold."""


class IndexSetupError(UserError):
    """A wrong argument for building or opening an index (found before anything is written)."""


@dataclass(frozen=True)
class IndexSettings:
    """How an archive is cut into chips and what is stored; fixed for the life of an index (but ``index_type``)."""

    chip_size: int = 224
    chip_overlap: int = 32
    tile_larger_than: int = 1024
    index_type: str = vector_index.AUTO
    """A FAISS type, or ``auto``: chosen from the number of chips each time the index is rebuilt."""
    store_local_tokens: bool = True
    backend: str = "faiss"
    """Where the global vectors are searched: ``faiss`` (``vectors.faiss``) or ``lancedb`` (:mod:`.vector_store`)."""
    vector_uri: str | None = None
    """The LanceDB location (a path or object-store URI); None: ``vectors.lance`` in the index folder."""
    max_pixels: int = DEFAULT_MAX_SCENE_PIXELS
    """Pixels per scene: a larger file is refused from its header (a failure of the run, as an unreadable file)."""
    max_chips_per_file: int = DEFAULT_MAX_CHIPS_PER_FILE
    """Chips per file: a file that would be cut into more is refused from its header, before any window is made."""
    bands: str | None = None
    """A raster's bands shown as RGB, comma-separated 1-based indexes or names (:class:`Rendering`); None: the
    bands the file calls red, green and blue, else the first three."""
    scale: str = "percentile"
    """``percentile`` (each file's 2nd-98th), ``statistics`` (a STAC asset's raster:bands statistics) or ``range LOW
    HIGH`` (the latter two the same in every scene)."""
    max_nodata: float = 0.5
    """A chip whose fraction of nodata pixels exceeds this is not encoded (1: every chip is)."""
    asset: str | None = None
    """The asset of each item read from a STAC listing (e.g. ``visual``)."""
    orientations: int = 1
    """Orientations each chip's global embedding is averaged over (1, 4 rotations, 8 with mirrors): aerial images
    have no up (:meth:`Encoder.encode_images`); query images are encoded the same way."""

    def __post_init__(self) -> None:
        if self.max_pixels < 1 or self.max_chips_per_file < 1:
            raise IndexSetupError(f"`max_pixels` and `max_chips_per_file` must be at least 1, got {self.max_pixels} "
                                  f"and {self.max_chips_per_file}", parameters=("max_pixels", "max_chips_per_file"))
        if self.chip_size < 1 or self.tile_larger_than < 1:
            raise IndexSetupError(f"`chip_size` and `tile_larger_than` must be at least 1 pixel, got "
                                  f"{self.chip_size} and {self.tile_larger_than}",
                                  parameters=("chip_size", "tile_larger_than"))
        if not 0 <= self.chip_overlap < self.chip_size:
            raise IndexSetupError(f"`chip_overlap` must be at least 0 and less than `chip_size` ({self.chip_size}), "
                                  f"got {self.chip_overlap}", parameters=("chip_overlap", "chip_size"))
        if self.backend not in BACKENDS:
            raise IndexSetupError(f"unknown vector backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.index_type not in vector_index.INDEX_CHOICES:
            raise IndexSetupError(f"unknown index type {self.index_type!r}; choose one of "
                                  f"{', '.join(vector_index.INDEX_CHOICES)}")
        orientation_views(self.orientations, IndexSetupError)
        if not 0.0 <= self.max_nodata <= 1.0:
            raise IndexSetupError(f"`max_nodata` is a fraction from 0 to 1, got {self.max_nodata}",
                                  parameters=("max_nodata",))
        try:
            rendering = Rendering.parse(self.bands, self.scale)
        except UserError as err:
            raise IndexSetupError(f"`bands` / `scale`: {err}", parameters=("bands", "scale")) from None
        # The written forms are recorded canonical, so that an update naming the same choice matches the record.
        object.__setattr__(self, "bands", None if rendering.bands is None else ",".join(rendering.bands))
        object.__setattr__(self, "scale", rendering.written_scale)

    @property
    def rendering(self) -> Rendering:
        """How a raster's chips are made RGB (:attr:`bands`, :attr:`scale`)."""
        return Rendering.parse(self.bands, self.scale)

    @classmethod
    def from_record(cls, recorded: dict) -> IndexSettings:
        """The settings an index recorded; an index made before nodata was left out keeps every chip."""
        return cls(**{**LEGACY_SETTINGS, **recorded})


LEGACY_SETTINGS = {"max_nodata": 1.0}
"""What an index recorded without these keys was built with."""


@dataclass(frozen=True)
class BuildOptions:
    """Everything :meth:`rsitr.index.ArchiveIndex.build` is asked for, in one value (the command line builds it from
    its flags in one place). The first fields are :class:`IndexSettings`' (None: as the index records them, or the
    default for a new index); the last ones say how this run encodes and are not recorded. Checked when made, so a
    mistake is refused before anything is read or written."""

    chip_size: int | None = None
    chip_overlap: int | None = None
    tile_larger_than: int | None = None
    index_type: str | None = None
    store_local_tokens: bool | None = None
    """None: a new index keeps patch tokens only when the model's scoring recipe re-ranks with them."""
    backend: str | None = None
    vector_uri: str | None = None
    max_pixels: int | None = None
    max_chips_per_file: int | None = None
    bands: str | None = None
    scale: str | None = None
    max_nodata: float | None = None
    asset: str | None = None
    orientations: int | None = None
    batch_size: int = 32
    device: str = "cpu"
    precision: str = "auto"
    runtime: str = "auto"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise IndexSetupError(f"the batch size must be at least 1, got {self.batch_size}")
        self.settings()  # validates the settings asked for

    def requested(self) -> dict:
        """The :class:`IndexSettings` fields asked for, in the canonical forms an index records (``range 0 3000``
        for ``range 0.0 3000``); None where not asked."""
        settings = self.settings()
        return {name: None if getattr(self, name) is None else getattr(settings, name) for name in _SETTINGS_FIELDS}

    def settings(self) -> IndexSettings:
        """The settings of a new index: those asked for, the defaults for the rest."""
        return IndexSettings(**{name: getattr(self, name) for name in _SETTINGS_FIELDS
                                if getattr(self, name) is not None})


_SETTINGS_FIELDS = tuple(name for name in IndexSettings.__dataclass_fields__)


@dataclass
class UpdateReport:
    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    retried: list[str] = field(default_factory=list)
    """Files that could not be read in an earlier run, tried again (not counted as new)."""
    chips_encoded: int = 0
    nodata_chips: int = 0
    """Chips left out in this run for holding more nodata than ``max_nodata``."""
    failures: list[tuple[str, str]] = field(default_factory=list)
    """``(path, error)`` of files that could not be read in this run."""


@dataclass
class _Job:
    file: ArchiveFile
    record: FileRecord | None
    """The incomplete record to resume, or None to (re-)register the file."""
    sha256: str


@dataclass(frozen=True)
class FileToEncode:
    """A file a chip encoder is asked for: its path relative to the archive and its content hash (a cache key)."""

    path: str
    sha256: str


@dataclass
class EncodedFile:
    """Every chip of one file (all its windows, in tiling order), or the error that made it unreadable."""

    path: str
    width: int = 0
    height: int = 0
    crs: str | None = None
    chips: list[Chip] = field(default_factory=list)
    error: str | None = None
    nodata_chips: int = 0
    """Windows left out for holding more nodata than ``max_nodata``."""
    acquired: str | None = None


ChipEncoder = Callable[[Encoder, Path, IndexSettings, list[FileToEncode], int], Iterable[EncodedFile]]
"""``(encoder, archive, settings, files, batch_size)`` -> one :class:`EncodedFile` per file, in the files' order."""


class _Collected:
    """A chip writer that keeps every file's chips (what a chip encoder returns)."""

    def __init__(self, paths: list[str]) -> None:
        self.files = {path: EncodedFile(path) for path in paths}

    def start(self, file: FileStart) -> None:
        encoded = self.files[file.path]
        encoded.width, encoded.height, encoded.crs, encoded.acquired = file.width, file.height, file.crs, \
            file.acquired

    def write(self, chips: list[Chip], completed: list[str]) -> None:
        for chip in chips:
            self.files[chip.file].chips.append(chip)

    def fail(self, path: str, error: str) -> None:
        self.files[path].error, self.files[path].chips = error, []

    def left_out(self, path: str) -> None:
        self.files[path].nodata_chips += 1


def encode_files(encoder: Encoder, archive: Archive | Path, settings: IndexSettings, paths: list[str],
                 batch_size: int = 32) -> list[EncodedFile]:
    """Read and encode every chip of ``paths`` (files of ``archive``, or of a folder) as :func:`update_index` does, chips batched
    across files by ``batch_size``; an unreadable file gets its ``error`` and no chips."""
    collected = _Collected(paths)
    encode_chips(_tiled_chips(as_archive(archive), settings, [(path, set) for path in paths], collected.left_out),
                 collected, batch_size, encoder, settings.store_local_tokens, settings.orientations)
    return list(collected.files.values())


def _plan(store: MetadataStore, files: list[ArchiveFile], archive: Archive, report: UpdateReport) -> list[_Job]:
    known = store.files()
    failed = {path for path, _ in store.failures()}
    jobs, reached = [], []  # reached: complete and unchanged, so no failure of an earlier run stands
    for file in files:
        record = known.get(file.path)
        if file.error is not None:  # a remote file its server did not answer for: what was indexed stays
            store.record_failure(file.path, file.error, keep=True)
            report.failures.append((file.path, file.error))
            continue
        if record is not None and (record.size, record.mtime_ns) == (file.size, file.mtime_ns):
            if record.complete:
                report.unchanged += 1
                reached.append(file.path)
            else:
                report.resumed.append(file.path)
                jobs.append(_Job(file, record, record.sha256))
            continue
        try:
            digest = archive.digest(file.path)
        except OSError as err:  # vanished or unreadable since the scan
            message = f"{type(err).__name__}: {err}"
            store.record_failure(file.path, message, keep=archive.keeps_failed)
            report.failures.append((file.path, message))
            continue
        if record is not None and record.complete and record.sha256 == digest:
            store.update_file_stat(record.id, file.size, file.mtime_ns)
            report.unchanged += 1
            continue
        (report.changed if record is not None else report.retried if file.path in failed else
         report.new).append(file.path)
        jobs.append(_Job(file, None, digest))
    store.remove_failures(reached)
    return jobs


def _windows(name: str, width: int, height: int, settings: IndexSettings) -> list[Window]:
    """The chip windows of a ``width x height`` scene, or :class:`ImageTooLargeError` (naming the setting) when it
    holds more pixels, or would be cut into more chips, than ``settings`` allow."""
    check_pixels(name, width, height, settings.max_pixels)
    tiling = (settings.chip_size, settings.chip_overlap, settings.tile_larger_than)
    count = chip_count(width, height, *tiling)
    if count > settings.max_chips_per_file:
        raise ImageTooLargeError(f"{name}: {width:,} x {height:,} pixels would be cut into {count:,} chips, over "
                                 f"the limit of {settings.max_chips_per_file:,} per file (`max_chips_per_file`)",
                                 parameters=("max_chips_per_file",))
    return chip_windows(width, height, *tiling)


def _chips_to_encode(store: MetadataStore, archive: Archive, job: _Job, settings: IndexSettings) -> int:
    """How many chips :func:`_tiled_chips` will yield for ``job``, from the image header (no pixels decoded); 0 for
    a file whose header cannot be read (it is recorded as a failure when it is read)."""
    try:
        windows = _windows(job.file.path, *scene_size(archive.source(job.file.path)), settings)
    except Exception:  # noqa: BLE001 - decoders raise many types; the read reports it
        return 0
    done = store.windows_of(job.record.id) if job.record is not None else set()
    return sum(window not in done for window in windows)


def _tiled_chips(archive: Archive, settings: IndexSettings, files: Iterable[tuple[str, Callable[[], set[Window]]]],
                 left_out: Callable[[str], object] = lambda path: None) -> Iterator[ChipEvent]:
    """The reader of image files: for each ``(path, done)`` the file's start, the chips of its windows not in
    ``done()`` (asked once the scene is open; a scene's limits are checked from its header first), read one at a
    time, and its end, with the error when it cannot be read. A chip with more nodata than ``settings.max_nodata``
    is not yielded but counted by ``left_out(path)``; a resumed file reads such windows again (they hold no chip)."""
    for path, done in files:
        try:
            source = archive.source(path)
            windows = _windows(path, *scene_size(source), settings)  # limits checked before a pixel is decoded
            listed = archive.listed(path)
            with open_scene(source, rendering=settings.rendering.for_file(listed)) as scene:
                yield FileStart(path, scene.width, scene.height, scene.crs,
                                listed.datetime if listed is not None and listed.datetime else scene.acquired)
                skip = done()
                for window in scene.read_order(windows):
                    if window in skip:
                        continue
                    image, nodata = scene.chip(window)
                    if nodata > settings.max_nodata:
                        left_out(path)
                    else:
                        yield Chip(path, window, scene.bounds(window), image)
        except Exception as err:  # noqa: BLE001 - decoders raise many types; one unreadable file must not stop a run
            yield FileEnd(path, archive.failure(path, err))
        else:
            yield FileEnd(path)


def _encoded_chips(jobs: list[_Job], encoded_files: Iterable[EncodedFile], done: Callable[[_Job], set[Window]],
                   progress: bool, report: UpdateReport) -> Iterator[ChipEvent]:
    """The reader of what a chip encoder yields for ``jobs`` (one file each, in their order): a resumed file's
    chips but the windows ``done`` already; the chips it left out for nodata are counted in ``report``."""
    encoded_files = iter(encoded_files)
    for job in tqdm(jobs, unit="file", desc="indexing", disable=not progress):
        encoded = next(encoded_files, None)
        if encoded is None or encoded.path != job.file.path:
            raise RuntimeError(f"the chip encoder returned {encoded and encoded.path!r} for {job.file.path!r}")
        if encoded.error is not None:
            yield FileEnd(encoded.path, encoded.error)
            continue
        report.nodata_chips += encoded.nodata_chips
        yield FileStart(encoded.path, encoded.width, encoded.height, encoded.crs, encoded.acquired)
        skip = done(job)
        yield from (chip for chip in encoded.chips if chip.window not in skip)
        yield FileEnd(encoded.path)


class _StoreWriter:
    """The chip writer of the index database: a new or changed file is registered when its chips start, a batch
    of chips is committed with the files it completes, an unreadable file is recorded as a failure."""

    def __init__(self, store: MetadataStore, jobs: list[_Job], report: UpdateReport, keep_failed: bool,
                 bar: tqdm | None = None) -> None:
        self.store, self.report, self.bar, self.keep_failed = store, report, bar, keep_failed
        self.jobs = {job.file.path: job for job in jobs}
        self.ids = {job.file.path: job.record.id for job in jobs if job.record is not None}

    def start(self, file: FileStart) -> None:
        job = self.jobs[file.path]
        if job.record is None:
            self.ids[file.path] = self.store.add_file(file.path, job.file.size, job.file.mtime_ns, job.sha256,
                                                      file.width, file.height, file.crs, file.acquired)

    def write(self, chips: list[Chip], completed: list[str]) -> None:
        self.store.add_chips([NewChip(self.ids[chip.file], chip.window, chip.bounds, chip.embedding, chip.tokens)
                              for chip in chips], [self.ids[path] for path in completed])
        self.report.chips_encoded += len(chips)
        if self.bar is not None:
            self.bar.update(len(chips))

    def fail(self, path: str, error: str) -> None:
        self.store.record_failure(path, error, keep=self.keep_failed)
        self.report.failures.append((path, error))


def update_index(store: MetadataStore, encoder: Encoder, archive: Archive | Path, settings: IndexSettings,
                 batch_size: int = 32,
                 progress: bool = True, chip_encoder: ChipEncoder | None = None) -> UpdateReport:
    """Synchronise ``store`` with the images of ``archive`` (or a folder); see the module docstring.
    ``chip_encoder`` encodes the files elsewhere (e.g. on Ray); without it they are read and encoded here."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    archive = as_archive(archive)
    report = UpdateReport()
    on_disk = archive.scan()
    report.removed = sorted(set(store.files()) - {f.path for f in on_disk})
    store.remove_files(report.removed)
    store.remove_failures_except({f.path for f in on_disk})
    jobs = _plan(store, on_disk, archive, report)

    def done(job: _Job) -> set[Window]:
        return set() if job.record is None else store.windows_of(job.record.id)

    if chip_encoder is not None:
        encoded = chip_encoder(encoder, archive, settings, [FileToEncode(job.file.path, job.sha256) for job in jobs],
                               batch_size)
        encode_chips(_encoded_chips(jobs, encoded, done, progress, report), _StoreWriter(store, jobs, report, archive.keeps_failed),
                     batch_size,
                     None)
        return report
    total = sum(_chips_to_encode(store, archive, job, settings) for job in jobs) if progress else 0
    bar = tqdm(total=total, unit="chip", desc="encoding", disable=not progress)

    def left_out(path: str) -> None:
        report.nodata_chips += 1
        bar.update(1)

    encode_chips(_tiled_chips(archive, settings, [(job.file.path, partial(done, job)) for job in jobs], left_out),
                 _StoreWriter(store, jobs, report, archive.keeps_failed, bar), batch_size, encoder,
                 settings.store_local_tokens, settings.orientations)
    bar.total = bar.n  # chips of a file that failed after its header was counted were never encoded: the bar ends full
    bar.refresh()
    bar.close()
    return report
