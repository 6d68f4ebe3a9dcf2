"""PyTorch datasets over a :class:`CaptionCorpus`: (image, caption) pairs for training, images for evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from rsitr.data.errors import DataError
from rsitr.data.records import CaptionCorpus

ImageTransform = Callable[[Image.Image], torch.Tensor]
_CORRUPT_FIX = ("re-download or re-export the image (RGB JPEG/PNG/TIFF; convert multi-band GeoTIFFs to RGB first), "
                "or remove its entry from the caption file; `verify_images(corpus)` lists every bad image")
# What PIL raises on bad image data (UnidentifiedImageError is an OSError; broken PNG chunks a SyntaxError).
_PIL_ERRORS = (OSError, SyntaxError, ValueError)


def open_rgb(path: Path, entry: str | None = None) -> Image.Image:
    """Open an image with PIL as RGB; a missing, truncated or unreadable file raises :class:`DataError`."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError as err:
        raise DataError("image file not found", path=path, entry=entry,
                        fix="restore the file or remove its entry from the caption file") from err
    except _PIL_ERRORS as err:
        raise _corrupt(path, entry, err) from err


def verify_images(corpus: CaptionCorpus, progress: bool = False) -> list[DataError]:
    """Check every image of ``corpus``: a decode as the datasets do it, then PIL's ``verify`` (checksums).

    ``verify`` alone is not enough: it skips pixel data and hardly checks JPEGs, so a truncated JPEG
    passes it. Returns one :class:`DataError` per bad image (empty when all are fine), so that all of
    them can be reported, or removed, in one go.
    """
    problems = []
    for index, record in enumerate(tqdm(corpus.images, desc=f"verify {corpus.name}", disable=not progress)):
        entry = f"image {index} of {corpus.name}"
        try:
            open_rgb(record.path, entry)
            with Image.open(record.path) as image:
                image.verify()
        except DataError as err:
            problems.append(err)
        except _PIL_ERRORS as err:
            problems.append(_corrupt(record.path, entry, err))
    return problems


def _corrupt(path: Path, entry: str | None, err: Exception) -> DataError:
    return DataError(f"corrupt or unreadable image ({err})", path=path, entry=entry, fix=_CORRUPT_FIX)


class ImageDataset(Dataset):
    """Each image of a corpus once: ``{"image": tensor, "image_id": int}`` (for encoding at evaluation).

    ``load``, when given, replaces decoding and ``transform``: it returns an image's tensor by path (a locked
    image tower's cached feature map, see :mod:`rsitr.models.image_cache`)."""

    def __init__(self, corpus: CaptionCorpus, transform: ImageTransform,
                 load: Callable[[Path], torch.Tensor] | None = None) -> None:
        self.corpus = corpus
        self.transform = transform
        self.load = load

    def __len__(self) -> int:
        return len(self.corpus.images)

    def load_image(self, image_id: int) -> torch.Tensor:
        record = self.corpus.images[image_id]
        if self.load is not None:
            return self.load(record.path)
        return self.transform(open_rgb(record.path, entry=f"image {image_id} of {self.corpus.name}"))

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.load_image(index), "image_id": index}


class PairDataset(ImageDataset):
    """One item per (image, caption) pair: ``{"image", "caption", "image_id", "caption_id"}``.

    ``image_id`` indexes ``corpus.images``; ``caption_id`` indexes ``corpus.captions`` and is the stable
    pair id (the EBA similarity bank is keyed by it).
    """

    def __init__(self, corpus: CaptionCorpus, transform: ImageTransform,
                 load: Callable[[Path], torch.Tensor] | None = None) -> None:
        super().__init__(corpus, transform, load)
        self.captions = corpus.captions
        self.caption_image = corpus.caption_image

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.caption_image[index]
        return {"image": self.load_image(image_id), "caption": self.captions[index], "image_id": image_id,
                "caption_id": index}


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images ``[B, C, H, W]``, keep captions as a list of str, ids as LongTensors ``[B]``."""
    collated: dict[str, Any] = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        if isinstance(values[0], torch.Tensor):
            collated[key] = torch.stack(values)
        elif isinstance(values[0], int):
            collated[key] = torch.tensor(values, dtype=torch.long)
        else:
            collated[key] = values
    return collated


class ImageFileDataset(Dataset):
    """Image files by path, for encoding: ``{"image": tensor or None, "index": int, "error": str or None}``.

    An unreadable file gives ``image=None`` and its error message (a string survives DataLoader workers
    whole) instead of raising, so that one bad file among
    thousands is skipped and counted (see :func:`collate_readable`) rather than stopping the run.
    """

    def __init__(self, paths: list[Path], transform: ImageTransform) -> None:
        self.paths = paths
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            return {"image": self.transform(open_rgb(self.paths[index])), "index": index, "error": None}
        except DataError as err:
            return {"image": None, "index": index, "error": str(err)}


def collate_readable(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the readable images of an :class:`ImageFileDataset` batch; keep the errors of the others.

    Returns ``{"image": [K, C, H, W] or None, "index": LongTensor [K], "errors": {index: message}}``.
    """
    readable = [item for item in batch if item["image"] is not None]
    return {"image": torch.stack([item["image"] for item in readable]) if readable else None,
            "index": torch.tensor([item["index"] for item in readable], dtype=torch.long),
            "errors": {item["index"]: item["error"] for item in batch if item["image"] is None}}
