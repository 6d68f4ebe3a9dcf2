"""Cutting large scenes into fixed-size chips (pixel windows).

A scene whose longer side exceeds ``tile_larger_than`` is covered by ``chip_size`` squares placed
every ``chip_size - overlap`` pixels; the last row and column are shifted back to end exactly at the
image edge, so every chip is full size and every pixel is covered. Smaller scenes are one chip.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    """A pixel rectangle of a scene: column ``x``, row ``y``, ``width``, ``height``."""

    x: int
    y: int
    width: int
    height: int


def _starts(length: int, chip_size: int, stride: int) -> list[int]:
    if length <= chip_size:
        return [0]
    starts = list(range(0, length - chip_size + 1, stride))
    if starts[-1] != length - chip_size:
        starts.append(length - chip_size)
    return starts


def chip_count(width: int, height: int, chip_size: int = 224, overlap: int = 32, tile_larger_than: int = 1024) -> int:
    """``len(chip_windows(...))`` without making the windows (a huge scene's list alone fills memory)."""
    if max(width, height) <= tile_larger_than:
        return 1
    stride = chip_size - overlap

    def starts(length: int) -> int:
        return 1 if length <= chip_size else -(-(length - chip_size) // stride) + 1

    return starts(width) * starts(height)


def chip_windows(width: int, height: int, chip_size: int = 224, overlap: int = 32,
                 tile_larger_than: int = 1024) -> list[Window]:
    """Windows (row-major) covering a ``width x height`` scene; one full window if it is not larger than the limit."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if chip_size <= 0 or not 0 <= overlap < chip_size:
        raise ValueError(f"need chip_size > 0 and 0 <= overlap < chip_size, got chip_size={chip_size}, "
                         f"overlap={overlap}")
    if max(width, height) <= tile_larger_than:
        return [Window(0, 0, width, height)]
    stride = chip_size - overlap
    return [Window(x, y, min(chip_size, width), min(chip_size, height))
            for y in _starts(height, chip_size, stride) for x in _starts(width, chip_size, stride)]


def strip_order(windows: list[Window], strip_width: int) -> list[Window]:
    """``windows`` row-major within vertical strips ``strip_width`` pixels wide (by each window's left edge), the
    strips left to right: a reader whose cache holds the blocks under a strip's rows of chips, but not under the
    scene's, reads each block about once."""
    return sorted(windows, key=lambda window: (window.x // strip_width, window.y, window.x))
