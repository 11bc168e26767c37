"""The wire contract: valid items pass, every bad input gets a clear, specific error."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest
from pydantic import ValidationError

from sift.contract import (
    ClassifyItem,
    ErrorCode,
    ItemRejected,
    ItemResult,
    Job,
    Limits,
    RerankItem,
    TaskName,
    ZeroShotItem,
    parse_item,
    parse_task,
)


def rejected(task: TaskName, raw: Any, limits: Limits | None = None) -> tuple[ErrorCode, str]:
    with pytest.raises(ItemRejected) as info:
        parse_item(task, raw, limits or Limits())
    return info.value.error.code, info.value.error.message


def test_valid_items_of_every_task_parse() -> None:
    assert isinstance(parse_item(TaskName.CLASSIFY, {"id": "1", "text": "hi"}), ClassifyItem)
    zero_shot = parse_item(TaskName.ZERO_SHOT, {"id": "2", "text": "hi", "labels": ["a", "b"], "multi_label": True})
    assert isinstance(zero_shot, ZeroShotItem) and zero_shot.hypothesis_template == "This example is {}."
    parse_item(TaskName.NLI, {"id": "3", "premise": "p", "hypothesis": "h"})
    rerank = parse_item(TaskName.RERANK, {"id": "4", "query": "q", "documents": ["d1", "d2"], "top_k": 1})
    assert isinstance(rerank, RerankItem) and rerank.top_k == 1
    parse_item(TaskName.MODERATE, {"id": "5", "text": "hi", "policy": "strict"})


@pytest.mark.parametrize(
    ("raw", "code", "says"),
    [
        ({"id": "x", "text": ""}, ErrorCode.INVALID_INPUT, "empty"),
        ({"id": "x", "text": " \n\t "}, ErrorCode.INVALID_INPUT, "empty"),
        ({"id": "x"}, ErrorCode.INVALID_INPUT, "text: Field required"),
        ({"text": "hi"}, ErrorCode.INVALID_INPUT, "id: Field required"),
        ({"id": "x", "text": 5}, ErrorCode.INVALID_INPUT, "text"),
        ({"id": "x", "text": ["a"]}, ErrorCode.INVALID_INPUT, "text"),
        ({"id": 7, "text": "hi"}, ErrorCode.INVALID_INPUT, "id"),
        ({"id": "", "text": "hi"}, ErrorCode.INVALID_INPUT, "id"),
        ({"id": "x" * 257, "text": "hi"}, ErrorCode.INVALID_INPUT, "id"),
        ({"id": "x", "text": "hi", "extra": 1}, ErrorCode.INVALID_INPUT, "extra"),
        ({"id": "x", "text": "a\x00b"}, ErrorCode.INVALID_INPUT, "NUL"),
        ({"id": "x", "text": "lone \ud800 surrogate"}, ErrorCode.INVALID_INPUT, "surrogate"),
        ({"id": "x", "text": "é" * 9000}, ErrorCode.TOO_LARGE, "18000 bytes"),
        ("not a dict", ErrorCode.INVALID_INPUT, "item"),
        (None, ErrorCode.INVALID_INPUT, "item"),
    ],
)
def test_bad_classify_items_get_specific_errors(raw: Any, code: ErrorCode, says: str) -> None:
    got_code, message = rejected(TaskName.CLASSIFY, raw)
    assert got_code == code
    assert says in message


def test_zero_shot_limits_and_template() -> None:
    limits = Limits(max_labels=3)
    base = {"id": "z", "text": "hi"}
    assert rejected(TaskName.ZERO_SHOT, {**base, "labels": list("abcd")}, limits)[0] == ErrorCode.TOO_LARGE
    assert rejected(TaskName.ZERO_SHOT, {**base, "labels": []})[0] == ErrorCode.INVALID_INPUT
    assert "distinct" in rejected(TaskName.ZERO_SHOT, {**base, "labels": ["a", "a"]})[1]
    assert "{}" in rejected(TaskName.ZERO_SHOT, {**base, "labels": ["a"], "hypothesis_template": "no slot"})[1]
    assert rejected(TaskName.ZERO_SHOT, {**base, "labels": ["a", ""]})[0] == ErrorCode.INVALID_INPUT
    assert rejected(TaskName.ZERO_SHOT, {**base, "labels": ["a"], "multi_label": "yes"})[0] == ErrorCode.INVALID_INPUT


def test_rerank_limits() -> None:
    limits = Limits(max_documents=2)
    base = {"id": "r", "query": "q"}
    assert rejected(TaskName.RERANK, {**base, "documents": ["a", "b", "c"]}, limits)[0] == ErrorCode.TOO_LARGE
    assert rejected(TaskName.RERANK, {**base, "documents": ["a"], "top_k": 0})[0] == ErrorCode.INVALID_INPUT
    assert rejected(TaskName.RERANK, {**base, "documents": [1]})[0] == ErrorCode.INVALID_INPUT


def test_unknown_task_names_the_known_ones() -> None:
    with pytest.raises(ItemRejected) as info:
        parse_task("summarize")
    assert info.value.error.code == ErrorCode.UNKNOWN_TASK
    assert "classify" in info.value.error.message


def test_job_envelope_is_strict_and_versioned() -> None:
    job = Job(job_id="j-1", task="classify", items=[{"id": "1", "text": "x"}], enqueued_at=time.time())
    assert Job.model_validate(job.model_dump(mode="json")) == job
    for bad in (
        {"job_id": "has space", "task": "classify", "items": [{}], "enqueued_at": 0},
        {"job_id": "j", "task": "classify", "items": [], "enqueued_at": 0},
        {"job_id": "j", "task": "classify", "items": [{}], "enqueued_at": 0, "schema_version": 2},
        {"job_id": "j", "task": "classify", "items": [{}], "enqueued_at": 0, "surprise": True},
    ):
        with pytest.raises(ValidationError):
            Job.model_validate(bad)


def test_result_round_trips_through_json() -> None:
    result = ItemResult(job_id="j", id="1", task="classify", label="POSITIVE")
    assert ItemResult.model_validate_json(result.model_dump_json(exclude_none=True)) == result
    assert result.ok


def test_contract_and_producer_import_without_torch() -> None:
    code = (
        "import sys, sift.contract, sift.results_store, producers, producers.backfill, sift.cli; "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr + completed.stdout


def test_redis_password_is_redacted_in_messages() -> None:
    from sift.settings import redact_url

    assert redact_url("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert redact_url("rediss://user:s3cret@host:6380/1") == "rediss://user:***@host:6380/1"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"


@pytest.mark.parametrize("template", ["{} is {topic}.", "This is {} {", "{} or {0}", "{}}"])
def test_templates_that_cannot_be_formatted_are_rejected_up_front(template: str) -> None:
    code, message = rejected(
        TaskName.ZERO_SHOT, {"id": "z", "text": "t", "labels": ["a"], "hypothesis_template": template}
    )
    assert code == ErrorCode.INVALID_INPUT
    assert "hypothesis_template" in message


def test_ids_must_be_valid_utf8_and_result_keys_never_carry_surrogates() -> None:
    from sift.contract.items import item_key, usable_id

    assert rejected(TaskName.CLASSIFY, {"id": "a\udc80", "text": "t"}) == (
        ErrorCode.INVALID_INPUT,
        "id: Input should be a valid string, unable to parse raw data as a unicode string",
    )
    assert item_key({"id": "a\udc80"}, 3) == "#3"
    assert usable_id(17) == "17" and usable_id(10**30) == str(10**30)
    assert usable_id(10**2000) is None and usable_id(True) is None and usable_id("") is None
