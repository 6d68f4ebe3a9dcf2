"""The image archive on disk: finding its images, keeping paths inside it, and reading chips.

JPEG and PNG are decoded with PIL; TIFF (plain or GeoTIFF) with rasterio, which reads chip windows
without decoding the whole scene and gives each window's geographic bounds when the file is
geo-referenced. Every chip comes out as an 8-bit RGB PIL image, as a :class:`Rendering` says: the bands
chosen by index or name (a STAC asset's ``eo:bands`` names, else the file's band descriptions; by default the
bands they or the file's colour interpretation call red, green and blue, else the first three; one band is repeated
as grey), scaled from a fixed reflectance range or a STAC asset's ``raster:bands`` statistics (the same colours in
every scene) or, by default, between the 2nd and 98th percentiles of the file's valid pixels measured on a
decimated read of the whole scene (all chips of a scene share one colour scale; 8-bit bands are kept as they are).
A raster's invalid pixels (its nodata value, its mask or its alpha band, as GDAL's masks give them) are black, and
:meth:`Scene.chip` says which fraction of a window they cover.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Protocol

import numpy as np
from PIL import Image

from rsitr.errors import RsitrWarning, UserError
from rsitr.models.hub import file_sha256
from rsitr.paths import NotARegularFileError, regular_file
from rsitr.index.tiling import Window, strip_order

PIL_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
RASTERIO_SUFFIXES = frozenset({".tif", ".tiff"})
SUPPORTED_SUFFIXES = PIL_SUFFIXES | RASTERIO_SUFFIXES
_STRETCH_SAMPLE_SIDE = 512
DEFAULT_MAX_QUERY_PIXELS = 40_000_000
"""Largest query image (width x height) decoded by default: a 6,300 x 6,300 scene, 120 MB as RGB."""
DECODE_BYTES_PER_PIXEL = 4
"""The decoder's budget per allowed pixel: the widest image PIL decodes to (RGBA, 32-bit grey or float)."""
_TIFF_BITS, _TIFF_SAMPLES, _TIFF_ROWS_PER_STRIP, _TIFF_TILE_WIDTH, _TIFF_TILE_LENGTH = 258, 277, 278, 322, 323

SCENE_BLOCK_CACHE_MB = 128
"""GDAL's block cache while a scene is read, in MiB. GDAL's default, 5% of the machine's memory, fills as a large
tiled scene is read chip by chip (a sparse 44,000^2 uint16 GeoTIFF grew a process by 2.49 GiB; a 10,980^2 4-band
COG over HTTP by 1 GiB, its whole decoded self). Chips are read in rows within strips of block columns
(:meth:`Scene.read_order`) so that the blocks under a row of chips fit in it: each block is decoded, and over HTTP
fetched, once."""
_STRIP_CACHE_SHARE = 0.9
"""The share of the block cache a strip's blocks under one row of chips may fill (the rest: the percentile sample's
overview blocks, an internal mask's)."""

Bounds = tuple[float, float, float, float]
"""Geographic ``(left, bottom, right, top)`` in the scene's CRS."""


class PathOutsideArchiveError(ValueError):
    """A requested path is absolute, climbs with ``..``, holds a NUL byte or resolves (through a symlink) outside
    the archive."""


class SymlinkLoopError(PathOutsideArchiveError):
    """A requested path is a symlink that leads back to itself: it names no file of the archive."""


class ImageTooLargeError(UserError):
    """An image whose header declares more pixels than the decoding limit; refused before its pixels are decoded."""


class UnsupportedImageError(UserError, ValueError):
    """A file whose type (suffix) rsitr does not read."""


class NotAnImageError(UserError):
    """Bytes that PIL cannot decode as an image."""


class BandError(UserError):
    """A band choice that is malformed, or that names a band a raster does not have."""


RGB_NAMES = ("red", "green", "blue")


@dataclass(frozen=True)
class RemoteFile:
    """A listed remote raster: its URL and, from STAC, the item it belongs to."""

    href: str
    item_id: str | None = None
    datetime: str | None = None
    """The item's acquisition time (:func:`acquisition_time`'s form; STAC ``datetime``, or ``start_datetime`` of a
    range)."""
    units: tuple[tuple[float, float], ...] | None = None
    """Per band of the asset, ``(scale, offset)`` from STAC ``raster:bands`` (:attr:`Rendering.units`)."""
    stack: tuple[str, ...] | None = None
    """The URLs of single-band assets read as one raster's red, green and blue (``--asset red,green,blue``);
    :attr:`href` is then them, space-separated."""
    names: tuple[tuple[str, ...], ...] | None = None
    """Per band of the asset, the names its STAC ``eo:bands`` give it (``name``, ``common_name``: ``B04``,
    ``red``) (:attr:`Rendering.names`); None where it has none."""
    ranges: tuple[tuple[float, float] | None, ...] | None = None
    """Per band of the asset, the display range its STAC ``raster:bands`` statistics give, in stored values
    (:func:`statistics_range`; None for a band without them); None where no band has any."""

    @property
    def location(self) -> str | tuple[str, ...]:
        """What :class:`open_scene` opens: the URL, or the stack of URLs."""
        return self.stack or self.href


@dataclass(frozen=True)
class Rendering:
    """How a raster's bands become a chip's 8-bit RGB (JPEG and PNG are RGB already and are read as they are)."""

    bands: tuple[str, ...] | None = None
    """One or three bands, each a 1-based index or a band's description or colour interpretation (``B04``,
    ``red``); None: the bands named red, green and blue by the file, else the first three."""
    scale: tuple[float, float] | None = None
    """``(low, high)`` mapped to 0 and 255 in every file (e.g. ``(0, 3000)`` for L2A reflectance); None: each
    file's own 2nd-98th percentiles (8-bit bands are not stretched). In the file's physical units where
    :attr:`units` says what they are."""
    by_statistics: bool = False
    """Each band scaled by its STAC ``raster:bands`` statistics (:attr:`ranges`), the same in every scene of a
    collection (``--scale statistics``); :attr:`scale` is then None."""
    units: tuple[tuple[float, float], ...] | None = None
    """Per band of one file, ``(scale, offset)`` turning its stored values into physical ones (``value * scale +
    offset``: a STAC asset's ``raster:bands``); None: the stored values are the units of :attr:`scale`."""
    names: tuple[tuple[str, ...], ...] | None = None
    """Per band of one file, its STAC ``eo:bands`` names (:attr:`RemoteFile.names`): :attr:`bands` names them in
    place of the file's band descriptions."""
    ranges: tuple[tuple[float, float] | None, ...] | None = None
    """Per band of one file, its display range from STAC statistics (:attr:`RemoteFile.ranges`)."""

    def for_file(self, listed: RemoteFile | None) -> Rendering:
        """This rendering for the file a listing describes (its bands' units, names and statistics), or as it is
        for any other file."""
        if listed is None:
            return self
        return replace(self, units=listed.units, names=listed.names, ranges=listed.ranges)

    def __post_init__(self) -> None:
        if self.bands is not None:
            if len(self.bands) not in (1, 3) or not all(band.strip() for band in self.bands):
                raise BandError(f"choose 1 band (shown as grey) or 3 bands (red, green, blue), got "
                                f"{','.join(self.bands)!r}")
            if any(band.strip().isdigit() and int(band) < 1 for band in self.bands):
                raise BandError(f"band indexes start at 1, got {','.join(self.bands)!r}")
        if self.scale is not None and not (np.isfinite(self.scale).all() and self.scale[0] < self.scale[1]):
            raise UserError(f"a scale range needs finite LOW < HIGH, got {self.scale[0]:g} {self.scale[1]:g}")
        if self.scale is not None and self.by_statistics:
            raise UserError("scale by a range or by STAC statistics, not both")

    @classmethod
    def parse(cls, bands: str | None, scale: str) -> Rendering:
        """From their written forms: ``bands`` as ``"B04,B03,B02"`` / ``"4,3,2"`` (None: from the file) and
        ``scale`` as ``"percentile"``, ``"statistics"`` or ``"range LOW HIGH"``."""
        words = scale.split()
        scale_range = None
        if len(words) == 3 and words[0] == "range":
            try:
                scale_range = (float(words[1]), float(words[2]))
            except ValueError:
                raise UserError(f"a scale range needs two numbers, got {scale!r}") from None
        elif words not in (["percentile"], ["statistics"]):
            raise UserError(f"scale is 'percentile', 'statistics' or 'range LOW HIGH', got {scale!r}")
        return cls(None if bands is None else tuple(band.strip() for band in bands.split(",")), scale_range,
                   words == ["statistics"])

    @property
    def written_scale(self) -> str:
        """:attr:`scale` in the canonical form :meth:`parse` reads (``range 0 3000`` for ``range 0.0 3000``)."""
        if self.scale is not None:
            return "range {:g} {:g}".format(*self.scale)
        return "statistics" if self.by_statistics else "percentile"

    def band_indexes(self, dataset) -> list[int]:
        """The 1-based indexes of a rasterio dataset's bands to show as red, green and blue: by the asset's
        ``eo:bands`` names where a listing gives them for every band, else by the file's own descriptions."""
        count, descriptions = dataset.count, [text or "" for text in dataset.descriptions]
        interpretations = [interpretation.name.lower() for interpretation in dataset.colorinterp]
        eo_names = self.names if self.names is not None and len(self.names) == count else None
        if eo_names is not None and self.bands is not None:
            return self._named_indexes(eo_names)
        if eo_names is not None and None not in (found := [eo_band(colour, eo_names) for colour in RGB_NAMES]):
            return found
        if self.bands is None:
            for names in (interpretations, [_named_colour(text) for text in descriptions]):
                if all(colour in names for colour in RGB_NAMES):
                    return [names.index(colour) + 1 for colour in RGB_NAMES]
            return [1, 2, 3] if count >= 3 else [1, 1, 1]
        indexes = [_find_band(band.strip().lower(), count, descriptions, interpretations) for band in self.bands]
        if None in indexes:
            listing = ", ".join(f"{number} {descriptions[number - 1] or interpretations[number - 1]!r}"
                                for number in range(1, count + 1))
            missing = self.bands[indexes.index(None)]
            raise BandError(f"no band {missing!r} among its {count} band(s): {listing}")
        return indexes * 3 if len(indexes) == 1 else indexes

    def _named_indexes(self, names: tuple[tuple[str, ...], ...]) -> list[int]:
        """:attr:`bands` by ``eo:bands`` names (or 1-based indexes); :class:`BandError` lists the names for one not
        among them."""
        indexes = [eo_band(band, names) for band in self.bands]
        if None in indexes:
            raise BandError(f"no band {self.bands[indexes.index(None)]!r} among the asset's eo:bands: "
                            f"{eo_listing(names)}")
        return indexes * 3 if len(indexes) == 1 else indexes


def eo_band(key: str, names: tuple[tuple[str, ...], ...]) -> int | None:
    """The 1-based index of the band ``key`` names among an asset's ``eo:bands`` (a ``name`` or ``common_name``,
    any case, or an index); None if no band (or several) fit."""
    key = key.strip().lower()
    if key.isdigit():
        return int(key) if 1 <= int(key) <= len(names) else None
    matches = [key in (name.lower() for name in band) for band in names]
    return matches.index(True) + 1 if sum(matches) == 1 else None


def eo_listing(names: tuple[tuple[str, ...], ...]) -> str:
    """An asset's ``eo:bands`` as an error line lists them: ``1 B02 (blue), 2 B03 (green)``."""
    return ", ".join(f"{number} {band[0] if band else '(unnamed)'}" + (f" ({band[1]})" if band[1:] else "")
                     for number, band in enumerate(names, start=1)) or "none"


def statistics_range(minimum: float | None, maximum: float | None, mean: float | None,
                     stddev: float | None) -> tuple[float, float] | None:
    """A band's display range from its STAC ``raster:bands`` statistics (stored values, as GDAL computes them):
    mean +- 2 standard deviations, kept within minimum..maximum where given; minimum..maximum where mean or stddev
    is missing; None where neither gives a range. A scene's extremes are clouds, saturated and dark pixels, so
    minimum..maximum would leave the land a few grey levels; mean +- 2 stddev is close to the 2nd-98th percentile
    stretch a single file gets, but the same for every scene the statistics are shared by."""
    if mean is not None and stddev is not None and stddev > 0:
        low = mean - 2 * stddev if minimum is None else max(mean - 2 * stddev, minimum)
        high = mean + 2 * stddev if maximum is None else min(mean + 2 * stddev, maximum)
    elif minimum is not None and maximum is not None:
        low, high = minimum, maximum
    else:
        return None
    return (float(low), float(high)) if np.isfinite((low, high)).all() and low < high else None


def _words(description: str) -> list[str]:
    """A band description's words, lower case (``"B04 (red)"``: ``b04``, ``red``)."""
    return description.lower().replace("(", " ").replace(")", " ").replace("_", " ").replace("-", " ").split()


def _named_colour(description: str) -> str | None:
    """The colour a band description names as a word (``"Red"``, ``"B04 red"``, ``"red (665 nm)"``), if any."""
    named = [colour for colour in RGB_NAMES if colour in _words(description)]
    return named[0] if len(named) == 1 else None


def _find_band(key: str, count: int, descriptions: list[str], interpretations: list[str]) -> int | None:
    """The 1-based index of the band ``key`` (lower case) names: an index, a whole description, the one
    description holding it as a word, or a colour interpretation; None if no band (or several) fit."""
    if key.isdigit():
        return int(key) if int(key) <= count else None
    for matches in ([text.lower() == key for text in descriptions], [key in _words(text) for text in descriptions],
                    [name == key for name in interpretations]):
        if sum(matches) == 1:
            return matches.index(True) + 1
    return None


def check_pixels(name: str, width: int, height: int, max_pixels: int | None) -> None:
    """Raise :class:`ImageTooLargeError` when ``width x height`` exceeds ``max_pixels`` (None: no limit)."""
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(f"{name} is {width} x {height} = {width * height:,} pixels, over the limit of "
                                 f"{max_pixels:,} pixels (`max_pixels`)", parameters=("max_pixels",))


def decode_budget(max_pixels: int | None) -> int:
    """Bytes a decoder may allocate for one image, tile or strip: ``max_pixels`` (default
    :data:`DEFAULT_MAX_QUERY_PIXELS`) at :data:`DECODE_BYTES_PER_PIXEL`."""
    return (max_pixels or DEFAULT_MAX_QUERY_PIXELS) * DECODE_BYTES_PER_PIXEL


def check_block(name: str, kind: str, width: int, height: int, samples: int, bits: int, max_pixels: int | None) -> None:
    """Raise :class:`ImageTooLargeError` when one ``kind`` (tile, strip, block) as the header declares it, with
    ``samples`` bands of ``bits`` bits, needs more than :func:`decode_budget` bytes: decoders allocate a whole
    one at once, whatever the image's own size (a 100-byte TIFF can declare a 32,768 x 32,768 tile)."""
    size = width * height * samples * -(-bits // 8)
    if size > decode_budget(max_pixels):
        # Only a caller that passes max_pixels takes it from its user (search, serve); the indexer's max_pixels
        # limits whole scenes, which it reads a window at a time, so its blocks get the default.
        source = "`max_pixels`" if max_pixels is not None else f"{DEFAULT_MAX_QUERY_PIXELS:,} pixels"
        raise ImageTooLargeError(f"{name} declares a {width} x {height} {kind} of {samples} band(s) at {bits} bits "
                                 f"({size:,} bytes to decode at once), over the decoding limit of "
                                 f"{decode_budget(max_pixels):,} bytes ({source} x {DECODE_BYTES_PER_PIXEL}); "
                                 f"re-tile it, e.g. `gdal_translate -co TILED=YES`",
                                 parameters=("max_pixels",) if max_pixels is not None else ())


def _check_pil_decoder(name: str, image: Image.Image, max_pixels: int | None) -> None:
    """The pixel limit, and for TIFF the declared tile or strip (bands and bit depth included), before decoding."""
    check_pixels(name, *image.size, max_pixels)
    tags = getattr(image, "tag_v2", None)
    if tags is None:
        return
    bits = max(tags.get(_TIFF_BITS, (1,)) or (1,))
    samples = int(tags.get(_TIFF_SAMPLES, 1))
    width, height = image.size
    if _TIFF_TILE_WIDTH in tags or _TIFF_TILE_LENGTH in tags:
        check_block(name, "tile", int(tags.get(_TIFF_TILE_WIDTH, 0)), int(tags.get(_TIFF_TILE_LENGTH, 0)),
                    samples, bits, max_pixels)
    else:
        rows = min(int(tags.get(_TIFF_ROWS_PER_STRIP, height)), height)
        check_block(name, "strip", width, rows, samples, bits, max_pixels)


def decode_image(data: bytes, name: str, max_pixels: int | None) -> Image.Image:
    """Decode uploaded bytes to RGB, checking from the header, before any pixel is decoded, the pixel count and
    (TIFF) the tile or strip the decoder would allocate (:func:`check_block`).

    Raises :class:`ImageTooLargeError` (also for PIL's decompression-bomb refusal) or :class:`NotAnImageError`.
    """
    try:
        with _open_pil(io.BytesIO(data), name) as image:
            _check_pil_decoder(name, image, max_pixels)
            image.load()
            return image.convert("RGB")
    except ImageTooLargeError:
        raise
    except (OSError, ValueError, SyntaxError):  # PIL's UnidentifiedImageError is an OSError
        raise NotAnImageError(f"{name} is not an image PIL can read") from None


def _open_pil(source, name: str) -> Image.Image:
    """``Image.open`` (header only), with PIL's own decompression-bomb refusal as :class:`ImageTooLargeError`."""
    try:
        with warnings.catch_warnings():  # rsitr's own limit (check_pixels) decides, not PIL's warning threshold
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(source)
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(f"{name}: {err}") from None


@dataclass(frozen=True)
class ArchiveFile:
    """An image of the archive: ``path`` relative to the root (POSIX separators), size and mtime (for a remote
    file: a stamp of its ETag and Last-Modified, which change with its content)."""

    path: str
    size: int
    mtime_ns: int
    error: str | None = None
    """Why a listed remote file could not be reached now (its indexed chips are kept; the next run retries)."""




def acquisition_time(value: str | datetime | None) -> str | None:
    """An acquisition time in the one form the index stores and compares: ISO 8601 in UTC to the second
    (``2024-05-01T10:00:00+00:00``). Read from a ``datetime``, an ISO string (a date alone is its midnight) or a TIFF
    ``DATETIME`` tag (``2024:05:01 10:00:00``); a time without a zone is UTC. None for None or an unreadable text
    (a TIFF tag is free text)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        text = value.strip()
        if re.fullmatch(r"\d{4}:\d{2}:\d{2}[ T]\d{2}:\d{2}:\d{2}", text):  # the TIFF tag's own form
            text = text[:10].replace(":", "-") + "T" + text[11:]
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat(timespec="seconds")


def is_remote(location: str | Path | tuple[str, ...]) -> bool:
    """Whether ``location`` is a URL GDAL reads by range requests (``http(s)://``, ``s3://``), or a stack of them
    (:attr:`RemoteFile.stack`), rather than a file."""
    return isinstance(location, tuple) or isinstance(location, str) and location.startswith(REMOTE_SCHEMES)


class StackError(UserError):
    """Single-band assets to stack as one raster whose grids (size, transform, CRS) differ, or that are not one
    band each."""


def _gdal_path(url: str) -> str:
    """GDAL's name of a remote raster (``/vsicurl/`` for http(s), ``/vsis3/`` for s3)."""
    return "/vsis3/" + url[len("s3://"):] if url.startswith("s3://") else "/vsicurl/" + url


def _stacked(urls: tuple[str, ...]) -> str:
    """A GDAL VRT document reading the first band of each of ``urls`` as the red, green and blue of one raster
    (windows read through to the assets' own tiles); :class:`StackError` when their grids differ."""
    import rasterio
    from xml.sax.saxutils import escape, quoteattr

    grids = []
    for url in urls:
        with rasterio.open(url) as dataset:
            grids.append((dataset.width, dataset.height, tuple(dataset.transform)[:6], dataset.crs, dataset.count,
                          dataset.dtypes[0], dataset.nodata, dataset.block_shapes[0]))
    names = [url.rsplit("/", 1)[-1] for url in urls]
    if any(grid[:4] != grids[0][:4] for grid in grids):
        shapes = "; ".join(f"{name} {grid[0]} x {grid[1]} at {grid[2]}" for name, grid in zip(names, grids))
        raise StackError(f"the assets to stack are not on one grid (size, transform and CRS must match): {shapes}")
    if any(grid[4] != 1 for grid in grids):
        raise StackError(f"assets to stack have one band each; band counts: "
                         f"{', '.join(f'{name} {grid[4]}' for name, grid in zip(names, grids))}")
    width, height, transform, crs = grids[0][:4]
    geo = (transform[2], transform[0], transform[1], transform[5], transform[3], transform[4])  # GDAL's order
    bands = []
    for number, (url, grid, colour) in enumerate(zip(urls, grids, ("Red", "Green", "Blue")), start=1):
        dtype, nodata, (block_rows, block_columns) = grid[5:]
        gdal_type = {"uint8": "Byte", "int8": "Int8"}.get(dtype, dtype.capitalize().replace("Uint", "UInt"))
        bands.append(f'<VRTRasterBand dataType="{gdal_type}" band="{number}" blockXSize="{block_columns}" '
                     f'blockYSize="{block_rows}"><ColorInterp>{colour}</ColorInterp>'
                     + ("" if nodata is None else f"<NoDataValue>{nodata!r}</NoDataValue>")
                     + f'<SimpleSource><SourceFilename relativeToVRT="0">{escape(_gdal_path(url))}</SourceFilename>'
                     f"<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand>")
    srs = "" if crs is None else f"<SRS>{escape(crs.to_wkt())}</SRS>"
    return (f'<VRTDataset rasterXSize={quoteattr(str(width))} rasterYSize={quoteattr(str(height))}>{srs}'
            f"<GeoTransform>{', '.join(repr(value) for value in geo)}</GeoTransform>{''.join(bands)}</VRTDataset>")


REMOTE_SCHEMES = ("http://", "https://", "s3://")
REMOTE_GDAL_OPTIONS = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no listing of the URL's "folder" looking for side files
    "GDAL_HTTP_MAX_RETRY": "3", "GDAL_HTTP_RETRY_DELAY": "0.5",  # 429 and 5xx answers are retried
    "GDAL_HTTP_TIMEOUT": "30", "GDAL_HTTP_CONNECTTIMEOUT": "10",
    "CPL_VSIL_CURL_CHUNK_SIZE": "65536",
    # GDAL keeps what it read of a URL for the process's life: a file changed on its server (a new ETag) would be
    # read from that cache. Not kept, every opening reads the file's present version; an open dataset's tiles
    # still come once from GDAL's block cache, however many chips share them.
    "CPL_VSIL_CURL_NON_CACHED": "/vsicurl/:/vsis3/",
}
"""How rasterio (GDAL's /vsicurl/ and /vsis3/) reads a remote raster: by windows through range requests, never the
whole file; a failing server is retried, then the read raises (one failure of the run)."""


class Archive(Protocol):
    """Where an index's images come from: a folder (:class:`LocalArchive`) or a list of remote rasters
    (:class:`rsitr.index.sources.RemoteArchive`). ``path`` is a file's name in the index."""

    location: str
    """What the index records: the folder, or the listing file (URLs or a STAC catalog / item collection)."""
    name: str
    keeps_failed: bool
    """A file that fails while it is read keeps what was indexed of it (a remote server's failure: the next run
    resumes it); in a folder an unreadable file is dropped."""

    def scan(self) -> list[ArchiveFile]: ...

    def source(self, path: str) -> Path | str | tuple[str, ...]:
        """What :class:`open_scene` opens for ``path``; :class:`PathOutsideArchiveError` for no file of it."""
        ...

    def digest(self, path: str) -> str:
        """An identity of the content of ``path`` (its SHA-256, or a remote file's ETag / Last-Modified)."""
        ...

    def stat(self, path: str) -> tuple[int, int] | None:
        """``(size, mtime_ns)`` of ``path`` now, as :meth:`scan` gives them; None when it is gone."""
        ...

    def exists(self) -> bool: ...

    def failure(self, path: str, err: Exception) -> str:
        """One line saying why reading ``path`` raised ``err``."""
        ...

    def listed(self, path: str) -> RemoteFile | None:
        """What the listing says of the remote raster ``path`` (URL, STAC item id and time); None for a file of a
        folder (whose path on the server is never shown)."""
        ...


@dataclass(frozen=True)
class LocalArchive:
    """A folder of images, searched recursively (:func:`scan_archive`)."""

    root: Path
    keeps_failed = False

    @property
    def location(self) -> str:
        return str(self.root)

    @property
    def name(self) -> str:
        return self.root.name

    def scan(self) -> list[ArchiveFile]:
        return scan_archive(self.root)

    def source(self, path: str) -> Path:
        return resolve_in_root(self.root, path)

    def digest(self, path: str) -> str:
        return file_sha256(self.source(path))

    def stat(self, path: str) -> tuple[int, int] | None:
        try:
            stat = self.source(path).stat()
        except (OSError, ValueError):
            return None
        return stat.st_size, stat.st_mtime_ns

    def exists(self) -> bool:
        return self.root.is_dir()

    def failure(self, path: str, err: Exception) -> str:
        return f"{type(err).__name__}: {err}"

    def listed(self, path: str) -> RemoteFile | None:
        return None


def as_archive(archive: Archive | Path | str) -> Archive:
    """``archive``, or the folder it names as a :class:`LocalArchive`."""
    return LocalArchive(Path(archive)) if isinstance(archive, (str, Path)) else archive


def resolve_in_root(root: Path, relative: str) -> Path:
    """The real path of ``relative`` under ``root``; raises :class:`PathOutsideArchiveError` if it would escape."""
    if not relative or "\0" in relative:
        raise PathOutsideArchiveError(f"{relative!r} is not a relative path inside the archive")
    parts = PurePosixPath(relative.replace("\\", "/")).parts
    if relative.startswith(("/", "\\")) or Path(relative).is_absolute() or ".." in parts:
        raise PathOutsideArchiveError(f"{relative!r} is not a relative path inside the archive")
    real_root = root.resolve()
    try:
        resolved = (real_root / relative).resolve()
    except (RuntimeError, OSError):  # a symlink loop (RuntimeError before Python 3.13)
        raise SymlinkLoopError(f"{relative!r} is a symlink loop, no file of the archive") from None
    if not resolved.is_relative_to(real_root):
        # The root is not named: this message may reach a web client.
        raise PathOutsideArchiveError(f"{relative!r} resolves outside the archive")
    return resolved


def scan_archive(root: Path) -> list[ArchiveFile]:
    """Supported images under ``root`` (recursively), sorted by path; symlinks leading outside are skipped, and
    symlink loops and what is no regular file (a FIFO would block the reader forever) are skipped with a warning."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"image folder {root} does not exist or is not a directory")
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            full = Path(folder, name)
            if full.suffix.lower() not in SUPPORTED_SUFFIXES:
                continue
            relative = full.relative_to(root).as_posix()
            try:
                stat = regular_file(resolve_in_root(root, relative))
            except SymlinkLoopError:
                warnings.warn(f"skipped {relative}: a symlink loop", RsitrWarning, stacklevel=2)
                continue
            except NotARegularFileError:
                warnings.warn(f"skipped {relative}: not a regular file (a FIFO, socket or device)", RsitrWarning,
                              stacklevel=2)
                continue
            except FileNotFoundError:
                if full.is_symlink():
                    warnings.warn(f"skipped {relative}: a broken symlink (its target is gone)", RsitrWarning,
                                  stacklevel=2)
                continue
            except (PathOutsideArchiveError, OSError):
                continue
            found.append(ArchiveFile(relative, stat.st_size, stat.st_mtime_ns))
    return sorted(found, key=lambda f: f.path)


class Scene(Protocol):
    """An opened image: its size, CRS (None when not geo-referenced), acquisition time (a TIFF's ``DATETIME``
    tag, :func:`acquisition_time`'s form; None without one) and chip reads."""

    width: int
    height: int
    crs: str | None
    acquired: str | None

    def read(self, window: Window, max_side: int | None = None) -> Image.Image:
        """The window's pixels as RGB, downscaled (keeping aspect) so neither side exceeds ``max_side``."""
        ...

    def chip(self, window: Window) -> tuple[Image.Image, float]:
        """The window's pixels as RGB and the fraction of them that is nodata (0 where the file has none)."""
        ...

    def bounds(self, window: Window) -> Bounds | None: ...

    def read_order(self, windows: list[Window]) -> list[Window]:
        """``windows`` in the order that reads each of the scene's blocks once with a bounded cache."""
        ...


class _PILScene:
    def __init__(self, path: Path, max_pixels: int | None = None) -> None:
        with _open_pil(path, path.name) as image:
            _check_pil_decoder(path.name, image, max_pixels)
            image.load()  # decode now so that truncated or corrupt files fail here, not chip by chip
            # kept in its own mode, each chip converted as it is read: one copy of the scene in memory, not two
            # (a 13,000^2 RGBA PNG is 0.68 GB decoded; as RGB beside it another 0.51 GB)
            self._image = image
        self.width, self.height = self._image.size
        self.crs = self.acquired = None

    def read(self, window: Window, max_side: int | None = None) -> Image.Image:
        chip = self._image.crop((window.x, window.y, window.x + window.width, window.y + window.height))
        chip = chip if chip.mode == "RGB" else chip.convert("RGB")
        if max_side is not None:
            chip.thumbnail((max_side, max_side))
        return chip

    def chip(self, window: Window) -> tuple[Image.Image, float]:
        return self.read(window), 0.0

    def bounds(self, window: Window) -> Bounds | None:
        return None

    def read_order(self, windows: list[Window]) -> list[Window]:
        return windows  # decoded whole


def _statistics_stretch(ranges: tuple[tuple[float, float] | None, ...] | None,
                        bands: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(low, span)`` of each band shown from its STAC statistics' display range (:func:`statistics_range`);
    :class:`BandError` for a band whose asset gives none."""
    chosen = [ranges[band - 1] if ranges and band <= len(ranges) else None for band in bands]
    if None in chosen:
        raise BandError(f"band {bands[chosen.index(None)]} has no raster:bands statistics (minimum and maximum, or "
                        f"mean and stddev) in its STAC asset, and the index scales by them (`scale='statistics'`)",
                        parameters=("scale",))
    return (np.array([low for low, _ in chosen]).reshape(3, 1, 1),
            np.array([high - low for low, high in chosen]).reshape(3, 1, 1))


class _RasterioScene:
    def __init__(self, dataset, rendering: Rendering) -> None:
        self._dataset = dataset
        self.width, self.height = dataset.width, dataset.height
        self.crs = dataset.crs.to_string() if dataset.crs else None
        self.acquired = acquisition_time(dataset.tags().get("TIFFTAG_DATETIME"))
        self._bands = rendering.band_indexes(dataset)
        if rendering.by_statistics:
            self._stretch = _statistics_stretch(rendering.ranges, self._bands)
        elif rendering.scale is not None:
            low, high = rendering.scale
            # the physical range in each band's stored values: (physical - offset) / scale
            units = [rendering.units[band - 1] if rendering.units and band <= len(rendering.units) else (1.0, 0.0)
                     for band in self._bands]
            self._stretch = (np.array([(low - offset) / scale for scale, offset in units]).reshape(3, 1, 1),
                             np.array([(high - low) / scale for scale, _ in units]).reshape(3, 1, 1))
        else:
            uint8 = all(dataset.dtypes[band - 1] == "uint8" for band in self._bands)
            self._stretch = None if uint8 else self._percentile_stretch()

    def _percentile_stretch(self) -> tuple[np.ndarray, np.ndarray]:
        """The 2nd and 98th percentiles of each band's valid pixels (a nodata border would pull them to 0)."""
        scale = max(1.0, max(self.width, self.height) / _STRETCH_SAMPLE_SIDE)
        shape = (3, max(1, round(self.height / scale)), max(1, round(self.width / scale)))
        sample = self._dataset.read(self._bands, out_shape=shape, masked=True).reshape(3, -1)
        valid = ~np.ma.getmaskarray(sample).all(axis=0)
        if not valid.any():
            return np.zeros((3, 1, 1)), np.ones((3, 1, 1))
        low, high = np.percentile(sample.data[:, valid].astype(np.float64), [2, 98], axis=1)
        return low[:, None, None], np.maximum(high - low, 1e-12)[:, None, None]

    def _pixels(self, window: Window, max_side: int | None) -> tuple[Image.Image, float]:
        """One masked read of the window: its RGB (nodata black) and the fraction of nodata pixels (masked in
        every band read)."""
        from rasterio.windows import Window as RasterWindow

        scale = 1.0 if max_side is None else max(1.0, max(window.width, window.height) / max_side)
        shape = (3, max(1, round(window.height / scale)), max(1, round(window.width / scale)))
        read = self._dataset.read(self._bands, window=RasterWindow(window.x, window.y, window.width, window.height),
                                  out_shape=shape, masked=True)
        invalid = np.ma.getmaskarray(read).all(axis=0)
        pixels = read.data
        if self._stretch is not None:
            low, span = self._stretch
            pixels = np.clip((pixels - low) / span * 255.0, 0, 255)
        pixels = pixels.astype(np.uint8)
        pixels[:, invalid] = 0
        image = Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)), "RGB")
        return image, float(invalid.mean())

    def read(self, window: Window, max_side: int | None = None) -> Image.Image:
        return self._pixels(window, max_side)[0]

    def chip(self, window: Window) -> tuple[Image.Image, float]:
        return self._pixels(window, None)

    def bounds(self, window: Window) -> Bounds | None:
        if self.crs is None:
            return None
        # Corners through the affine transform (north-up or not, min/max give the bounding box).
        transform = self._dataset.transform
        xs, ys = zip(*(transform @ (col, row) for col in (window.x, window.x + window.width)
                       for row in (window.y, window.y + window.height)))
        return float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys))

    def read_order(self, windows: list[Window]) -> list[Window]:
        """Row by row within strips of as many block columns as fit :data:`SCENE_BLOCK_CACHE_MB` under one row of
        chips; a scene narrow enough is one strip, its windows row-major as they come.

        A block's cost counts every band (GDAL decodes a pixel-interleaved tile for all bands at once); a strip's
        chips reach one block column into the next strip, whose blocks are counted too (and read again there)."""
        if not windows:
            return windows
        block_rows, block_columns = self._dataset.block_shapes[0]
        pixel_bytes = sum(np.dtype(dtype).itemsize for dtype in self._dataset.dtypes)
        chip_height = max(window.height for window in windows)
        rows_under_chips = -(-(chip_height - 1) // block_rows) + 1  # block rows a row of chips can straddle
        column_bytes = rows_under_chips * block_rows * block_columns * pixel_bytes
        columns = int(_STRIP_CACHE_SHARE * SCENE_BLOCK_CACHE_MB * 2**20 // column_bytes)
        if columns * block_columns >= self.width:
            return windows
        return strip_order(windows, max(1, columns - 1) * block_columns)


def scene_size(path: Path | str | tuple[str, ...]) -> tuple[int, int]:
    """``(width, height)`` of a supported image (a file or a remote raster) from its header, decoding no pixels."""
    if not is_remote(path):
        path = Path(path)
        regular_file(path)
        if path.suffix.lower() in PIL_SUFFIXES:
            with _open_pil(path, path.name) as image:
                return image.size
        if path.suffix.lower() not in RASTERIO_SUFFIXES:
            raise UnsupportedImageError(f"{path}: unsupported image type {path.suffix.lower()!r}")
    with ExitStack() as stack:
        dataset = open_raster(path, stack)
        return dataset.width, dataset.height


def open_raster(location: Path | str | tuple[str, ...], stack: ExitStack):
    """A rasterio dataset of a file or remote raster, open until ``stack`` closes, with GDAL's block cache capped at
    :data:`SCENE_BLOCK_CACHE_MB` (memory per scene bounded) and, for a remote one, :data:`REMOTE_GDAL_OPTIONS`.

    The cap is given in bytes: rasterio hands an integer ``GDAL_CACHEMAX`` to ``GDALSetCacheMax64``, which takes
    bytes (256 was a 256-byte cache: every chip decoded, and over HTTP fetched, its tiles again)."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    stack.enter_context(rasterio.Env(GDAL_CACHEMAX=SCENE_BLOCK_CACHE_MB * 2**20,
                                     **(REMOTE_GDAL_OPTIONS if is_remote(location) else {})))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return stack.enter_context(rasterio.open(_stacked(location) if isinstance(location, tuple) else location))


def check_image(path: Path, max_pixels: int | None = DEFAULT_MAX_QUERY_PIXELS) -> None:
    """Refuse a query image rsitr cannot read, or one over ``max_pixels``, from its header (nothing decoded): the
    check a command makes before its model loads."""
    try:
        with open_scene(Path(path), max_pixels):
            pass
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - decoders raise many types
        raise NotAnImageError(f"{path} is not an image rsitr can read ({type(err).__name__})") from None


class open_scene:  # noqa: N801 - used as a context manager like open()
    """``with open_scene(path) as scene:`` reads a supported image (a file, or a remote raster by its URL) as
    ``rendering`` says (rasters); raises on unreadable files (:class:`BandError` where a chosen band is missing),
    and :class:`ImageTooLargeError` before decoding when the header declares more than ``max_pixels``."""

    def __init__(self, path: Path | str | tuple[str, ...], max_pixels: int | None = None,
                 rendering: Rendering = Rendering()) -> None:
        self._path = path if is_remote(path) else Path(path)
        self._max_pixels = max_pixels
        self._rendering = rendering
        self._stack = ExitStack()

    def __enter__(self) -> Scene:
        if not is_remote(self._path):
            regular_file(self._path)  # a FIFO would block the decoder forever
            suffix = self._path.suffix.lower()
            if suffix in PIL_SUFFIXES:
                return _PILScene(self._path, self._max_pixels)
            if suffix not in RASTERIO_SUFFIXES:
                raise UnsupportedImageError(f"{self._path}: unsupported image type {suffix!r}; supported: "
                                 f"{', '.join(sorted(SUPPORTED_SUFFIXES))}")
        try:
            dataset = open_raster(self._path, self._stack)
            self._check_decoder(dataset)
            return _RasterioScene(dataset, self._rendering)
        except BaseException:
            self._stack.close()
            raise

    def _check_decoder(self, dataset) -> None:
        """The pixel limit, and GDAL's blocks before a pixel is read: one holds every band of a pixel-interleaved
        file; of a band-interleaved one, the (up to) three bands read are decoded side by side."""
        from rasterio.enums import Interleaving

        urls = (self._path,) if isinstance(self._path, str) else self._path
        name = " + ".join(url.rsplit("/", 1)[-1] for url in urls) if is_remote(self._path) else self._path.name
        check_pixels(name, dataset.width, dataset.height, self._max_pixels)
        rows, columns = dataset.block_shapes[0]
        bands = min(dataset.count, 3) if dataset.interleaving == Interleaving.band else dataset.count
        bits = max(np.dtype(dtype).itemsize for dtype in dataset.dtypes) * 8
        check_block(name, "block", columns, rows, bands, bits, self._max_pixels)

    def __exit__(self, *exc_info) -> None:
        self._stack.close()
