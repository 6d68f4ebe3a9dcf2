"""A locked image tower's features, computed once per image and orientation and kept on disk (LiT's locked tower,
cached, as :mod:`rsitr.models.text_cache` does it for text).

With the first stages of a pretrained image tower frozen, their output for an image in a given orientation never
changes, so training need not run them: :class:`ImageFeatureCache` holds that output (fp16 feature maps, the input
of the first unlocked stage) for each image in each of the orientations computed (the 8 of the dihedral group D4,
see :func:`rsitr.data.augment.orient`; the training images in several, the others in their own), and a training
batch draws one cached orientation per image where pixels and a random orientation were drawn before.
:meth:`RetrievalCLIP.encode_image <rsitr.models.clip.RetrievalCLIP.encode_image>` runs only the unlocked stages on
such features.

A view's file is named by two keys: one over the frozen stages' weights, the preprocessing and the orientation, one
over the image files. Another tower's cache is never reused; a view computed for a larger image list (RSICD + UC
Merced) serves any part of it (RSICD alone): a run computes only the images no finished view holds. Computing a
view is resumable: it is written in chunks, and a run that was stopped starts from the last chunk written.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from rsitr.atomic import write_atomic
from rsitr.data.augment import ORIENTATIONS, orient
from rsitr.data.dataset import open_rgb
from rsitr.paths import cache_folder

CACHE_FORMAT = "rsitr-image-cache-v2"
CHUNK = 1024


def cache_dir() -> Path:
    """``$RSITR_CACHE_DIR/image-features``, default ``~/.cache/rsitr/image-features``
    (:func:`~rsitr.paths.cache_folder`)."""
    return cache_folder("image-features")


class _Oriented(Dataset):
    def __init__(self, paths: Sequence[Path], view: int, transform) -> None:
        self.paths, self.view, self.transform = list(paths), view, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(orient(open_rgb(self.paths[index]), self.view))


class ImageFeatureCache:
    """Feature maps ``[C, H, W]`` (fp16) of the frozen stages, by image path and orientation (0-7)."""

    def __init__(self, cut: int, views: dict[int, tuple[list[str], torch.Tensor]]) -> None:
        self.cut = cut
        self._views = {view: ({path: row for row, path in enumerate(paths)}, features)
                       for view, (paths, features) in views.items()}
        self._of: dict[str, list[int]] = {}
        for view, (rows, _) in sorted(self._views.items()):
            for path in rows:
                self._of.setdefault(path, []).append(view)

    @property
    def channels(self) -> int:
        return int(next(iter(self._views.values()))[1].shape[1])

    def holds(self, paths: Sequence[Path], view: int = 0) -> bool:
        """True when every image of ``paths`` is cached in orientation ``view``."""
        rows = self._views.get(view, ({}, None))[0]
        return all(os.path.abspath(path) in rows for path in paths)

    def features(self, path: Path, view: int = 0) -> torch.Tensor:
        """The float32 feature map of ``path`` in orientation ``view``."""
        rows, features = self._views[view]
        return features[rows[os.path.abspath(path)]].float()

    def random_view(self, path: Path) -> torch.Tensor:
        """The feature map of ``path`` in one of its cached orientations, drawn uniformly (``random``'s state)."""
        views = self._of[os.path.abspath(path)]
        return self.features(path, views[random.randrange(len(views))])

    @classmethod
    def for_images(cls, model, paths_by_view: dict[int, Sequence[Path]], directory: str | Path | None = None,
                   batch_size: int = 64, num_workers: int = 1, precision: str = "bf16",
                   progress: bool = True) -> ImageFeatureCache:
        """The cache of ``model``'s frozen image stages (up to :attr:`RetrievalCLIP.image_cache_cut`) for each
        orientation's images: read from ``directory`` where a view of the same key is there, else computed (in
        resumable chunks) and written there."""
        directory = Path(directory) if directory is not None else cache_dir()
        cut = model.image_cache_cut
        views = {}
        for view, paths in paths_by_view.items():
            if not 0 <= view < ORIENTATIONS:
                raise ValueError(f"orientation {view} is not one of 0..{ORIENTATIONS - 1}")
            names = [os.path.abspath(path) for path in paths]
            tower = tower_key(model, cut, view)
            views[view] = (names, _gather(model, cut, view, names, directory, tower, batch_size, num_workers,
                                          precision, progress))
        return cls(cut, views)


def tower_key(model, cut: int, view: int) -> str:
    """SHA-256 over the frozen stages' weights, the preprocessing, the stage cut and the orientation."""
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{cut}|{view}|{model.preprocess_val}".encode())
    for name, tensor in model.frozen_image_state(cut).items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def paths_key(paths: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.encode("utf-8") + b"\0")
    return digest.hexdigest()


def _gather(model, cut: int, view: int, names: list[str], directory: Path, tower: str, batch_size: int,
            num_workers: int, precision: str, progress: bool) -> torch.Tensor:
    """``names``' features in their order: rows of finished views of the same tower where they hold them, the
    others computed (and kept as a view of their own)."""
    found: dict[str, torch.Tensor] = {}
    for listing in sorted(directory.glob(f"{tower[:32]}-*.paths.json")):
        try:
            held = json.loads(listing.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(held, list) or not set(names).difference(found).intersection(held):
            continue
        stored = _read(listing.with_name(listing.name.removesuffix(".paths.json") + ".pt"), tower, len(held))
        if stored is not None:
            for row, path in enumerate(held):
                found.setdefault(path, stored[row])
    missing = [name for name in names if name not in found]
    if missing:
        computed = _load_or_compute(model, cut, view, missing, directory, tower, batch_size, num_workers, precision,
                                    progress)
        found.update(zip(missing, computed))
    return torch.stack([found[name] for name in names])


def _read(final: Path, tower: str, count: int) -> torch.Tensor | None:
    """A finished view file's features when it is whole and of ``tower`` with ``count`` rows, else None."""
    if not final.is_file():
        return None
    stored = torch.load(final, map_location="cpu", weights_only=True)
    features = stored.get("features")
    if stored.get("format") != CACHE_FORMAT or stored.get("key") != tower or features is None \
            or len(features) != count:
        return None
    return features


def _load_or_compute(model, cut: int, view: int, paths: list[str], directory: Path, tower: str, batch_size: int,
                     num_workers: int, precision: str, progress: bool) -> torch.Tensor:
    stem = directory / f"{tower[:32]}-{paths_key(paths)[:32]}"
    final = stem.with_suffix(".pt")
    stored = _read(final, tower, len(paths))
    if stored is not None:
        return stored
    started = final.stat().st_mtime_ns if final.is_file() else 0
    chunks = []
    bar = tqdm(total=len(paths), desc=f"cache image features (orientation {view})", disable=not progress)
    for number, start in enumerate(range(0, len(paths), CHUNK)):
        # another process computing the same view may finish it (and remove the chunks) while this one runs
        if final.is_file() and final.stat().st_mtime_ns != started:
            stored = _read(final, tower, len(paths))
            if stored is not None:
                bar.close()
                _remove_chunks(stem)
                return stored
        chunk = _read_chunk(stem / f"{number:05d}.pt")
        if chunk is None:
            chunk = _compute(model, cut, view, paths[start:start + CHUNK], batch_size, num_workers, precision)
            stem.mkdir(parents=True, exist_ok=True)
            write_atomic(stem / f"{number:05d}.pt", lambda temporary, chunk=chunk: torch.save(chunk, temporary))
        chunks.append(chunk)
        bar.update(len(chunk))
    bar.close()
    features = torch.cat(chunks)
    write_atomic(final, lambda temporary: torch.save({"format": CACHE_FORMAT, "key": tower, "features": features},
                                                     temporary))
    # the list last: a listing names only a finished view
    write_atomic(stem.with_name(stem.name + ".paths.json"),
                 lambda temporary: Path(temporary).write_text(json.dumps(paths)))
    _remove_chunks(stem)
    return features


def _remove_chunks(stem: Path) -> None:
    """A finished view's chunk folder, gone (another process finishing the same view may have removed it first)."""
    for part in stem.glob("*.pt"):
        part.unlink(missing_ok=True)
    try:
        stem.rmdir()
    except OSError:  # already removed, or another process's next chunk is being written into it
        pass


def _read_chunk(part: Path) -> torch.Tensor | None:
    """A chunk written earlier (by a stopped run, or by another process computing the same view), else None."""
    try:
        return torch.load(part, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        return None


@torch.no_grad()
def _compute(model, cut: int, view: int, paths: list[str], batch_size: int, num_workers: int,
             precision: str) -> torch.Tensor:
    loader = DataLoader(_Oriented([Path(p) for p in paths], view, model.preprocess_val), batch_size=batch_size,
                        num_workers=num_workers)
    out = []
    for images in loader:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out.append(model.frozen_image_stages(images, cut).half())
    return torch.cat(out)
