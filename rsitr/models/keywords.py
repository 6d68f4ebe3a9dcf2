"""KER (EBAKER's Keyword Explicit Reasoning): keyword statistics and caption masking.

KER trains an auxiliary masked-language-modelling task: the *keywords* of a caption are masked and
predicted from the image. This module

* counts words over the training captions of each dataset, drops stop words, keeps each dataset's
  ``top_k`` most frequent words and merges the lists (:func:`build_keywords`, :class:`KeywordVocabulary`).
  The default stop list is :data:`SHORT_STOP_WORDS` (function words only): the counts, sizes and spatial
  words at the top of remote-sensing captions (two, many, near, beside, large, area) are what KER should
  learn to predict, and the ``stop-words`` package's 1,333-word list (``"full"``) removes them;
* masks captions for the MLM task, either every keyword occurrence (``"keyword"``) or IRRA-style random
  15 % of the word tokens (``"random"``) (:func:`mask_captions`).

Masking works on OpenCLIP's ``SimpleTokenizer`` (CLIP BPE). The tokenizer first splits the cleaned text
into pre-tokens with its own regex (``\\p{L}+`` letter runs, single digits, punctuation runs) and then
BPE-encodes each pre-token into one or more ids. Keywords are letter runs too (:data:`WORD_PATTERN`), so a
keyword occurrence is always one whole pre-token and masking it masks all of its BPE ids.

Keyword masking also works on a Hugging Face fast tokenizer (OpenCLIP's ``HFTokenizer``, e.g. MiniLM's
WordPiece): its ``word_ids`` say which word pieces each word became, and every piece of a keyword is masked
with the tokenizer's own ``[MASK]`` id.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Collection, Iterable, Literal, Mapping, Sequence

import torch
from stop_words import get_stop_words

from rsitr._compat import open_clip

WORD_PATTERN = re.compile(r"[^\W\d_]+")
"""Runs of letters (Unicode word characters minus digits and ``_``): the units the CLIP tokenizer's
``\\p{L}+`` pre-tokenizer produces, so that every keyword can be found as a whole pre-token."""

IGNORE_INDEX = -100
"""Label of positions that are not masked (``torch.nn.functional.cross_entropy``'s default ignore_index)."""

SHORT_STOP_WORDS = frozenset("""
a an the
of in on at to with by for from into onto as about than
and or but nor so
is are was were be been being am has have had do does did can could will would may might shall should must
it its this that these those there which who whose what
""".split())
"""Articles, non-spatial prepositions, conjunctions, auxiliaries and a few pronouns: the default KER stop list.

Spatial prepositions (near, beside, around, next, between, behind, along ...), counts and sizes are not in it."""

STOP_LISTS = ("short", "full")

KEYWORD_FILE_VERSION = 1
MaskMode = Literal["keyword", "random"]


def count_words(captions: Iterable[str], stop_words: Collection[str], min_length: int = 2) -> Counter[str]:
    """Lower-cased word counts of ``captions`` without stop words and words shorter than ``min_length``.

    ``min_length`` drops single letters such as the ``s`` of ``building's``, which the CLIP tokenizer keeps
    in its ``'s`` pre-token and which therefore could never be masked.
    """
    counts: Counter[str] = Counter()
    for caption in captions:
        counts.update(word for word in WORD_PATTERN.findall(caption.lower())
                      if len(word) >= min_length and word not in stop_words)
    return counts


def top_words(counts: Mapping[str, int], top_k: int) -> list[tuple[str, int]]:
    """The ``top_k`` most frequent words with their counts; equal counts in alphabetical order."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top_k]


@dataclass(frozen=True)
class KeywordVocabulary:
    """Merged keyword list of several datasets, with each dataset's top words and counts.

    ``words`` holds the datasets' top-word lists concatenated in dataset-name order, each word kept at its
    first occurrence. ``per_dataset[name]`` is that dataset's ``[(word, count), ...]`` top list.
    """

    words: tuple[str, ...]
    top_k: int
    per_dataset: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    caption_counts: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self.word_set

    @cached_property
    def word_set(self) -> frozenset[str]:
        return frozenset(self.words)

    def save(self, path: str | Path) -> None:
        payload = {
            "version": KEYWORD_FILE_VERSION,
            "top_k": self.top_k,
            "words": list(self.words),
            "datasets": {name: {"captions": self.caption_counts.get(name, 0),
                                "top": [[word, count] for word, count in top]}
                         for name, top in self.per_dataset.items()},
        }
        Path(path).write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> KeywordVocabulary:
        try:
            payload = json.loads(Path(path).read_text(encoding="utf-8"))
            version = payload["version"]
            if version != KEYWORD_FILE_VERSION:
                raise ValueError(f"version {version}, expected {KEYWORD_FILE_VERSION}")
            datasets = payload["datasets"]
            return cls(words=tuple(str(w) for w in payload["words"]), top_k=int(payload["top_k"]),
                       per_dataset={name: [(str(w), int(c)) for w, c in d["top"]] for name, d in datasets.items()},
                       caption_counts={name: int(d["captions"]) for name, d in datasets.items()})
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a readable KER keyword file ({err!r}); rebuild it with "
                             f"rsitr.models.keywords.build_keywords(...).save(path)") from err


def stop_list(name: str) -> frozenset[str]:
    """The stop words of ``name``: ``"short"`` (:data:`SHORT_STOP_WORDS`) or ``"full"`` (``stop-words``' English list)."""
    if name == "short":
        return SHORT_STOP_WORDS
    if name == "full":
        return frozenset(get_stop_words("en"))
    raise ValueError(f"unknown stop list {name!r}; use one of {STOP_LISTS}")


def build_keywords(captions_by_dataset: Mapping[str, Sequence[str]], top_k: int = 512,
                   stop_words: Collection[str] | None = None, min_length: int = 2) -> KeywordVocabulary:
    """Count words per dataset, keep each dataset's ``top_k`` and merge them (EBAKER uses ``top_k=512``).

    ``stop_words`` defaults to :data:`SHORT_STOP_WORDS`. Datasets are merged in sorted name order so that the
    result does not depend on the order of the mapping.

    Known difference from EBAKER's reference code, not copied: its keyword matching is case-sensitive and its
    mask lands one token *before* each keyword; here words are lower-cased and every BPE id of the keyword
    itself is masked (:func:`tokenize_with_words`).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    stop = SHORT_STOP_WORDS if stop_words is None else frozenset(stop_words)
    per_dataset = {name: top_words(count_words(captions_by_dataset[name], stop, min_length), top_k)
                   for name in sorted(captions_by_dataset)}
    merged = dict.fromkeys(word for top in per_dataset.values() for word, _ in top)
    return KeywordVocabulary(words=tuple(merged), top_k=top_k, per_dataset=per_dataset,
                             caption_counts={name: len(captions_by_dataset[name]) for name in per_dataset})


def mask_token_id(tokenizer: open_clip.tokenizer.SimpleTokenizer | open_clip.tokenizer.HFTokenizer) -> int:
    """The id used as ``[MASK]``: a Hugging Face tokenizer's own mask token; for CLIP's BPE, as follows.

    The id used as ``[MASK]``: the BPE token of a word-final space byte (``"Ġ</w>"``, 476 in CLIP).

    CLIP's 49408-token vocabulary has no mask token, and the id must not be padding (0), start
    (49406) or end (49407) -- the text tower pools at the argmax id, which must stay the end token. The
    pre-tokenizer never lets whitespace into a pre-token and no BPE merge contains the space byte, so
    this id is never produced from any text: it cannot collide with a real word, and its embedding,
    untouched by CLIP's pretraining, is a free slot that KER training turns into a mask embedding.
    """
    if isinstance(tokenizer, open_clip.tokenizer.HFTokenizer):
        return int(tokenizer.tokenizer.mask_token_id)
    return tokenizer.encoder[tokenizer.byte_encoder[ord(" ")] + "</w>"]


@dataclass(frozen=True)
class TokenizedCaption:
    """Token ids of one caption as the tokenizer writes them, and the id span of each letter-run word.

    ``words`` lists ``(word, start, end)``: the word's BPE ids are ``ids[start:end]``. Words cut by the
    context-length truncation are left out, so every listed word lies wholly before the end token.
    """

    ids: list[int]
    words: list[tuple[str, int, int]]


def _require_maskable_tokenizer(tokenizer: object):
    if isinstance(tokenizer, open_clip.tokenizer.HFTokenizer):
        return tokenizer
    return _require_simple_tokenizer(tokenizer)


def _require_simple_tokenizer(tokenizer: object) -> open_clip.tokenizer.SimpleTokenizer:
    if not isinstance(tokenizer, open_clip.tokenizer.SimpleTokenizer) or tokenizer.reduction_fn is not None:
        raise TypeError(f"KER masking needs OpenCLIP's SimpleTokenizer (CLIP BPE) without a reduction mask, "
                        f"got {type(tokenizer).__name__}; use a CLIP model whose tokenizer is SimpleTokenizer")
    return tokenizer


def tokenize_with_words(caption: str, tokenizer) -> TokenizedCaption:
    """Tokenize like ``tokenizer([caption])`` while recording which ids each word became.

    A Hugging Face tokenizer (OpenCLIP's ``HFTokenizer``) reports it itself (``word_ids``, character offsets);
    for CLIP's ``SimpleTokenizer``:

    Runs the tokenizer's own steps (``clean_fn``, pre-token regex ``pat``, byte encoding, ``bpe``) one
    pre-token at a time, then truncates as ``SimpleTokenizer.__call__`` does (keep ``context_length``
    ids, the last one replaced by the end token).
    """
    if isinstance(tokenizer, open_clip.tokenizer.HFTokenizer):
        return _hf_tokenize_with_words(caption, tokenizer)
    ids = [tokenizer.sot_token_id]
    words = []
    for piece in tokenizer.pat.findall(tokenizer.clean_fn(caption)):
        byte_piece = "".join(tokenizer.byte_encoder[b] for b in piece.encode("utf-8"))
        piece_ids = [tokenizer.encoder[bpe] for bpe in tokenizer.bpe(byte_piece).split(" ")]
        if WORD_PATTERN.fullmatch(piece):
            words.append((piece, len(ids), len(ids) + len(piece_ids)))
        ids.extend(piece_ids)
    ids.append(tokenizer.eot_token_id)
    if len(ids) > tokenizer.context_length:
        ids = ids[:tokenizer.context_length]
        ids[-1] = tokenizer.eot_token_id
    last_word_position = len(ids) - 1
    return TokenizedCaption(ids, [(w, s, e) for w, s, e in words if e <= last_word_position])


def _hf_tokenize_with_words(caption: str, tokenizer: open_clip.tokenizer.HFTokenizer) -> TokenizedCaption:
    caption = tokenizer.clean_fn(caption)  # as HFTokenizer.__call__ does (e.g. a curly apostrophe straightened)
    encoding = tokenizer.tokenizer(caption, truncation=True, max_length=tokenizer.context_length,
                                   return_offsets_mapping=True)
    ids, spans = list(encoding["input_ids"]), {}
    for position, (word, (start, end)) in enumerate(zip(encoding.word_ids(), encoding["offset_mapping"])):
        if word is not None:
            first, _, char_start, _ = spans.get(word, (position, position, start, end))
            spans[word] = (first, position + 1, char_start, end)
    truncated = len(ids) >= tokenizer.context_length  # the last word may have lost pieces: never masked
    last = max(spans) if spans else None
    words = [(caption[c0:c1].lower(), p0, p1) for word, (p0, p1, c0, c1) in spans.items()
             if WORD_PATTERN.fullmatch(caption[c0:c1]) and not (truncated and word == last)]
    return TokenizedCaption(ids, words)


def _keyword_positions(caption: TokenizedCaption, keywords: frozenset[str], probability: float,
                       max_words: int | None, generator: torch.Generator | None) -> list[int]:
    """Token positions of the keyword occurrences chosen for masking in one caption."""
    spans = [(start, end) for word, start, end in caption.words if word in keywords]
    if probability < 1.0:
        draws = torch.rand(len(spans), generator=generator).tolist()
        spans = [span for span, draw in zip(spans, draws) if draw < probability]
    if max_words is not None and len(spans) > max_words:
        chosen = torch.randperm(len(spans), generator=generator)[:max_words].sort().values.tolist()
        spans = [spans[i] for i in chosen]
    return [position for start, end in spans for position in range(start, end)]


def mask_captions(captions: Sequence[str], tokenizer: open_clip.tokenizer.SimpleTokenizer, mode: MaskMode,
                  keywords: KeywordVocabulary | Collection[str] | None = None, *,
                  keyword_probability: float = 1.0, max_masked_words: int | None = None,
                  random_probability: float = 0.15,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked token ids ``[B, L]`` and MLM labels ``[B, L]`` (original id where masked, else -100).

    ``mode="keyword"`` (KER) masks every BPE id of every occurrence of a word in ``keywords``, replacing
    each with :func:`mask_token_id`. ``keyword_probability`` keeps each occurrence with that probability
    and ``max_masked_words`` caps the masked occurrences per caption (a random subset, in caption order).

    ``mode="random"`` (IRRA's IRR) picks each word token (never start, end or padding) with probability
    ``random_probability``; a picked token becomes the mask id with probability 0.8, a random ordinary
    token (ids ``1 .. start-1``; 0 is the padding id) with 0.1, and stays itself with 0.1 (BERT's rule).
    It picks BPE tokens independently, as IRRA does, not whole words.

    All sampling draws from ``generator``, so a seeded generator reproduces the masks. Keyword masking takes
    CLIP's ``SimpleTokenizer`` or a Hugging Face ``HFTokenizer``; random masking CLIP's only.
    """
    if mode == "keyword":
        tokenizer = _require_maskable_tokenizer(tokenizer)
        if keywords is None:
            raise ValueError("mode='keyword' needs keywords (a KeywordVocabulary from build_keywords)")
        if not 0.0 <= keyword_probability <= 1.0:
            raise ValueError(f"keyword_probability must be in [0, 1], got {keyword_probability}")
        if max_masked_words is not None and max_masked_words < 0:
            raise ValueError(f"max_masked_words must be >= 0 or None, got {max_masked_words}")
        keyword_set = keywords.word_set if isinstance(keywords, KeywordVocabulary) else frozenset(keywords)
        return _mask_keywords(captions, tokenizer, keyword_set, keyword_probability, max_masked_words, generator)
    if mode == "random":
        tokenizer = _require_simple_tokenizer(tokenizer)
        if not 0.0 <= random_probability <= 1.0:
            raise ValueError(f"random_probability must be in [0, 1], got {random_probability}")
        return _mask_random(captions, tokenizer, random_probability, generator)
    raise ValueError(f"unknown mask mode {mode!r}; use 'keyword' or 'random'")


def _mask_keywords(captions: Sequence[str], tokenizer: open_clip.tokenizer.SimpleTokenizer,
                   keywords: frozenset[str], probability: float, max_words: int | None,
                   generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    token_ids = tokenizer(list(captions))
    labels = torch.full_like(token_ids, IGNORE_INDEX)
    for row, caption in enumerate(captions):
        tokenized = tokenize_with_words(caption, tokenizer)
        if tokenized.ids != token_ids[row, :len(tokenized.ids)].tolist():
            raise RuntimeError(f"word alignment disagrees with the tokenizer on caption {row}: {caption!r}")
        positions = _keyword_positions(tokenized, keywords, probability, max_words, generator)
        labels[row, positions] = token_ids[row, positions]
    masked = torch.where(labels != IGNORE_INDEX, mask_token_id(tokenizer), token_ids)
    return masked, labels


def _mask_random(captions: Sequence[str], tokenizer: open_clip.tokenizer.SimpleTokenizer, probability: float,
                 generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    token_ids = tokenizer(list(captions))
    special = (token_ids == 0) | (token_ids == tokenizer.sot_token_id) | (token_ids == tokenizer.eot_token_id)
    picked = (torch.rand(token_ids.shape, generator=generator) < probability) & ~special
    labels = torch.where(picked, token_ids, IGNORE_INDEX)
    action = torch.rand(token_ids.shape, generator=generator)
    random_ids = torch.randint(1, tokenizer.sot_token_id, token_ids.shape, generator=generator)
    masked = torch.where(picked & (action < 0.8), mask_token_id(tokenizer), token_ids)
    masked = torch.where(picked & (action >= 0.8) & (action < 0.9), random_ids, masked)
    return masked, labels
