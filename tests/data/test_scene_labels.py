import random

import pytest
import torch

from rsitr.data.scene_labels import augment_caption, scene_phrase
from rsitr.retrieval.scene_prior import scene_prior, scene_query_prompts, scene_vocabulary, text_scene_probabilities


@pytest.mark.parametrize("name, phrase", [
    ("denseresidential", "dense residential area"), ("golf_course", "golf course"),
    ("Storage-Tanks", "storage tanks"), ("airport", "airport"), ("baseballfield", "baseball field")])
def test_scene_phrase(name, phrase):
    assert scene_phrase(name) == phrase


def test_augmentation_is_deterministic_under_a_seed():
    captions = [f"caption {i}" for i in range(50)]

    def run(seed):
        rng = random.Random(seed)
        return [augment_caption(c, "denseresidential", 0.5, rng) for c in captions]

    first = run(3)
    assert first == run(3)
    assert first != run(4)
    wrapped = [c for c in first if c not in captions]
    assert 10 < len(wrapped) < 40  # about half
    assert all("dense residential area" in c and c.count("caption") == 1 for c in wrapped)


def test_augmentation_leaves_captions_without_scene_or_probability():
    rng = random.Random(0)
    assert augment_caption("a plane", None, 1.0, rng) == "a plane"
    assert augment_caption("a plane", "airport", 0.0, rng) == "a plane"
    assert random.Random(0).random() == rng.random()  # nothing was drawn
    assert augment_caption(" a plane ", "airport", 1.0, random.Random(0)) in {
        "an aerial image of airport. a plane", "a remote sensing image of airport: a plane",
        "a plane (scene: airport)"}


def test_scene_vocabulary_and_prompts():
    names, index = scene_vocabulary(["port", None, "airport", "port"])
    assert names == ["airport", "port"] and index.tolist() == [1, -1, 0, 1]
    assert scene_query_prompts(["bareland"]) == ["an aerial image of bare land"]


def test_text_scene_probabilities_follow_the_closest_prompt():
    prompts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    probs = text_scene_probabilities(texts, prompts, logit_scale=10.0)
    # cosines [1, 0], [0, 1], [0.707, 0.707] -> softmax(10 * .)
    expected_first = torch.tensor([1.0, 0.0]).mul(10).softmax(0)
    torch.testing.assert_close(probs[0], expected_first)
    torch.testing.assert_close(probs[2], torch.tensor([0.5, 0.5]))
    assert probs[1].argmax() == 1


def test_scene_prior_by_hand():
    similarity = torch.tensor([[0.5, 0.2],
                               [0.4, 0.6],
                               [0.1, 0.1]])  # 3 images x 2 texts
    probs = torch.tensor([[0.9, 0.1],   # text 0 speaks of scene 0
                          [0.2, 0.8]])  # text 1 of scene 1
    image_scenes = torch.tensor([0, 1, -1])  # image 2 of unknown scene gets 1/S = 0.5
    out = scene_prior(similarity, probs, image_scenes, weight=0.5)
    expected = torch.tensor([[0.5 + 0.45, 0.2 + 0.10],
                             [0.4 + 0.05, 0.6 + 0.40],
                             [0.1 + 0.25, 0.1 + 0.25]])
    torch.testing.assert_close(out, expected)
    # text 0 now ranks image 0 first with a wider margin; text 1 keeps image 1 first
    assert out[:, 0].argmax() == 0 and out[:, 1].argmax() == 1
    with pytest.raises(ValueError, match="does not match"):
        scene_prior(similarity.T, probs, image_scenes, 0.5)
