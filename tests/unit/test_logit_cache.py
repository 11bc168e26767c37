"""The logit cache's keys, value format and batch plan, without Redis (the Redis side is in tests/integration)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from workers.engine.logit_cache import (
    CachedLogits,
    CachePlan,
    LogitCache,
    decode_value,
    dedupe,
    encode_value,
    model_cache_key,
    sequence_key,
)

MODEL: dict[str, Any] = {
    "source": "MoritzLaurer/deberta-v3-base-zeroshot-v2.0",
    "revision": "0a1b2c3d",
    "dtype": "torch.bfloat16",
    "quantize": "none",
    "max_length": 512,
}


def test_the_same_model_identity_gives_the_same_key() -> None:
    assert model_cache_key(**MODEL) == model_cache_key(**dict(MODEL))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("source", "MoritzLaurer/deberta-v3-large-zeroshot-v2.0"),
        ("revision", "ffffffff"),
        ("dtype", "torch.float32"),
        ("quantize", "int8"),
        ("max_length", 256),
    ],
)
def test_anything_that_changes_the_logits_changes_the_model_key(field: str, value: Any) -> None:
    assert model_cache_key(**{**MODEL, field: value}) != model_cache_key(**MODEL)


def test_the_same_sequence_under_the_same_model_gives_the_same_key() -> None:
    model = model_cache_key(**MODEL)
    assert sequence_key("sift", model, ("hello", "This is spam.")) == sequence_key(
        "sift", model, ("hello", "This is spam.")
    )


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (("hello", None), ("hello!", None)),
        (("hello", "This is spam."), ("hello", "This is ham.")),
        (("hello", None), ("hello", "")),  # a single text is not a pair with an empty second text
        (("a b", None), ("a", "b")),
        (("a", "b c"), ("a b", "c")),  # where the text ends and the pair begins matters
        (("caf\u00e9", None), ("cafe\u0301", None)),  # no Unicode normalisation: the tokenizer sees different input
    ],
)
def test_different_sequences_get_different_keys(one: tuple[str, str | None], other: tuple[str, str | None]) -> None:
    model = model_cache_key(**MODEL)
    assert sequence_key("sift", model, one) != sequence_key("sift", model, other)


def test_keys_are_apart_per_model_and_per_deployment_prefix() -> None:
    model = model_cache_key(**MODEL)
    other_model = model_cache_key(**{**MODEL, "revision": "ffffffff"})
    assert sequence_key("sift", model, ("hi", None)) != sequence_key("sift", other_model, ("hi", None))
    assert sequence_key("sift", model, ("hi", None)).startswith("sift:logits:")
    assert sequence_key("other", model, ("hi", None)).startswith("other:logits:")


def test_a_text_with_a_lone_surrogate_still_gets_a_key() -> None:
    # JSON payloads can carry "\ud800"; such a text must not crash the cache.
    key = sequence_key("sift", model_cache_key(**MODEL), ("bad \ud800 text", None))
    assert key.startswith("sift:logits:")


def test_values_round_trip_bit_for_bit() -> None:
    row = np.array([-1.5e-42, 3.4028235e38, 0.1, -0.0], dtype=np.float32)  # subnormal, max, inexact, signed zero
    entry = decode_value(encode_value(row, truncated=True))
    assert entry is not None and entry.truncated
    assert entry.logits.dtype == np.float32
    assert entry.logits.tobytes() == row.tobytes()


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x00", b"\x00abc", b"\x02" + np.zeros(2, np.float32).tobytes(), b"\x00" + np.float32("nan").tobytes()],
)
def test_unreadable_values_are_misses(raw: bytes) -> None:
    assert decode_value(raw) is None


def test_a_value_of_the_wrong_width_is_a_miss() -> None:
    raw = encode_value(np.zeros(3, np.float32), truncated=False)
    assert decode_value(raw, num_labels=3) is not None
    assert decode_value(raw, num_labels=2) is None


def test_a_cache_without_redis_finds_nothing_and_counts_nothing() -> None:
    cache = LogitCache(None, "sift", ttl_s=60)
    assert cache.lookup("m", [("a", None), ("b", None)]) == [None, None]
    assert cache.store("m", [("a", None)], np.zeros((1, 2), np.float32), [False]) == 0
    assert (cache.hits, cache.misses, cache.hit_rate) == (0, 0, 0.0)


def test_a_ttl_below_one_second_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1 s"):
        LogitCache(None, "sift", ttl_s=0)


def test_store_refuses_rows_that_do_not_match_the_sequences() -> None:
    with pytest.raises(ValueError, match="2 sequences, 1 logits rows and 2 truncation flags"):
        LogitCache(None, "sift", ttl_s=60).store("m", [("a", None), ("b", None)], np.zeros((1, 2)), [False, False])


def test_a_plan_scores_each_distinct_sequence_once_and_merges_back_in_request_order() -> None:
    cache = LogitCache(None, "sift", ttl_s=60, enabled=False)
    asked = [("a", None), ("b", None), ("a", None), ("c", None), ("b", None)]
    plan = cache.plan("m", asked, num_labels=2)
    assert plan.missing == [("a", None), ("b", None), ("c", None)]
    assert (plan.hits, plan.misses, plan.duplicates) == (0, 0, 2), "a cache that is off reports no misses"
    scored = np.array([[1, 2], [3, 4], [5, 6]], dtype=np.float32)
    merged = plan.merge(scored, [False, True, False], {2: "RuntimeError: boom"})
    assert merged.logits.tolist() == [[1, 2], [3, 4], [1, 2], [5, 6], [3, 4]]
    assert merged.truncated == [False, True, False, False, True]
    assert merged.failures == {3: "RuntimeError: boom"}


def test_a_plan_merges_cached_rows_with_scored_ones() -> None:
    cached = CachedLogits(np.array([9, 9], np.float32), truncated=True)
    plan = CachePlan(
        sequences=[("x", None), ("y", None)], slots=[0, 1], unique=[("x", None), ("y", None)], found=[cached, None],
        num_labels=2,
    )  # fmt: skip
    assert plan.missing == [("y", None)] and plan.hits == 1
    merged = plan.merge(np.array([[1, 2]], np.float32), [False], {})
    assert merged.logits.tolist() == [[9, 9], [1, 2]]
    assert merged.truncated == [True, False]
    assert merged.failures == {}


def test_a_plan_served_entirely_from_the_cache_needs_no_scores() -> None:
    rows = [
        CachedLogits(np.array([1, 2], np.float32), truncated=False),
        CachedLogits(np.array([3, 4], np.float32), True),
    ]
    plan = CachePlan(
        sequences=[("x", None), ("y", None), ("x", None)], slots=[0, 1, 0], unique=[("x", None), ("y", None)],
        found=list(rows), num_labels=2,
    )  # fmt: skip
    assert plan.missing == [] and (plan.hits, plan.misses) == (2, 0)
    merged = plan.cached_only()
    assert merged.logits.tolist() == [[1, 2], [3, 4], [1, 2]]
    assert merged.truncated == [False, True, False]


def test_cached_only_refuses_a_plan_with_sequences_left_to_score() -> None:
    plan = LogitCache(None, "sift", ttl_s=60).plan("m", [("a", None)], num_labels=2)
    with pytest.raises(ValueError, match=r"expected logits of shape \(1, 2\)"):
        plan.cached_only()


def test_merge_refuses_scores_of_the_wrong_shape() -> None:
    plan = LogitCache(None, "sift", ttl_s=60).plan("m", [("a", None)], num_labels=2)
    with pytest.raises(ValueError, match=r"expected logits of shape \(1, 2\)"):
        plan.merge(np.zeros((1, 3), np.float32), [False], {})


def test_dedupe_maps_every_value_to_its_first_occurrence() -> None:
    assert dedupe(["a", "b", "a", "c", "b"]) == ([0, 1, 3], [0, 1, 0, 2, 1])
    assert dedupe([]) == ([], [])
    assert dedupe([("t", None), ("t", "")]) == ([0, 1], [0, 1])


def test_keys_are_the_sequence_keys_of_the_cache_prefix() -> None:
    cache = LogitCache(None, "dep", ttl_s=60)
    assert cache.keys("m", [("a", None), ("a", "b")]) == [
        sequence_key("dep", "m", ("a", None)),
        sequence_key("dep", "m", ("a", "b")),
    ]
