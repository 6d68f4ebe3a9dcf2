"""Labelled images for scene classification: class folders, or the scene classes of a caption file.

Two layouts give the same :class:`LabeledImages`, so classification never learns which one it came from:

- a folder with one sub-folder per class, read as UC Merced Land Use, AID and NWPU-RESISC45 ship
  (``root/<class>/<image>``; images further down a class folder belong to that class);
- a caption file whose images carry a scene class: a CSV ``scene`` column, NWPU-Captions' groups or
  ``<scene>_<n>.jpg`` file names (see :func:`rsitr.data.loaders.scene_from_filename`).

Class names shown to the text encoder come from :func:`rsitr.data.scene_labels.scene_phrase`
(``baseball_diamond`` -> "baseball diamond"), or from a names file (:func:`read_class_names`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rsitr.data.errors import DataError
from rsitr.data.loaders import load_corpus
from rsitr.data.records import CaptionCorpus
from rsitr.data.scene_labels import scene_phrase

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"})
_NAMES_FIX = ("write one class name per line in the order of the sorted class folders, or one "
              "'<folder>: <name>' line per class folder")


@dataclass
class LabeledImages:
    """Images with one class each: ``labels[i]`` indexes ``classes`` (sorted folder names or scene labels)."""

    root: Path
    classes: list[str]
    paths: list[Path]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.paths)

    def relative_path(self, index: int) -> str:
        """Path of image ``index`` relative to ``root``, with POSIX separators."""
        return Path(os.path.relpath(self.paths[index], self.root)).as_posix()


def read_labeled_images(source: str | Path, images_root: str | Path | None = None,
                        split: str | None = None) -> LabeledImages:
    """Class folders when ``source`` is a folder, else a caption file whose images lie under ``images_root``.

    ``split`` (train, val or test) keeps one split of a caption file; None keeps every image.
    """
    source = Path(source)
    if source.is_dir():
        return read_class_folders(source)
    if not source.is_file():
        raise DataError("not found", path=source, fix="pass a folder of class sub-folders or a caption file")
    if images_root is None:
        raise DataError("is a caption file, so its image folder is needed", path=source,
                        fix="pass the folder the caption file's image names are relative to (`images_root`)",
                        parameters=("images_root",))
    corpus = load_corpus(source, images_root)
    return labeled_from_corpus(corpus.split(split) if split else corpus, Path(images_root), source)


def read_class_folders(root: str | Path) -> LabeledImages:
    """One class per sub-folder of ``root`` (sorted by name, as torchvision's ``ImageFolder``); images sorted by path."""
    root = Path(root)
    folders = sorted(entry for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not folders:
        raise DataError("has no class sub-folders", path=root,
                        fix="put each class's images in a sub-folder named after the class (root/<class>/<image>)")
    paths: list[Path] = []
    labels: list[int] = []
    for label, folder in enumerate(folders):
        images = sorted(path for path in folder.rglob("*")
                        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
        if not images:
            raise DataError(f"class folder {folder.name!r} holds no images "
                            f"({', '.join(sorted(IMAGE_SUFFIXES))})", path=folder,
                            fix="add its images or remove the folder")
        paths += images
        labels += [label] * len(images)
    return _checked(LabeledImages(root, [folder.name for folder in folders], paths, labels), root)


def labeled_from_corpus(corpus: CaptionCorpus, root: Path, source: Path) -> LabeledImages:
    """The images of a caption corpus with their scene classes; every image must have one."""
    if not corpus.images:
        raise DataError("holds no images (in the chosen split)", path=source, fix="choose another `split` or none",
                        parameters=("split",))
    unknown = [record.path for record in corpus.images if not record.scene]
    if unknown:
        raise DataError(f"{len(unknown)} of {len(corpus)} images have no scene class (e.g. {unknown[0]})", path=source,
                        fix="add a scene column to the CSV, or name images <scene>_<n>.jpg")
    classes = sorted({record.scene for record in corpus.images})
    position = {name: index for index, name in enumerate(classes)}
    return _checked(LabeledImages(root, classes, [record.path for record in corpus.images],
                                  [position[record.scene] for record in corpus.images]), source)


def _checked(images: LabeledImages, source: Path) -> LabeledImages:
    if len(images.classes) < 2:
        raise DataError(f"holds one class only ({images.classes[0]!r})", path=source,
                        fix="classification needs at least two classes (one sub-folder or scene per class)")
    return images


def class_names(classes: list[str], names_file: str | Path | None = None) -> list[str]:
    """Readable names of ``classes``: cleaned folder names, or those of ``names_file``.

    A names file holds either one name per line in the order of ``classes`` (sorted folder names), or one
    ``<folder>: <name>`` line per class; blank lines and lines starting with ``#`` are ignored.
    """
    if names_file is None:
        return [scene_phrase(name) for name in classes]
    path = Path(names_file)
    if not path.is_file():
        raise DataError("names file not found", path=path, fix=_NAMES_FIX)
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    mapped = [line for line in lines if ":" in line]
    if not mapped:
        if len(lines) != len(classes):
            raise DataError(f"has {len(lines)} names for {len(classes)} classes ({', '.join(classes)})", path=path,
                            fix=_NAMES_FIX)
        return lines
    if len(mapped) != len(lines):
        raise DataError("mixes '<folder>: <name>' lines with plain names", path=path, fix=_NAMES_FIX)
    names = {}
    for line in lines:
        key, name = (part.strip() for part in line.split(":", 1))
        if key in names:
            raise DataError(f"names class {key!r} twice", path=path, fix=_NAMES_FIX)
        names[key] = name
    unknown = sorted(set(names) - set(classes))
    missing = [name for name in classes if name not in names]
    if unknown or missing:
        problems = "; ".join(part for part in (f"no class folder for {unknown}" if unknown else "",
                                               f"no name for {missing}" if missing else "") if part)
        raise DataError(f"does not match the classes ({problems})", path=path, fix=_NAMES_FIX)
    return [names[name] for name in classes]
