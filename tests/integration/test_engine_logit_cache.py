"""The engine with its logit cache in a real redis-server: the same answers, without the model the second time."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import torch
from prometheus_client import CollectorRegistry
from sift_it_helpers import assert_same_answer

from sift.contract import DEFAULT_LIMITS, ErrorCode, Job
from sift.telemetry import WorkerMetrics
from workers.engine.engine import Engine
from workers.engine.logit_cache import LogitCache
from workers.engine.policy import load_policies
from workers.engine.registry import Registry

LONG_TEXT = "word " * 2000
"""Cut at the model's max length: its result says ``truncated``, from the cache too."""


@pytest.fixture(scope="module")
def plain(registry: Registry) -> Iterator[Engine]:
    """The engine without a cache: the reference answers. Only the small models."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield Engine.load(registry, ["nli", "rerank"], torch.device("cpu"), load_policies(), DEFAULT_LIMITS, "plain")
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def prefix() -> str:
    return f"engine-cache-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def registry_of_metrics() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def cached(plain: Engine, raw_redis: redis.Redis, prefix: str, registry_of_metrics: CollectorRegistry) -> Engine:
    """The same loaded models behind a cache of their own (a fresh key prefix per test)."""
    return Engine(
        plain.models,
        plain.registry,
        plain.policies,
        plain.limits,
        "cached",
        plain.retry,
        cache=LogitCache(raw_redis, prefix=prefix, ttl_s=60),
        metrics=WorkerMetrics(registry_of_metrics),
    )


def job(task: str, items: list[Any], model: str | None = None) -> Job:
    return Job(job_id=f"cache-{uuid.uuid4().hex[:8]}", task=task, model=model, items=items, enqueued_at=time.time())


def counted(registry: CollectorRegistry, what: str, role: str) -> float:
    return registry.get_sample_value(f"sift_worker_cache_{what}_total", {"role": role}) or 0.0


JOBS: dict[str, tuple[str | None, list[Any]]] = {
    "nli": (
        None,
        [
            {"id": "n0", "premise": "A dog runs in the park.", "hypothesis": "An animal is outside."},
            {"id": "n1", "premise": LONG_TEXT, "hypothesis": "Words."},
            {"id": "bad", "premise": "", "hypothesis": "An empty premise is refused."},
            {"id": "n2", "premise": "The shop was closed.", "hypothesis": "Nobody could buy anything."},
        ],
    ),
    "rerank": (
        None,
        [
            {"id": "r0", "query": "capital of France", "documents": ["Paris is in France.", "Bananas.", "Rome."]},
            {"id": "r1", "query": "cats", "documents": ["Cats purr.", "Dogs bark.", LONG_TEXT], "top_k": 2},
        ],
    ),
    "zero_shot": (
        "nli",
        [
            {"id": "z0", "text": "Stocks fell sharply on Monday.", "labels": ["sports", "finance", "food"]},
            {"id": "z1", "text": "The striker scored twice.", "labels": ["sports", "finance"], "multi_label": True},
        ],
    ),
}


@pytest.mark.parametrize("task", list(JOBS))
def test_answers_with_the_cache_equal_answers_without(
    task: str, plain: Engine, cached: Engine, registry_of_metrics: CollectorRegistry
) -> None:
    model, items = JOBS[task]
    role = model or task
    reference = plain.run(job(task, items, model))
    first = cached.run(job(task, items, model))
    hits_before = counted(registry_of_metrics, "hits", role)
    second = cached.run(job(task, items, model))

    assert [r.error.code if r.error else None for r in reference].count(None) >= len(items) - 1
    for got, want in zip(first, reference, strict=True):
        assert_same_answer(got, want)
    for got, want in zip(second, first, strict=True):
        assert_same_answer(got, want, tol=0.0)  # the very logits the first run scored
    scored = counted(registry_of_metrics, "misses", role)
    assert scored > 0
    assert counted(registry_of_metrics, "hits", role) - hits_before == scored, "every sequence hit the second time"
    assert any(r.truncated for r in second) == any(r.truncated for r in reference)


def test_a_job_answered_from_the_cache_never_reaches_the_model(cached: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    items = [{"id": str(i), "premise": f"Sentence number {i}.", "hypothesis": "A sentence."} for i in range(6)]
    first = cached.run(job("nli", items))

    def must_not_run(**_inputs: torch.Tensor) -> Any:
        raise AssertionError("a cached sequence reached the model")

    monkeypatch.setattr(cached.models["nli"].model, "forward", must_not_run)
    monkeypatch.setattr(cached.models["nli"], "tokenizer", None)  # nor the tokenizer
    again = job("nli", items)
    admission, units = cached.admit(again)
    assert units == [] and admission.done, "every item was answered at admission"
    for got, want in zip(cached.results(admission), first, strict=True):
        assert_same_answer(got, want, tol=0.0)


def test_repeated_sequences_are_scored_once(
    cached: Engine, registry_of_metrics: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = cached.models["nli"]
    real_forward = loaded.model.forward
    rows_scored = 0

    def counting(**inputs: torch.Tensor) -> Any:
        nonlocal rows_scored
        rows_scored += int(inputs["input_ids"].shape[0])
        return real_forward(**inputs)

    monkeypatch.setattr(loaded.model, "forward", counting)
    same = {"premise": "The same premise, again and again.", "hypothesis": "It repeats."}
    items = [{"id": f"dup{i}", **same} for i in range(5)] + [{"id": "other", "premise": "Else.", "hypothesis": "No."}]
    results = cached.run(job("nli", items))

    assert all(r.ok for r in results)
    assert rows_scored == 2, "two distinct sequences, each scored once"
    assert len({tuple(s.score for s in r.scores) for r in results[:5]}) == 1
    assert counted(registry_of_metrics, "misses", "nli") == 2
    assert counted(registry_of_metrics, "duplicates", "nli") == 4


def test_a_sequence_that_failed_is_not_cached_and_is_scored_next_time(
    cached: Engine, registry_of_metrics: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = cached.models["nli"]
    poison = loaded.tokenizer.convert_tokens_to_ids("poison")
    assert isinstance(poison, int)
    real_forward = loaded.model.forward

    def failing(**inputs: torch.Tensor) -> Any:
        if inputs["input_ids"].eq(poison).any():
            raise RuntimeError("kernel failure on this input")
        return real_forward(**inputs)

    items = [{"id": str(i), "premise": f"premise {i}", "hypothesis": "h"} for i in range(4)]
    items[2]["premise"] = "poison pill"
    monkeypatch.setattr(loaded.model, "forward", failing)
    first = cached.run(job("nli", items))
    assert [r.error.code if r.error else None for r in first] == [None, None, ErrorCode.INFERENCE_FAILED, None]

    monkeypatch.setattr(loaded.model, "forward", real_forward)  # the fault clears
    hits_before = counted(registry_of_metrics, "hits", "nli")
    second = cached.run(job("nli", items))
    assert all(r.ok for r in second), "the failed sequence was scored, not served a cached failure"
    assert counted(registry_of_metrics, "hits", "nli") - hits_before == 3


def test_a_sequence_scored_by_one_model_is_not_reused_by_another(
    cached: Engine, registry_of_metrics: CollectorRegistry
) -> None:
    premise, hypothesis = "Where is the station?", "The station is two streets away."
    cached.run(job("nli", [{"id": "n", "premise": premise, "hypothesis": hypothesis}]))
    [ranked] = cached.run(job("rerank", [{"id": "r", "query": premise, "documents": [hypothesis]}]))

    assert ranked.ok
    assert counted(registry_of_metrics, "hits", "rerank") == 0
    assert counted(registry_of_metrics, "misses", "rerank") == 1


def test_labels_and_multi_label_are_applied_after_the_cache(plain: Engine, cached: Engine) -> None:
    text = "The new phone has a great camera but the battery dies fast."
    cached.run(job("zero_shot", [{"id": "a", "text": text, "labels": ["tech", "sports"]}], "nli"))
    # "tech" and "sports" come from the cache, "food" is scored; multi_label changes the head alone.
    changed = [{"id": "b", "text": text, "labels": ["sports", "food", "tech"], "multi_label": True}]
    [got] = cached.run(job("zero_shot", changed, "nli"))
    [want] = plain.run(job("zero_shot", changed, "nli"))
    assert_same_answer(got, want)
    assert {s.label for s in got.scores} == {"sports", "food", "tech"}
