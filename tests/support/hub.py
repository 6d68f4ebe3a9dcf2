"""A Hugging Face hub on 127.0.0.1 for tests (no tests here): the download protocol ``huggingface_hub`` speaks,
``HEAD`` / ``GET <repo>/resolve/<revision>/<file>`` with the headers it reads (``X-Repo-Commit``, ``X-Linked-Etag``:
an LFS file's SHA-256, ``X-Linked-Size``), HTTP ranges (a resumed download asks for the rest), and faults: a file
served with another SHA-256 than its content's, or a download that stalls after some bytes until released.

:func:`layout_state_dict` gives an OpenCLIP architecture's state dict with its real keys, shapes and dtypes in a
file of a few hundred KB: each tensor is a random last-dimension vector broadcast over the others (stride 0), which
``torch.save`` stores once.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"
"""The commit every served file belongs to."""


@dataclass
class Served:
    content: bytes
    sha256: str
    """What the hub reports (the content's own SHA-256, unless the test makes it lie)."""
    stall_after: int | None = None
    """Bytes sent before the response stops until :attr:`LocalHub.release` is set."""


@dataclass
class LocalHub:
    files: dict[str, Served] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    """(method, path, Range header) of every request, in order."""
    release: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None

    def add(self, repo: str, filename: str, content: bytes, *, reported_sha256: str | None = None,
            stall_after: int | None = None) -> str:
        """Serve ``content`` as ``repo``'s ``filename`` (any revision); returns its real SHA-256."""
        digest = hashlib.sha256(content).hexdigest()
        self.files[f"{repo}/{filename}"] = Served(content, reported_sha256 or digest, stall_after)
        return digest

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> LocalHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
                self._answer(body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                hub.requests.append((self.command, self.path, self.headers.get("Range")))
                repo_and_file = self.path.split("?")[0].lstrip("/").split("/resolve/", 1)
                served = None
                if len(repo_and_file) == 2:
                    repo, rest = repo_and_file
                    served = hub.files.get(f"{repo}/{rest.split('/', 1)[-1]}")
                if served is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("X-Repo-Commit", COMMIT)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                ranged = self.headers.get("Range")
                if body and ranged and ranged.startswith("bytes="):
                    start = int(ranged[len("bytes="):].split("-")[0])
                size = len(served.content)
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("X-Linked-Etag", f'"{served.sha256}"')
                self.send_header("X-Linked-Size", str(size))
                self.send_header("ETag", f'"{served.sha256}"')
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(size - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                self.end_headers()
                if body:
                    self._send(served, start)

            def _send(self, served: Served, start: int) -> None:
                content = served.content
                try:
                    if served.stall_after is not None and start < served.stall_after:
                        self.wfile.write(content[start:served.stall_after])
                        self.wfile.flush()
                        hub.release.wait(60)
                        return  # the client has been killed: the rest is never sent
                    self.wfile.write(content[start:])
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def hub_entry(architecture: str, repo: str, filename: str, size_mb: float = 1.0, sha256: str | None = None) -> dict:
    """An entry of ``weights/hub.json`` for a file served by :class:`LocalHub` (``sha256``: pinned)."""
    where = {"repo": repo, "file": filename, "revision": "main", "size_mb": size_mb}
    return {"model": architecture, "hub": {**where, **({"sha256": sha256} if sha256 else {})}, "licence": "test",
            "description": f"{architecture} served by the tests' local hub"}


def write_hub_registry(path: Path, entries: dict[str, dict]) -> Path:
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def state_dict_bytes(state: dict) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def layout_state_dict(architecture: str, seed: int = 0) -> dict:
    """``architecture``'s OpenCLIP state dict with its real keys, shapes and dtypes (built on the meta device,
    so no weights are allocated), each floating tensor a positive random vector broadcast to its shape."""
    import torch

    from rsitr.models.registry import register_model_configs

    with torch.device("meta"):
        model = register_model_configs().create_model(architecture, device="meta")
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        if not value.is_floating_point():
            state[key] = torch.zeros(value.shape, dtype=value.dtype)
        elif value.dim() == 0:
            state[key] = torch.tensor(1.0)
        else:
            row = torch.rand(value.shape[-1], generator=generator) * 0.02 + 0.01
            state[key] = row.half().expand(value.shape)
    return state


def serve_hub(monkeypatch, cache: Path, registry: dict[str, dict] | None = None) -> LocalHub:
    """Start a :class:`LocalHub` and point ``huggingface_hub`` (in this process and, through the environment, in
    child processes) at it, with an empty cache at ``cache``; ``registry``: the hub tags, replacing rsitr's."""
    from huggingface_hub import constants

    from rsitr.models import hub as rsitr_hub, registry as rsitr_registry

    rsitr_hub._hub_metadata.cache_clear()  # answers of another test's hub
    hub = LocalHub().start()
    # no telemetry: the client's own user-agent look-ups would be requests this hub counts
    for name, value in {"ENDPOINT": hub.url, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": False,
                        "HF_HUB_DISABLE_TELEMETRY": True}.items():
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    if registry is not None:
        path = write_hub_registry(cache.parent / "hub.json", registry)
        monkeypatch.setattr(rsitr_registry, "HUB_REGISTRY", path)
    return hub


TINY_TAG, TINY_REPO, TINY_FILE = "test-tiny-hub", "tests/tiny", "ckpt/tiny.pt"
"""A hub tag of the tiny model (rsitr-tiny-ViT), served as an OpenCLIP state dict in a repository's sub-folder."""


def tiny_weights(seed: int = 5) -> tuple[dict, bytes]:
    """The tiny model's random weights and their bytes, as a hub serves an OpenCLIP state dict."""
    import warnings

    from rsitr.errors import RsitrWarning
    from rsitr.models import TINY_MODEL, create_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RsitrWarning)  # random weights: what these tests serve
        state = create_model(TINY_MODEL, seed=seed).model.clip.state_dict()
    return state, state_dict_bytes(state)


def serve_tiny_tag(monkeypatch, cache: Path, content: bytes) -> LocalHub:
    """:func:`serve_hub` with :data:`TINY_TAG` as the only hub tag, serving ``content``; ``hub.sha256`` is its."""
    from rsitr.models import TINY_MODEL

    hub = serve_hub(monkeypatch, cache, {TINY_TAG: hub_entry(TINY_MODEL, TINY_REPO, TINY_FILE)})
    hub.sha256 = hub.add(TINY_REPO, TINY_FILE, content)
    return hub
