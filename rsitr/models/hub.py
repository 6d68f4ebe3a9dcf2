"""Weights published on the Hugging Face hub (RemoteCLIP, GeoRSCLIP): fetched into the hub's own cache on first use,
checked, and read from that cache ever after.

A :class:`HubFile` is where a registry entry's weights lie on the hub: repository, file, revision, approximate
size. :meth:`HubFile.fetch` returns the cached file, or downloads it with a progress bar into the layout
``huggingface_hub`` itself uses (``$HF_HUB_CACHE/models--owner--name/blobs/<sha256>``, a ``snapshots/<commit>/<file>``
link, ``refs/<revision>``), so that ``hf_hub_download`` and ``huggingface-cli`` see it too, and a cache copied from
another machine serves it. rsitr downloads the file itself, with ``huggingface_hub``'s HEAD and streaming GET,
because the client's own partial files die with the process: here ``blobs/<sha256>.incomplete`` stays, and the
next attempt asks only for the rest (an HTTP range). The whole file is then checked against the SHA-256 the hub
reports for it (an LFS file's ETag) and refused, deleted, when it differs; where the registry pins a SHA-256, a hub
reporting another is refused before anything is fetched.

Nothing waits for an unreachable hub: ``HF_HUB_OFFLINE=1``, or no connection to ``HF_ENDPOINT`` within
:data:`CONNECT_TIMEOUT_S`, ends at once in one :class:`~rsitr.errors.UserError` naming the tag, its size and how to
fetch it elsewhere. Importing this module imports neither torch nor ``huggingface_hub``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from rsitr.errors import UserError

CONNECT_TIMEOUT_S = 3.0
"""How long a connection to the hub may take before the hub counts as unreachable (name lookup included)."""
METADATA_TIMEOUT_S = 5.0
"""How long the hub may take to answer for a file's metadata (its SHA-256, size and commit)."""
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class HubFile:
    """A weights file on the Hugging Face hub."""

    repo: str
    filename: str
    revision: str = "main"
    """A commit hash, or a branch name where no commit is pinned (then the newest file on it when first fetched)."""
    size_mb: float = 0.0
    """The download's size in MB (10^6 bytes), for messages; approximate where the registry says so."""
    sha256: str | None = None
    """The file's SHA-256 where rsitr pins it: a hub that reports another is refused before anything is fetched."""

    @property
    def url(self) -> str:
        """Where the hub serves the file (``HF_ENDPOINT``'s ``resolve`` route)."""
        from huggingface_hub import constants

        return f"{constants.ENDPOINT}/{self.repo}/resolve/{quote(self.revision, safe='')}/{quote(self.filename)}"

    def cached(self) -> Path | None:
        """The file from the Hugging Face cache, or None when it is not there (no network)."""
        from huggingface_hub import constants, try_to_load_from_cache

        found = try_to_load_from_cache(self.repo, self.filename, cache_dir=constants.HF_HUB_CACHE,
                                       revision=self.revision)
        return Path(found) if isinstance(found, str) else None

    def check_reachable(self, tag: str) -> None:
        """Refuse at once, naming how to get the file, when it is not cached and the hub cannot give it (offline,
        unreachable, or not there): the hub's answer is kept for :meth:`fetch` in this process."""
        if self.cached() is None:
            self._metadata(tag)

    def fetch(self, tag: str) -> Path:
        """The file, from the cache, or downloaded (resuming an interrupted download) and checked."""
        cached = self.cached()
        if cached is not None:
            return cached
        metadata = self._metadata(tag)
        from huggingface_hub import constants
        from huggingface_hub.file_download import repo_folder_name
        from huggingface_hub.utils import build_hf_headers

        storage = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=self.repo, repo_type="model")
        blob = storage / "blobs" / metadata.etag
        if not blob.is_file():
            self._download(tag, metadata.location, blob, metadata.size, build_hf_headers())
        return _link_snapshot(storage, blob, metadata.commit_hash, self.revision, self.filename)

    def _metadata(self, tag: str):
        """What the hub says of the file (SHA-256, size, commit, where to get it), or one :class:`UserError`."""
        self._check_online(tag)
        try:
            metadata = _hub_metadata(self.url)
        except Exception as err:  # noqa: BLE001 - httpx's, the hub's and OS errors all mean: not from this hub
            raise UserError(f"the hub could not give {self} for pretrained tag {tag!r}: "
                            f"{str(err).splitlines()[0]}") from None
        if not _SHA256.fullmatch(metadata.etag or "") or not metadata.commit_hash:
            raise UserError(f"the hub reports no SHA-256 for {self} (pretrained tag {tag!r}), so its download "
                            f"cannot be checked; is HF_ENDPOINT a Hugging Face hub?")
        if self.sha256 not in (None, metadata.etag):
            raise UserError(f"the hub serves another {self} (SHA-256 {metadata.etag}) than the {self.sha256} rsitr "
                            f"pins for pretrained tag {tag!r}; nothing was downloaded")
        return metadata

    def _download(self, tag: str, url: str, blob: Path, size: int | None, headers: dict) -> None:
        """Download to ``<blob>.incomplete`` (continuing what an earlier attempt left there), check the whole file
        against its name, the SHA-256 the hub reported, and move it to ``blob``."""
        from huggingface_hub.file_download import http_get

        partial = blob.with_name(blob.name + ".incomplete")
        partial.parent.mkdir(parents=True, exist_ok=True)
        if size is not None and partial.is_file() and partial.stat().st_size > size:
            partial.unlink()  # longer than the file: not a part of it
        with partial.open("ab", buffering=0) as handle:  # each chunk on disk as it arrives: a kill loses none
            done = handle.tell()
            try:
                http_get(url, handle, resume_size=done, headers=headers, expected_size=size,
                         displayed_filename=f"{tag} ({Path(self.filename).name})")
            except Exception as err:  # noqa: BLE001 - httpx, OSError and the hub's errors all mean: stopped
                got = partial.stat().st_size / 1e6
                raise UserError(f"downloading pretrained tag {tag!r} ({self}) stopped after {got:.1f} of "
                                f"{self.size_mb:.0f} MB ({type(err).__name__}: {str(err).splitlines()[0]}); run the "
                                f"command again to continue the download") from None
        digest = file_sha256(partial)
        if digest != blob.name:
            partial.unlink()
            raise UserError(f"the download of pretrained tag {tag!r} ({self}) is refused: its SHA-256 {digest} "
                            f"is not the {blob.name} the hub reports for it (deleted; run the command again to "
                            f"download it anew)")
        os.replace(partial, blob)

    def _check_online(self, tag: str) -> None:
        from huggingface_hub import constants

        reason = ("HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else
                  None if hub_answers() else f"the hub ({constants.ENDPOINT}) cannot be reached")
        if reason is not None:
            raise UserError(f"pretrained tag {tag!r} ({self}, {self.size_mb:.0f} MB) is not in the Hugging Face "
                            f"cache and {reason}; on a connected machine run `rsitr models --download {tag}`, then "
                            f"copy its cache ({constants.HF_HUB_CACHE}) here, or pass the downloaded file as "
                            f"`pretrained`", parameters=("pretrained",))

    def __str__(self) -> str:
        return f"{self.repo}/{self.filename}@{self.revision}"


@functools.lru_cache(maxsize=16)
def _hub_metadata(url: str):
    """One HEAD request, no retries (:data:`METADATA_TIMEOUT_S` at most); an answer is kept for the process (the
    argument check, then the download), a failure is not."""
    from huggingface_hub.file_download import get_hf_file_metadata

    return get_hf_file_metadata(url, timeout=METADATA_TIMEOUT_S)


def file_sha256(path: Path) -> str:
    """A file's SHA-256, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hub_answers(timeout_s: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether the Hugging Face hub (``HF_ENDPOINT``) accepts a connection within ``timeout_s``, name lookup
    included (in a thread: a lookup has no timeout of its own)."""
    import socket
    from concurrent.futures import ThreadPoolExecutor
    from urllib.parse import urlparse

    from huggingface_hub import constants

    endpoint = urlparse(constants.ENDPOINT)

    def connect() -> bool:
        default_port = 443 if endpoint.scheme == "https" else 80
        with socket.create_connection((endpoint.hostname, endpoint.port or default_port), timeout=timeout_s):
            return True

    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(connect).result(timeout=timeout_s)
    except Exception:  # noqa: BLE001 - any failure to connect means: do not wait for the hub
        return False
    finally:
        pool.shutdown(wait=False)


def _link_snapshot(storage: Path, blob: Path, commit: str, revision: str, filename: str) -> Path:
    """``snapshots/<commit>/<filename>`` pointing at ``blob``, and ``refs/<revision>`` naming the commit when the
    revision is a branch: the hub cache's layout, which ``try_to_load_from_cache`` reads."""
    pointer = storage / "snapshots" / commit / filename
    if not pointer.exists():
        pointer.parent.mkdir(parents=True, exist_ok=True)
        try:
            pointer.symlink_to(os.path.relpath(blob, pointer.parent))
        except OSError:  # no symlinks here (Windows without developer mode): the file moves to the snapshot
            os.replace(blob, pointer)
    if revision != commit:
        ref = storage / "refs" / revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit, encoding="utf-8")
    return pointer
