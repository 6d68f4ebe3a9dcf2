"""Encode a corpus split once, score it every configured way, and measure each stage.

Encoding (images and captions through the model) and scoring (similarity matrices, re-ranking) are timed
separately: the first is what a GPU speeds up, the second is what the retrieval methods change.
"""

from __future__ import annotations

import functools

import time
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from rsitr.config import EvalConfig
from rsitr.data import CaptionCorpus, ImageDataset, collate
from rsitr.evaluate.metrics import recall_metrics
from rsitr.models import ImageFeatures, ScoringRecipe, TextFeatures
from rsitr.inference.images import encode_image_batches
from rsitr.models.encoding import encode_captions
from rsitr.retrieval.sar import sar_label, sar_rerank
from rsitr.retrieval.scene_prior import scene_prior, scene_query_prompts, scene_vocabulary, text_scene_probabilities
from rsitr.similarity import fuse, global_similarity, local_similarity


SCENE_PRIOR_LABEL = "scene prior (uses gallery scene labels)"
"""Row label of CMER's scene prior: it reads the gallery's ground-truth classes, which the standard protocol does not
give a retrieval model, so its numbers are not comparable with the other rows."""


@dataclass
class SceneEstimate:
    """CMER scene metadata of an encoded split: each image's scene class and each caption's scene distribution."""

    names: list[str]
    image_scenes: torch.Tensor  # [N] index into names, -1 = unknown
    text_scene_probs: torch.Tensor  # [M, S]


@dataclass
class EncodedCorpus:
    image: ImageFeatures
    text: TextFeatures
    caption_image: torch.Tensor
    image_seconds: float
    text_seconds: float
    scenes: SceneEstimate | None = None

    @property
    def seconds(self) -> float:
        return self.image_seconds + self.text_seconds


@dataclass
class Evaluation:
    """Metrics per scoring variant (table rows) and the time each stage took."""

    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


@torch.no_grad()
def encode_corpus(model, corpus: CaptionCorpus, batch_size: int = 128, device: str | torch.device = "cpu",
                  num_workers: int = 0, progress: bool = True, scenes: bool = False,
                  precision: str = "fp32", keep_padding: bool = False,
                  image_views: tuple[int, ...] = (0,)) -> EncodedCorpus:
    """Float32 global and local features of every image and caption, on the CPU, word tokens trimmed of padding.

    The towers run under ``precision`` (see :mod:`rsitr.models.precision`); captions go through
    :func:`rsitr.models.encoding.encode_captions`. ``keep_padding`` keeps every position of the context instead
    (``MethodConfig.local_include_padding``). With ``scenes`` and images that carry scene classes, also the
    captions' zero-shot scene distributions. ``image_views``: orientations each image's global embedding is
    averaged over (:func:`rsitr.inference.images.encode_oriented`). The images go through the one image loop,
    :func:`rsitr.inference.images.encode_image_batches`.
    """
    start = time.perf_counter()
    cache = getattr(model, "image_cache", None)  # a locked image tower's cached features, when they hold the corpus
    load = (functools.partial(cache.features, view=0)  # cached maps are not pixels: orienting them is not the same
            if cache is not None and image_views == (0,) and cache.holds([image.path for image in corpus.images])
            else None)
    loader = DataLoader(ImageDataset(corpus, model.preprocess_val, load), batch_size=batch_size,
                        num_workers=num_workers, collate_fn=collate)
    images = encode_image_batches(model, loader, len(corpus.images), device, precision, image_views,
                                  progress=progress)
    image_seconds = time.perf_counter() - start
    text = encode_captions(model, corpus.captions, batch_size, device, precision, progress, keep_padding)
    return EncodedCorpus(
        image=ImageFeatures(images.embeddings, images.tokens),
        text=text,
        caption_image=torch.as_tensor(corpus.caption_image, dtype=torch.long),
        image_seconds=image_seconds, text_seconds=time.perf_counter() - start - image_seconds,
        scenes=_estimate_scenes(model, corpus, text.global_, device, precision) if scenes else None)


def _estimate_scenes(model, corpus: CaptionCorpus, text_global: torch.Tensor, device: str | torch.device,
                     precision: str) -> SceneEstimate | None:
    names, image_scenes = scene_vocabulary([image.scene for image in corpus.images])
    if not names:
        return None
    prompts = encode_captions(model, scene_query_prompts(names), device=device, precision=precision).global_
    scale = float(model.logit_scale.exp().clamp(max=100))
    return SceneEstimate(names, image_scenes, text_scene_probabilities(text_global, prompts, scale))


def fused_similarity(encoded: EncodedCorpus, recipe: ScoringRecipe) -> torch.Tensor:
    """``[N images, M captions]``: global cosine, fused with local similarity when the model's recipe uses it."""
    sim = global_similarity(encoded.image.global_, encoded.text.global_)
    if recipe.local:
        mask = None if recipe.local_include_padding else encoded.text.mask
        local = local_similarity(encoded.image.tokens, encoded.text.tokens, mask)
        sim = fuse(sim, local, recipe.global_weight, recipe.local_weight)
    return sim


def evaluate_encoded(encoded: EncodedCorpus, recipe: ScoringRecipe, config: EvalConfig,
                     name: str = "model") -> Evaluation:
    """Score encoded features by the model's recipe: the fused matrix, plus SAR, scene-prior and two-stage rows when
    ``config`` enables them."""
    result = Evaluation(timings={"encode_seconds": encoded.seconds, "encode_images_seconds": encoded.image_seconds,
                                 "encode_captions_seconds": encoded.text_seconds})
    start = time.perf_counter()
    sim = fused_similarity(encoded, recipe)
    result.timings["score_seconds"] = time.perf_counter() - start
    result.rows[name] = recall_metrics(sim, encoded.caption_image)
    if config.sar:
        start = time.perf_counter()
        reranked = sar_rerank(sim, top_k=config.sar_top_k, reverse_weight=config.sar_reverse_weight,
                              variant=config.sar_variant)
        result.timings["sar_seconds"] = time.perf_counter() - start
        result.rows[f"{name} + {sar_label(config.sar_variant, config.sar_top_k)}"] = recall_metrics(
            reranked.image_to_text, encoded.caption_image, text_to_image_similarity=reranked.text_to_image)
    if config.scene_prior > 0 and encoded.scenes is not None:
        start = time.perf_counter()
        prior = scene_prior(sim, encoded.scenes.text_scene_probs, encoded.scenes.image_scenes, config.scene_prior)
        result.timings["scene_prior_seconds"] = time.perf_counter() - start
        result.rows[f"{name} + {SCENE_PRIOR_LABEL}"] = recall_metrics(prior, encoded.caption_image)
    if config.two_stage:
        _evaluate_two_stage(encoded, config, name, result)
    return result


def _evaluate_two_stage(encoded: EncodedCorpus, config: EvalConfig, name: str, result: Evaluation) -> None:
    """FTF rows: coarse recall of ``recall_k`` images then fine scoring, and (``config.fine_exhaustive``) fine
    scoring of every pair, the row it approximates."""
    from rsitr.retrieval.ftf_two_stage import exhaustive_fine_similarity, two_stage_similarity

    image, text = encoded.image, encoded.text
    if config.fine_exhaustive:
        start = time.perf_counter()
        exhaustive = exhaustive_fine_similarity(image.global_, image.tokens, text.global_, text.tokens, text.mask)
        result.timings["fine_exhaustive_seconds"] = time.perf_counter() - start
        result.rows[f"{name} FTF fine, exhaustive"] = recall_metrics(exhaustive, encoded.caption_image)
    recall_k = min(config.recall_k, image.global_.shape[0])
    two_stage = two_stage_similarity(image.global_, image.tokens, text.global_, text.tokens, text.mask, recall_k)
    result.timings.update({"two_stage_index_seconds": two_stage.index_seconds,
                           "two_stage_stage1_seconds": two_stage.stage1_seconds,
                           "two_stage_stage2_seconds": two_stage.stage2_seconds})
    result.rows[f"{name} FTF two-stage (K={recall_k})"] = recall_metrics(two_stage.similarity, encoded.caption_image)


def evaluate_model(model, corpus: CaptionCorpus, recipe: ScoringRecipe, config: EvalConfig,
                   device: str | torch.device = "cpu", name: str = "model", progress: bool = True,
                   precision: str = "fp32") -> Evaluation:
    encoded = encode_corpus(model, corpus, config.batch_size, device, progress=progress, scenes=config.scene_prior > 0,
                            precision=precision, keep_padding=recipe.keeps_padding)
    return evaluate_encoded(encoded, recipe, config, name)
