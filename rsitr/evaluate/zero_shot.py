"""Zero-shot scene classification: prompt-ensemble classifiers, and top-k / per-class metrics over embeddings.

The task as CLIP_benchmark's ``zeroshot_classification`` computes it: each class's classifier is the
normalised mean of the normalised text embeddings of its prompts (one per template), an image is scored by
the cosine of its embedding to each classifier, and the metrics are top-1 / top-5 accuracy and the mean
per-class recall (balanced accuracy: the mean over classes that have images of the fraction of their images
predicted right). :func:`evaluate` works on embeddings only; :func:`classify_images` encodes a
:class:`~rsitr.data.classes.LabeledImages` with a model first. Metrics are fractions in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from rsitr.data.augment import orientation_views
from rsitr.data.classes import LabeledImages
from rsitr.errors import UserError
from rsitr.inference.images import encode_image_files
from rsitr.models.encoding import encode_texts

DEFAULT_TEMPLATES = Path(__file__).with_name("zero_shot_templates.txt")
_PLACEHOLDERS = ("{}", "{c}")


def read_templates(path: str | Path | None = None) -> list[str]:
    """Prompt templates, one per line (``#`` comments and blank lines ignored); the default remote-sensing set."""
    path = Path(path) if path is not None else DEFAULT_TEMPLATES
    if not path.is_file():
        raise UserError(f"templates file {path} not found; pass a text file with one template per line, e.g. "
                        f"'an aerial image of {{}}.'")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    templates = [line for line in lines if line and not line.startswith("#")]
    if not templates:
        raise UserError(f"templates file {path} holds no templates; write one per line, e.g. 'an aerial image of {{}}.'")
    bad = [template for template in templates if not any(mark in template for mark in _PLACEHOLDERS)]
    if bad:
        raise UserError(f"templates file {path}: {bad[0]!r} has no '{{}}' where the class name goes; add it")
    return templates


def fill_template(template: str, name: str) -> str:
    """``template`` with its ``{}`` or ``{c}`` (CLIP_benchmark's placeholder) replaced by ``name``."""
    return template.replace("{c}", name).replace("{}", name)


def classifier_from_embeddings(prompt_embeddings: torch.Tensor) -> torch.Tensor:
    """``[C, D]`` unit classifiers from ``[C, T, D]`` prompt embeddings: the normalised mean of normalised prompts."""
    return F.normalize(F.normalize(prompt_embeddings.float(), dim=-1).mean(dim=1), dim=-1)


def zero_shot_classifier(model: nn.Module, names: list[str], templates: list[str], device: str | torch.device = "cpu",
                         precision: str = "fp32", batch_size: int = 256) -> torch.Tensor:
    """``[C, D]`` classifiers of the classes ``names`` with ``templates`` (see :func:`classifier_from_embeddings`)."""
    prompts = [fill_template(template, name) for name in names for template in templates]
    embeddings = encode_texts(model, prompts, batch_size, device, precision)
    return classifier_from_embeddings(embeddings.view(len(names), len(templates), -1))


def top_k_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of rows of ``scores [N, C]`` whose true class ``labels [N]`` is among the ``k`` highest scores."""
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices
    return float((top == labels.unsqueeze(1)).any(dim=1).double().mean())


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``[C, C]`` counts: row = true class, column = predicted class."""
    return torch.bincount(labels * n_classes + predictions, minlength=n_classes * n_classes).view(n_classes, n_classes)


def per_class_recall(predictions: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``[C]`` fraction of each class's images predicted as that class (NaN for a class without images)."""
    confusion = confusion_matrix(predictions, labels, n_classes).double()
    return confusion.diagonal() / confusion.sum(dim=1)


def mean_per_class_recall(predictions: torch.Tensor, labels: torch.Tensor, n_classes: int) -> float:
    """Mean of :func:`per_class_recall` over the classes that have images (scikit-learn's balanced accuracy)."""
    recall = per_class_recall(predictions, labels, n_classes)
    return float(recall[~recall.isnan()].mean())


@dataclass
class ZeroShotResult:
    """Metrics of one zero-shot run, per class figures, and each image's scores."""

    class_names: list[str]
    top1: float
    top5: float | None
    """None when there are 5 classes or fewer (every image would be right)."""
    mean_per_class_recall: float
    per_class_recall: list[float]
    confusion: torch.Tensor
    scores: torch.Tensor
    """``[N, C]`` cosine of each image to each class."""
    labels: torch.Tensor

    @property
    def chance(self) -> float:
        """Top-1 accuracy (and mean per-class recall) of guessing uniformly at random."""
        return 1.0 / len(self.class_names)

    @property
    def predictions(self) -> torch.Tensor:
        return self.scores.argmax(dim=1)

    def metrics(self) -> dict[str, float | None]:
        return {"top1": self.top1, "top5": self.top5, "mean_per_class_recall": self.mean_per_class_recall,
                "chance_top1": self.chance}


def evaluate(image_embeddings: torch.Tensor, labels: torch.Tensor, classifier: torch.Tensor,
             class_names: list[str]) -> ZeroShotResult:
    """Classify ``image_embeddings [N, D]`` (normalised here) with unit ``classifier [C, D]``; true ``labels [N]``."""
    if len(class_names) != classifier.shape[0]:
        raise ValueError(f"{len(class_names)} class names for {classifier.shape[0]} classifiers")
    scores = F.normalize(image_embeddings.float(), dim=-1) @ classifier.float().T
    predictions = scores.argmax(dim=1)
    n_classes = len(class_names)
    return ZeroShotResult(
        class_names=list(class_names),
        top1=top_k_accuracy(scores, labels, 1),
        top5=top_k_accuracy(scores, labels, 5) if n_classes > 5 else None,
        mean_per_class_recall=mean_per_class_recall(predictions, labels, n_classes),
        per_class_recall=per_class_recall(predictions, labels, n_classes).tolist(),
        confusion=confusion_matrix(predictions, labels, n_classes),
        scores=scores, labels=labels)


@dataclass
class Classification:
    """:func:`classify_images`' result: metrics over the readable images, which images those are, what was skipped."""

    result: ZeroShotResult
    kept: list[int]
    """Positions in the :class:`LabeledImages` of the classified images (row ``i`` of ``result.scores``)."""
    skipped: list[str] = field(default_factory=list)
    """Messages of the unreadable images, which were left out."""

    def to_dict(self, images: LabeledImages, top_k: int = 5) -> dict:
        """Metrics, per-class figures and each image's top-``k`` predictions, for JSON."""
        result = self.result
        support = result.confusion.sum(dim=1).tolist()
        top = result.scores.topk(min(top_k, len(result.class_names)), dim=1)
        predicted = result.predictions.tolist()
        return {
            **result.metrics(),
            "images": len(self.kept), "skipped": self.skipped,
            "classes": [{"class": key, "name": name, "images": count,
                         "recall": None if count == 0 else recall,
                         "predicted_as_this": int(result.confusion[:, index].sum())}
                        for index, (key, name, count, recall) in enumerate(
                            zip(images.classes, result.class_names, support, result.per_class_recall))],
            "confusion": result.confusion.tolist(),
            "predictions": [{"path": images.relative_path(image), "class": images.classes[images.labels[image]],
                             "predicted": images.classes[predicted[row]], "correct": predicted[row] == images.labels[image],
                             "top": [{"class": images.classes[c], "score": round(float(v), 6)}
                                     for c, v in zip(top.indices[row].tolist(), top.values[row].tolist())]}
                            for row, image in enumerate(self.kept)],
        }


def classify_images(model: nn.Module, images: LabeledImages, names: list[str], templates: list[str],
                    batch_size: int = 64, device: str | torch.device = "cpu", precision: str = "fp32",
                    num_workers: int = 0, progress: bool = True, orientations: int = 1) -> Classification:
    """Zero-shot classify ``images`` into the classes ``names`` (readable names of ``images.classes``); with
    ``orientations`` 4 or 8 each image's embedding is the mean over its rotations (and mirrors), as ``rsitr eval``
    and an index can average them."""
    views = orientation_views(orientations)
    classifier = zero_shot_classifier(model, names, templates, device, precision)
    encoded = encode_image_files(model, images.paths, batch_size, device, precision, num_workers, progress,
                                 desc="classify images", views=views)
    if not len(encoded.indices):
        raise UserError(f"none of the {len(images)} images under {images.root} could be read "
                        f"(first: {next(iter(encoded.skipped.values()))}); check the files")
    labels = torch.as_tensor(images.labels, dtype=torch.long)[encoded.indices]
    result = evaluate(encoded.embeddings, labels, classifier, names)
    return Classification(result, encoded.indices.tolist(), list(encoded.skipped.values()))
