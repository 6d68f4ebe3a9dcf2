"""Search results as files a GIS opens: GeoJSON footprints in WGS84, CSV, and JSON.

GeoJSON follows RFC 7946: coordinates are WGS84 longitude/latitude (no ``crs`` member), each hit is a
Feature whose geometry is the chip's footprint polygon (its bounds reprojected with
``rasterio.warp.transform_bounds``, which densifies the edges so the box still contains the chip after a
curved reprojection) or ``null`` for chips of images without georeferencing. Properties are flat
scalars (rank, chip id, path, window, scores, native bounds and CRS, acquisition time, STAC item and URL) so that QGIS and geopandas show
them as attribute columns. Paths are relative to the archive root, never absolute.
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from functools import lru_cache
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

from rsitr.errors import RsitrWarning, UserError
from rsitr.index.archive import Bounds
from rsitr.index.searcher import SearchHit

T = TypeVar("T")

FORMATS = ("json", "geojson", "csv")
MEDIA_TYPES = {"json": "application/json", "geojson": "application/geo+json", "csv": "text/csv"}
WGS84 = "EPSG:4326"
CSV_COLUMNS = ("rank", "chip_id", "path", "x", "y", "width", "height", "score", "global_score", "local_score",
               "crs", "left", "bottom", "right", "top", "lon_min", "lat_min", "lon_max", "lat_max", "stale",
               "acquired", "item_id", "href")


def in_wgs84(crs: str, transform: Callable[[], T], coordinates: Callable[[T], Iterable[float]]) -> T | None:
    """``transform()``'s result (a reprojection to WGS84 of something in ``crs``), or None when GDAL/PROJ cannot
    transform ``crs`` or any of its ``coordinates`` (longitude, latitude alternating) is not finite or lies outside
    longitude -180..180 / latitude -90..90: the one check every export, the heat map and the page place chips
    through, so a local or unknown CRS or a file with latitudes of 744 is listed without a footprint (warned once
    per CRS and reason) instead of failing or being drawn off the globe."""
    import rasterio
    from rasterio._err import CPLE_BaseError  # GDAL's errors (no public name)
    from rasterio.errors import RasterioError

    try:
        with rasterio.Env():  # GDAL's errors become exceptions only, not also lines on stderr
            result = transform()
    except (RasterioError, CPLE_BaseError, ValueError) as err:  # CRSError is a ValueError; GDAL's are CPLE_*
        _warn_untransformable(crs, str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__)
        return None
    values = [float(value) for value in coordinates(result)]
    if not all(math.isfinite(value) for value in values):
        _warn_untransformable(crs, "the transform gave no finite coordinates")
        return None
    if any(abs(value) > limit + DEGREE_SLACK for value, limit in zip(values, (180.0, 90.0) * len(values))):
        _warn_untransformable(crs, "the coordinates lie outside longitude -180..180 / latitude -90..90")
        return None
    return result


DEGREE_SLACK = 1e-9
"""Rounding allowed past +-180 / +-90 degrees."""


@lru_cache(maxsize=4096)
def wgs84_bounds(bounds: Bounds | None, crs: str | None) -> Bounds | None:
    """``(west, south, east, north)`` in degrees of ``bounds`` given in ``crs``; None when not georeferenced, or
    when they cannot be placed in WGS84 (:func:`in_wgs84`)."""
    if bounds is None or crs is None:
        return None
    from rasterio.warp import transform_bounds

    return in_wgs84(crs, lambda: tuple(float(value) for value in transform_bounds(crs, WGS84, *bounds,
                                                                                   densify_pts=21)),
                    lambda degrees: degrees)


def geometry_wgs84(geometry: dict, crs: str) -> dict | None:
    """A GeoJSON ``geometry`` in ``crs`` reprojected to WGS84 (cut at the antimeridian), or None as
    :func:`in_wgs84` says."""
    from rasterio.warp import transform_geom

    return in_wgs84(crs, lambda: transform_geom(crs, WGS84, geometry, antimeridian_cutting=True), _vertices)


def _vertices(geometry: dict) -> Iterator[float]:
    """Every coordinate of a GeoJSON geometry (nested rings, multi-parts), flattened: x, y, x, y ..."""
    def walk(node) -> Iterator[float]:
        if isinstance(node, (int, float)):
            yield node
        else:
            for child in node:
                yield from walk(child)

    for part in geometry.get("geometries", [geometry]):
        yield from walk(part["coordinates"])


@lru_cache(maxsize=64)
def _warn_untransformable(crs: str, reason: str) -> None:
    """Once per CRS and process: a server lists the same chips in many answers."""
    warnings.warn(f"chips in CRS {' '.join(crs.split())[:120]!r} cannot be placed in WGS84 ({reason}); "
                  f"they are listed without a footprint (null geometry)", RsitrWarning, stacklevel=3)


def hit_json(hit: SearchHit) -> dict:
    """A hit as JSON: its fields (nested window, native bounds) plus ``wgs84_bounds`` for maps."""
    return {**hit.to_dict(), "wgs84_bounds": wgs84_bounds(hit.bounds, hit.crs)}


def hit_properties(hit: SearchHit, rank: int) -> dict:
    """The flat record of one hit (rank counts from 1): the columns of the CSV and the GeoJSON properties."""
    native = hit.bounds or (None,) * 4
    degrees = wgs84_bounds(hit.bounds, hit.crs) or (None,) * 4
    values = (rank, hit.chip_id, hit.path, hit.window.x, hit.window.y, hit.window.width, hit.window.height,
              hit.score, hit.global_score, hit.local_score, hit.crs, *native, *degrees, hit.stale, hit.acquired,
              hit.item_id, hit.href)
    return dict(zip(CSV_COLUMNS, values))


def _footprint(bounds: Bounds | None) -> dict | None:
    if bounds is None:
        return None
    west, south, east, north = bounds
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]  # counter-clockwise
    return {"type": "Polygon", "coordinates": [ring]}


def to_geojson(hits: Sequence[SearchHit], query: dict | None = None) -> dict:
    """A FeatureCollection of the hits in rank order; ``query`` (what was searched) is kept as a foreign member."""
    features = [{"type": "Feature", "id": hit.chip_id, "geometry": _footprint(wgs84_bounds(hit.bounds, hit.crs)),
                 "properties": hit_properties(hit, rank)} for rank, hit in enumerate(hits, 1)]
    collection = {"type": "FeatureCollection", "features": features}
    if query:
        collection["query"] = query
    return collection


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet reads as the start of a formula (OWASP's CSV injection list)."""


def _inert(value):
    """A text cell a spreadsheet shows as text: one starting like a formula gets a leading ``'`` (OWASP)."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def csv_text(columns: Sequence[str], rows: Iterable[dict]) -> str:
    """The one CSV writer of the exports: ``rows`` (their ``columns``; other keys ignored) with every text cell
    that begins like a formula neutralised (numbers are not text: a negative coordinate stays a number)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _inert(row[key]) for key in columns})
    return buffer.getvalue()


def to_csv(hits: Sequence[SearchHit]) -> str:
    """The hits as CSV rows (:func:`csv_text`)."""
    return csv_text(CSV_COLUMNS, (hit_properties(hit, rank) for rank, hit in enumerate(hits, 1)))


def results_json(hits: Sequence[SearchHit], query: dict | None = None) -> str:
    """One JSON object for a search and for "find all" alike: what was asked, the count and the hits."""
    return json.dumps({**(query or {}), "count": len(hits), "results": [hit_json(hit) for hit in hits]}, indent=2)


def export(hits: Sequence[SearchHit], fmt: str, query: dict | None = None) -> str:
    """The hits as text in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "geojson":
        return json.dumps(to_geojson(hits, query), indent=1)
    if fmt == "csv":
        return to_csv(hits)
    if fmt == "json":
        return results_json(hits, query)
    raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")


# -- "find all": adjacent chips of one scene merged into regions ----------------------------------------------------
REGION_COLUMNS = ("region", "path", "chips", "chip_ids", "max_probability", "mean_probability", "crs", "left",
                  "bottom", "right", "top", "x", "y", "width", "height", "acquired", "item_id", "href", "wkt")


def merge_regions(hits: Sequence[SearchHit]) -> list[dict]:
    """The hits' chips merged per scene into regions: chips that overlap or share an edge form one polygon
    (shapely's union), in the scene's CRS where it is georeferenced, else in pixels. Each region is a flat record
    of :data:`REGION_COLUMNS` (``wkt``: the polygon in WGS84, or in pixels for a plain image) plus ``geometry``
    (GeoJSON in WGS84, None for a plain image); a scene whose CRS cannot be placed in WGS84 (:func:`in_wgs84`) has
    neither (its native bounds stay); regions in the order of their best chip."""
    import shapely
    from shapely.geometry import box, mapping

    by_scene: dict[str, list[SearchHit]] = {}
    for hit in hits:
        by_scene.setdefault(hit.path, []).append(hit)
    regions = []
    for path, chips in by_scene.items():
        geo = all(hit.bounds is not None and hit.crs is not None for hit in chips)
        boxes = [box(*hit.bounds) if geo else box(hit.window.x, hit.window.y, hit.window.x + hit.window.width,
                                                  hit.window.y + hit.window.height) for hit in chips]
        union = shapely.union_all(boxes)
        for polygon in getattr(union, "geoms", [union]):
            members = [hit for hit, chip in zip(chips, boxes) if polygon.covers(chip)]
            probabilities = [hit.score for hit in members]
            left, bottom, right, top = polygon.bounds
            crs = chips[0].crs if geo else None
            geometry = geometry_wgs84(mapping(polygon), crs) if geo else None
            regions.append({
                "region": 0, "path": path, "chips": len(members), "chip_ids": " ".join(str(h.chip_id) for h in members),
                "max_probability": max(probabilities), "mean_probability": sum(probabilities) / len(probabilities),
                "crs": crs, **dict(zip(("left", "bottom", "right", "top"), (left, bottom, right, top) if geo else
                                       (None,) * 4)),
                **dict(zip(("x", "y", "width", "height"), (None,) * 4 if geo else
                           (int(left), int(bottom), int(right - left), int(top - bottom)))),
                "acquired": chips[0].acquired, "item_id": chips[0].item_id, "href": chips[0].href,
                "wkt": polygon.wkt if not geo else shapely.geometry.shape(geometry).wkt if geometry else None,
                "geometry": geometry})
    regions.sort(key=lambda region: -region["max_probability"])
    for number, region in enumerate(regions, 1):
        region["region"] = number
    return regions


def export_found(hits: Sequence[SearchHit], fmt: str, query: dict | None = None) -> str:
    """Everything "find all" found, as text in ``fmt``: GeoJSON or CSV of the merged regions (:func:`merge_regions`),
    JSON of the chips. The GeoJSON's foreign members ``query``, ``chips`` (found) and ``regions`` count them."""
    if fmt == "json":
        return results_json(hits, query)
    regions = merge_regions(hits)
    if fmt == "geojson":
        features = [{"type": "Feature", "id": region["region"], "geometry": region["geometry"],
                     "properties": {key: region[key] for key in REGION_COLUMNS if key != "wkt"}}
                    for region in regions]
        return json.dumps({"type": "FeatureCollection", "features": features, "query": query or {},
                           "chips": len(hits), "regions": len(regions)}, indent=1)
    if fmt == "csv":
        return csv_text(REGION_COLUMNS, regions)
    raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
