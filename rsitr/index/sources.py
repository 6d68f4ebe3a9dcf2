"""Remote archives: (Cloud-Optimized) GeoTIFFs behind URLs, listed one a line in a text file or by a STAC
catalog, collection, item or item collection (a search result pystac-client saved), read by :mod:`pystac`.

A STAC asset's ``eo:bands`` name its bands for ``--bands`` and its ``raster:bands`` give their scale, offset and
statistics (:class:`rsitr.index.archive.Rendering`). Three single-band assets of an item (``--asset red,green,blue``
or ``B04,B03,B02``) are read as one raster's red, green and blue (a GDAL VRT over their URLs,
:func:`rsitr.index.archive.open_scene`); they must share one grid.
A remote raster is read by windows through GDAL's range requests (:data:`rsitr.index.archive.REMOTE_GDAL_OPTIONS`),
never downloaded whole. Whether it changed is asked by a HEAD request: its ETag and Last-Modified make the stamp an
update compares, so an update pass re-reads only what changed. A file the server does not answer for is listed as a
failure of the run and keeps what was indexed of it; the next run retries it.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rsitr.errors import UserError
from rsitr.index.archive import (Archive, ArchiveFile, LocalArchive, PathOutsideArchiveError, RemoteFile,
                                 acquisition_time, eo_band, eo_listing, is_remote, statistics_range)

HEAD_TIMEOUT_S = 10.0
HEAD_ATTEMPTS = 3
LISTING_SUFFIXES = (".json", ".geojson", ".txt")


class ListingError(UserError):
    """A listing of remote rasters that cannot be read: not a STAC document, no such asset, a bad URL."""


@dataclass
class RemoteArchive:
    """The remote rasters of a listing (:func:`read_listing`), named in the index by URL (a text listing) or by
    ``ITEM_ID`` (STAC)."""

    location: str
    files: dict[str, RemoteFile] = field(default_factory=dict)
    keeps_failed = True

    @property
    def name(self) -> str:
        return Path(self.location).name

    def scan(self) -> list[ArchiveFile]:
        scanned = []
        for path in sorted(self.files):
            try:
                scanned.append(ArchiveFile(path, *_heads(self.files[path])[:2]))
            except OSError as err:
                scanned.append(ArchiveFile(path, 0, 0, error=f"{self.files[path].href}: {_reason(err)}"))
        return scanned

    def source(self, path: str) -> str | tuple[str, ...]:
        if path not in self.files:
            raise PathOutsideArchiveError(f"{path!r} is no raster of the listing")
        return self.files[path].location

    def digest(self, path: str) -> str:
        self.source(path)
        return _heads(self.files[path])[2]

    def stat(self, path: str) -> tuple[int, int] | None:
        try:
            self.source(path)
            return _heads(self.files[path])[:2]
        except (OSError, PathOutsideArchiveError):
            return None

    def exists(self) -> bool:
        return Path(self.location).is_file()

    def listed(self, path: str) -> RemoteFile | None:
        return self.files.get(path)

    def failure(self, path: str, err: Exception) -> str:
        """What the server says now, when a read failed because it failed (GDAL logs the HTTP status, not its
        exception), else the error."""
        try:
            self.source(path)
            _heads(self.files[path])
        except OSError as failed:
            return f"the server failed while it was read: {_reason(failed)}; the next run resumes it"
        return f"{type(err).__name__}: {err}"


def open_archive(location: str | Path, asset: str | None = None, bands: str | None = None) -> Archive:
    """The archive an index reads: a folder, or a listing file of remote rasters (``.txt``: URLs; ``.json``: STAC,
    whose ``asset`` is read; ``bands`` checked against its ``eo:bands``, :func:`read_listing`). A folder or listing
    that is gone gives an archive whose indexed files read as gone."""
    location = Path(location)
    if location.suffix.lower() in LISTING_SUFFIXES and not location.is_dir():
        return RemoteArchive(str(location), read_listing(location, asset, bands) if location.is_file() else {})
    if location.is_file():
        raise ListingError(f"{location} is neither a folder of images nor a listing of remote rasters (a .txt file "
                           f"of URLs, or a STAC catalog, collection, item or item collection .json)")
    return LocalArchive(location)


def read_listing(path: Path, asset: str | None = None, bands: str | None = None) -> dict[str, RemoteFile]:
    """The rasters a listing names, by their name in the index (see :class:`RemoteArchive`); ``bands`` (``--bands``)
    must name bands a STAC asset's ``eo:bands`` have, where it has them."""
    if path.suffix.lower() == ".txt":
        urls = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
        for url in urls:
            if not is_remote(url):
                raise ListingError(f"{path}: {url!r} is no http(s):// or s3:// URL")
        return {url: RemoteFile(url) for url in urls}
    return _stac_files(path, asset, bands)


def _stac_files(path: Path, asset: str | None, bands: str | None) -> dict[str, RemoteFile]:
    import pystac

    try:
        document = json.loads(path.read_text())
        if document.get("type") == "FeatureCollection":
            items = list(pystac.ItemCollection.from_dict(document, preserve_dict=False))
        else:
            read = pystac.read_dict(document, href=str(path.resolve()))
            items = [read] if isinstance(read, pystac.Item) else list(read.get_items(recursive=True))
    except (ValueError, KeyError, TypeError, AttributeError, pystac.STACError, pystac.STACTypeError) as err:
        raise ListingError(f"{path} is no STAC catalog, collection, item or item collection pystac reads "
                           f"({type(err).__name__}: {err})") from None
    if asset is None:
        raise ListingError(f"{path} is a STAC listing: name the asset to index, e.g. `asset='visual'`",
                           parameters=("asset",))
    keys = [key.strip() for key in asset.split(",")]
    if len(keys) not in (1, 3) or not all(keys):
        raise ListingError(f"name one asset (e.g. visual) or three single-band assets to stack as red, green, blue "
                           f"(e.g. red,green,blue or B04,B03,B02), got {asset!r}")
    files: dict[str, RemoteFile] = {}
    for item in items:
        for key in keys:
            if key not in item.assets:
                raise ListingError(f"STAC item {item.id!r} has no asset {key!r}; its assets: "
                                   f"{', '.join(sorted(item.assets)) or 'none'}")
        if item.id in files:
            raise ListingError(f"{path} lists STAC item {item.id!r} twice")
        when = item.datetime or item.common_metadata.start_datetime
        assets = [item.assets[key] for key in keys]
        hrefs = tuple(asset.get_absolute_href() for asset in assets)
        units, names, ranges = zip(*((_units(asset), _names(asset), _ranges(asset)) for asset in assets))
        if len(keys) == 1:
            listed = RemoteFile(hrefs[0], item.id, acquisition_time(when), units[0], names=names[0], ranges=ranges[0])
        else:  # each asset's first band; unscaled, unnamed, without statistics where an asset says nothing
            listed = RemoteFile(" ".join(hrefs), item.id, acquisition_time(when), _first_bands(units, (1.0, 0.0)),
                                hrefs, _first_bands(names, ()), _first_bands(ranges, None))
        if bands is not None and listed.names is not None:
            _check_bands(item.id, keys, bands, listed.names)
        files[item.id] = listed
    return files


def _first_bands(per_asset: tuple, missing) -> tuple | None:
    """Of stacked single-band assets' per-band metadata, each one's first band (``missing`` where one has none);
    None where none has any."""
    if all(value is None for value in per_asset):
        return None
    return tuple(missing if value is None else value[0] for value in per_asset)


def _check_bands(item_id: str, keys: list[str], bands: str, names: tuple[tuple[str, ...], ...]) -> None:
    """:class:`ListingError` for a ``--bands`` name (or index) the asset's ``eo:bands`` do not have."""
    for band in bands.split(","):
        if eo_band(band, names) is None:
            raise ListingError(f"`bands` {band.strip()!r}: no such band in STAC item {item_id!r}'s asset "
                               f"{','.join(keys)!r}; its eo:bands: {eo_listing(names)}", parameters=("bands",))


def _names(asset) -> tuple[tuple[str, ...], ...] | None:
    """Each band's ``name`` and ``common_name`` (where given) from the asset's STAC ``eo:bands`` (read by pystac's
    eo extension); None where it declares none."""
    from pystac.extensions.eo import EOExtension

    if "eo:bands" not in asset.extra_fields:
        return None
    bands = EOExtension.ext(asset, add_if_missing=True).bands or []
    names = tuple(tuple(name for name in (band.name, band.common_name) if name) for band in bands)
    return names if names and all(names) else None


def _ranges(asset) -> tuple[tuple[float, float] | None, ...] | None:
    """Each band's display range from the asset's STAC ``raster:bands`` statistics (:func:`statistics_range`);
    None where no band has statistics."""
    from pystac.extensions.raster import RasterExtension

    if "raster:bands" not in asset.extra_fields:
        return None
    bands = RasterExtension.ext(asset, add_if_missing=True).bands or []
    # pystac's RasterBand.statistics raises where a band has none
    stats = [band.statistics if band.properties.get("statistics") else None for band in bands]
    ranges = tuple(None if stat is None else statistics_range(stat.minimum, stat.maximum, stat.mean, stat.stddev)
                   for stat in stats)
    return None if all(value is None for value in ranges) else ranges


def new_index_scale(archive: Archive, scale: str | None) -> str:
    """The ``--scale`` a new index of ``archive`` records (canonical ``scale``, None where none was given): by
    default ``statistics`` where every raster is a STAC asset whose ``raster:bands`` statistics give each band a
    display range (the same reflectance, the same colour in every scene of a collection), else ``percentile``.
    :class:`ListingError` for ``statistics`` asked of rasters without them."""
    files = archive.files if isinstance(archive, RemoteArchive) else {}
    lacking = [path for path, listed in files.items() if listed.ranges is None or None in listed.ranges]
    if scale is None:
        return "statistics" if files and not lacking else "percentile"
    if scale == "statistics" and (lacking or not files):
        where = f"STAC item {lacking[0]!r}'s asset" if lacking else "a folder or a list of URLs"
        raise ListingError(f"`scale='statistics'` scales by STAC raster:bands statistics, and {where} gives none "
                           f"for every band (minimum and maximum, or mean and stddev); use `scale='range LOW HIGH'`",
                           parameters=("scale",))
    return scale


def _units(asset) -> tuple[tuple[float, float], ...] | None:
    """``(scale, offset)`` of each band of ``asset`` from its STAC ``raster:bands`` (read by pystac's raster
    extension); None when it declares none (then a scale range is in the stored values)."""
    from pystac.extensions.raster import RasterExtension

    if "raster:bands" not in asset.extra_fields:
        return None
    bands = RasterExtension.ext(asset, add_if_missing=True).bands  # an item may use it without declaring its schema
    if not bands or all(band.scale is None and band.offset is None for band in bands):
        return None
    units = tuple((1.0 if band.scale is None else float(band.scale), 0.0 if band.offset is None else
                   float(band.offset)) for band in bands)
    if not all(np.isfinite(unit).all() and unit[0] != 0 for unit in units):
        raise ListingError(f"{asset.get_absolute_href()}: raster:bands scale must be a finite number other than 0 "
                           f"and offset finite, got {units}")
    return units


def _heads(listed: RemoteFile) -> tuple[int, int, str]:
    """:func:`_head` of a listed raster; of a stack, the sizes summed and the stamps and digests of all its URLs."""
    heads = [_head(url) for url in listed.stack or (listed.href,)]
    if len(heads) == 1:
        return heads[0]
    digest = " ".join(head[2] for head in heads)
    return sum(head[0] for head in heads), _stamp(digest), digest


def _stamp(digest: str) -> int:
    """The number an index compares as a remote raster's mtime: it changes with ``digest``."""
    return int.from_bytes(hashlib.sha256(digest.encode()).digest()[:7], "big")


def _head(url: str) -> tuple[int, int, str]:
    """``(size, stamp, digest)`` of a remote raster from a HEAD request (retried): the stamp changes with its
    ETag or Last-Modified, the digest is them. ``s3://`` URLs are not asked: GDAL reads them with the caller's
    credentials, and a change shows in no stamp (build a new index)."""
    if url.startswith("s3://"):
        return 0, 0, f"s3:{url}"
    for attempt in range(HEAD_ATTEMPTS):
        try:
            request = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(request, timeout=HEAD_TIMEOUT_S) as answer:
                headers = answer.headers
            break
        except urllib.error.HTTPError as err:
            if err.code < 500 and err.code != 429 or attempt == HEAD_ATTEMPTS - 1:
                raise
        except OSError:
            if attempt == HEAD_ATTEMPTS - 1:
                raise
        time.sleep(0.5 * 2 ** attempt)
    etag, modified = headers.get("ETag", ""), headers.get("Last-Modified", "")
    digest = f"etag:{etag}" if etag else f"modified:{modified}:{headers.get('Content-Length', '')}"
    return int(headers.get("Content-Length") or 0), _stamp(digest), digest


def _reason(err: OSError) -> str:
    """One line for a server that failed: the HTTP status, or why no answer came."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    reason = getattr(err, "reason", err)
    return f"no answer ({reason})"
