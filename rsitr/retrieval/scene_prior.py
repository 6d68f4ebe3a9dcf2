"""CMER's scene prior: a re-ranking of retrieval scores by the scene each text speaks of (like SAR, after scoring).

:func:`scene_prior` adds to each (image, text) score the probability that the text speaks of the image's scene,
estimated zero-shot from the text's similarity to the scene prompts. Images of unlikely scenes sink, which
narrows the search space without a hard filter. The images' scenes are the gallery's labels
(:mod:`rsitr.data.scene_labels`).
"""

from __future__ import annotations

from typing import Sequence

import torch

from rsitr.data.scene_labels import scene_phrase
from rsitr.similarity import global_similarity

SCENE_QUERY_PROMPT = "an aerial image of {scene}"


def scene_vocabulary(scenes: Sequence[str | None]) -> tuple[list[str], torch.Tensor]:
    """Sorted distinct class names and each item's index into them (``-1`` where the scene is unknown)."""
    names = sorted({s for s in scenes if s})
    position = {name: index for index, name in enumerate(names)}
    return names, torch.tensor([position[s] if s else -1 for s in scenes], dtype=torch.long)


def scene_query_prompts(names: Sequence[str]) -> list[str]:
    """The texts whose embeddings stand for each scene class when estimating a query's scene."""
    return [SCENE_QUERY_PROMPT.format(scene=scene_phrase(name)) for name in names]


def text_scene_probabilities(text_global: torch.Tensor, prompt_global: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """``[M, S]`` zero-shot scene distribution of each text: softmax of its scaled cosine to each scene prompt."""
    return (logit_scale * global_similarity(text_global.float(), prompt_global.float())).softmax(dim=-1)


def scene_prior(similarity: torch.Tensor, text_scene_probs: torch.Tensor, image_scenes: torch.Tensor,
                weight: float) -> torch.Tensor:
    """``similarity [N images, M texts] + weight * P(text m speaks of image n's scene)``.

    ``image_scenes [N]`` indexes the columns of ``text_scene_probs [M, S]``; an image of unknown scene (-1)
    gets the uninformative ``1 / S``, so it is neither favoured nor pushed down.
    """
    if similarity.shape != (image_scenes.shape[0], text_scene_probs.shape[0]):
        raise ValueError(f"similarity {tuple(similarity.shape)} does not match {image_scenes.shape[0]} images x "
                         f"{text_scene_probs.shape[0]} texts")
    n_scenes = text_scene_probs.shape[1]
    uniform = torch.full((text_scene_probs.shape[0], 1), 1.0 / n_scenes, dtype=text_scene_probs.dtype)
    table = torch.cat([text_scene_probs, uniform], dim=1)  # column S = unknown
    columns = torch.where(image_scenes >= 0, image_scenes, torch.full_like(image_scenes, n_scenes))
    return similarity + weight * table[:, columns].T.to(similarity.dtype)
