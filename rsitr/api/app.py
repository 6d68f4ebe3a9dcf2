"""FastAPI app: search an archive index by text or uploaded image, chip metadata and thumbnails, the web page.

Routes (JSON unless noted):

- ``GET /`` the search page (static HTML + JS); ``GET /api/info`` the index summary; ``GET /docs`` the API's
  description (Swagger UI, vendored: nothing is fetched from outside)
- ``GET /api/search?q=TEXT&k=10&rerank=true`` text search; ``like=CHIP_ID`` instead of ``q`` searches like an
  indexed chip (its stored vector), ``image=ID`` like an uploaded query image; repeated ``positive=ID`` /
  ``negative=ID`` apply relevance feedback (not-wanted chips are left out; ``removed`` says how many ranked
  among the results); ``format=geojson|csv`` returns the results as a download (GeoJSON footprints in WGS84).
  Unknown chip or query image ids get 404. ``all=true`` finds every chip like the ``positive`` ones
  (:meth:`rsitr.index.ArchiveIndex.find_all`: a calibrated classifier over the whole index) with a probability of at
  least ``threshold``: ``count`` found, ``k`` of them from ``offset``; its exports hold everything found, adjacent
  chips of one scene merged into regions
- ``GET /api/heatmap?path=REL&q=...`` (the search's parameters, ``all`` included) a georeferenced scene's chips
  with their scores for the query (JSON, for the map's heat layer), or ``format=geotiff`` the score raster in the
  scene's CRS
- ``GET /static/...`` the page's scripts, styles and vendored Leaflet and Swagger UI
- ``POST /api/search/image`` (multipart ``file``, form ``k``) search by an example image, which is kept
  (:class:`rsitr.index.query_images.QueryImages`, bounded in count and age) under the ``image`` id the
  answer names, for later searches and ``GET /api/query-images/{id}`` (a JPEG of it); bodies over
  ``max_upload_bytes`` and images over ``max_pixels`` (read from the header, before decoding) get 413, files
  PIL cannot open as an image get 415 (the bytes decide, not the name)
- ``GET /api/chips/{id}`` a chip's file, window, bounds and CRS; ``GET /api/chips/{id}/thumbnail?size=256`` (JPEG)
- ``GET /api/files/preview?path=REL&size=512`` a downscaled whole image of the archive (JPEG); paths are
  checked with :func:`rsitr.index.resolve_in_root` and must be indexed files: absolute, ``..``, NUL and
  out-of-root symlink paths answer 404 with the reason, like any other path that is no indexed file

Thumbnails are rendered from the chip window of the source image and kept in an in-memory LRU cache; a
source deleted or replaced since indexing answers 404 with the reason. Images are decoded and encoded only
on a pool of ``max_concurrent_images`` threads (uploads and thumbnail renders wait for one), so memory does
not grow with the number of concurrent uploads: not in use at once, and not kept either, since the C
allocator keeps the freed memory of a large decode per thread (arena) that did it. Request bodies are counted
while they stream, so a chunked upload without Content-Length is refused at the limit too, and a request whose
``Host`` is not an allowed name (DNS rebinding) is answered 400 before it is read; a body to a route that takes
none is answered 413 before it is read, and a POST whose ``Origin`` is another site's 403 (request forgery).
Every answer carries a strict Content-Security-Policy (no inline script), and the page inserts names as text.
No client input answers 5xx,
every status and content type is declared in the OpenAPI description, and no response names a server path:
file paths are relative to the archive root, the root itself appears by name only.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
from collections import OrderedDict
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from threading import Lock
from typing import Iterable, Literal

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Path as PathParam, Query, UploadFile
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel
from starlette.datastructures import Headers, MutableHeaders
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rsitr.errors import UserError
from rsitr.index import (DEFAULT_THRESHOLD, ArchiveIndex, PathOutsideArchiveError, SearchHit, UnknownChipError,
                         resolve_in_root)
from rsitr.index.archive import DEFAULT_MAX_QUERY_PIXELS, ImageTooLargeError, NotAnImageError, decode_image
from rsitr.index.export import MEDIA_TYPES, export, export_found, hit_json
from rsitr.index.query_images import ID_PATTERN, QueryImages, UnknownQueryImageError

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD_BYTES = 10 * 2**20
DEFAULT_MAX_CONCURRENT_IMAGES = 2
MAX_RESULTS = 200
MAX_THUMBNAIL_SIZE = 1024
"""Largest side of a chip thumbnail or file preview a client may ask for."""
MAX_PATH_LENGTH = 4096
QUERY_PATTERN = r"[^\s\x1c-\x1f]"
"""A query holds a character that is not whitespace (``\\s`` differs between regex engines on ``\\x1c-\\x1f``,
which Python's ``str.strip`` removes: naming them keeps the schema, the validator and the handler in agreement)."""
_MULTIPART_OVERHEAD = 64 * 2**10
"""Slack over ``max_upload_bytes`` for multipart headers before a request body is refused."""
QUERY_IMAGE_SIZE = 256
"""Largest side of the JPEG kept of a query image, to show it."""
SWAGGER_UI = "/static/vendor/swagger-ui"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
GEOTIFF = "image/tiff; application=geotiff"


_CLOSE = {"Connection": "close"}
"""Ends the connection after the answer: the server would otherwise read (and discard) the rest of a refused body
to keep the connection for another request."""


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def host_name(header: str) -> str:
    """The host of a ``Host`` header without its port: ``[::1]:8000`` -> ``::1``, ``Example.org.:80`` ->
    ``example.org``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else ""
    return header.rsplit(":", 1)[0].rstrip(".") if header.count(":") == 1 else header.rstrip(".")


class _HostCheck:
    """ASGI middleware answering 400 to a ``Host`` that is not allowed, before the request is read: a web page
    that rebinds its own DNS name to this machine's address (DNS rebinding) names itself, not this server."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = {host_name(host) for host in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and "*" not in self.allowed:
            host = host_name(Headers(scope=scope).get("host", ""))
            if host not in self.allowed:
                detail = (f"this server does not answer to host {host[:100]!r}; start `rsitr serve` with "
                          f"--allowed-host NAME to allow a name")
                return await _problem(400, detail)(scope, receive, send)
        await self.app(scope, receive, send)


class _BodyLimit:
    """ASGI middleware refusing request bodies over ``max_upload_bytes`` (plus multipart slack) with 413: on a
    declared Content-Length before reading, else counted while the body streams (chunked uploads), so at most the
    limit plus one received chunk is read (and spooled) before the answer."""

    def __init__(self, app: ASGIApp, max_upload_bytes: int) -> None:
        self.app = app
        self.limit = max_upload_bytes + _MULTIPART_OVERHEAD
        self.too_large = f"upload larger than {max_upload_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            return await _problem(413, self.too_large, _CLOSE)(scope, receive, send)
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:  # raised inside the route's body parsing; FastAPI answers it
                raise HTTPException(413, self.too_large, _CLOSE)
            return message

        await self.app(scope, counted, send)


CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: "
                           "https: http:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
                           "form-action 'self'; frame-ancestors 'none'")
"""No inline or foreign script, no plugin, no framing: a file name that slipped into the page as HTML still runs
nothing. Images may come from anywhere: the basemap's tile server is the user's choice."""
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class _RequestGuard:
    """ASGI middleware for what a browser may be led to send: a request with a body to a route that takes none is
    answered at once (the server would otherwise read all of it to keep the connection), an unsafe method from another page's
    origin (cross-site request forgery) 403; and every answer carries the Content-Security-Policy (unless the
    route set its own) and ``nosniff``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if scope["method"] not in _SAFE_METHODS and origin is not None and not _same_origin(origin, headers):
            detail = f"cross-origin {scope['method']} from {origin[:100]!r} refused; use this server's own page"
            return await _problem(403, detail, _CLOSE)(scope, receive, send)
        has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
        refusal = _refuse_body(scope) if has_body else None
        if refusal is not None:
            return await refusal(scope, receive, send)

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer = MutableHeaders(scope=message)
                answer.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
                answer.setdefault("X-Content-Type-Options", "nosniff")
            await send(message)

        await self.app(scope, receive, secured)


def _same_origin(origin: str, headers: Headers) -> bool:
    """Whether an ``Origin`` header (``scheme://host[:port]``, or ``null``) names the host the request was sent to."""
    _, _, netloc = origin.partition("://")
    return bool(netloc) and netloc.lower().rstrip("/") == headers.get("host", "").lower()


def _refuse_body(scope: Scope) -> JSONResponse | None:
    """The answer, closing the connection, to a request with a body for a route that reads none (FastAPI routes
    say whether they do): 413, or 405 / 404 when no route takes the method / path; None when the route reads it."""
    routes = scope["app"].router.routes
    matches = [(route, route.matches(scope)[0]) for route in routes]
    if any(match == Match.FULL and isinstance(route, APIRoute) and route.body_field is not None
           for route, match in matches):
        return None
    what = f"{scope['method']} {scope['path'][:200]}"
    if any(match == Match.FULL for _, match in matches):
        return _problem(413, f"{what} takes no request body", _CLOSE)
    allowed = sorted({method for route, match in matches if match == Match.PARTIAL
                      for method in getattr(route, "methods", None) or ()})
    if allowed:
        return _problem(405, f"{what}: method not allowed", {**_CLOSE, "Allow": ", ".join(allowed)})
    return _problem(404, "Not Found", _CLOSE)


def _inline_script_policy(page: HTMLResponse) -> str:
    """:data:`CONTENT_SECURITY_POLICY` for a page that needs its own inline scripts (Swagger UI's start): each is
    allowed by its SHA-256, and styles inline (Swagger UI sets them), nothing else."""
    hashes = [base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
              for script in re.findall(r"<script>(.*?)</script>", page.body.decode(), re.DOTALL)]
    allowed = " ".join(f"'sha256-{digest}'" for digest in hashes)
    return CONTENT_SECURITY_POLICY.replace("script-src 'self'", f"script-src 'self' {allowed}").replace(
        "style-src 'self'", "style-src 'self' 'unsafe-inline'")


class Problem(BaseModel):
    """The body of every 4xx answer but validation errors (422, FastAPI's own schema)."""

    detail: str


def _problems(*codes: int) -> dict:
    reasons = {400: "a malformed multipart body", 404: "no such chip, query image or indexed file (or a path "
                                                      "outside the archive), or its source changed since indexing",
               413: "the upload's bytes or pixels are over the limit", 415: "the upload is not an image"}
    return {code: {"model": Problem, "description": reasons[code]} for code in codes}


_JPEG = {200: {"content": {"image/jpeg": {}}, "description": "a JPEG image"}}


class _ImageCache:
    """A small thread-safe LRU of encoded JPEG bytes."""

    def __init__(self, capacity: int) -> None:
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._capacity = capacity
        self._lock = Lock()

    def get(self, key: tuple) -> bytes | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
            return self._items.get(key)

    def put(self, key: tuple, value: bytes) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)


def _jpeg(image: Image.Image, size: int) -> bytes:
    image = image.convert("RGB")
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def _hit_json(hit: SearchHit) -> dict:
    return {**hit_json(hit), "thumbnail": f"/api/chips/{hit.chip_id}/thumbnail"}


_SEARCH_RESPONSES = {
    200: {"description": "the ranked chips: JSON, or a GeoJSON / CSV download with `format`",
          "content": {MEDIA_TYPES["geojson"]: {}, MEDIA_TYPES["csv"]: {}}},
    400: {"model": Problem, "description": "nothing to search for, an empty query, or more than one of `q`, "
                                           "`like` and `image`"},
    404: {"model": Problem, "description": "`like`, `positive` or `negative` names a chip id the index does not "
                                           "hold, or `image` a query image the server does not keep (any longer)"},
}


def create_app(index_dir: str | Path | None = None, *, index: ArchiveIndex | None = None,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, max_pixels: int = DEFAULT_MAX_QUERY_PIXELS,
               max_concurrent_images: int = DEFAULT_MAX_CONCURRENT_IMAGES, thumbnail_cache_size: int = 1024,
               device: str = "cpu", pretrained: str | None = None, precision: str = "auto",
               query_images: QueryImages | None = None, allowed_hosts: Iterable[str] = LOCAL_HOSTS) -> FastAPI:
    """The app for the index in ``index_dir`` (or an already opened ``index``; ``device``, ``pretrained`` and
    ``precision`` as for :meth:`ArchiveIndex.open`); uploaded query images are kept in ``query_images`` (default
    bounds if None). Requests whose ``Host`` is not one of ``allowed_hosts`` (``*``: any) get 400."""
    if index is None:
        if index_dir is None:
            raise ValueError("create_app needs index_dir or index")
        index = ArchiveIndex.open(index_dir, device=device, pretrained=pretrained, precision=precision)
    cache = _ImageCache(thumbnail_cache_size)
    image_pool = ThreadPoolExecutor(max_concurrent_images, thread_name_prefix="rsitr-image")
    query_images = query_images or QueryImages()
    app = FastAPI(title="rsitr archive search", docs_url=None, redoc_url=None, responses={
        400: {"model": Problem, "description": "a Host header this server does not answer to"},
        403: {"model": Problem, "description": "an unsafe method sent from another origin's page"},
        413: {"model": Problem, "description": "a request body over the upload limit, or to a route that takes "
                                               "none"}})
    app.state.index = index
    # Added last runs first: the Host is checked before anything of the request is read.
    app.add_middleware(_BodyLimit, max_upload_bytes=max_upload_bytes)
    app.add_middleware(_RequestGuard)
    app.add_middleware(_HostCheck, allowed=allowed_hosts)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        page = get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title}: API",
                                   swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
                                   swagger_favicon_url=f"{SWAGGER_UI}/favicon-32x32.png",
                                   swagger_ui_parameters={"validatorUrl": None})  # the validator is online
        page.headers["Content-Security-Policy"] = _inline_script_policy(page)
        return page

    @app.get("/api/info")
    def info() -> dict:
        return {**index.info(), "max_upload_bytes": max_upload_bytes, "max_pixels": max_pixels,
                "max_results": MAX_RESULTS}

    def query_vector(image: str | None) -> np.ndarray | None:
        try:
            return None if image is None else query_images.get(image).embedding
        except UnknownQueryImageError as err:
            raise HTTPException(404, str(err)) from None

    @contextmanager
    def answered():
        """Errors of the index as HTTP answers: unknown ids 404, files that are not indexed 404, other user
        errors 400."""
        try:
            yield
        except (UnknownChipError, FileNotFoundError, PathOutsideArchiveError) as err:
            raise HTTPException(404, str(err)) from None
        except UserError as err:
            raise HTTPException(400, str(err)) from None

    @app.get("/api/search", responses=_SEARCH_RESPONSES, response_model=None)
    def search(q: str | None = Query(None, min_length=1, max_length=1000, pattern=QUERY_PATTERN), k: int = Query(10, ge=1, le=MAX_RESULTS),
               rerank: bool = True, like: int | None = Query(None, description="search like this indexed chip"),
               image: str | None = Query(None, pattern=ID_PATTERN,
                                         description="search like this uploaded query image (its id)"),
               positive: list[int] = Query([], max_length=MAX_RESULTS, description="chip ids marked wanted"),
               negative: list[int] = Query([], max_length=MAX_RESULTS, description="chip ids marked not wanted"),
               find_all: bool = Query(False, alias="all", description="find all chips like the wanted ones (a classifier over the "
                                                    "whole index), not the top k"),
               threshold: float = Query(DEFAULT_THRESHOLD, gt=0, lt=1, description="with `all`: the probability a "
                                                                                   "chip needs"),
               offset: int = Query(0, ge=0, description="with `all`: the first found chip to answer (paging)"),
               format: Literal["json", "geojson", "csv"] = "json") -> Response | dict:
        vector = query_vector(image)
        asked = {"q": q, "like": like, "image": image, "positive": positive, "negative": negative}
        with answered():
            if find_all:
                found = index.find_all(q, like=like, image=vector, positive=positive, negative=negative,
                                       threshold=threshold)
            else:
                hits = index.search(q, k, like=like, image=vector, positive=positive, negative=negative,
                                    rerank=rerank)
        if find_all and format == "json":
            hits = index.found_hits(found, offset, k)
            return {**asked, "all": True, "threshold": threshold, "count": found.count, "scored": found.scored,
                    "calibrated": found.probe.calibrated, "offset": offset,
                    "results": [_hit_json(hit) for hit in hits]}
        if format == "json":
            return {**asked, "results": [_hit_json(hit) for hit in hits], "removed": hits.removed}
        named = {key: value for key, value in asked.items() if value not in (None, [])}
        text = export_found(index.found_hits(found), format, {**named, "all": True, "threshold": threshold}) \
            if find_all else export(hits, format, named)
        return Response(text, media_type=MEDIA_TYPES[format],
                        headers={"Content-Disposition": f'attachment; filename="rsitr-results.{format}"'})

    @app.get("/api/heatmap", response_model=None, responses={
        200: {"description": "the scene's chips with their scores (JSON), or the score raster (GeoTIFF)",
              "content": {GEOTIFF: {}}},
        400: {"model": Problem, "description": "the scene is not georeferenced, or the query is not valid"},
        404: {"model": Problem, "description": "no such indexed image, chip or query image"}})
    def heatmap(path: str = Query(..., min_length=1, max_length=MAX_PATH_LENGTH, description="the indexed scene"),
                q: str | None = Query(None, min_length=1, max_length=1000, pattern=QUERY_PATTERN),
                like: int | None = None, image: str | None = Query(None, pattern=ID_PATTERN),
                positive: list[int] = Query([], max_length=MAX_RESULTS),
                negative: list[int] = Query([], max_length=MAX_RESULTS),
                find_all: bool = Query(False, alias="all", description="score by \"find all like these\" (a probability)"),
                format: Literal["json", "geotiff"] = "json") -> Response | dict:
        vector = query_vector(image)
        with answered():
            scores = index.scene_scores(path, q, like=like, image=vector, positive=positive, negative=negative,
                                        find_all=find_all)
            if format == "json":
                return scores.to_json()
            raster = image_pool.submit(index.score_raster, scores).result()
        name = Path(path).stem.replace('"', "")
        return Response(raster, media_type=GEOTIFF,
                        headers={"Content-Disposition": f'attachment; filename="{name}-scores.tif"'})

    @app.post("/api/search/image", responses=_problems(400, 413, 415))
    def search_image(file: UploadFile = File(...), k: int = Form(10, ge=1, le=MAX_RESULTS)) -> dict:
        data = file.file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"upload larger than {max_upload_bytes} bytes")
        name = file.filename or "the upload"

        def encode() -> tuple[str, np.ndarray]:
            decoded = decode_image(data, name, max_pixels)
            embedding = index.embed_image(decoded)
            return query_images.add(data, embedding, _jpeg(decoded, QUERY_IMAGE_SIZE)), embedding

        try:
            image_id, embedding = image_pool.submit(encode).result()
        except ImageTooLargeError as err:
            raise HTTPException(413, str(err)) from None
        except NotAnImageError as err:
            raise HTTPException(415, str(err)) from None
        hits = index.search(k=k, image=embedding)
        return {"query": file.filename, "image": image_id, "results": [_hit_json(hit) for hit in hits]}

    @app.get("/api/query-images/{image_id}", response_class=Response, responses={**_JPEG, **_problems(404)})
    def query_image(image_id: str = PathParam(..., pattern=ID_PATTERN)) -> Response:
        try:
            return Response(query_images.get(image_id).jpeg, media_type="image/jpeg")
        except UnknownQueryImageError as err:
            raise HTTPException(404, str(err)) from None

    def known_chip(chip_id: int, found):
        """``found`` (what the index returned for ``chip_id``), or 404 when the index holds no such chip."""
        if found is None:
            raise HTTPException(404, f"no chip {chip_id} in this index")
        return found

    @app.get("/api/chips/{chip_id}", responses=_problems(404))
    def chip(chip_id: int) -> dict:
        return {**known_chip(chip_id, index.chip_details(chip_id)), "thumbnail": f"/api/chips/{chip_id}/thumbnail"}

    def cached_jpeg(key: tuple, render) -> Response:
        data = cache.get(key)
        if data is None:
            try:
                data = image_pool.submit(lambda: _jpeg(render(), key[-1])).result()
            except FileNotFoundError as err:  # not indexed, or the source changed since (SourceChangedError)
                raise HTTPException(404, str(err)) from None
            cache.put(key, data)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/chips/{chip_id}/thumbnail", response_class=Response, responses={**_JPEG, **_problems(404)})
    def thumbnail(chip_id: int, size: int = Query(256, ge=16, le=MAX_THUMBNAIL_SIZE)) -> Response:
        record = known_chip(chip_id, index.chip(chip_id))
        # The generation changes with every index update, so a replaced-then-reindexed source is re-rendered.
        return cached_jpeg(("chip", chip_id, index.generation, size), lambda: index.chip_image(record, size))

    @app.get("/api/files/preview", response_class=Response, responses={**_JPEG, **_problems(404)})
    def file_preview(path: str = Query(..., min_length=1, max_length=MAX_PATH_LENGTH),
                     size: int = Query(512, ge=16, le=MAX_THUMBNAIL_SIZE)) -> Response:
        try:
            resolve_in_root(index.root, path)
        except PathOutsideArchiveError as err:  # schema-valid strings, so not 400: there is no such indexed file
            raise HTTPException(404, str(err)) from None
        return cached_jpeg(("file", path, index.generation, size), lambda: index.file_preview(path, size))

    return app
