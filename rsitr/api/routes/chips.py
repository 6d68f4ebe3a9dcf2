"""The pictures: a chip's details and thumbnail, a downscaled archive file, an uploaded query image. Thumbnails and
previews are rendered on the image pool and kept in the cache, keyed by the index generation (which changes with
every index update, so a replaced-then-reindexed source is rendered anew)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path as PathParam, Query
from fastapi.responses import Response

from rsitr.api.deps import MAX_PATH_LENGTH, ServiceDep, known_chip
from rsitr.api.schemas import JPEG, ChipDetails, problems
from rsitr.index import PathOutsideArchiveError
from rsitr.api.query_images import ID_PATTERN, UnknownQueryImageError

MAX_THUMBNAIL_SIZE = 1024
"""Largest side of a chip thumbnail or file preview a client may ask for."""

router = APIRouter()
ImageSize = Annotated[int, Query(ge=16, le=MAX_THUMBNAIL_SIZE)]


@router.get("/api/chips/{chip_id}", responses=problems(404))
def chip(service: ServiceDep, chip_id: int) -> ChipDetails:
    details = known_chip(chip_id, service.index.chip_details(chip_id))
    return ChipDetails(**details, thumbnail=f"/api/chips/{chip_id}/thumbnail")


@router.get("/api/chips/{chip_id}/thumbnail", response_class=Response, responses={**JPEG, **problems(404)})
def thumbnail(service: ServiceDep, chip_id: int, size: ImageSize = 256) -> Response:
    index = service.index
    record = known_chip(chip_id, index.chip(chip_id))
    return service.cached_jpeg(("chip", chip_id, index.generation, size), lambda: index.chip_image(record, size))


@router.get("/api/files/preview", response_class=Response, responses={**JPEG, **problems(404)})
def file_preview(service: ServiceDep, path: Annotated[str, Query(min_length=1, max_length=MAX_PATH_LENGTH)],
                 size: ImageSize = 512) -> Response:
    index = service.index
    try:
        index.archive.source(path)
    except PathOutsideArchiveError as err:  # schema-valid strings, so not 400: there is no such indexed file
        raise HTTPException(404, str(err)) from None
    return service.cached_jpeg(("file", path, index.generation, size), lambda: index.file_preview(path, size))


@router.get("/api/query-images/{image_id}", response_class=Response, responses={**JPEG, **problems(404)})
def query_image(service: ServiceDep, image_id: Annotated[str, PathParam(pattern=ID_PATTERN)]) -> Response:
    try:
        return Response(service.query_images.get(image_id).jpeg, media_type="image/jpeg")
    except UnknownQueryImageError as err:
        raise HTTPException(404, str(err)) from None
