import math

import pytest
import torch
from torch import nn

import rsitr.losses.ftf
import rsitr.retrieval.interaction
import rsitr.retrieval.ftf_two_stage
from rsitr.retrieval.interaction import candidate_interaction, interaction_similarity, prepare_patches
from rsitr.retrieval.ftf_two_stage import (CoarseIndexConfig, exhaustive_fine_similarity, two_stage_similarity)
from rsitr.similarity import global_similarity

N_IMAGES, N_TEXTS, PATCHES, WORDS, DIM = 40, 9, 6, 5, 8


@pytest.fixture
def features():
    generator = torch.Generator().manual_seed(0)
    lengths = torch.tensor([5, 3, 1, 4, 5, 2, 3, 5, 1])
    return dict(image_global=torch.randn(N_IMAGES, DIM, generator=generator),
                image_tokens=torch.randn(N_IMAGES, PATCHES, DIM, generator=generator),
                text_global=torch.randn(N_TEXTS, DIM, generator=generator),
                text_tokens=torch.randn(N_TEXTS, WORDS, DIM, generator=generator),
                text_mask=torch.arange(WORDS) < lengths.unsqueeze(1))


def test_interaction_one_word_two_patches_by_hand():
    # Patches x1 = e1, x2 = e2 (x2 scaled: tokens are normalised first); word y = e1; a padded second
    # "word" that must not count. Temperature 1, so cosines S = [1, 0] are the logits.
    image_tokens = torch.tensor([[[1.0, 0.0], [0.0, 3.0]]])
    text_tokens = torch.tensor([[[2.0, 0.0], [-5.0, 7.0]]])
    text_mask = torch.tensor([[True, False]])
    # word -> patch: a = softmax([1, 0]) = [e, 1] / (e + 1); v = a1 e1 + a2 e2; cos(y, v) = a1 / sqrt(a1^2 + a2^2).
    a1 = math.e / (math.e + 1)
    a2 = 1 - a1
    word_to_patch = a1 / math.sqrt(a1 ** 2 + a2 ** 2)
    # patch -> word: one real word, so each patch's attended word is y: cos(e1, y) = 1, cos(e2, y) = 0.
    patch_to_word = (1.0 + 0.0) / 2
    expected = (word_to_patch + patch_to_word) / 2  # = (0.9385 + 0.5) / 2
    score = interaction_similarity(image_tokens, text_tokens, text_mask, temperature=1.0)
    assert score.shape == (1, 1)
    assert score.item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.71925, abs=1e-4)


def test_interaction_of_identical_single_token_is_one_and_opposite_is_minus_one():
    token = torch.tensor([[[0.6, 0.8]]])
    mask = torch.tensor([[True]])
    assert interaction_similarity(token, token, mask).item() == pytest.approx(1.0, abs=1e-6)
    assert interaction_similarity(token, -token, mask).item() == pytest.approx(-1.0, abs=1e-6)


def test_padding_tokens_do_not_change_scores(features):
    tokens = features["text_tokens"].clone()
    tokens[~features["text_mask"]] = 100.0 * torch.randn(int((~features["text_mask"]).sum()), DIM)
    before = interaction_similarity(features["image_tokens"], features["text_tokens"], features["text_mask"])
    after = interaction_similarity(features["image_tokens"], tokens, features["text_mask"])
    assert torch.allclose(before, after, atol=1e-6)


def test_chunking_does_not_change_scores(features):
    tokens = (features["image_tokens"], features["text_tokens"], features["text_mask"])
    whole = interaction_similarity(*tokens)
    assert torch.allclose(interaction_similarity(*tokens, max_chunk_bytes=1), whole, atol=1e-6)
    candidates = torch.randint(0, N_IMAGES, (N_TEXTS, 7), generator=torch.Generator().manual_seed(1))
    gathered = whole.T.gather(1, candidates)
    captions = (prepare_patches(features["image_tokens"]), features["text_tokens"], features["text_mask"])
    assert torch.allclose(candidate_interaction(*captions, candidates), gathered, atol=1e-6)
    assert torch.allclose(candidate_interaction(*captions, candidates, max_chunk_bytes=1), gathered, atol=1e-6)


@pytest.mark.parametrize("index", ["exact", "hnsw", CoarseIndexConfig("ivf", ivf_lists=2, ivf_probes=2)])
def test_full_recall_equals_exhaustive(features, index):
    exhaustive = exhaustive_fine_similarity(**features)
    result = two_stage_similarity(**features, recall_k=N_IMAGES, index=index)
    assert result.similarity.shape == (N_IMAGES, N_TEXTS)
    assert result.candidates.shape == (N_TEXTS, N_IMAGES)
    assert torch.allclose(result.similarity, exhaustive, atol=1e-6)
    assert torch.equal(result.similarity.argsort(dim=0, descending=True), exhaustive.argsort(dim=0, descending=True))
    assert result.stage1_seconds >= 0 and result.stage2_seconds >= 0 and result.index_seconds >= 0


def test_candidates_are_the_coarse_top_k(features):
    k = 5
    result = two_stage_similarity(**features, recall_k=k)
    coarse = global_similarity(features["image_global"], features["text_global"]).T
    assert torch.equal(result.candidates, coarse.topk(k, dim=1).indices)


def test_shortlist_gets_fine_scores_and_the_rest_ranks_below_in_coarse_order(features):
    k = 5
    result = two_stage_similarity(**features, recall_k=k, global_weight=0.3, interaction_weight=0.7)
    exhaustive = exhaustive_fine_similarity(**features, global_weight=0.3, interaction_weight=0.7)
    coarse = global_similarity(features["image_global"], features["text_global"])
    is_candidate = torch.zeros(N_IMAGES, N_TEXTS, dtype=torch.bool)
    is_candidate[result.candidates, torch.arange(N_TEXTS).unsqueeze(1)] = True
    assert torch.allclose(result.similarity[is_candidate], exhaustive[is_candidate], atol=1e-6)
    assert result.similarity[~is_candidate].max() < result.similarity[is_candidate].min()
    shift = coarse[~is_candidate] - result.similarity[~is_candidate]
    assert torch.allclose(shift, shift[0].expand_as(shift), atol=1e-6)


def test_ivf_short_answers_are_padded_and_never_fine_scored(features):
    result = two_stage_similarity(**features, recall_k=N_IMAGES,
                                  index=CoarseIndexConfig("ivf", ivf_lists=8, ivf_probes=1))
    missing = result.candidates < 0
    assert missing.any() and (~missing).any()
    candidate_scores = result.similarity.T.gather(1, result.candidates.clamp_min(0))[~missing]
    is_candidate = torch.zeros(N_TEXTS, N_IMAGES, dtype=torch.bool)
    for text, row in enumerate(result.candidates):
        is_candidate[text, row[row >= 0]] = True
    assert result.similarity.T[~is_candidate].max() < candidate_scores.min()


def test_ftf_is_parameter_free():
    for module in (rsitr.retrieval.interaction, rsitr.retrieval.ftf_two_stage, rsitr.losses.ftf):
        for value in vars(module).values():
            assert not isinstance(value, nn.Parameter)
            assert not (isinstance(value, type) and issubclass(value, nn.Module)), value


@pytest.mark.parametrize("change, message", [
    (dict(recall_k=N_IMAGES + 1), "recall_k"),
    (dict(recall_k=0), "recall_k"),
    (dict(index="annoy"), "unknown coarse index"),
    (dict(text_mask=torch.ones(N_TEXTS, WORDS, dtype=torch.bool).index_fill(1, torch.tensor([0]), False)),
     "padding at the end"),
    (dict(text_mask=torch.zeros(N_TEXTS, WORDS, dtype=torch.bool)), "without any real token"),
    (dict(text_global=torch.randn(N_TEXTS + 1, DIM)), "do not match"),
])
def test_bad_input_is_named(features, change, message):
    arguments = {**features, "recall_k": 3, **change}
    with pytest.raises(ValueError, match=message):
        two_stage_similarity(**arguments)


@pytest.mark.parametrize("fine_exhaustive", [True, False])
def test_evaluation_scores_every_pair_finely_only_when_asked(fine_exhaustive):
    from rsitr.config import EvalConfig
    from rsitr.evaluate.runner import EncodedCorpus, evaluate_encoded
    from rsitr.models import ImageFeatures, ScoringRecipe, TextFeatures

    torch.manual_seed(0)
    image = ImageFeatures(torch.randn(4, 8), torch.randn(4, 3, 8))
    text = TextFeatures(torch.randn(8, 8), torch.randn(8, 5, 8), torch.ones(8, 5, dtype=torch.bool))
    encoded = EncodedCorpus(image, text, torch.arange(8) // 2, 0.0, 0.0)
    config = EvalConfig(two_stage=True, recall_k=2, fine_exhaustive=fine_exhaustive)
    rows = evaluate_encoded(encoded, ScoringRecipe(local=False), config, name="m").rows
    assert "m FTF two-stage (K=2)" in rows
    assert ("m FTF fine, exhaustive" in rows) == fine_exhaustive
