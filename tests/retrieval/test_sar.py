import pytest
import torch

from rsitr.evaluate.metrics import recall_metrics
from rsitr.retrieval.sar import sar_rerank

S = torch.tensor([[0.90, 0.80, 0.10],
                  [0.85, 0.20, 0.30],
                  [0.10, 0.70, 0.60]])


def order(scores_row):
    return scores_row.argsort(descending=True).tolist()


def test_sar_image_to_text_order_by_hand():
    # Reverse ranks (rank of image i in text j's image list), from the columns of S:
    #   text 0: [0.90, 0.85, 0.10] -> image ranks 0, 1, 2;  text 1: [0.8, 0.2, 0.7] -> 0, 2, 1;  text 2: [0.1, 0.3, 0.6] -> 2, 1, 0
    # Image 1, forward order t0 (0), t2 (1), t1 (2); top_k=2 keeps t0, t2: keys t0 = 0 + 1, t2 = 1 + 1 -> t0, t2, then t1.
    # Image 2, forward t1 (0), t2 (1): keys t1 = 0 + 1, t2 = 1 + 0: tie -> higher similarity first -> t1, t2, then t0.
    scores = sar_rerank(S, top_k=2).image_to_text
    assert order(scores[0]) == [0, 1, 2]
    assert order(scores[1]) == [0, 2, 1]
    assert order(scores[2]) == [1, 2, 0]


def test_sar_text_to_image_reverses_a_forward_order():
    # Text 1 (column 1): forward image order 0 (0.8), 2 (0.7), 1. Reverse ranks of text 1 in image lists:
    # image 0 row [.9, .8, .1] -> text 1 rank 1; image 2 row [.1, .7, .6] -> rank 0.
    # With reverse_weight 2: keys image 0 = 0 + 2*1 = 2, image 2 = 1 + 2*0 = 1 -> image 2 first.
    scores = sar_rerank(S, top_k=2, reverse_weight=2.0).text_to_image
    assert order(scores[:, 1]) == [2, 0, 1]
    # With the default weight 1 the keys tie (1 vs 1) and the similarity keeps image 0 first.
    assert order(sar_rerank(S, top_k=2).text_to_image[:, 1]) == [0, 2, 1]


def test_top_1_changes_nothing():
    scores = sar_rerank(S, top_k=1)
    for i in range(3):
        assert order(scores.image_to_text[i]) == order(S[i])
        assert order(scores.text_to_image[:, i]) == order(S[:, i])


def test_sar_scores_feed_recall_metrics():
    labels = torch.tensor([0, 1, 2])
    scores = sar_rerank(S, top_k=2, reverse_weight=2.0)
    m = recall_metrics(scores.image_to_text, labels, text_to_image_similarity=scores.text_to_image)
    # Text 0 keeps image 0 first (keys 0 vs 1), text 2 keeps image 2 (keys 2 vs 3), text 1's image 1 is last: 2 of 3.
    assert m["t2i_R@1"] == pytest.approx(100 * 2 / 3)
    assert m["i2t_R@1"] == pytest.approx(100 * 2 / 3)  # image 1's first text is 0, not 1; images 0 and 2 hit


def test_galr_reverse_rank_variant_sorts_the_top_k_by_reverse_rank_alone():
    # Reverse ranks as above. Image 2: forward t1, t2, t0; its reverse ranks t0 2, t1 1, t2 0 -> t2, t1, t0.
    # (rank_sum would tie t1 = 0 + 1 and t2 = 1 + 0 and keep t1 first by similarity.)
    # Image 1: forward t0, t2, t1; reverse ranks t0 1, t1 2, t2 1 -> tie t0 / t2 kept in forward order -> t0, t2, t1.
    galr = sar_rerank(S, top_k=3, variant="reverse_rank").image_to_text
    assert [order(galr[i]) for i in range(3)] == [[0, 1, 2], [0, 2, 1], [2, 1, 0]]
    assert order(sar_rerank(S, top_k=3).image_to_text[2]) == [1, 2, 0]
    # Outside the top-k nothing moves: with top_k 2, image 2 re-sorts t1, t2 only -> t2, t1, then t0.
    assert order(sar_rerank(S, top_k=2, variant="reverse_rank").image_to_text[2]) == [2, 1, 0]
    with pytest.raises(ValueError, match="variant"):
        sar_rerank(S, variant="optim")


def test_sar_rows_say_which_reading_they_are():
    from rsitr.config import EvalConfig
    from rsitr.retrieval.sar import sar_label

    assert EvalConfig().sar_top_k == 30
    assert sar_label("rank_sum", 30) == "SAR (rsitr's rank-sum reading, top 30)"
    assert "GaLR" in sar_label("reverse_rank", 30)
