"""The service's JSON answers as pydantic models: the routes declare them as ``response_model``, so FastAPI checks
every answer against them and the OpenAPI description (``/docs``) shows their fields and types.

Answers forbid keys their model does not name: a key the index adds to what it returns fails the API's tests
(500 from FastAPI's response check) instead of being dropped from the answer without a word.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Bounds = tuple[float, float, float, float]
"""``(west/left, south/bottom, east/right, north/top)``."""


ACQUIRED = "when the image was acquired (STAC datetime or TIFF DATETIME tag), ISO 8601 UTC; null: not known"
ITEM_ID = "the STAC item the image is an asset of; null: not from STAC"
HREF = "the URL of the remote raster; null: a file of the archive's folder"


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(Answer):
    """The body of every 4xx answer but validation errors (422, FastAPI's own schema)."""

    detail: str


class Window(Answer):
    """A pixel rectangle of a scene: column ``x``, row ``y``, ``width``, ``height``."""

    x: int
    y: int
    width: int
    height: int


class Hit(Answer):
    """One ranked chip."""

    chip_id: int
    path: str = Field(description="the image file, relative to the archive root")
    window: Window
    handle: str = Field(description="the chip's name for `like`, `positive` and `negative` that outlives a re-index "
                                    "(ids do not): `path`, or `path:WxH+X+Y` for a chip of a tiled scene")
    bounds: Bounds | None = Field(description="in the scene's `crs`; null when the image has no coordinates")
    crs: str | None
    score: float = Field(description="the ranking score: fused global and local similarity when re-ranked, else the "
                                     "global cosine; with `all`, the probability of being wanted")
    global_score: float
    local_score: float | None
    stale: bool = Field(description="the image was deleted, moved or replaced since it was indexed")
    whole_image: bool = Field(description="the chip is its whole image (the image was not tiled)")
    wgs84_bounds: Bounds | None = Field(description="the footprint in longitude and latitude, for maps")
    acquired: str | None = Field(None, description=ACQUIRED)
    item_id: str | None = Field(None, description=ITEM_ID)
    href: str | None = Field(None, description=HREF)
    thumbnail: str = Field(description="the URL of the chip's thumbnail")


class Searched(Answer):
    """What was searched for, as asked."""

    q: str | None
    like: int | str | None
    image: str | None
    positive: list[int | str]
    negative: list[int | str]


class Placed(Answer):
    """Where and when the results were limited to, as asked (null: not limited)."""

    bbox: str | None = Field(None, description="WEST,SOUTH,EAST,NORTH in degrees (WGS84)")
    area: str | None = Field(None, description="a GeoJSON Polygon or MultiPolygon in WGS84")
    after: str | None = Field(None, description="acquired at or after this ISO 8601 date or time")
    before: str | None = Field(None, description="acquired before this ISO 8601 date or time")


class SearchAnswer(Searched, Placed):
    """The top ``k`` chips."""

    results: list[Hit]
    removed: int = Field(description="chips marked not wanted that ranked among the results and were left out")


class FoundAnswer(Searched, Placed):
    """What "find all" found: ``count`` chips with a probability of at least ``threshold``, ``k`` of them from
    ``offset``."""

    all: Literal[True]
    threshold: float
    count: int = Field(description="how many chips were found")
    scored: int = Field(description="how many chips were scored (the whole archive, or its chips in `bbox` / `area` "
                                    "and `after` / `before`)")
    calibrated: bool = Field(description="whether the probabilities are calibrated (two or more wanted chips)")
    offset: int
    results: list[Hit]


class ImageSearchAnswer(Placed):
    """The top ``k`` chips for an uploaded image, kept under the id ``image`` for later searches."""

    query: str | None = Field(description="the uploaded file's name")
    image: str
    results: list[Hit]


class SceneSize(Answer):
    width: int | None
    height: int | None


class ChipDetails(Answer):
    """A chip's file, window, bounds (native and WGS84), CRS, its scene's pixel size, acquisition time and STAC
    item."""

    chip_id: int
    path: str
    window: Window
    bounds: Bounds | None
    crs: str | None
    wgs84_bounds: Bounds | None
    scene: SceneSize
    acquired: str | None = Field(None, description=ACQUIRED)
    item_id: str | None = Field(None, description=ITEM_ID)
    href: str | None = Field(None, description=HREF)
    thumbnail: str


class HeatCell(Answer):
    chip_id: int
    window: Window
    wgs84_bounds: Bounds | None
    score: float


class Heatmap(Answer):
    """A scene's chips with their scores for the query (map cells), and the score range for a legend."""

    path: str
    crs: str | None
    kind: str
    explained: str = Field(description="what the scores are")
    min: float | None
    max: float | None
    chips: list[HeatCell]


class IndexSettings(Answer):
    """How the archive was cut into chips and what is stored."""

    chip_size: int
    chip_overlap: int
    tile_larger_than: int
    index_type: str
    store_local_tokens: bool
    backend: str
    vector_uri: str | None
    max_pixels: int
    max_chips_per_file: int
    bands: str | None = Field(description="a raster's bands shown as RGB (indexes or names); null: the bands the "
                                          "file calls red, green and blue, else the first three")
    scale: str = Field(description="'percentile' (each file's 2nd-98th) or 'range LOW HIGH'")
    max_nodata: float = Field(description="chips with a larger fraction of nodata pixels were left out")
    asset: str | None = Field(None, description="the asset of each STAC item indexed (null: files or URLs)")
    orientations: int = Field(1, description="orientations each chip's embedding is averaged over (1, 4 or 8)")


class Fusion(Answer):
    """The weights of the re-ranking score: global cosine and local (patch-word) similarity."""

    global_weight: float
    local_weight: float


class Info(Answer):
    """The index summary and the service's limits."""

    name: str
    model: str | None
    pretrained: str | None
    embedding_dim: int
    fingerprint: str
    root: str = Field(description="the archive folder, by name only")
    settings: IndexSettings
    files: int
    incomplete_files: int = Field(description="more than 0 while an indexing run is under way (or was interrupted)")
    chips: int
    failures: int
    index_type: str = Field(description="the vector index searched now")
    georeferenced_files: int
    local_rerank: bool = Field(description="whether text searches re-rank by local (patch-word) similarity")
    fusion: Fusion
    max_upload_bytes: int
    max_pixels: int
    max_results: int
    basemap: str | None = Field(None, description="the map's tile URL template set by `rsitr serve --basemap` (the "
                                                  "page uses it unless its user set another); null: no tiles")


def problems(*codes: int) -> dict:
    """The OpenAPI ``responses`` of a route's 4xx answers (:class:`Problem` bodies)."""
    reasons = {400: "a malformed multipart body, or an area (`bbox`, `area`) or date (`after`, `before`) that cannot "
                    "be read", 404: "no such chip, query image or indexed file (or a path "
                                                      "outside the archive), or its source changed since indexing",
               413: "the upload's bytes or pixels are over the limit", 415: "the upload is not an image"}
    return {code: {"model": Problem, "description": reasons[code]} for code in codes}


JPEG = {200: {"content": {"image/jpeg": {}}, "description": "a JPEG image"}}
