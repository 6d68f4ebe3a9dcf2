import math

import pytest
import torch

from rsitr.losses.infonce import info_nce
from rsitr.losses.negative_queue import NegativeQueue


def embeddings(*rows):
    return torch.tensor(rows, dtype=torch.float)


def test_queue_is_fifo_and_keeps_its_size():
    queue = NegativeQueue(size=3, dim=2)
    assert len(queue) == 0
    queue.push(embeddings([1, 0], [0, 1]), embeddings([1, 0], [0, 1]), torch.tensor([10, 11]))
    assert len(queue) == 2
    queue.push(embeddings([3, 4], [0, 2]), embeddings([0, 5], [2, 0]), torch.tensor([12, 13]))
    # size 3: the oldest entry (id 10) was overwritten by the newest (id 13)
    assert len(queue) == 3 and sorted(queue.image_ids.tolist()) == [11, 12, 13]
    images, texts = queue.negatives(torch.tensor([99]))
    # stored normalised: [3, 4] -> [0.6, 0.8]
    assert any(torch.allclose(row, torch.tensor([0.6, 0.8])) for row in images)
    assert any(torch.allclose(row, torch.tensor([0.0, 1.0])) for row in texts)


def test_push_larger_than_the_queue_keeps_the_newest():
    queue = NegativeQueue(size=2, dim=1)
    queue.push(torch.ones(5, 1), torch.ones(5, 1), torch.arange(5))
    assert sorted(queue.image_ids.tolist()) == [3, 4]


def test_current_positives_are_never_negatives():
    queue = NegativeQueue(size=8, dim=2)
    queue.push(torch.randn(4, 2), torch.randn(4, 2), torch.tensor([1, 2, 3, 4]))
    images, texts = queue.negatives(torch.tensor([2, 4, 7]))
    assert images.shape == texts.shape == (2, 2)  # ids 1 and 3 remain; empty slots never count
    kept = queue.image_ids[(queue.image_ids >= 0) & ~torch.isin(queue.image_ids, torch.tensor([2, 4, 7]))]
    assert sorted(kept.tolist()) == [1, 3]
    assert queue.negatives(torch.tensor([1, 2, 3, 4]))[0].shape == (0, 2)


def test_state_round_trip_and_shape_check():
    queue = NegativeQueue(size=4, dim=3)
    queue.push(torch.randn(3, 3), torch.randn(3, 3), torch.tensor([5, 6, 7]))
    restored = NegativeQueue(size=4, dim=3)
    restored.load_state_dict(queue.state_dict())
    assert restored.pointer == 3 and torch.equal(restored.images, queue.images)
    assert torch.equal(restored.image_ids, queue.image_ids)
    with pytest.raises(ValueError, match="negative_queue"):
        NegativeQueue(size=5, dim=3).load_state_dict(queue.state_dict())
    with pytest.raises(ValueError, match="expected"):
        queue.push(torch.randn(2, 4), torch.randn(2, 4), torch.tensor([1, 2]))


def test_queued_negatives_raise_the_loss_of_a_perfect_batch():
    """Extra negatives add columns: a queued item as similar as the positive makes each row's loss log 2."""
    sim = torch.eye(2)  # cosines: each image matches only its text
    plain = info_nce(sim, 100.0)
    extra = torch.ones(2, 1)  # one queued text with cosine 1 to both images; one queued image likewise
    recycled = info_nce(sim, 100.0, extra_text_negatives=extra, extra_image_negatives=extra)
    assert plain.item() == pytest.approx(0.0, abs=1e-6)
    assert recycled.item() == pytest.approx(math.log(2), abs=1e-4)
