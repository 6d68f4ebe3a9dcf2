"""FastAPI app: search an archive index by text or uploaded image, chip metadata and thumbnails, the web page.

:func:`create_app` only assembles: the routes are routers by concern in :mod:`.routes` (``pages``: the page,
``/docs`` and ``/api/info``; ``search``; ``heatmap``; ``chips``: chip details and every JPEG), given what they share
(:class:`.deps.Service`, kept on ``app.state``) through FastAPI dependencies; their JSON answers are the pydantic
models of :mod:`.schemas`; the middlewares are :mod:`.middleware`'s.

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
  (:class:`rsitr.api.query_images.QueryImages`, bounded in count and age) under the ``image`` id the
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

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from rsitr.api.routes import chips, heatmap, pages, search
from rsitr.api.deps import ImageCache, Service
from rsitr.api.middleware import add_middlewares
from rsitr.api.schemas import Problem
from rsitr.deprecations import renamed
from rsitr.errors import UserError
from rsitr.index import ArchiveIndex
from rsitr.index.archive import DEFAULT_MAX_QUERY_PIXELS
from rsitr.api.query_images import QueryImages

DEFAULT_MAX_UPLOAD_BYTES = 10 * 2**20
DEFAULT_MAX_CONCURRENT_IMAGES = 2
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
ROUTERS = (pages.router, search.router, heatmap.router, chips.router)


def check_basemap(template: str) -> str:
    """A tile URL template as Leaflet reads it (``https://host/{z}/{x}/{y}.png``), or a :class:`UserError` saying
    what it lacks."""
    from urllib.parse import urlsplit

    parts = urlsplit(template)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UserError(f"a basemap is an http(s) tile URL template such as https://tile.example.org/{{z}}/{{x}}/{{y}}"
                        f".png, got {template!r}")
    missing = [key for key in ("{z}", "{x}", "{y}") if key not in template]
    if missing:
        raise UserError(f"the basemap template {template!r} lacks {', '.join(missing)} (where the tile's zoom, column "
                        f"and row go)")
    return template


def create_app(index_dir: str | Path | None = None, *, index: ArchiveIndex | None = None,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, max_pixels: int = DEFAULT_MAX_QUERY_PIXELS,
               max_concurrent_images: int = DEFAULT_MAX_CONCURRENT_IMAGES, thumbnail_cache_size: int = 1024,
               device: str = "cpu", checkpoint: str | None = None, precision: str = "auto", runtime: str = "auto",
               query_images: QueryImages | None = None, allowed_hosts: Iterable[str] = LOCAL_HOSTS,
               basemap: str | None = None, pretrained: str | None = None) -> FastAPI:
    """The app for the index in ``index_dir`` (or an already opened ``index``; ``device``, ``checkpoint``,
    ``precision`` and ``runtime`` as for :meth:`ArchiveIndex.open`); uploaded query images are kept in ``query_images`` (default
    bounds if None). Requests whose ``Host`` is not one of ``allowed_hosts`` (``*``: any) get 400. ``basemap``: the
    tile URL template the page's map shows under the footprints (:func:`check_basemap`); None: the page fetches no
    tiles unless its user sets a URL. ``pretrained``: the deprecated spelling of ``checkpoint``."""
    checkpoint = renamed("create_app", "pretrained", pretrained, checkpoint)
    basemap = None if basemap is None else check_basemap(basemap)
    if index is None:
        if index_dir is None:
            raise ValueError("create_app needs index_dir or index")
        index = ArchiveIndex.open(index_dir, device=device, checkpoint=checkpoint, precision=precision,
                                  runtime=runtime)
    app = FastAPI(title="rsitr archive search", docs_url=None, redoc_url=None, responses={
        400: {"model": Problem, "description": "a Host header this server does not answer to"},
        403: {"model": Problem, "description": "an unsafe method sent from another origin's page"},
        413: {"model": Problem, "description": "a request body over the upload limit, or to a route that takes "
                                               "none"}})
    app.state.service = Service(
        index=index, query_images=query_images or QueryImages(), cache=ImageCache(thumbnail_cache_size),
        image_pool=ThreadPoolExecutor(max_concurrent_images, thread_name_prefix="rsitr-image"),
        max_upload_bytes=max_upload_bytes, max_pixels=max_pixels, basemap=basemap)
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static")
    routes = [*app.routes, *(route for router in ROUTERS for route in router.routes)]
    for router in ROUTERS:
        app.include_router(router)
    add_middlewares(app, routes, max_upload_bytes, allowed_hosts)
    return app
