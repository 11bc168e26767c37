"""The engine never lets one bad item cost its neighbours."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch

from sift.contract import ErrorCode, Job, Limits
from workers.engine.engine import Engine
from workers.engine.policy import load_policies
from workers.engine.registry import Registry, load_registry


@pytest.fixture(scope="module")
def registry(offline_registry: Path) -> Registry:
    return load_registry(offline_registry)


@pytest.fixture(scope="module")
def engine(registry: Registry) -> Engine:
    # Only the small models: these tests are about control flow, not model size.
    return Engine.load(registry, ["nli", "rerank"], torch.device("cpu"), load_policies(), Limits(max_labels=4), "t")


def job(task: str, items: list[Any], model: str | None = None) -> Job:
    return Job(job_id="errors", task=task, model=model, items=items, enqueued_at=time.time())


def codes(engine: Engine, task: str, items: list[Any], model: str | None = None) -> list[str | None]:
    return [r.error.code if r.error else None for r in engine.run(job(task, items, model))]


def test_bad_items_fail_alone_in_a_mixed_message(engine: Engine) -> None:
    items: list[Any] = [
        {"id": "ok1", "premise": "a", "hypothesis": "b"},
        {"id": "empty", "premise": "", "hypothesis": "b"},
        "not an object",
        {"premise": "no id", "hypothesis": "b"},
        {"id": "ok2", "premise": "c", "hypothesis": "d"},
        {"id": "ok1", "premise": "again", "hypothesis": "b"},
    ]
    results = engine.run(job("nli", items))
    assert [r.id for r in results] == ["ok1", "empty", "#2", "#3", "ok2", "ok1"]
    assert [r.error.code if r.error else None for r in results] == [
        None,
        ErrorCode.INVALID_INPUT,
        ErrorCode.INVALID_INPUT,
        ErrorCode.INVALID_INPUT,
        None,
        ErrorCode.DUPLICATE_ID,
    ]
    assert results[0].label in {"entailment", "neutral", "contradiction"}


def test_unknown_task_unknown_model_and_model_not_loaded(engine: Engine) -> None:
    item = {"id": "1", "text": "hello"}
    assert codes(engine, "summarize", [item]) == [ErrorCode.UNKNOWN_TASK]
    assert codes(engine, "classify", [item], model="gpt") == [ErrorCode.UNKNOWN_MODEL]
    # sentiment is in the registry but this engine did not load it.
    [result] = engine.run(job("classify", [item]))
    assert result.error is not None and result.error.code == ErrorCode.MODEL_NOT_LOADED
    assert "not loaded on worker t" in result.error.message


def test_limits_and_unsupported_models(engine: Engine) -> None:
    too_many = {"id": "1", "text": "t", "labels": ["a", "b", "c", "d", "e"]}
    assert codes(engine, "zero_shot", [too_many], model="nli") == [ErrorCode.TOO_LARGE]
    # The cross-encoder has one logit: it cannot do NLI, and says so instead of returning nonsense.
    assert codes(engine, "nli", [{"id": "1", "premise": "p", "hypothesis": "h"}], model="rerank") == [
        ErrorCode.UNSUPPORTED_MODEL
    ]
    assert codes(engine, "moderate", [{"id": "1", "text": "t", "policy": "nope"}]) == [ErrorCode.UNKNOWN_POLICY]


def test_an_item_that_makes_the_model_raise_is_isolated(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = engine.models["nli"]
    poison = loaded.tokenizer.convert_tokens_to_ids("poison")
    real_forward = loaded.model.forward

    def forward(**inputs: torch.Tensor) -> Any:
        if (inputs["input_ids"] == poison).any():
            raise RuntimeError("kernel failure on this input")
        return real_forward(**inputs)

    items = [{"id": str(i), "premise": f"sentence {i}", "hypothesis": "h"} for i in range(9)]
    items[5]["premise"] = "poison pill"
    expected = engine.run(job("nli", items[:5] + items[6:]))
    monkeypatch.setattr(loaded.model, "forward", forward)
    results = engine.run(job("nli", items))
    assert [r.error.code if r.error else None for r in results].count(ErrorCode.INFERENCE_FAILED) == 1
    assert results[5].error is not None and "kernel failure" in results[5].error.message
    survivors = results[:5] + results[6:]
    for got, want in zip(survivors, expected, strict=True):
        assert got.label == want.label
        assert [s.score for s in got.scores] == pytest.approx([s.score for s in want.scores], abs=1e-5)


def test_a_job_past_its_deadline_is_answered_expired_without_compute(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_run(**_inputs: torch.Tensor) -> Any:
        raise AssertionError("an expired job reached the model")

    monkeypatch.setattr(engine.models["nli"].model, "forward", must_not_run)
    items = [{"id": str(i), "premise": "p", "hypothesis": "h"} for i in range(3)]
    late = Job(job_id="late", task="nli", items=items, enqueued_at=time.time() - 5, deadline=time.time() - 1)
    results = engine.run(late)
    assert [r.error.code if r.error else None for r in results] == [ErrorCode.EXPIRED] * 3
    assert "deadline passed" in (results[0].error.message if results[0].error else "")


def test_a_poison_item_is_retried_alone_then_given_up(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.engine.forward import RetryPolicy

    loaded = engine.models["nli"]
    poison = loaded.tokenizer.convert_tokens_to_ids("poison")
    real_forward = loaded.model.forward
    calls_with_poison = 0
    transient = True

    def forward(**inputs: torch.Tensor) -> Any:
        nonlocal calls_with_poison
        if (inputs["input_ids"] == poison).any():
            calls_with_poison += 1
            # A transient fault clears on the second try of the item alone.
            if not transient or calls_with_poison < 4:
                raise RuntimeError("flaky kernel")
        return real_forward(**inputs)

    monkeypatch.setattr(loaded.model, "forward", forward)
    monkeypatch.setattr(engine, "retry", RetryPolicy(attempts=2, backoff_s=0.0))
    items = [{"id": str(i), "premise": "poison" if i == 2 else f"p{i}", "hypothesis": "h"} for i in range(4)]

    results = engine.run(job("nli", items))
    # Full batch, then the half with it, then alone (3 calls), then the first retry succeeds.
    assert calls_with_poison == 4
    assert all(r.ok for r in results)

    transient, calls_with_poison = False, 0
    results = engine.run(job("nli", items))
    assert calls_with_poison == 3 + 2, "alone once, then exactly `attempts` retries"
    assert [r.ok for r in results] == [True, True, False, True]


def test_an_out_of_memory_batch_is_halved_until_it_fits_and_no_item_fails(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = engine.models["nli"]
    real_forward = loaded.model.forward
    rows_tried: list[int] = []
    emptied = 0

    def forward(**inputs: torch.Tensor) -> Any:
        rows_tried.append(int(inputs["input_ids"].shape[0]))
        if inputs["input_ids"].shape[0] > 2:  # a device with room for 2 rows at a time
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(**inputs)

    def empty_cache() -> None:
        nonlocal emptied
        emptied += 1

    items = [{"id": str(i), "premise": f"sentence number {i}", "hypothesis": "h"} for i in range(8)]
    expected = engine.run(job("nli", items))
    monkeypatch.setattr(loaded.model, "forward", forward)
    monkeypatch.setattr(torch.cuda, "empty_cache", empty_cache)
    results = engine.run(job("nli", items))

    assert all(r.ok for r in results), [r.error for r in results if r.error]
    assert rows_tried[0] == 8 and max(n for n in rows_tried if n <= 2) == 2, rows_tried
    assert emptied == sum(1 for n in rows_tried if n > 2), "the allocator's cache is given back after each OOM"
    for got, want in zip(results, expected, strict=True):
        assert got.label == want.label
        assert [s.score for s in got.scores] == pytest.approx([s.score for s in want.scores], abs=1e-5)
