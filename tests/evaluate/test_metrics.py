import pytest
import torch

from rsitr.evaluate.metrics import recall_metrics


def hand_made_3x15():
    """3 images x 15 captions (captions 5i..5i+4 belong to image i), ranks chosen by hand.

    Image->text: image 0's caption 2 is first (rank 0); image 1's best own caption is third (rank 2, behind two of
    image 2's captions); image 2's own captions are all behind 12 others (rank 12 -> miss at 10).
    """
    sim = torch.zeros(3, 15)
    # Image 0: own captions score 0.9..0.5; others 0.0.
    sim[0, 0:5] = torch.tensor([0.5, 0.6, 0.9, 0.7, 0.8])
    # Image 1: captions 10 and 11 (image 2's) score 0.95, 0.94; own captions 0.9 .. 0.86; the rest 0.
    sim[1, 10], sim[1, 11] = 0.95, 0.94
    sim[1, 5:10] = torch.tensor([0.9, 0.89, 0.88, 0.87, 0.86])
    # Image 2: own captions 0.1; every other caption 0.5.
    sim[2] = 0.5
    sim[2, 10:15] = 0.1
    return sim, torch.arange(15) // 5


def test_recall_on_hand_made_matrix():
    sim, labels = hand_made_3x15()
    m = recall_metrics(sim, labels)
    # i2t ranks: [0, 2, 10] -> R@1 1/3, R@5 2/3, R@10 2/3.
    assert m["i2t_R@1"] == pytest.approx(100 / 3)
    assert m["i2t_R@5"] == pytest.approx(200 / 3)
    assert m["i2t_R@10"] == pytest.approx(200 / 3)
    # t2i, per caption column (3 images): captions 0-4: image 0 scores >= image 1 (0) and image 2 (0.5)?
    #   captions 0 (0.5 vs 0.5 tie with image 2 -> rank 1), 1-4 (>0.5 -> rank 0)      -> ranks 1,0,0,0,0
    #   captions 5-9: image 1 (0.86..0.9) > image 2 (0.5) > image 0 (0)                 -> rank 0 x5
    #   captions 10-14: image 2 scores 0.1; 10, 11: image 1 higher (0.95, 0.94) -> rank 1; image 0: 0 -> 12-14 rank 0
    # R@1 = 12/15, R@5 = R@10 = 15/15.
    assert m["t2i_R@1"] == pytest.approx(100 * 12 / 15)
    assert m["t2i_R@5"] == pytest.approx(100.0)
    assert m["t2i_R@10"] == pytest.approx(100.0)
    expected_mean = (100 / 3 + 200 / 3 + 200 / 3 + 80 + 100 + 100) / 6
    assert m["mR"] == pytest.approx(expected_mean)


def test_ties_count_against_the_query():
    m = recall_metrics(torch.zeros(3, 15), torch.arange(15) // 5)
    assert m["i2t_R@1"] == 0.0 and m["t2i_R@1"] == 0.0


def test_separate_text_to_image_matrix():
    sim, labels = hand_made_3x15()
    perfect_t2i = (labels.unsqueeze(0) == torch.arange(3).unsqueeze(1)).float()
    m = recall_metrics(sim, labels, text_to_image_similarity=perfect_t2i)
    assert m["t2i_R@1"] == 100.0 and m["i2t_R@1"] == pytest.approx(100 / 3)


def test_shape_errors():
    with pytest.raises(ValueError, match="labels"):
        recall_metrics(torch.zeros(3, 15), torch.arange(14) // 5)
    with pytest.raises(ValueError, match="without any caption"):
        recall_metrics(torch.zeros(4, 15), torch.arange(15) // 5)
