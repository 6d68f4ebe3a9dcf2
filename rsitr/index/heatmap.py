"""Heat maps over a scene: the current query's score of each of a georeferenced scene's chips, as map cells and as a
GeoTIFF score raster that a GIS opens in the scene's CRS.

The raster's cells are ``stride = chip_size - chip_overlap`` scene pixels wide (the spacing of the chips), so a
scene of ``W x H`` pixels gives ``ceil(W / stride) x ceil(H / stride)`` float32 cells, and its transform is the
scene's own scaled by the stride. A cell holds the highest score of the chips that cover it (a match anywhere in
a chip shows), NaN (nodata) where no chip does.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rsitr.errors import UserError
from rsitr.index.archive import Bounds, open_raster
from rsitr.index.export import wgs84_bounds
from rsitr.index.tiling import Window

SCORE_KINDS = {"probability": "the probability of \"find all like these\" (0 to 1)",
               "fused": "the fused score of a text search (0.6 x global + 0.4 x local)",
               "cosine": "the global cosine to the query (-1 to 1)"}


class NotGeoreferencedError(UserError):
    """A heat map was asked of a scene without coordinates (a plain JPEG or PNG)."""


@dataclass(frozen=True)
class SceneScores:
    """The scores of one scene's chips (ascending chip id) for one query; ``kind`` one of :data:`SCORE_KINDS`."""

    path: str
    crs: str | None
    chip_ids: list[int]
    windows: list[Window]
    bounds: list[Bounds | None]
    scores: np.ndarray
    kind: str

    def to_json(self) -> dict:
        """The chips as map cells: id, window, WGS84 bounds, score; and the score range (for a legend)."""
        return {"path": self.path, "crs": self.crs, "kind": self.kind, "explained": SCORE_KINDS[self.kind],
                "min": float(self.scores.min()) if len(self.scores) else None,
                "max": float(self.scores.max()) if len(self.scores) else None,
                "chips": [{"chip_id": chip_id, "window": vars(window), "wgs84_bounds": wgs84_bounds(bounds, self.crs),
                           "score": float(score)}
                          for chip_id, window, bounds, score in zip(self.chip_ids, self.windows, self.bounds,
                                                                   self.scores)]}


def score_raster(scores: SceneScores, scene: Path | str | tuple[str, ...], stride: int) -> bytes:
    """The GeoTIFF (bytes) of ``scores`` over the georeferenced scene ``scene`` (a file, a remote raster's URL or
    a stack of single-band assets, opened as indexing opens it: :func:`rsitr.index.archive.open_raster`): cells of
    ``stride`` pixels, the scene's CRS and transform scaled by the stride, NaN where no chip lies."""
    from affine import Affine
    from rasterio.io import MemoryFile

    if scores.crs is None:
        raise NotGeoreferencedError(f"{scores.path} is not georeferenced: a score raster needs a GeoTIFF scene")
    with ExitStack() as stack:
        source = open_raster(scene, stack)
        width, height, crs, transform = source.width, source.height, source.crs, source.transform
    columns, rows = math.ceil(width / stride), math.ceil(height / stride)
    cells = np.full((rows, columns), np.nan, np.float32)
    # a cell takes the chips that hold its centre (the last row and column: their part inside the scene)
    across = np.minimum((np.arange(columns) + 0.5) * stride, width - 0.5)
    down = np.minimum((np.arange(rows) + 0.5) * stride, height - 0.5)
    for window, score in zip(scores.windows, scores.scores):
        inside = np.outer((down >= window.y) & (down < window.y + window.height),
                          (across >= window.x) & (across < window.x + window.width))
        cells[inside] = np.fmax(cells[inside], score)
    profile = {"driver": "GTiff", "width": columns, "height": rows, "count": 1, "dtype": "float32", "crs": crs,
               "transform": transform @ Affine.scale(stride), "nodata": float("nan")}
    with MemoryFile() as memory:
        with memory.open(**profile) as raster:
            raster.write(cells, 1)
            raster.set_band_description(1, f"{scores.kind} score")
            raster.update_tags(rsitr_score=SCORE_KINDS[scores.kind], rsitr_scene=scores.path)
        return memory.read()
