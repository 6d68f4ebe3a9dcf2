"""Whether an index may be opened or extended as asked: the model it was built with (recorded by tag, or by a
checkpoint's relative path and SHA-256 so that index and checkpoint can move together), the encoder's fingerprint,
the images folder and the chip settings. :class:`~rsitr.index.archive_index.ArchiveIndex` asks before it writes.
"""

from __future__ import annotations

import os
from pathlib import Path

from rsitr.errors import UserError
from rsitr.models.hub import file_sha256
from rsitr.inference.encoder import Encoder, Fingerprint
from rsitr.index.indexer import LEGACY_SETTINGS, IndexSettings, IndexSetupError
from rsitr.index.store import MetadataStore
from rsitr.paths import regular_file


class IndexCompatibilityError(UserError):
    """The index was built with another model or other chip settings than the ones requested."""


CHANGEABLE = ("index_type", "backend", "vector_uri", "max_pixels", "max_chips_per_file")
"""Settings an update may change: they say how the vectors are searched, or which files are too large to read,
not how a file is encoded."""


def checkpoint_record(pretrained: str | None, directory: Path) -> dict:
    """How an index records its model weights: an OpenCLIP tag as is; a checkpoint file by its path relative to
    the index directory (so index and checkpoint can move together) and its SHA-256 (so a moved checkpoint
    can be recognised, see :func:`recorded_checkpoint`)."""
    if not pretrained or not Path(pretrained).is_file():
        return {"pretrained": pretrained, "pretrained_sha256": None}
    relative = os.path.relpath(Path(pretrained).resolve(), directory.resolve())
    return {"pretrained": Path(relative).as_posix(), "pretrained_sha256": file_sha256(Path(pretrained))}


def recorded_checkpoint(store: MetadataStore, directory: Path, override: str | Path | None) -> str | None:
    """The model weights to load for an existing index: the recorded tag, the recorded checkpoint file (found
    relative to the index), or ``override`` when its SHA-256 matches the recorded one."""
    recorded, digest = store.get_meta("pretrained"), store.get_meta("pretrained_sha256")
    if override is not None:
        if digest is None:
            if str(override) == recorded:
                return recorded  # the recorded tag, named again
            raise IndexCompatibilityError(f"index {directory} was built with model {store.get_meta('model')!r}, "
                                          f"pretrained {recorded!r}, not {str(override)!r}; leave out `checkpoint` "
                                          f"(it only says where a moved checkpoint lies)", parameters=("checkpoint",))
        override = Path(override)
        if not override.exists():
            raise IndexSetupError(f"checkpoint {override} does not exist")
        return _the_recorded(override, digest, directory)
    if digest is None:
        return recorded  # an OpenCLIP tag, None, or a path recorded by an older rsitr
    located = Path(directory, recorded)
    if not located.exists():
        raise IndexSetupError(f"the model checkpoint of index {directory} is not at {located} (recorded relative to "
                              f"the index); pass `checkpoint` where it lies now (SHA-256 {digest[:12]}...)",
                              parameters=("checkpoint",))
    return _the_recorded(located, digest, directory)


def _the_recorded(checkpoint: Path, digest: str, directory: Path) -> str:
    """``checkpoint`` resolved, when its SHA-256 is the recorded ``digest``: checked before anything loads it,
    whether it lies at the recorded path (a file replaced there) or where ``--checkpoint`` says; a FIFO or a
    folder there is refused before it is read."""
    regular_file(checkpoint, "checkpoint")
    if file_sha256(checkpoint) != digest:
        raise IndexSetupError(f"{checkpoint} is not the checkpoint index {directory} was built with (SHA-256 "
                              f"differs from the recorded {digest[:12]}); pass the checkpoint of that run")
    return str(checkpoint.resolve())


def refuse_another_model(store: MetadataStore, directory: Path, model_name: str | None,
                         pretrained: str | None) -> None:
    """An update names the index's model, or none: another ``model_name`` or ``pretrained`` is refused before it
    loads, with the ways on (a recorded checkpoint named where it now lies is :func:`recorded_checkpoint`'s)."""
    recorded, recorded_weights = store.get_meta("model"), store.get_meta("pretrained")
    other_model = model_name not in (None, recorded)
    other_weights = pretrained is not None and store.get_meta("pretrained_sha256") is None and \
        str(pretrained) != recorded_weights
    if other_model or other_weights:
        given = " ".join(f"`{name}={str(value)!r}`" for name, value in (("model_name", model_name),
                                                                         ("pretrained", pretrained)) if value is not None)
        raise IndexCompatibilityError(f"index {directory} was built with model {recorded!r} (pretrained "
                                      f"{recorded_weights!r}), not {given}; leave out `model_name` and `pretrained` "
                                      f"to update it, pass another `directory` for a new index, or `rebuild=True` to "
                                      f"replace this one",
                                      parameters=("model_name", "pretrained", "directory", "rebuild"))


def _describe(model_name: str, pretrained: str | None, fingerprint: Fingerprint) -> str:
    return (f"model {model_name!r} (pretrained {pretrained!r}, embedding dim {fingerprint.dim}, "
            f"fingerprint {fingerprint.digest})")


def check_encoder(store: MetadataStore, directory: str | Path, encoder: Encoder) -> None:
    """Refuse an encoder whose fingerprint differs from the index's: its embeddings are not comparable."""
    recorded = Fingerprint.from_dict(store.get_meta("fingerprint"))
    given = encoder.fingerprint()
    if not recorded.matches(given):
        built_with = _describe(store.get_meta("model"), store.get_meta("pretrained"), recorded)
        raise IndexCompatibilityError(
            f"index {directory} was built with {built_with} "
            f"but {_describe(encoder.model_name, encoder.pretrained, given)} was given; its embeddings are not "
            f"comparable. Use the recorded model, or build a new index in another directory.")


def merged_settings(store: MetadataStore, directory: Path, images: Path, requested: dict,
                    relocate: bool) -> IndexSettings:
    """The recorded settings with ``requested``'s :data:`CHANGEABLE` ones; another images folder (unless
    ``relocate``) or other chip settings (the band choice, scale and nodata limit among them) are refused.
    ``requested`` holds the values in their canonical forms (:class:`IndexSettings` writes them)."""
    if Path(store.get_meta("root")) != images and not relocate:
        raise IndexCompatibilityError(f"index {directory} covers {store.get_meta('root')}, not {images}; if the "
                                      f"folder moved there, pass `relocate=True`; for another folder build a new "
                                      f"index in another directory", parameters=("relocate",))
    recorded = {**LEGACY_SETTINGS, **store.get_meta("settings")}
    for key, value in requested.items():
        if value is not None and key not in CHANGEABLE and value != recorded.get(key):
            raise IndexCompatibilityError(
                f"index {directory} was built with {key}={recorded.get(key)!r}, not {value!r}; chip settings "
                f"cannot change in place: build a new index in another directory")
    recorded.update({key: requested[key] for key in CHANGEABLE if requested[key] is not None})
    return IndexSettings(**recorded)
