import pytest
import torch

from rsitr.losses.ftf import inter_intra_modal_loss
from rsitr.models import TINY_MODEL, create_model
from rsitr.models.clip import ImageFeatures, TextFeatures

BATCH, PATCHES, WORDS, DIM = 4, 3, 4, 6
LOGIT_SCALE = 10.0


def _aligned_batch() -> tuple[ImageFeatures, TextFeatures]:
    """Sample i's image and caption both point along axis i (plus a shared axis 5), with padded captions."""
    concept = torch.eye(DIM)[:BATCH] + 0.3 * torch.eye(DIM)[5]
    image = ImageFeatures(global_=concept.clone(),
                          tokens=concept.unsqueeze(1).repeat(1, PATCHES, 1) + 0.1 * torch.eye(DIM)[4])
    mask = torch.arange(WORDS) < torch.tensor([[4], [2], [3], [1]])
    words = concept.unsqueeze(1).repeat(1, WORDS, 1)
    words[~mask] = torch.eye(DIM)[0]  # padding looks like concept 0 and must be ignored
    return image, TextFeatures(global_=concept.clone(), tokens=words, mask=mask)


def _reorder_captions(text: TextFeatures, order: torch.Tensor) -> TextFeatures:
    return TextFeatures(text.global_[order], text.tokens[order], text.mask[order])


def test_loss_is_finite_positive_and_lower_for_aligned_pairs():
    image, text = _aligned_batch()
    aligned = inter_intra_modal_loss(image, text, LOGIT_SCALE)
    shuffled = inter_intra_modal_loss(image, _reorder_captions(text, torch.tensor([1, 2, 3, 0])), LOGIT_SCALE)
    assert torch.isfinite(aligned) and aligned > 0
    assert aligned < shuffled


def test_intra_modal_term_rewards_globals_consistent_with_their_tokens():
    image, text = _aligned_batch()
    order = torch.tensor([1, 0, 3, 2])
    # The same permutation of both modalities' globals keeps every inter-modal pair (so those terms are
    # unchanged) but makes each global disagree with its own tokens.
    inconsistent_image = ImageFeatures(image.global_[order], image.tokens)
    inconsistent_text = TextFeatures(text.global_[order], text.tokens, text.mask)
    consistent = inter_intra_modal_loss(image, text, LOGIT_SCALE, fine_weight=0.0)
    inconsistent = inter_intra_modal_loss(inconsistent_image, inconsistent_text, LOGIT_SCALE, fine_weight=0.0)
    without_intra = inter_intra_modal_loss(image, text, LOGIT_SCALE, fine_weight=0.0, intra_weight=0.0)
    assert without_intra == pytest.approx(
        inter_intra_modal_loss(inconsistent_image, inconsistent_text, LOGIT_SCALE, fine_weight=0.0,
                               intra_weight=0.0).item(), abs=1e-6)
    assert consistent < inconsistent


def test_eba_keep_all_false_leaves_only_the_intra_modal_term():
    image, text = _aligned_batch()
    nothing_kept = torch.zeros(BATCH, dtype=torch.bool)
    intra_only = inter_intra_modal_loss(image, text, LOGIT_SCALE, keep=nothing_kept)
    assert inter_intra_modal_loss(image, text, LOGIT_SCALE, keep=nothing_kept, intra_weight=0.0).item() == 0.0
    assert intra_only.item() > 0


def test_loss_trains_the_tiny_model():
    model = create_model(TINY_MODEL).model
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    image, text = model(images, model.tokenize(["a harbour with boats", "a dense forest"]))
    loss = inter_intra_modal_loss(image, text, model.logit_scale.exp())
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    assert gradients and all(torch.isfinite(g).all() for g in gradients)
    assert model.clip.visual.conv1.weight.grad.abs().sum() > 0
