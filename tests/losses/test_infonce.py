import math

import pytest
import torch

from rsitr.losses.infonce import info_nce

S = [[0.5, 0.1, 0.2],
     [0.3, 0.9, 0.0],
     [0.1, 0.4, 0.8]]


def row_loss(row, target, scale):
    return -math.log(math.exp(scale * row[target]) / sum(math.exp(scale * v) for v in row))


def hand_loss(rows_kept, scale, matrix=S):
    columns = [list(c) for c in zip(*matrix)]
    i2t = sum(row_loss(matrix[i], i, scale) for i in rows_kept) / len(rows_kept)
    t2i = sum(row_loss(columns[i], i, scale) for i in rows_kept) / len(rows_kept)
    return (i2t + t2i) / 2


def test_info_nce_equals_hand_computed_value():
    # Written out for row 0 of image->text with scale 10: -log(e^5 / (e^5 + e^1 + e^2)).
    assert row_loss(S[0], 0, 10) == pytest.approx(-math.log(math.exp(5) / (math.exp(5) + math.exp(1) + math.exp(2))))
    loss = info_nce(torch.tensor(S), 10.0)
    assert loss.item() == pytest.approx(hand_loss([0, 1, 2], 10), rel=1e-6)


def test_eliminated_rows_leave_both_directions_but_stay_negatives():
    keep = torch.tensor([True, False, True])
    loss = info_nce(torch.tensor(S), 10.0, keep=keep)
    assert loss.item() == pytest.approx(hand_loss([0, 2], 10), rel=1e-6)


def test_keep_all_equals_no_elimination():
    sim = torch.tensor(S)
    assert info_nce(sim, 10.0, keep=torch.ones(3, dtype=torch.bool)).item() == pytest.approx(info_nce(sim, 10.0).item())


def test_extra_negatives_are_appended_columns():
    extra_text = torch.tensor([[0.0], [0.2], [0.3]])
    extra_image = torch.tensor([[0.1], [0.0], [0.0]])
    loss = info_nce(torch.tensor(S), 10.0, extra_text_negatives=extra_text, extra_image_negatives=extra_image)
    columns = [list(c) for c in zip(*S)]
    i2t = sum(row_loss(S[i] + [extra_text[i, 0].item()], i, 10) for i in range(3)) / 3
    t2i = sum(row_loss(columns[i] + [extra_image[i, 0].item()], i, 10) for i in range(3)) / 3
    assert loss.item() == pytest.approx((i2t + t2i) / 2, rel=1e-6)


def test_all_rows_eliminated_gives_zero_with_graph():
    sim = torch.tensor(S, requires_grad=True)
    loss = info_nce(sim, 10.0, keep=torch.zeros(3, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert sim.grad is not None


def test_rejects_non_square():
    with pytest.raises(ValueError, match="square"):
        info_nce(torch.zeros(2, 3), 1.0)


def test_fixed_scale_20_with_summed_directions_is_the_reference_loss():
    """EBAKER's reference: CE(20 S) + CE(20 S^T), each the mean over rows, summed (not averaged)."""
    sim = torch.tensor([[0.5, 0.1], [0.2, 0.4]])
    # image->text rows: logits [10, 2] -> log(1 + e^-8); [4, 8] -> log(1 + e^-4)
    # text->image rows: logits [10, 4] -> log(1 + e^-6); [2, 8] -> log(1 + e^-6)
    i2t = (math.log1p(math.exp(-8)) + math.log1p(math.exp(-4))) / 2
    t2i = math.log1p(math.exp(-6))
    assert info_nce(sim, 20.0, directions="sum").item() == pytest.approx(i2t + t2i, rel=1e-5)
    assert info_nce(sim, 20.0).item() == pytest.approx((i2t + t2i) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="directions"):
        info_nce(sim, 20.0, directions="max")
