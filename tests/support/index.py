"""Archive builders shared by the index, API and browser tests (no tests here).

Images are random noise from fixed seeds, so every chip differs and the tiny random model still
tells them apart; the GeoTIFF has a hand-checkable affine transform.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image

from rsitr.inference.encoder import Encoder
from rsitr.models import TINY_MODEL

GEO_ORIGIN = (500_000.0, 4_000_000.0)
"""Top-left corner (easting, northing) of the test GeoTIFF, in EPSG:32633 metres."""
GEO_PIXEL = 10.0
GEO_CRS = "EPSG:32633"
CHIP_SETTINGS = {"chip_size": 128, "chip_overlap": 32, "tile_larger_than": 256}
"""Small chips so that a 300 x 200 scene is tiled (3 x 2 chips) and the 64 x 48 images are one chip each."""


def noise(seed: int, width: int, height: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def write_geotiff(path: Path, seed: int = 99, width: int = 300, height: int = 200,
                  origin: tuple[float, float] = GEO_ORIGIN, pixel: float = GEO_PIXEL) -> None:
    import rasterio
    from affine import Affine

    pixels = np.asarray(noise(seed, width, height)).transpose(2, 0, 1)
    transform = Affine(pixel, 0, origin[0], 0, -pixel, origin[1])
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=3, dtype="uint8",
                       crs=GEO_CRS, transform=transform) as dataset:
        dataset.write(pixels)


def make_archive(root: Path, geotiff: bool = True) -> Path:
    """Four small PNG/JPEG scenes (one in a subfolder), optionally the GeoTIFF, and one unreadable file."""
    (root / "sub").mkdir(parents=True, exist_ok=True)
    for seed in range(3):
        noise(seed, 64, 48).save(root / f"scene{seed}.png")
    noise(3, 64, 48).save(root / "sub" / "scene3.png")
    if geotiff:
        write_geotiff(root / "geo.tif")
    (root / "broken.jpg").write_bytes(b"this is not a JPEG")
    return root


def declared_tiff(width: int, height: int, *, tile: tuple[int, int] | None = None, rows_per_strip: int | None = None,
                  samples: int = 1, bits: int = 8, compression: int = 8) -> bytes:
    """A little-endian TIFF of a ``width x height`` image whose header declares one tile (or strip) of the given
    size, ``samples`` bands of ``bits`` bits and ``compression`` (8: deflate, decoded by libtiff), followed by 16
    bytes of data: a decompression bomb of a hundred-odd bytes when the tile or strip is large."""
    data = bytes(16)
    entries = {256: (4, width), 257: (4, height), 258: (3, bits), 259: (3, compression),
               262: (3, 2 if samples >= 3 else 1), 277: (3, samples)}
    place = (322, 323, 324, 325) if tile else (273, 278, 279)
    data_offset = 8 + 2 + 12 * (len(entries) + len(place)) + 4
    if tile:
        entries.update({322: (4, tile[0]), 323: (4, tile[1]), 324: (4, data_offset), 325: (4, len(data))})
    else:
        entries.update({273: (4, data_offset), 278: (4, rows_per_strip or height), 279: (4, len(data))})
    ifd = b"".join(struct.pack("<HHIHH" if kind == 3 else "<HHII", tag, kind, 1, value, *((0,) if kind == 3 else ()))
                   for tag, (kind, value) in sorted(entries.items()))
    return b"II*\0" + struct.pack("<IH", 8, len(entries)) + ifd + struct.pack("<I", 0) + data


def tiny_encoder(seed: int = 0) -> Encoder:
    from rsitr.models import create_model

    # fp32: tests compare the index's scores with the model's own fp32 forward pass
    return Encoder(create_model(TINY_MODEL, seed=seed), precision="fp32")


def build_test_index(base: Path):
    """The index of :func:`make_archive` under ``base`` (archive/ and index/), built with the tiny encoder."""
    from rsitr.index import ArchiveIndex, BuildOptions

    index, _ = ArchiveIndex.build(base / "index", make_archive(base / "archive"), encoder=tiny_encoder(),
                                  progress=False, options=BuildOptions(**CHIP_SETTINGS))
    return index


FAR_ORIGINS = [(412345.678, 5818765.4321), (482345.678, 5818765.4321)]
"""Two GeoTIFFs 70 km apart (EPSG:32633), at coordinates that need every digit."""


def build_far_index(base: Path):
    """Two 128 px GeoTIFFs of 0.3 m pixels (one chip each, 38 m across) at :data:`FAR_ORIGINS` and a PNG."""
    from rsitr.index import ArchiveIndex, BuildOptions

    root = base / "archive"
    root.mkdir(parents=True)
    for number, origin in enumerate(FAR_ORIGINS):
        write_geotiff(root / f"scene{number}.tif", seed=10 + number, width=128, height=128, origin=origin, pixel=0.3)
    noise(5, 64, 48).save(root / "plain.png")
    index, _ = ArchiveIndex.build(base / "index", root, encoder=tiny_encoder(), progress=False,
                                  options=BuildOptions(**CHIP_SETTINGS))
    return index


TEXT_QUERIES = ("a harbour with boats", "dense residential area", "green forest next to a river")


def assert_same_index(first, second, *, same_ids: bool = True) -> None:
    """Two :class:`ArchiveIndex` of one archive hold the same chips (windows, bounds), vectors and local tokens
    (within float tolerance), the same failures, and give the same top-10 for :data:`TEXT_QUERIES`."""
    def chips(index):
        ids, vectors = index.store.embeddings()
        records = index.store.chips(ids.tolist())
        keys = [(records[i].path, records[i].window, records[i].bounds, records[i].crs) for i in ids.tolist()]
        return ids, keys, vectors, index.store.tokens(ids.tolist(), index.encoder.dim)

    (ids_a, keys_a, vectors_a, tokens_a), (ids_b, keys_b, vectors_b, tokens_b) = chips(first), chips(second)
    order_a, order_b = np.argsort([repr(k) for k in keys_a]), np.argsort([repr(k) for k in keys_b])
    assert [keys_a[i] for i in order_a] == [keys_b[i] for i in order_b]
    if same_ids:
        np.testing.assert_array_equal(ids_a, ids_b)
        assert keys_a == keys_b
    np.testing.assert_allclose(vectors_a[order_a], vectors_b[order_b], atol=1e-5)
    assert (tokens_a is None) == (tokens_b is None)
    if tokens_a is not None:
        np.testing.assert_allclose(tokens_a[order_a], tokens_b[order_b], atol=2e-3)
    assert first.store.failures() == second.store.failures()
    assert first.info()["incomplete_files"] == second.info()["incomplete_files"] == 0
    for query in TEXT_QUERIES:
        hits_a, hits_b = first.search(query, k=10), second.search(query, k=10)
        assert [(h.path, h.window) for h in hits_a] == [(h.path, h.window) for h in hits_b], query
        np.testing.assert_allclose([h.score for h in hits_a], [h.score for h in hits_b], atol=1e-4)


def clustered(count: int, dim: int = 64, clusters: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    vectors = centres[rng.integers(0, clusters, count)] + 0.5 * rng.standard_normal((count, dim), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_cog(path: Path, pixels: np.ndarray, *, nodata: float | None = None, descriptions: tuple[str, ...] = (),
              colorinterp: tuple[str, ...] = (), mask: np.ndarray | None = None, blocksize: int = 256) -> None:
    """``pixels`` ``[bands, rows, columns]`` as a Cloud-Optimized GeoTIFF (rasterio's COG driver, deflate,
    ``blocksize`` tiles) at :data:`GEO_ORIGIN`, with an optional nodata value, band descriptions, colour
    interpretations (rasterio ``ColorInterp`` names) and internal mask (True: valid)."""
    import rasterio
    from affine import Affine
    from rasterio.enums import ColorInterp

    count, height, width = pixels.shape
    with rasterio.open(path, "w", driver="COG", width=width, height=height, count=count, dtype=pixels.dtype,
                       nodata=nodata, crs=GEO_CRS, transform=Affine(GEO_PIXEL, 0, GEO_ORIGIN[0], 0, -GEO_PIXEL,
                                                                    GEO_ORIGIN[1]),
                       blocksize=blocksize, compress="deflate") as dataset:
        dataset.write(pixels)
        if descriptions:
            dataset.descriptions = descriptions
        if colorinterp:
            dataset.colorinterp = [ColorInterp[name] for name in colorinterp]
        if mask is not None:
            dataset.write_mask(mask.astype(np.uint8) * 255)


# build_placed_index: east.tif (UTM 33N, near 15.0 E 36.1 N, a 2023 TIFF DATETIME) and nodate.tif beside it (no tag);
# west.tif (WGS84 degrees, near Madrid, 2024); plain.png has neither coordinates nor a date
PLACED_EAST_BOX = (14.9, 36.0, 15.2, 36.2)
PLACED_WEST_BOX = (-3.8, 40.3, -3.6, 40.5)


def write_tagged(path: Path, seed: int, crs: str, transform, when: str | None) -> None:
    """A 600 x 400 RGB GeoTIFF with ``when`` as its TIFF DATETIME tag (None: no tag)."""
    import rasterio

    pixels = np.asarray(noise(seed, 600, 400)).transpose(2, 0, 1)
    with rasterio.open(path, "w", driver="GTiff", width=600, height=400, count=3, dtype="uint8", crs=crs,
                       transform=transform) as dataset:
        dataset.write(pixels)
        if when is not None:
            dataset.update_tags(TIFFTAG_DATETIME=when)


def build_placed_index(base: Path):
    """An index of scenes in two places and years, one without a date and one without coordinates (see above)."""
    from affine import Affine

    from rsitr.index import ArchiveIndex, BuildOptions

    root = base / "images"
    root.mkdir()
    write_tagged(root / "east.tif", 1, GEO_CRS, Affine(10, 0, 500_000, 0, -10, 4_000_000), "2023:01:05 10:00:00")
    write_tagged(root / "nodate.tif", 2, GEO_CRS, Affine(10, 0, 506_000, 0, -10, 4_000_000), None)
    write_tagged(root / "west.tif", 3, "EPSG:4326", Affine(0.0002, 0, -3.75, 0, -0.0002, 40.45),
                 "2024:06:01 11:30:00")
    noise(4, 300, 200).save(root / "plain.png")
    return ArchiveIndex.build(base / "index", root, encoder=tiny_encoder(), progress=False,
                              options=BuildOptions(**CHIP_SETTINGS))[0]
