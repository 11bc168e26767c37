"""The batch planner: every sequence once, padded cost within budget, similar lengths together."""

from __future__ import annotations

import random

import pytest

from workers.batcher import BatchLimits, padded_length, plan_batches


def padded_cost(batch: list[int], lengths: list[int]) -> int:
    return len(batch) * max(lengths[i] for i in batch)


@pytest.mark.parametrize("seed", range(20))
def test_random_plans_cover_everything_within_limits(seed: int) -> None:
    rng = random.Random(seed)
    lengths = [rng.randint(1, 300) for _ in range(rng.randint(0, 400))]
    limits = BatchLimits(max_tokens=rng.choice([256, 1000, 4096]), max_items=rng.choice([1, 7, 64]))
    batches = plan_batches(lengths, limits)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= limits.max_items
        assert len(batch) == 1 or padded_cost(batch, lengths) <= limits.max_tokens


def test_longest_first_and_sorted_so_padding_is_small() -> None:
    lengths = [5, 100, 6, 98, 7, 99]
    batches = plan_batches(lengths, BatchLimits(max_tokens=300, max_items=10))
    assert batches == [[1, 5, 3], [4, 2, 0]]


def test_sequence_over_budget_gets_a_batch_of_its_own() -> None:
    assert plan_batches([10, 5000, 10], BatchLimits(max_tokens=100, max_items=8)) == [[1], [0, 2]]


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        BatchLimits(max_tokens=0, max_items=1)


def test_a_pad_multiple_counts_in_the_budget() -> None:
    # Ten 9-token sequences pad to 16 each: six fit in 100 padded tokens, not eleven.
    padded = plan_batches([9] * 10, BatchLimits(max_tokens=100, max_items=64, pad_multiple=8))
    assert [len(b) for b in padded] == [6, 4]
    assert [len(b) for b in plan_batches([9] * 10, BatchLimits(max_tokens=100, max_items=64))] == [10]
    assert padded_length(9, 8) == 16 and padded_length(16, 8) == 16 and padded_length(5, 1) == 5
    with pytest.raises(ValueError, match="positive"):
        BatchLimits(max_tokens=100, max_items=1, pad_multiple=0)
