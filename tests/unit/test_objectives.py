"""Exact statistics and formats of the pretraining objectives (pure functions on token ids)."""

from __future__ import annotations

import pytest
import torch

from alignment.pretrain.objectives import (
    IGNORE_INDEX,
    mask_tokens,
    random_spans_noise_mask,
    reconstruct_from_spans,
    span_corruption,
    span_corruption_counts,
    span_corruption_lengths,
)

MASK_ID = 3
VOCAB = 1000
REGULAR = (10, 900)  # ids 0..9 are special tokens, 900..999 sentinels in these tests


def _ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(*REGULAR, (batch, length), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# Masked LM


def test_mlm_chosen_fraction_and_80_10_10_split():
    ids = _ids(200, 500)  # 100k tokens: binomial std of the 15% is ~0.0011
    inputs, labels = mask_tokens(ids, MASK_ID, REGULAR, 0.15, generator=torch.Generator().manual_seed(1))
    chosen = labels != IGNORE_INDEX
    n_chosen = chosen.sum().item()
    assert abs(n_chosen / ids.numel() - 0.15) < 0.006

    masked = chosen & (inputs == MASK_ID)
    unchanged = chosen & (inputs == ids)
    randomized = chosen & (inputs != MASK_ID) & (inputs != ids)
    assert abs(masked.sum().item() / n_chosen - 0.8) < 0.015
    # A random replacement equals the original with probability 1/890; it then counts as unchanged.
    assert abs(unchanged.sum().item() / n_chosen - 0.1) < 0.012
    assert abs(randomized.sum().item() / n_chosen - 0.1) < 0.012
    assert inputs[randomized].min() >= REGULAR[0] and inputs[randomized].max() < REGULAR[1]


def test_mlm_labels_are_originals_at_chosen_positions_only():
    ids = _ids(8, 64)
    inputs, labels = mask_tokens(ids, MASK_ID, REGULAR, 0.15, generator=torch.Generator().manual_seed(2))
    chosen = labels != IGNORE_INDEX
    assert torch.equal(labels[chosen], ids[chosen])
    assert (labels[~chosen] == IGNORE_INDEX).all()
    # Tokens not chosen are never touched.
    assert torch.equal(inputs[~chosen], ids[~chosen])
    assert inputs.shape == labels.shape == ids.shape


def test_mlm_never_chooses_special_tokens():
    ids = _ids(50, 100)
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, ::4] = True
    inputs, labels = mask_tokens(
        ids, MASK_ID, REGULAR, 0.5, special, generator=torch.Generator().manual_seed(3)
    )
    assert (labels[special] == IGNORE_INDEX).all()
    assert torch.equal(inputs[special], ids[special])
    assert (labels[~special] != IGNORE_INDEX).float().mean() > 0.4


def test_mlm_same_generator_seed_same_result():
    ids = _ids(4, 32)
    a = mask_tokens(ids, MASK_ID, REGULAR, generator=torch.Generator().manual_seed(7))
    b = mask_tokens(ids, MASK_ID, REGULAR, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# ---------------------------------------------------------------------------------------------
# Span corruption

SENTINELS = list(range(999, 899, -1))  # T5 counts its sentinels down from the top of the vocabulary
EOS = 1


def test_span_counts_follow_t5():
    assert span_corruption_counts(128, 0.15, 3.0) == (19, 6)  # round(19.2) noise tokens, round(6.33) spans
    assert span_corruption_counts(512, 0.15, 3.0) == (77, 26)
    assert span_corruption_counts(4, 0.15, 3.0) == (1, 1)  # at least one noise token
    assert span_corruption_lengths(128, 0.15, 3.0) == (128 - 19 + 6 + 1, 19 + 6 + 1)


def test_noise_mask_density_and_mean_span_length():
    generator = torch.Generator().manual_seed(0)
    masks = torch.stack([random_spans_noise_mask(512, 0.15, 3.0, generator) for _ in range(200)])
    assert (masks.sum(dim=1) == 77).all()  # exact, not just on average
    starts = masks & ~torch.cat([torch.zeros(200, 1, dtype=torch.bool), masks[:, :-1]], dim=1)
    assert (starts.sum(dim=1) == 26).all()
    assert abs(masks.sum().item() / starts.sum().item() - 3.0) < 0.05  # 77 / 26 = 2.96
    assert not masks[:, 0].any() and masks[:, -1].all()  # starts with a kept span, ends with a noise span
    # Spans land everywhere, not in fixed places.
    assert masks.float().mean(dim=0)[10:-10].min() > 0.05


def test_span_corruption_worked_example():
    # Mask [0 0 1 1 0 0 0 1 0 1] written by hand -> spans (2,3), (7), (9).
    row = torch.tensor([[10, 11, 12, 13, 14, 15, 16, 17, 18, 19]])
    noise = torch.tensor([0, 0, 1, 1, 0, 0, 0, 1, 0, 1], dtype=torch.bool)
    from alignment.pretrain import objectives

    original = objectives.random_spans_noise_mask
    objectives.random_spans_noise_mask = lambda *args, **kwargs: noise
    try:
        inputs, targets = span_corruption(row, SENTINELS, EOS, 0.4, 1.3)
    finally:
        objectives.random_spans_noise_mask = original
    assert inputs.tolist() == [[10, 11, 999, 14, 15, 16, 998, 18, 997, EOS]]
    assert targets.tolist() == [[999, 12, 13, 998, 17, 997, 19, EOS]]


def test_span_corruption_formats_and_exact_reconstruction():
    ids = _ids(64, 128, seed=5)
    ids[:, 40] = EOS  # a document boundary inside a packed block is data, not the end
    inputs, targets = span_corruption(ids, SENTINELS, EOS, 0.15, 3.0, torch.Generator().manual_seed(4))
    input_len, target_len = span_corruption_lengths(128, 0.15, 3.0)
    assert inputs.shape == (64, input_len) and targets.shape == (64, target_len)
    assert (inputs[:, -1] == EOS).all() and (targets[:, -1] == EOS).all()
    for row_inputs, row_targets, original in zip(inputs, targets, ids):
        sentinel_in_inputs = [t for t in row_inputs.tolist() if t in SENTINELS]
        sentinel_in_targets = [t for t in row_targets.tolist() if t in SENTINELS]
        # Same sentinels, in order 0, 1, 2, ... in both; targets start with the first sentinel.
        assert sentinel_in_inputs == sentinel_in_targets == SENTINELS[: len(sentinel_in_inputs)]
        assert row_targets[0].item() == SENTINELS[0]
        # Sentinels never sit side by side in targets (every span is non-empty).
        is_sentinel = torch.tensor([t in SENTINELS for t in row_targets.tolist()])
        assert not (is_sentinel[1:] & is_sentinel[:-1]).any()
        assert torch.equal(reconstruct_from_spans(row_inputs, row_targets, SENTINELS), original)


def test_span_corruption_needs_enough_sentinels():
    with pytest.raises(ValueError, match="sentinel"):
        span_corruption(_ids(1, 128), SENTINELS[:2], EOS, 0.15, 3.0)
