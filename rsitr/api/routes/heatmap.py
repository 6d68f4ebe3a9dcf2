"""The heat map of a georeferenced scene: its chips with their scores for a query (JSON, for the map's heat layer),
or the score raster in the scene's CRS (GeoTIFF)."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from rsitr.api.deps import MAX_PATH_LENGTH, SearchedDep, ServiceDep, answered, download
from rsitr.api.schemas import Heatmap, Problem

GEOTIFF = "image/tiff; application=geotiff"

router = APIRouter()


@router.get("/api/heatmap", response_model=Heatmap, responses={
    200: {"description": "the scene's chips with their scores (JSON), or the score raster (GeoTIFF)",
          "content": {GEOTIFF: {}}},
    400: {"model": Problem, "description": "the scene is not georeferenced, or the query is not valid"},
    404: {"model": Problem, "description": "no such indexed image, chip or query image"}})
def heatmap(service: ServiceDep, asked: SearchedDep,
            path: Annotated[str, Query(min_length=1, max_length=MAX_PATH_LENGTH, description="the indexed scene")],
            find_all: Annotated[bool, Query(alias="all", description="score by \"find all like these\" (a "
                                                                     "probability)")] = False,
            format: Literal["json", "geotiff"] = "json") -> Heatmap | Response:
    index = service.index
    vector = service.query_vector(asked.image)
    with answered():
        scores = index.scene_scores(path, asked.q, like=asked.like, vector=vector, positive=asked.positive,
                                    negative=asked.negative, find_all=find_all)
        if format == "json":
            return Heatmap(**scores.to_json())
        raster = service.in_pool(lambda: index.score_raster(scores))
    return download(raster, GEOTIFF, f"{PurePosixPath(path).stem}-scores.tif")
