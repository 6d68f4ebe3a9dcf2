"""KER keyword statistics and caption masking."""

from __future__ import annotations

import pytest
import torch
from stop_words import get_stop_words

from rsitr.models.keywords import (IGNORE_INDEX, SHORT_STOP_WORDS, KeywordVocabulary, build_keywords, mask_captions,
                            mask_token_id, stop_list, tokenize_with_words)
from rsitr.models import TINY_MODEL, create_model

CORPUS = {
    # Listed beta first: the merge must not depend on the mapping's order.
    "beta": ["Planes parked at the airport near trees.",
             "Two planes near the runway",
             "A runway beside the airport; airport buildings and trees."],
    "alpha": ["Green trees and a pond",
              "trees around the pond; trees!",
              "Storage tanks 42"],
}


@pytest.fixture(scope="module")
def tokenizer():
    return create_model(TINY_MODEL).model.tokenizer


def test_build_keywords_hand_computed_order():
    vocab = build_keywords(CORPUS, top_k=4, stop_words=stop_list("full"))
    # alpha: trees 3, pond 2, then green / storage / tanks at 1 (alphabetical); "and", "around", "the" are
    # stop words and "42" is no word.
    assert vocab.per_dataset["alpha"] == [("trees", 3), ("pond", 2), ("green", 1), ("storage", 1)]
    # beta: airport 3, then planes / runway / trees at 2 (alphabetical); parked, buildings (1) are cut.
    assert vocab.per_dataset["beta"] == [("airport", 3), ("planes", 2), ("runway", 2), ("trees", 2)]
    # alpha before beta; "trees" of beta is a duplicate.
    assert vocab.words == ("trees", "pond", "green", "storage", "airport", "planes", "runway")
    assert vocab.caption_counts == {"alpha": 3, "beta": 3}
    assert "airport" in vocab and "parked" not in vocab


def test_short_stop_list_is_the_default_and_keeps_counts_sizes_and_spatial_words():
    keep = {"many", "two", "three", "several", "near", "next", "around", "beside", "large", "small", "area"}
    assert not keep & SHORT_STOP_WORDS
    assert keep <= set(get_stop_words("en"))  # the full list drops every one of them
    assert {"the", "a", "of", "is", "are", "and"} <= SHORT_STOP_WORDS
    vocab = build_keywords(CORPUS, top_k=4)
    # alpha: trees 3, pond 2, then around / green at 1 (alphabetical); "and" and "the" are stop words.
    assert vocab.per_dataset["alpha"] == [("trees", 3), ("pond", 2), ("around", 1), ("green", 1)]
    assert vocab.per_dataset["beta"] == [("airport", 3), ("near", 2), ("planes", 2), ("runway", 2)]
    captions = {"d": ["two large buildings near many small trees beside the area next to several houses around "
                      "three ponds"]}
    assert keep <= set(build_keywords(captions, top_k=100).words)
    assert not keep & set(build_keywords(captions, top_k=100, stop_words=stop_list("full")).words)
    with pytest.raises(ValueError, match="stop list"):
        stop_list("long")


def test_build_keywords_removes_stop_words():
    vocab = build_keywords(CORPUS, top_k=100, stop_words=stop_list("full"))
    stop = set(get_stop_words("en"))
    assert {"two", "near", "beside", "the", "and", "around"} <= stop
    assert not stop & set(vocab.words)
    assert "parked" in vocab and "buildings" in vocab
    kept = build_keywords(CORPUS, top_k=100, stop_words={"the"})
    assert kept.per_dataset["beta"][:3] == [("airport", 3), ("near", 2), ("planes", 2)]
    assert "the" not in kept and "and" in kept


def test_build_keywords_rejects_bad_top_k():
    with pytest.raises(ValueError, match="top_k"):
        build_keywords(CORPUS, top_k=0)


def test_keyword_vocabulary_roundtrip(tmp_path):
    vocab = build_keywords(CORPUS, top_k=4)
    path = tmp_path / "keywords.json"
    vocab.save(path)
    assert KeywordVocabulary.load(path) == vocab


def test_keyword_vocabulary_load_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"words": ["a"]}')
    with pytest.raises(ValueError, match="broken.json.*build_keywords"):
        KeywordVocabulary.load(path)


def test_mask_token_is_never_produced_and_not_special(tokenizer):
    mask_id = mask_token_id(tokenizer)
    space = tokenizer.byte_encoder[ord(" ")]
    assert tokenizer.decoder[mask_id] == space + "</w>"
    assert mask_id not in {0, tokenizer.sot_token_id, tokenizer.eot_token_id}
    assert mask_id < tokenizer.eot_token_id  # argmax pooling still finds the end token
    assert not any(space in left + right for left, right in tokenizer.bpe_ranks)


@pytest.mark.parametrize("caption", [
    "Two playgrounds near a riverbank and a pond.",
    "  Many   BUILDINGS' roofs -- 3 storage-tanks, café & 12 cars!!  ",
    "it's a don't-care zone",
])
def test_tokenize_with_words_matches_the_tokenizer(tokenizer, caption):
    tokenized = tokenize_with_words(caption, tokenizer)
    expected = tokenizer([caption])[0]
    assert tokenized.ids == expected[:len(tokenized.ids)].tolist()
    assert not expected[len(tokenized.ids):].any()
    for word, start, end in tokenized.words:
        assert tokenized.ids[start:end] == tokenizer.encode(word)


def test_keyword_masking_masks_every_token_of_multi_token_words(tokenizer):
    caption = "Two playgrounds near a riverbank and a pond."
    assert len(tokenizer.encode("playgrounds")) == 2  # "play", "grounds"
    original = tokenizer([caption])
    # "bank" is one BPE token that also ends "riverbank": matching tokens instead of words would mask it.
    masked, labels = mask_captions([caption], tokenizer, "keyword", {"playgrounds", "pond", "bank"})
    # <start> two play grounds near a river bank and a pond . <end>
    expected_positions = [2, 3, 10]
    assert torch.nonzero(labels[0] != IGNORE_INDEX).flatten().tolist() == expected_positions
    assert labels[0, expected_positions].tolist() == tokenizer.encode("playgrounds") + tokenizer.encode("pond")
    assert (masked[0, expected_positions] == mask_token_id(tokenizer)).all()
    unmasked = labels == IGNORE_INDEX
    assert torch.equal(masked[unmasked], original[unmasked])


def test_keyword_masking_accepts_a_vocabulary_and_skips_truncated_words(tokenizer):
    vocab = build_keywords({"d": ["cars cars playgrounds"]}, top_k=5)
    context = tokenizer.context_length
    filler = " ".join(["car"] * (context - 3))  # "car" is one token: <start> + context-3 cars + 2 tokens
    masked, labels = mask_captions([filler + " playgrounds", "cars near playgrounds"], tokenizer, "keyword", vocab)
    # Row 0: "playgrounds" would take positions context-2 and context-1; the end token overwrites the last,
    # so the cut word is not masked at all. "car" is not a keyword ("cars" is).
    assert (labels[0] == IGNORE_INDEX).all()
    assert masked[0, -1].item() == tokenizer.eot_token_id
    assert torch.nonzero(labels[1] != IGNORE_INDEX).flatten().tolist() == [1, 3, 4]


def test_keyword_masking_probability_and_cap_are_seeded(tokenizer):
    captions = ["playgrounds near a pond and trees"] * 6
    keywords = {"playgrounds", "pond", "trees"}
    _, none = mask_captions(captions, tokenizer, "keyword", keywords, keyword_probability=0.0)
    assert (none == IGNORE_INDEX).all()

    def capped(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return mask_captions(captions, tokenizer, "keyword", keywords, max_masked_words=1, generator=generator)[1]

    labels = capped(0)
    assert torch.equal(labels, capped(0))
    # <start> play grounds near a pond and trees <end>: each row masks exactly one whole word.
    whole_words = [[1, 2], [5], [7]]
    rows = [torch.nonzero(row != IGNORE_INDEX).flatten().tolist() for row in labels]
    assert all(row in whole_words for row in rows)
    assert len({tuple(row) for row in rows}) > 1  # the cap samples, it does not always keep the first word


def test_random_masking_never_touches_special_tokens_and_is_seeded(tokenizer):
    captions = [f"{n} planes parked beside the terminal of a large airport" for n in range(40)]
    original = tokenizer(captions)
    special = (original == 0) | (original == tokenizer.sot_token_id) | (original == tokenizer.eot_token_id)

    def run(seed: int, probability: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        return mask_captions(captions, tokenizer, "random", random_probability=probability, generator=generator)

    masked, labels = run(0)
    assert (labels[special] == IGNORE_INDEX).all()
    assert torch.equal(masked[special], original[special])
    picked = labels != IGNORE_INDEX
    assert torch.equal(labels[picked], original[picked])
    assert torch.equal(masked[~picked], original[~picked])
    assert 0.10 < picked.sum() / (~special).sum() < 0.20
    assert all(torch.equal(a, b) for a, b in zip(run(0), (masked, labels)))
    assert not torch.equal(run(1)[1], labels)


def test_random_masking_follows_the_bert_replacement_rule(tokenizer):
    captions = ["planes parked beside the terminal of a large airport"] * 50
    original = tokenizer(captions)
    generator = torch.Generator().manual_seed(0)
    masked, labels = mask_captions(captions, tokenizer, "random", random_probability=1.0, generator=generator)
    words = (original != 0) & (original != tokenizer.sot_token_id) & (original != tokenizer.eot_token_id)
    assert torch.equal(labels != IGNORE_INDEX, words)
    n = words.sum().item()
    to_mask = (masked[words] == mask_token_id(tokenizer)).sum().item() / n
    kept = (masked[words] == original[words]).sum().item() / n
    assert 0.75 < to_mask < 0.85
    assert 0.06 < kept < 0.14
    assert ((masked > 0) & (masked < tokenizer.sot_token_id))[words].all()


def test_mask_captions_rejects_bad_arguments(tokenizer):
    with pytest.raises(ValueError, match="needs keywords"):
        mask_captions(["a pond"], tokenizer, "keyword")
    with pytest.raises(ValueError, match="unknown mask mode"):
        mask_captions(["a pond"], tokenizer, "words")
    with pytest.raises(ValueError, match="keyword_probability"):
        mask_captions(["a pond"], tokenizer, "keyword", {"pond"}, keyword_probability=1.5)
    with pytest.raises(TypeError, match="SimpleTokenizer"):
        mask_captions(["a pond"], lambda texts: None, "random")
