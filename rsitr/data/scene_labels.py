"""CMER's scene labels as metadata: readable class names and prompt-style caption augmentation.

RSICD and RSITMD name images ``<scene>_<n>.jpg``, NWPU-Captions groups them by scene class, and a CSV may
carry a ``scene`` column (see :mod:`rsitr.data.loaders`); the loaders keep that class on each
:class:`~rsitr.data.records.ImageRecord`. Two uses:

- training: :func:`augment_caption` puts the class into some captions as a prompt ("an aerial image of a
  dense residential area. <caption>"), so text and image embeddings learn the scene as shared context;
- retrieval: :mod:`rsitr.retrieval.scene_prior` re-ranks by the scene a text speaks of.
"""

from __future__ import annotations

import random
import re

# RSICD and RSITMD write compound class names as one word; the rest split on "_" or "-" (NWPU) by themselves.
COMPOUND_SCENES = {
    "bareland": "bare land", "baseballfield": "baseball field", "denseresidential": "dense residential area",
    "mediumresidential": "medium residential area", "sparseresidential": "sparse residential area",
    "railwaystation": "railway station", "storagetanks": "storage tanks", "boatwharf": "boat wharf",
    "tenniscourt": "tennis court", "basketballcourt": "basketball court",
    "footballfield": "football field", "golffield": "golf field", "parkinglot": "parking lot",
    # UC Merced Land Use folder names
    "baseballdiamond": "baseball diamond", "golfcourse": "golf course", "mobilehomepark": "mobile home park",
}

SCENE_PROMPTS = (
    "an aerial image of {scene}. {caption}",
    "a remote sensing image of {scene}: {caption}",
    "{caption} (scene: {scene})",
)


def scene_phrase(scene: str) -> str:
    """Readable words for a class name: ``denseresidential`` -> ``dense residential area``, ``golf_course`` -> ``golf course``,
    ``BaseballField`` (AID) -> ``baseball field``."""
    key = scene.strip().lower()
    if key in COMPOUND_SCENES:
        return COMPOUND_SCENES[key]
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", scene.strip())
    return re.sub(r"[_\-\s]+", " ", words).strip().lower()


def augment_caption(caption: str, scene: str | None, prob: float, rng: random.Random) -> str:
    """With probability ``prob`` (drawn from ``rng``, so a seeded run repeats), wrap ``caption`` in a scene prompt.

    Captions without a scene are returned unchanged and draw nothing from ``rng``.
    """
    if not scene or prob <= 0:
        return caption
    if rng.random() >= prob:
        return caption
    template = rng.choice(SCENE_PROMPTS)
    return template.format(scene=scene_phrase(scene), caption=caption.strip())
