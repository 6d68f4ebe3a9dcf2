"""KER head: shapes, padding and image use, the MLM loss, and that training lowers it."""

from __future__ import annotations

import math

import pytest
import torch

from rsitr.models.keywords import IGNORE_INDEX, mask_captions
from rsitr.models import TINY_MODEL, create_model
from rsitr.models.ker_head import KERHead, mlm_loss

CAPTIONS = ["Two playgrounds near a riverbank and a pond.", "Planes parked beside the airport terminal."]
KEYWORDS = {"playgrounds", "pond", "planes", "airport"}


@pytest.fixture(scope="module")
def model():
    return create_model(TINY_MODEL).model


def make_head(model, seed: int = 0) -> KERHead:
    torch.manual_seed(seed)
    return KERHead(model.embed_dim, model.vocab_size)


def test_head_on_the_tiny_model_gives_vocabulary_logits_and_trains_the_encoders(model):
    masked, labels = mask_captions(CAPTIONS, model.tokenizer, "keyword", KEYWORDS)
    text = model.encode_text(masked)
    image = model.encode_image(torch.randn(2, 3, 32, 32))
    logits = make_head(model)(text.tokens, image.tokens, text.mask)
    assert logits.shape == (2, model.tokenizer.context_length, 49408)
    assert torch.isfinite(logits).all()
    model.zero_grad()
    mlm_loss(logits, labels).backward()
    assert model.clip.visual.proj.grad.abs().sum() > 0
    assert model.clip.text_projection.grad.abs().sum() > 0
    model.zero_grad()


def test_heads_are_lowered_to_a_divisor_of_the_width():
    assert KERHead(32, 10).heads == 8
    assert KERHead(30, 10).heads == 6
    assert KERHead(9, 10).heads == 3


def test_padding_does_not_change_real_positions():
    torch.manual_seed(0)
    head = KERHead(16, 50, num_blocks=2).eval()
    text, image = torch.randn(2, 6, 16), torch.randn(2, 5, 16)
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    other = text.clone()
    other[0, 4:] = torch.randn(2, 16) * 10
    with torch.no_grad():
        a, b = head(text, image, mask), head(other, image, mask)
        unmasked = head(other, image, torch.ones_like(mask))
    torch.testing.assert_close(a[0, :4], b[0, :4])
    torch.testing.assert_close(a[1], b[1])
    assert not torch.allclose(a[0, :4], unmasked[0, :4])  # so the key padding mask is what made them equal


def test_logits_depend_on_the_image():
    torch.manual_seed(0)
    head = KERHead(16, 50, num_blocks=1).eval()
    text, mask = torch.randn(1, 4, 16), torch.ones(1, 4, dtype=torch.bool)
    with torch.no_grad():
        assert not torch.allclose(head(text, torch.randn(1, 3, 16), mask), head(text, torch.randn(1, 3, 16), mask))


def test_mlm_loss_is_cross_entropy_on_masked_positions_only():
    logits = torch.tensor([[[9.0, -3.0, 4.0, 1.0],     # not masked: ignored whatever it holds
                            [0.0, 0.0, 0.0, 0.0],      # label 2: -log(1/4)
                            [0.0, math.log(3.0), 0.0, 0.0]]])  # label 1: -log(3/6)
    labels = torch.tensor([[IGNORE_INDEX, 2, 1]])
    expected = (math.log(4.0) + math.log(2.0)) / 2
    assert mlm_loss(logits, labels).item() == pytest.approx(expected)
    changed = logits.clone()
    changed[0, 0] = torch.tensor([-5.0, 7.0, 0.5, 2.0])
    assert mlm_loss(changed, labels).item() == pytest.approx(expected)


def test_mlm_loss_is_zero_with_a_graph_when_nothing_is_masked():
    logits = torch.randn(2, 3, 5, requires_grad=True)
    loss = mlm_loss(logits, torch.full((2, 3), IGNORE_INDEX))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_mlm_loss_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="labels"):
        mlm_loss(torch.randn(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))


def test_masked_loss_equals_the_loss_of_full_logits():
    torch.manual_seed(0)
    head = KERHead(16, 50, num_blocks=2)
    text, image = torch.randn(2, 6, 16), torch.randn(2, 5, 16)
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    labels = torch.full((2, 6), IGNORE_INDEX)
    labels[0, 1], labels[1, 3], labels[1, 4] = 7, 12, 49
    torch.testing.assert_close(head.masked_loss(text, image, mask, labels), mlm_loss(head(text, image, mask), labels))
    assert head.masked_loss(text, image, mask, torch.full((2, 6), IGNORE_INDEX)).item() == 0.0


def test_training_steps_lower_the_mlm_loss(model):
    """A few AdamW steps of the head on a fixed batch of the trainer's inputs fit the masked keywords."""
    head = make_head(model)
    masked, labels = mask_captions(CAPTIONS, model.tokenizer, "keyword", KEYWORDS)
    with torch.no_grad():
        text = model.encode_text(masked)
        image = model.encode_image(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        loss = mlm_loss(head(text.tokens, image.tokens, text.mask), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > math.log(49408) - 2  # starts near chance
    assert all(later < earlier for earlier, later in zip(losses, losses[1:]))
    assert losses[-1] < losses[0] - 1.5
