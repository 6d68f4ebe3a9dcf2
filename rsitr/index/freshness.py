"""Whether an update of an index would change nothing, told from its database, the files' sizes and times and its
saved vector store alone (no torch, no model): ``rsitr index`` on an unchanged archive answers at once.

Anything this cannot settle (a changed or new file, an interrupted run, a setting asked to change, vectors not saved
for the current rows) is left to the full update, which loads the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rsitr.index.archive import open_scene, resolve_in_root, scan_archive
from rsitr.index.store import MetadataStore, NotAnIndexError
from rsitr.index.vector_store import vector_backend
from rsitr.retrieval.vector_index import DamagedVectorsError, resolve_index_type


@dataclass(frozen=True)
class Unchanged:
    """An index an update would leave as it is: its counts, and the files that still cannot be read."""

    files: int
    chips: int
    failures: list[tuple[str, str]]


def _still_unreadable(root: Path, path: str) -> bool:
    try:
        with open_scene(resolve_in_root(root, path)):
            return False
    except Exception:  # noqa: BLE001 - decoders raise many types; it failed to be read, as when it was recorded
        return True


def _vectors_sound(store: MetadataStore, directory: Path, settings: dict) -> bool:
    """Whether the saved vector store is the current rows' and opens as sound (the checks an update makes before
    it decides to keep it; a damaged one is rewritten by the full update)."""
    backend = vector_backend(settings["backend"], directory, settings.get("vector_uri"))
    index_type = resolve_index_type(settings["index_type"], store.chip_count())
    if not backend.saved() or store.get_meta("vectors_generation") != store.generation or \
            not backend.records(store.get_meta("vectors_type") or "", index_type):
        return False
    try:
        return backend.sound(backend.open(store, int(store.get_meta("fingerprint")["dim"]), index_type), store)
    except (DamagedVectorsError, OSError, ValueError, RuntimeError, TypeError):  # what the backends raise on bad files
        return False


def unchanged(directory: Path, images: Path, requested: dict) -> Unchanged | None:
    """The index in ``directory`` when updating it from ``images`` with the ``requested`` settings (None: as
    recorded) would write nothing, else None. Only a folder is told this way: a listing of remote files or a STAC
    catalog is checked by the full update (ETag / Last-Modified)."""
    if not Path(images).is_dir():
        return None
    try:
        store = MetadataStore(Path(directory), read_only=True)  # a damaged one is refused as the update refuses it
    except NotAnIndexError:
        return None  # no index there yet (or an empty file): the update makes one
    try:
        settings = store.get_meta("settings")
        if store.get_meta("model") is None or Path(store.get_meta("root") or "") != Path(images).resolve() or any(
                value is not None and value != settings.get(key) for key, value in requested.items()):
            return None
        files, failures = store.files(), dict(store.failures())
        on_disk = {file.path: file for file in scan_archive(Path(images))}
        if set(files) - set(on_disk) or set(failures) - set(on_disk):
            return None  # files to remove, failures to forget
        for path, file in on_disk.items():
            record = files.get(path)
            if record is None and (path not in failures or not _still_unreadable(Path(images), path)):
                return None
            if record is not None and (not record.complete or (record.size, record.mtime_ns) !=
                                       (file.size, file.mtime_ns)):
                return None
        if not _vectors_sound(store, Path(directory), settings):
            return None
        return Unchanged(len(files), store.chip_count(), sorted(failures.items()))
    finally:
        store.close()
