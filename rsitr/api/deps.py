"""What the routes are given (FastAPI dependencies): the :class:`Service` that ``create_app`` keeps on
``app.state`` (the index, the uploaded query images, the image thread pool, the thumbnail cache, the limits), and
the query parameters that search and heat map share; and how the index's errors become HTTP answers."""

from __future__ import annotations

import io
import re
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from threading import Lock
from typing import Annotated, Callable, Iterator, TypeVar
from urllib.parse import quote

import numpy as np
from fastapi import Depends, HTTPException, Query, Request
from fastapi.responses import Response
from PIL import Image

from rsitr.api.schemas import Placed, Searched
from rsitr.errors import UserError
from rsitr.index import ArchiveIndex, PathOutsideArchiveError, UnknownChipError
from rsitr.api.query_images import ID_PATTERN, QueryImages, UnknownQueryImageError
from rsitr.index.where import Where

MAX_RESULTS = 200
MAX_PATH_LENGTH = 4096
QUERY_PATTERN = r"[^\s\x1c-\x1f]"
"""A query holds a character that is not whitespace (``\\s`` differs between regex engines on ``\\x1c-\\x1f``,
which Python's ``str.strip`` removes: naming them keeps the schema, the validator and the handler in agreement)."""

CHIP_HANDLE = "{}: chip ids, or indexed images' paths relative to the archive (PATH:WxH+X+Y: one chip of a tiled scene)"

T = TypeVar("T")


class ImageCache:
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


def jpeg(image: Image.Image, size: int) -> bytes:
    """``image`` as JPEG bytes, its largest side at most ``size``."""
    image = image.convert("RGB")
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


@dataclass(frozen=True)
class Service:
    """What the routes share, made once per app. Images are decoded and encoded only on ``image_pool`` (see
    :mod:`rsitr.api.app`), so each such step is :meth:`in_pool`."""

    index: ArchiveIndex
    query_images: QueryImages
    image_pool: ThreadPoolExecutor
    cache: ImageCache
    max_upload_bytes: int
    max_pixels: int
    basemap: str | None = None
    """The map's tile URL template the page uses unless its user set another; None: no tiles fetched."""

    def in_pool(self, work: Callable[[], T]) -> T:
        """``work()`` run on the image pool (waiting for a free thread)."""
        return self.image_pool.submit(work).result()

    def query_vector(self, image: str | None) -> np.ndarray | None:
        """The embedding of the uploaded query image ``image`` (None for None); 404 when it is not kept."""
        try:
            return None if image is None else self.query_images.get(image).embedding
        except UnknownQueryImageError as err:
            raise HTTPException(404, str(err)) from None

    def cached_jpeg(self, key: tuple, render: Callable[[], Image.Image]) -> Response:
        """The JPEG of ``render()`` at size ``key[-1]``, from the cache or rendered on the pool; 404 when the
        source is not indexed or changed since."""
        data = self.cache.get(key)
        if data is None:
            try:
                data = self.in_pool(lambda: jpeg(render(), key[-1]))
            except FileNotFoundError as err:  # not indexed, or the source changed since (SourceChangedError)
                raise HTTPException(404, str(err)) from None
            self.cache.put(key, data)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})


def download(content: bytes | str, media_type: str, filename: str) -> Response:
    """The one answer that is a file to save: ``content`` with an RFC 6266 ``Content-Disposition`` naming
    ``filename`` twice, as ``filename*`` (UTF-8, percent-encoded: any name, also one no latin-1 can hold) and as a
    plain ASCII ``filename`` for old clients (every other character an ``_``), so no name reaches the header raw."""
    ascii_name = re.sub(r'[^\x20-\x7e]|["\\]', "_", filename)
    disposition = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"
    return Response(content, media_type=media_type, headers={"Content-Disposition": disposition})


def service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(service)]


def searched(q: Annotated[str | None, Query(min_length=1, max_length=1000, pattern=QUERY_PATTERN)] = None,
             like: Annotated[int | str | None, Query(description=CHIP_HANDLE.format(
                 "search like this indexed chip"))] = None,
             image: Annotated[str | None, Query(pattern=ID_PATTERN,
                                                description="search like this uploaded query image (its id)")] = None,
             positive: Annotated[list[int | str], Query(max_length=MAX_RESULTS, description=CHIP_HANDLE.format(
                 "chips marked wanted"))] = [],
             negative: Annotated[list[int | str], Query(max_length=MAX_RESULTS, description=CHIP_HANDLE.format(
                 "chips marked not wanted"))] = []) -> Searched:
    """The query parameters saying what to search for, shared by search and heat map (which of them may go
    together is the index's to say)."""
    return Searched(q=q, like=like, image=image, positive=positive, negative=negative)


SearchedDep = Annotated[Searched, Depends(searched)]

WHERE_HELP = " (chips without a footprint, or without a known acquisition time, are left out when it is given)"


def placed(bbox: Annotated[str | None, Query(max_length=200, description="only chips whose footprint intersects "
                                             "this box: WEST,SOUTH,EAST,NORTH in degrees (WGS84)" + WHERE_HELP)] = None,
           area: Annotated[str | None, Query(max_length=100_000, description="only chips whose footprint intersects "
                                             "this GeoJSON Polygon or MultiPolygon (WGS84)" + WHERE_HELP)] = None,
           after: Annotated[str | None, Query(max_length=40, description="only chips acquired at or after this ISO "
                                              "8601 date or time (UTC unless it names a zone)" + WHERE_HELP)] = None,
           before: Annotated[str | None, Query(max_length=40, description="only chips acquired before this ISO 8601 "
                                               "date or time" + WHERE_HELP)] = None) -> tuple[Placed, Where]:
    """Where and when a search is limited to, as asked and as the index reads it (400 when it cannot be read)."""
    try:
        return Placed(bbox=bbox, area=area, after=after, before=before), Where.parse(bbox, area, after, before)
    except UserError as err:
        raise HTTPException(400, str(err)) from None


PlacedDep = Annotated[tuple[Placed, Where], Depends(placed)]


@contextmanager
def answered() -> Iterator[None]:
    """Errors of the index as HTTP answers: unknown ids 404, files that are not indexed 404, other user errors 400."""
    try:
        yield
    except (UnknownChipError, FileNotFoundError, PathOutsideArchiveError) as err:
        raise HTTPException(404, str(err)) from None
    except UserError as err:
        raise HTTPException(400, str(err)) from None


def known_chip(chip_id: int, found: T | None) -> T:
    """``found`` (what the index returned for ``chip_id``), or 404 when the index holds no such chip."""
    if found is None:
        raise HTTPException(404, f"no chip {chip_id} in this index")
    return found
