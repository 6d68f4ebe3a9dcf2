"""Chip windows: hand-computed positions, edge alignment, and bad settings."""

import pytest

from rsitr.index.tiling import Window, chip_windows, strip_order


def test_scene_not_larger_than_limit_is_one_chip():
    assert chip_windows(640, 480, chip_size=224, overlap=32, tile_larger_than=640) == [Window(0, 0, 640, 480)]


def test_large_scene_is_tiled_with_overlap_and_last_chips_flush_with_edges():
    # stride 128 - 32 = 96: columns 0, 96 then 300 - 128 = 172; rows 0 then 200 - 128 = 72.
    windows = chip_windows(300, 200, chip_size=128, overlap=32, tile_larger_than=256)
    assert [(w.x, w.y) for w in windows] == [(0, 0), (96, 0), (172, 0), (0, 72), (96, 72), (172, 72)]
    assert all((w.width, w.height) == (128, 128) for w in windows)


def test_exact_multiple_adds_no_extra_chip():
    # 320 = 0, 96, 192 (+128 = 320): the last start already ends on the edge.
    assert [w.x for w in chip_windows(320, 100, chip_size=128, overlap=32, tile_larger_than=256)] == [0, 96, 192]


def test_side_shorter_than_chip_keeps_its_length():
    windows = chip_windows(1000, 50, chip_size=400, overlap=0, tile_larger_than=500)
    assert [(w.x, w.y, w.width, w.height) for w in windows] == [(0, 0, 400, 50), (400, 0, 400, 50), (600, 0, 400, 50)]


@pytest.mark.parametrize("size, overlap", [(0, 0), (128, 128), (128, -1)])
def test_bad_settings_are_refused(size, overlap):
    with pytest.raises(ValueError, match="overlap"):
        chip_windows(500, 500, chip_size=size, overlap=overlap, tile_larger_than=100)


def test_strip_order_reads_rows_within_strips_left_to_right():
    # starts 0, 96, 172 in both directions; strips of 128 px by the left edge: {0, 96} then {172}
    windows = chip_windows(300, 300, chip_size=128, overlap=32, tile_larger_than=256)
    ordered = strip_order(windows, 128)
    assert [(w.x, w.y) for w in ordered] == [(0, 0), (96, 0), (0, 96), (96, 96), (0, 172), (96, 172),
                                             (172, 0), (172, 96), (172, 172)]
    assert strip_order(windows, 300) == windows
