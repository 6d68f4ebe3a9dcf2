import math

import pytest
import torch

from rsitr.losses.eba import EliminateBeforeAlign, SimilarityBank
from rsitr.losses.infonce import info_nce


def filled_bank(values):
    bank = SimilarityBank(len(values))
    bank.record(torch.arange(len(values)), torch.tensor(values))
    return bank


def test_threshold_from_known_bank():
    # 10 pairs; descending sort: .9 .8 .7 .6 .5 .4 .3 .2 .1 .0
    bank = filled_bank([0.3, 0.9, 0.0, 0.5, 0.7, 0.1, 0.8, 0.2, 0.6, 0.4])
    assert bank.threshold(0.1) == pytest.approx(0.0)  # position 10 - 1 = 9 -> 0.0
    assert bank.threshold(0.2) == pytest.approx(0.1)  # position 8 -> 0.1
    assert bank.threshold(0.25) == pytest.approx(0.1)  # floor(2.5) = 2 pairs
    assert bank.threshold(0.05) is None  # floor(0.5) = 0: nothing is dropped
    assert bank.below(0.2).nonzero().flatten().tolist() == [2, 5]


def test_unseen_pairs_are_ignored():
    bank = SimilarityBank(4)
    bank.record(torch.tensor([0, 2]), torch.tensor([0.5, -0.5]))
    assert bank.threshold(0.5) == pytest.approx(-0.5)
    assert bank.below(0.5).tolist() == [False, False, True, False]


def test_elimination_starts_at_drop_epoch_and_lists_pairs():
    eba = EliminateBeforeAlign(num_pairs=10, drop_epoch=3, drop_ratio=0.2)
    eba.record(torch.arange(10), torch.tensor([0.3, 0.9, 0.0, 0.5, 0.7, 0.1, 0.8, 0.2, 0.6, 0.4]))
    assert eba.start_epoch(2).global_pairs == []
    keep_g, keep_l = eba.keep(torch.tensor([2, 3]))
    assert keep_g.all() and keep_l.all()
    report = eba.start_epoch(3)
    assert report.global_pairs == [2, 5] and report.local_pairs == [2, 5]
    keep_g, keep_l = eba.keep(torch.tensor([5, 1, 2, 3]))
    assert keep_g.tolist() == [False, True, False, True]
    assert keep_l.tolist() == keep_g.tolist()  # joint: the global bank decides both


def test_independent_scheme_uses_local_bank_for_local_rows():
    eba = EliminateBeforeAlign(num_pairs=4, drop_epoch=2, drop_ratio=0.25, scheme="independent")
    eba.record(torch.arange(4), torch.tensor([0.1, 0.5, 0.6, 0.7]), torch.tensor([3.0, 1.0, 2.0, 4.0]))
    report = eba.start_epoch(2)
    assert report.global_pairs == [0] and report.local_pairs == [1]
    keep_g, keep_l = eba.keep(torch.arange(4))
    assert keep_g.tolist() == [False, True, True, True]
    assert keep_l.tolist() == [True, False, True, True]


def test_eba_removes_exactly_the_rows_below_threshold_in_the_loss():
    torch.manual_seed(0)
    sim = torch.randn(4, 4)
    eba = EliminateBeforeAlign(num_pairs=4, drop_epoch=2, drop_ratio=0.5)
    eba.record(torch.arange(4), sim.diagonal())
    eba.start_epoch(2)
    keep, _ = eba.keep(torch.arange(4))
    lowest_two = sim.diagonal().argsort()[:2].tolist()
    assert sorted((~keep).nonzero().flatten().tolist()) == sorted(lowest_two)
    rows = [i for i in range(4) if i not in lowest_two]
    # Each direction keeps the rows of the surviving pairs, with all 4 columns as candidates:
    i2t = torch.nn.functional.cross_entropy(sim[rows], torch.tensor(rows))
    t2i = torch.nn.functional.cross_entropy(sim.T[rows], torch.tensor(rows))
    assert info_nce(sim, 1.0, keep=keep).item() == pytest.approx(((i2t + t2i) / 2).item())


def test_loss_unchanged_when_no_pair_is_below_threshold():
    sim = torch.randn(5, 5)
    eba = EliminateBeforeAlign(num_pairs=100, drop_epoch=2, drop_ratio=0.01)
    eba.record(torch.arange(100), torch.linspace(0, 1, 100))  # only pair 0 (0.0) is at/below threshold
    eba.start_epoch(2)
    keep, _ = eba.keep(torch.arange(1, 6))
    assert keep.all()
    assert info_nce(sim, 2.0, keep=keep).item() == pytest.approx(info_nce(sim, 2.0).item())


def test_state_dict_round_trip():
    eba = EliminateBeforeAlign(num_pairs=4, drop_epoch=2, drop_ratio=0.25, scheme="independent")
    eba.record(torch.arange(4), torch.tensor([0.1, 0.5, 0.6, 0.7]), torch.tensor([3.0, 1.0, 2.0, 4.0]))
    eba.start_epoch(2)
    other = EliminateBeforeAlign(num_pairs=4, drop_epoch=2, drop_ratio=0.25, scheme="independent")
    other.load_state_dict(eba.state_dict())
    assert [m.tolist() for m in other.keep(torch.arange(4))] == [m.tolist() for m in eba.keep(torch.arange(4))]
    assert torch.equal(other.local_bank.values, eba.local_bank.values)
    assert not math.isnan(other.global_bank.values[0])


def test_invalid_settings():
    with pytest.raises(ValueError, match="scheme"):
        EliminateBeforeAlign(4, scheme="both")
    with pytest.raises(ValueError, match="drop_ratio"):
        EliminateBeforeAlign(4, drop_ratio=1.5)


def test_reference_semantics_eliminate_in_zero_based_epochs_4_to_6_by_live_comparison():
    """drop_epoch 4 with 0-based epochs, 7 epochs: the last three eliminate, each batch against its own similarities."""
    values = torch.linspace(0.0, 0.9, 10)  # bank after every epoch; threshold at ratio 0.2 = 0.1
    current = torch.tensor([0.95, 0.05, 0.5, 0.08])  # this batch: pair 0 was banked lowest but is now high
    pairs = torch.tensor([0, 9, 3, 4])
    eba = EliminateBeforeAlign(num_pairs=10, drop_epoch=4, drop_ratio=0.2, compare="live", epoch_base=0)
    dropping_epochs = []
    for epoch in range(1, 8):  # the trainer's 1-based count; 0-based epoch = epoch - 1
        report = eba.start_epoch(epoch)
        keep, keep_local = eba.keep(pairs, current) if report.active else (None, None)
        if report.active:
            assert report.global_threshold == pytest.approx(0.1)
            assert keep.tolist() == [True, False, True, False]  # 0.05, 0.08 <= 0.1; the bank is not read
            assert keep_local.tolist() == keep.tolist()
            dropping_epochs.append(epoch - 1)
        eba.record(torch.arange(10), values)
    assert dropping_epochs == [4, 5, 6]
    assert [EliminateBeforeAlign(10, drop_epoch=4).eliminates_in(e) for e in range(1, 8)] == [False] * 3 + [True] * 4


def test_live_independent_scheme_compares_local_similarities_with_the_local_threshold():
    eba = EliminateBeforeAlign(num_pairs=4, drop_epoch=1, drop_ratio=0.25, scheme="independent", compare="live",
                               epoch_base=0)
    eba.record(torch.arange(4), torch.tensor([0.1, 0.5, 0.6, 0.7]), torch.tensor([3.0, 1.0, 2.0, 4.0]))
    assert eba.start_epoch(2).active
    keep_global, keep_local = eba.keep(torch.arange(4), torch.tensor([0.2, 0.1, 0.6, 0.7]),
                                       torch.tensor([1.0, 5.0, 2.0, 0.5]))
    assert keep_global.tolist() == [True, False, True, True]  # threshold 0.1
    assert keep_local.tolist() == [False, True, True, False]  # threshold 1.0
    with pytest.raises(ValueError, match="local_similarity"):
        eba.keep(torch.arange(4), torch.zeros(4))


def test_bank_stays_fp32_for_bf16_similarities():
    bank = SimilarityBank(3)
    bank.record(torch.arange(3), torch.tensor([0.1234567, 0.5, 0.25], dtype=torch.bfloat16))
    assert bank.values.dtype == torch.float32
