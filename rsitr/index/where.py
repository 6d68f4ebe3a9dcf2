"""Where and when: the chips a search may return, chosen by area (WGS84) and acquisition time before ranking.

A :class:`Where` names an area (a ``west, south, east, north`` box or a GeoJSON polygon, in longitude / latitude)
and a time span (``after`` <= acquired < ``before``). :func:`matching_chips` gives the ids of the chips that fall
in it: their footprint (native bounds reprojected to WGS84, the four corners and edge midpoints) intersects the area,
their image was acquired in the span. A chip with no footprint (an image without coordinates, or one whose CRS
cannot be placed in WGS84) or no known acquisition time is left out as soon as the area, or the span, is asked for:
nothing says it lies there. The search then ranks only those chips, so ``k`` results come back while as many match.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from rsitr.errors import UserError
from rsitr.index.archive import acquisition_time
from rsitr.index.store import MetadataStore

WGS84 = "EPSG:4326"


class WhereError(UserError):
    """An area or time span that cannot be read: not four numbers, no polygon, no date."""


@dataclass(frozen=True)
class Where:
    """An area (a shapely geometry in WGS84 longitude / latitude) and a span of acquisition times
    (:func:`rsitr.index.archive.acquisition_time`'s form); None: not filtered by it."""

    area: object | None = None
    after: str | None = None
    before: str | None = None

    @property
    def active(self) -> bool:
        return self.area is not None or self.after is not None or self.before is not None

    @classmethod
    def parse(cls, bbox: str | Sequence[float] | None = None, area: str | dict | Path | None = None,
              after: str | None = None, before: str | None = None) -> Where:
        """From the written forms: ``bbox`` as ``"W,S,E,N"`` (or four numbers), ``area`` a GeoJSON geometry,
        Feature or FeatureCollection of polygons (a dict, its text, or a Path of a file holding it), ``after`` / ``before``
        ISO 8601 dates or times (a date is its midnight, a time without a zone UTC)."""
        if bbox is not None and area is not None:
            raise WhereError("give a box or a polygon, not both")
        shape = None if bbox is None else _box(bbox)
        if area is not None:
            shape = _polygon(area)
        bounds = {name: _time(name, value) for name, value in (("after", after), ("before", before))}
        if bounds["after"] is not None and bounds["before"] is not None and bounds["after"] >= bounds["before"]:
            raise WhereError(f"after ({after}) must come before before ({before})")
        return cls(shape, bounds["after"], bounds["before"])


def _box(bbox: str | Sequence[float]):
    import shapely

    words = bbox.replace(",", " ").split() if isinstance(bbox, str) else list(bbox)
    try:
        west, south, east, north = (float(word) for word in words)
    except ValueError:
        raise WhereError(f"a box is four numbers WEST,SOUTH,EAST,NORTH in degrees, got {bbox!r}") from None
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise WhereError(f"a box needs -180 <= WEST < EAST <= 180 and -90 <= SOUTH < NORTH <= 90 (longitude, "
                         f"latitude in degrees), got {west:g},{south:g},{east:g},{north:g}")
    return shapely.box(west, south, east, north)


def _polygon(area: str | dict | Path):
    """The union of the (multi)polygons of a GeoJSON geometry, Feature or FeatureCollection (RFC 7946: WGS84)."""
    import shapely
    from shapely.geometry import shape

    if isinstance(area, Path):  # only a Path is read: a text (a web client's) is the GeoJSON itself
        try:
            area = Path(area).read_text()
        except OSError as err:
            raise WhereError(f"cannot read the polygon file {area}: {err.strerror or err}") from None
    try:
        document = json.loads(area) if isinstance(area, str) else area
        geometries = [feature["geometry"] for feature in document["features"]] \
            if document.get("type") == "FeatureCollection" else \
            [document["geometry"]] if document.get("type") == "Feature" else [document]
        shapes = [shape(geometry) for geometry in geometries]
    except (ValueError, KeyError, TypeError, AttributeError, shapely.errors.GEOSException) as err:
        raise WhereError(f"the area is no GeoJSON polygon ({type(err).__name__}: {err})") from None
    if not shapes or any(part.geom_type not in ("Polygon", "MultiPolygon") or part.is_empty for part in shapes):
        raise WhereError("the area must be a GeoJSON Polygon or MultiPolygon (or Features of them), in longitude "
                         "and latitude")
    union = shapely.union_all([shapely.make_valid(part) for part in shapes])
    west, south, east, north = union.bounds
    if west < -180 or east > 180 or south < -90 or north > 90:
        raise WhereError("the area's coordinates lie outside longitude -180..180 / latitude -90..90 (GeoJSON is "
                         "longitude, latitude in WGS84)")
    return union


def _time(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    normalised = acquisition_time(value)
    if normalised is None:
        raise WhereError(f"{name} is an ISO 8601 date or time (2024-05-01, 2024-05-01T10:00:00Z), got {value!r}")
    return normalised


def matching_chips(store: MetadataStore, where: Where) -> np.ndarray:
    """The ids (int64, ascending) of the chips ``where`` lets through (see the module docstring)."""
    rows = store.places(where.after, where.before, placed=where.area is not None)
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    if where.area is None or not rows:
        return ids
    import shapely

    keep = np.zeros(len(rows), dtype=bool)
    crss = np.array([row[1] for row in rows], dtype=object)
    bounds = np.array([row[2:] for row in rows], dtype=np.float64)
    for crs in set(crss):
        mine = crss == crs
        boxes = _wgs84_boxes(bounds[mine], crs)
        placed = np.isfinite(boxes).all(axis=1)
        hits = np.zeros(len(boxes), dtype=bool)
        if placed.any():
            hits[placed] = shapely.intersects(where.area, shapely.box(*boxes[placed].T))
        keep[mine] = hits
    return ids[keep]


def _wgs84_boxes(bounds: np.ndarray, crs: str) -> np.ndarray:
    """``[n, 4]`` WGS84 ``(west, south, east, north)`` of native ``bounds`` ``[n, 4]`` in ``crs``, through the corners
    and edge midpoints (one reprojection of all of them); NaN rows where they cannot be placed."""
    from rasterio._err import CPLE_BaseError  # GDAL's errors (no public name)
    from rasterio.errors import RasterioError
    from rasterio.warp import transform

    left, bottom, right, top = bounds.T
    middle_x, middle_y = (left + right) / 2, (bottom + top) / 2
    xs = np.stack([left, right, right, left, middle_x, right, middle_x, left], axis=1)
    ys = np.stack([bottom, bottom, top, top, bottom, middle_y, top, middle_y], axis=1)
    try:
        lons, lats = transform(crs, WGS84, xs.ravel().tolist(), ys.ravel().tolist())
    except (RasterioError, CPLE_BaseError, ValueError):  # a CRS PROJ cannot place: none of its chips is in any area
        return np.full((len(bounds), 4), np.nan)
    lons = np.asarray(lons, dtype=np.float64).reshape(xs.shape)
    lats = np.asarray(lats, dtype=np.float64).reshape(ys.shape)
    boxes = np.stack([lons.min(axis=1), lats.min(axis=1), lons.max(axis=1), lats.max(axis=1)], axis=1)
    outside = ~np.isfinite(boxes).all(axis=1) | (np.abs(boxes[:, [0, 2]]) > 180).any(axis=1) | \
        (np.abs(boxes[:, [1, 3]]) > 90).any(axis=1)
    boxes[outside] = np.nan
    return boxes
