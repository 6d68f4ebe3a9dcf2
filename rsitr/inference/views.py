"""Test-time orientation averaging, the one step every image encoder runs (aerial images have no "up").

:func:`average_views` is written once for both kinds of batch: a preprocessed torch batch
(:func:`rsitr.inference.images.encode_oriented`: ``rsitr eval``, ``embed``, ``classify``) and a list of PIL chips on
a runtime's towers (:meth:`rsitr.inference.encoder.Encoder.encode_images`: the index and its queries). It imports
no torch: the caller brings the batch's own ``orient`` and ``unit``.
"""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

Batch = TypeVar("Batch")
Vectors = TypeVar("Vectors")
Tokens = TypeVar("Tokens")


def average_views(encode: Callable[[Batch], tuple[Vectors, Tokens]], images: Batch, views: Sequence[int],
                  orient: Callable[[Batch, int], Batch], unit: Callable[[Vectors], Vectors]
                  ) -> tuple[Vectors, Tokens]:
    """``encode(images)`` averaged over the orientations ``views`` (:data:`rsitr.data.augment.ORIENTATION_COUNTS`).

    The global embedding is the mean of the unit (``unit``) global embeddings of ``images`` in each orientation
    (``orient(images, view)``); the patch tokens are those of the first view, in its own cell order (local scores
    compare cells as they lie). One view is ``encode`` itself, unnormalised."""
    first_global, first_tokens = encode(orient(images, views[0]) if views[0] else images)
    if len(views) == 1:
        return first_global, first_tokens
    total = unit(first_global)
    for view in views[1:]:
        total = total + unit(encode(orient(images, view))[0])
    return total / len(views), first_tokens
