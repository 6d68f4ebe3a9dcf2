"""Search: by text, like an indexed chip or an uploaded query image, refined by relevance feedback, or "find all"
like the wanted chips; as JSON or as a GeoJSON / CSV download. And the upload of a query image."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import Response

from rsitr.api.deps import MAX_RESULTS, PlacedDep, SearchedDep, ServiceDep, answered, download, jpeg
from rsitr.api.schemas import FoundAnswer, Hit, ImageSearchAnswer, Problem, SearchAnswer, problems
from rsitr.index import DEFAULT_THRESHOLD, SearchHit
from rsitr.index.archive import ImageTooLargeError, NotAnImageError, decode_image
from rsitr.index.export import MEDIA_TYPES, export, export_found, hit_json

QUERY_IMAGE_SIZE = 256
"""Largest side of the JPEG kept of a query image, to show it."""

SEARCH_RESPONSES = {
    200: {"description": "the ranked chips: JSON, or a GeoJSON / CSV download with `format`",
          "content": {MEDIA_TYPES["geojson"]: {}, MEDIA_TYPES["csv"]: {}}},
    400: {"model": Problem, "description": "nothing to search for, an empty query, more than one of `q`, "
                                           "`like` and `image`, or an area or date that cannot be read"},
    404: {"model": Problem, "description": "`like`, `positive` or `negative` names a chip id the index does not "
                                           "hold, or `image` a query image the server does not keep (any longer)"},
}

router = APIRouter()


def hit_answer(hit: SearchHit) -> Hit:
    return Hit(**hit_json(hit), thumbnail=f"/api/chips/{hit.chip_id}/thumbnail")


@router.get("/api/search", response_model=SearchAnswer | FoundAnswer, responses=SEARCH_RESPONSES)
def search(service: ServiceDep, asked: SearchedDep, limited: PlacedDep,
           k: Annotated[int, Query(ge=1, le=MAX_RESULTS)] = 10, rerank: bool = True,
           find_all: Annotated[bool, Query(alias="all", description="find all chips like the wanted ones (a classifier "
                                                                    "over the whole index), not the top k")] = False,
           threshold: Annotated[float, Query(gt=0, lt=1, description="with `all`: the probability a chip "
                                                                     "needs")] = DEFAULT_THRESHOLD,
           offset: Annotated[int, Query(ge=0, description="with `all`: the first found chip to answer (paging)")] = 0,
           format: Literal["json", "geojson", "csv"] = "json") -> SearchAnswer | FoundAnswer | Response:
    index = service.index
    vector = service.query_vector(asked.image)
    placed, where = limited
    with answered():
        if find_all:
            found = index.find_all(asked.q, like=asked.like, vector=vector, positive=asked.positive,
                                   negative=asked.negative, threshold=threshold, where=where)
        else:
            hits = index.search(asked.q, k, like=asked.like, vector=vector, positive=asked.positive,
                                negative=asked.negative, rerank=rerank, where=where)
    if find_all and format == "json":
        return FoundAnswer(**dict(asked), **dict(placed), all=True, threshold=threshold, count=found.count,
                           scored=found.scored, calibrated=found.probe.calibrated, offset=offset,
                           results=[hit_answer(hit) for hit in index.found_hits(found, offset, k)])
    if format == "json":
        return SearchAnswer(**dict(asked), **dict(placed), results=[hit_answer(hit) for hit in hits],
                            removed=hits.removed)
    named = {key: value for key, value in {**dict(asked), **dict(placed)}.items() if value not in (None, [])}
    text = export_found(index.found_hits(found), format, {**named, "all": True, "threshold": threshold}) \
        if find_all else export(hits, format, named)
    return download(text, MEDIA_TYPES[format], f"rsitr-results.{format}")


@router.post("/api/search/image", responses=problems(400, 413, 415))
def search_image(service: ServiceDep, file: Annotated[UploadFile, File()], limited: PlacedDep,
                 k: Annotated[int, Form(ge=1, le=MAX_RESULTS)] = 10) -> ImageSearchAnswer:
    limit = service.max_upload_bytes
    data = file.file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"upload larger than {limit} bytes")
    name = file.filename or "the upload"

    def encode() -> tuple[str, np.ndarray]:
        decoded = decode_image(data, name, service.max_pixels)
        embedding = service.index.embed_image(decoded)
        return service.query_images.add(data, embedding, jpeg(decoded, QUERY_IMAGE_SIZE)), embedding

    try:
        image_id, embedding = service.in_pool(encode)
    except ImageTooLargeError as err:
        raise HTTPException(413, str(err)) from None
    except NotAnImageError as err:
        raise HTTPException(415, str(err)) from None
    placed, where = limited
    hits = service.index.search(k=k, vector=embedding, where=where)
    return ImageSearchAnswer(query=file.filename, image=image_id, **dict(placed),
                             results=[hit_answer(hit) for hit in hits])
