"""Zero-shot scene classification: metrics on hand-computed cases, class folders and names, the peer, the CLI."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from rsitr.cli import main
from rsitr.data import DataError, make_synthetic_dataset
from rsitr.data.classes import class_names, read_class_folders, read_labeled_images
from rsitr.errors import UserError
from rsitr.evaluate.zero_shot import (classifier_from_embeddings, classify_images, confusion_matrix, evaluate,
                                      fill_template, mean_per_class_recall, per_class_recall, read_templates,
                                      top_k_accuracy, zero_shot_classifier)
from rsitr.models import TINY_MODEL

from conftest import CLASS_FOLDERS

# 5 images, 3 classes; predictions (argmax) 0, 1, 0, 2, 1 for true classes 0, 1, 1, 2, 2.
SCORES = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.3, 0.45, 0.25]])
LABELS = torch.tensor([0, 1, 1, 2, 2])


def test_metrics_on_a_hand_computed_case():
    predictions = SCORES.argmax(dim=1)
    assert top_k_accuracy(SCORES, LABELS, 1) == pytest.approx(3 / 5)
    assert top_k_accuracy(SCORES, LABELS, 2) == pytest.approx(4 / 5)  # only image 4 (class 2) misses its top 2
    assert top_k_accuracy(SCORES, LABELS, 5) == 1.0  # k beyond the classes: every class is in the top k
    assert confusion_matrix(predictions, LABELS, 3).tolist() == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]
    assert per_class_recall(predictions, LABELS, 3).tolist() == pytest.approx([1.0, 0.5, 0.5])
    assert mean_per_class_recall(predictions, LABELS, 3) == pytest.approx(2 / 3)  # not the top-1 of 3/5


def test_mean_per_class_recall_ignores_classes_without_images():
    predictions, labels = torch.tensor([0, 2, 1]), torch.tensor([0, 0, 1])
    recall = per_class_recall(predictions, labels, 3)
    assert recall[:2].tolist() == [0.5, 1.0] and recall[2].isnan()
    assert mean_per_class_recall(predictions, labels, 3) == pytest.approx(0.75)


def test_classifier_is_the_normalised_mean_of_normalised_prompts():
    prompts = torch.tensor([[[3.0, 0.0], [0.0, 4.0]], [[0.0, -2.0], [0.0, -1.0]]])  # [C=2, T=2, D=2]
    classifier = classifier_from_embeddings(prompts)
    torch.testing.assert_close(classifier, torch.tensor([[2 ** -0.5, 2 ** -0.5], [0.0, -1.0]]))


def test_evaluate_normalises_images_and_reports_top5_only_beyond_five_classes():
    classifier = torch.eye(3)
    result = evaluate(SCORES * 10, LABELS, classifier, ["a", "b", "c"])  # the scale of image vectors is irrelevant
    assert result.top1 == pytest.approx(3 / 5) and result.top5 is None
    assert result.mean_per_class_recall == pytest.approx(2 / 3) and result.chance == pytest.approx(1 / 3)
    # 6 classes: image 5 (class 0) ranks class 0 last, image 4 (class 0) second.
    images = torch.cat([torch.eye(6)[:4], torch.tensor([[0.5, 0.0, 0.0, 0.0, 1.0, 0.0],
                                                        [-1.0, 0.1, 0.2, 0.3, 0.4, 1.0]])])
    six = evaluate(images, torch.tensor([0, 1, 2, 3, 0, 0]), torch.eye(6), list("abcdef"))
    assert six.top1 == pytest.approx(4 / 6) and six.top5 == pytest.approx(5 / 6)


def test_templates_default_set_and_placeholders(tmp_path):
    templates = read_templates()
    assert len(templates) >= 5 and all("{}" in t for t in templates)
    assert fill_template("an aerial image of {}.", "a forest") == "an aerial image of a forest."
    assert fill_template("satellite imagery of {c}.", "ports") == "satellite imagery of ports."  # CLIP_benchmark's form
    bad = tmp_path / "bad.txt"
    bad.write_text("# no placeholder below\nan aerial image\n")
    with pytest.raises(UserError, match="has no '\\{\\}'"):
        read_templates(bad)


def test_class_folders_are_read_sorted_with_labels(class_folders):
    images = read_class_folders(class_folders)
    assert images.classes == sorted(CLASS_FOLDERS)
    assert len(images) == 21 and images.labels == [label for label in range(7) for _ in range(3)]
    assert images.relative_path(0) == f"{images.classes[0]}/{images.classes[0]}_00.png"
    # Sorted as torchvision's ImageFolder sorts (case-sensitive: "BaseballField" first)
    assert class_names(images.classes) == ["baseball field", "airport", "bare land", "beach", "dense residential",
                                           "forest", "river"]


def test_names_file_plain_or_mapped_and_mismatches(tmp_path):
    classes = ["a_b", "c"]
    plain, mapped, wrong_count, unknown = (tmp_path / n for n in ("plain", "mapped", "count", "unknown"))
    plain.write_text("# names\nfirst class\n\nsecond class\n")
    mapped.write_text("c: the c class\na_b: the a b class\n")
    wrong_count.write_text("one\ntwo\nthree\n")
    unknown.write_text("a_b: x\nd: y\n")
    assert class_names(classes, plain) == ["first class", "second class"]
    assert class_names(classes, mapped) == ["the a b class", "the c class"]
    with pytest.raises(DataError, match="3 names for 2 classes"):
        class_names(classes, wrong_count)
    with pytest.raises(DataError, match=r"no class folder for \['d'\]; no name for \['c'\]"):
        class_names(classes, unknown)


def test_class_folder_errors(tmp_path):
    (tmp_path / "only" / "forest").mkdir(parents=True)
    shutil.copy(Path(__file__), tmp_path / "only" / "forest" / "not_an_image.py")
    with pytest.raises(DataError, match="class folder 'forest' holds no images"):
        read_class_folders(tmp_path / "only")
    (tmp_path / "only" / "forest" / "x.png").write_bytes(b"")
    with pytest.raises(DataError, match="one class only"):
        read_class_folders(tmp_path / "only")
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        read_class_folders(tmp_path / "flat")


def test_caption_file_scenes_are_classes(tmp_path):
    captions = make_synthetic_dataset(tmp_path, n_images=20, image_size=32)
    images = read_labeled_images(captions, tmp_path / "images")
    assert len(images) == 20 and len(images.classes) == 5  # scenes from <scene>_<n>.png file names
    assert all(images.classes[label] in path.name for path, label in zip(images.paths, images.labels))
    assert len(read_labeled_images(captions, tmp_path / "images", split="train")) == 16
    with pytest.raises(DataError, match="`images_root`"):
        read_labeled_images(captions)


def test_unreadable_images_are_skipped_and_counted(class_folders, tiny_model, tmp_path):
    root = tmp_path / "folders"
    shutil.copytree(class_folders, root)
    (root / "forest" / "broken.png").write_bytes(b"not a png")
    images = read_class_folders(root)
    run = classify_images(tiny_model, images, class_names(images.classes), ["{}"], batch_size=8, progress=False)
    assert len(run.skipped) == 1 and "broken.png" in run.skipped[0]
    assert len(run.kept) == 21 and run.result.confusion.sum() == 21
    record = run.to_dict(images)
    assert record["images"] == 21 and len(record["predictions"]) == 21
    assert all(p["path"] != "forest/broken.png" for p in record["predictions"])


def _clip_benchmark_accuracy(output, target, topk=(1,)):
    """clip_benchmark 1.6.2's ``accuracy``, token for token, but ``.item()`` where it calls ``float()`` on a
    one-element array, which NumPy 2 refuses ("only 0-dimensional arrays can be converted to Python scalars")."""
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    n = len(target)
    return [correct[:k].reshape(-1).float().sum(0, keepdim=True).cpu().numpy().item() / n for k in topk]


def test_equal_to_clip_benchmark_zero_shot(class_folders, tiny_model, monkeypatch):
    """Same model, images, names and templates: CLIP_benchmark's top-1 / top-5 / mean per-class recall and ours.

    Everything runs through clip_benchmark's ``evaluate`` (its classifier, its image loop, scikit-learn's balanced
    accuracy); only its top-k ``accuracy`` is replaced by the NumPy 2-safe copy above.
    """
    peer = pytest.importorskip("clip_benchmark.metrics.zeroshot_classification",
                               reason="clip-benchmark is not installed (pip install --no-deps clip-benchmark "
                                      "scikit-learn)")
    from torchvision.datasets import ImageFolder

    monkeypatch.setattr(peer, "accuracy", _clip_benchmark_accuracy)

    class GlobalOnly(torch.nn.Module):
        """The interface CLIP_benchmark expects: encoders that return the global embedding tensor."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def encode_image(self, images):
            return self.model.encode_image(images).global_

        def encode_text(self, tokens):
            return self.model.encode_text(tokens).global_

    images = read_class_folders(class_folders)
    names = class_names(images.classes)
    templates = read_templates()[:3]  # three keep the test fast; the formula is the same for ten
    dataset = ImageFolder(str(class_folders), transform=tiny_model.preprocess_val)
    assert dataset.classes == images.classes
    loader = torch.utils.data.DataLoader(dataset, batch_size=8)
    theirs = peer.evaluate(GlobalOnly(tiny_model), loader, tiny_model.tokenize, names,
                           [t.replace("{}", "{c}") for t in templates], "cpu", amp=False)
    ours = classify_images(tiny_model, images, names, templates, batch_size=8, progress=False).result
    assert 0 < ours.top1 < 1  # a random model: the comparison is not all-right or all-wrong
    assert ours.top1 == pytest.approx(theirs["acc1"], abs=1e-9)
    assert ours.top5 == pytest.approx(theirs["acc5"], abs=1e-9)
    assert ours.mean_per_class_recall == pytest.approx(theirs["mean_per_class_recall"], abs=1e-9)
    their_classifier = peer.zero_shot_classifier(GlobalOnly(tiny_model), tiny_model.tokenize, names,
                                                 [t.replace("{}", "{c}") for t in templates], "cpu", amp=False)
    torch.testing.assert_close(zero_shot_classifier(tiny_model, names, templates), their_classifier.T)


def test_cli_classify_writes_json_and_confusion(class_folders, tmp_path, capsys):
    names = tmp_path / "names.txt"
    names.write_text("".join(f"{folder}: class {folder}\n" for folder in CLASS_FOLDERS))
    code = main(["classify", str(class_folders), "--model", TINY_MODEL, "--names", str(names),
                 "--out", str(tmp_path / "out.json"), "--confusion", str(tmp_path / "confusion.png"),
                 "--precision", "bf16", "--threads", "1", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "mean per-class recall" in out and "chance 14.29%" in out
    record = json.loads((tmp_path / "out.json").read_text())
    assert record["precision"] == "bf16" and record["images"] == 21
    assert [c["name"] for c in record["classes"]] == [f"class {f}" for f in sorted(CLASS_FOLDERS)]
    assert sum(c["images"] for c in record["classes"]) == 21 and len(record["predictions"][0]["top"]) == 5
    assert sum(p["correct"] for p in record["predictions"]) == pytest.approx(21 * record["top1"])
    assert (tmp_path / "confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_classify_user_errors(tmp_path, capsys):
    (tmp_path / "one" / "forest").mkdir(parents=True)
    (tmp_path / "one" / "forest" / "a.png").write_bytes(b"")
    assert main(["classify", str(tmp_path / "one"), "--model", TINY_MODEL]) == 2
    assert "rsitr classify: error:" in capsys.readouterr().err


def test_orientations_make_classification_blind_to_a_quarter_turn(class_folders, tiny_model, tmp_path):
    """With 4 orientations each image's embedding is the mean over its 4 rotations, so a folder whose images are all
    turned by 90 degrees classifies as the original does (aerial images have no up); one orientation does not."""
    from PIL import Image

    from rsitr.data.augment import ORIENTATION_COUNTS
    from rsitr.inference.images import encode_image_files

    turned = tmp_path / "turned"
    shutil.copytree(class_folders, turned)
    for path in turned.rglob("*.png"):
        Image.open(path).transpose(Image.Transpose.ROTATE_90).save(path)
    original, rotated = read_class_folders(class_folders), read_class_folders(turned)
    four = [encode_image_files(tiny_model, images.paths, 8, views=ORIENTATION_COUNTS[4], progress=False).embeddings
            for images in (original, rotated)]
    one = [encode_image_files(tiny_model, images.paths, 8, progress=False).embeddings for images in (original, rotated)]
    # resampling commutes with a quarter turn of a square image up to rounding: a stated tolerance, not equality
    torch.testing.assert_close(four[0], four[1], atol=2e-3, rtol=0)
    assert (one[0] - one[1]).abs().max() > 0.05
    names = class_names(original.classes)
    runs = [classify_images(tiny_model, images, names, ["{}"], batch_size=8, progress=False, orientations=4)
            for images in (original, rotated)]
    assert runs[0].result.top1 == runs[1].result.top1
    with pytest.raises(UserError, match="`orientations` is one of 1, 4, 8, got 3") as raised:
        classify_images(tiny_model, original, names, ["{}"], progress=False, orientations=3)
    assert raised.value.parameters == ("orientations",)


def test_cli_classify_records_its_orientations(class_folders, tmp_path):
    assert main(["classify", str(class_folders), "--model", TINY_MODEL, "--orientations", "4", "--threads", "1",
                 "--out", str(tmp_path / "out.json"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "out.json").read_text())["orientations"] == 4
