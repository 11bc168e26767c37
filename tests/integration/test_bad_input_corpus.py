"""A corpus of bad input, thrown at the shared worker and at ``sift backfill``.

Every kind gets a clear per-item error (an exact ``ErrorCode``) or a valid result; no worker dies;
no other item is lost. Path 1 is a foreign producer that validates nothing: raw ``sift.infer``
messages on the bulk queue, one per task/model, bad items interleaved with valid sentinels.
Path 2 is a user's JSONL file, line by line, through the ``sift`` command.

``test_worker_bad_messages.py`` checks a handful of these in detail; this module is the broad sweep.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sift_it_helpers import cli_env, new_job_id, run_sift, wait_until

from producers.client import ItemRef, SiftClient
from sift.contract import DEFAULT_LIMITS, ErrorCode, ItemResult, Lane
from sift.keys import INFER_TASK, queue_name
from sift.local import WorkerProcess
from sift.settings import SiftSettings

pytestmark = pytest.mark.integration

OK = "ok"
DUPLICATE = "duplicate (the store keeps the first item's answer)"
POSITIONAL = "#"
"""``Case.key`` for items without a usable id: their result is keyed ``#<index in the message>``."""
LIMIT = DEFAULT_LIMITS.max_text_bytes
RESULT_TIMEOUT_S = 90
DEEP = 100_000

INVALID = ErrorCode.INVALID_INPUT
TOO_LARGE = ErrorCode.TOO_LARGE

TRIED: dict[str, set[str]] = {"worker": set(), "backfill": set()}
"""Kinds each path actually sent, for the closing count."""
OBSERVED: dict[str, str] = {}
"""What became of each undecodable message."""
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


@dataclass(frozen=True)
class Case:
    kind: str
    item: Any
    expect: str
    """An ``ErrorCode`` value, ``OK`` (a valid prediction) or ``DUPLICATE``."""
    mention: str | None = None
    """A word the error message must contain (the offending field, usually)."""
    key: str | None = None
    """Key of the result: default the item's string id; ``POSITIONAL`` for ``#<index>``."""


def case(kind: str, expect: str, mention: str | None = None, *, key: str | None = None, **fields: Any) -> Case:
    """A dict item with id ``kind`` (unless ``fields`` say otherwise)."""
    return Case(kind, {"id": kind, **fields}, expect, mention, key)


def bare(kind: str, item: Any, expect: str, mention: str | None = None, key: str | None = POSITIONAL) -> Case:
    """An item given exactly as is (no id added)."""
    return Case(kind, item, expect, mention, key)


def sentinel(task: str, n: int) -> dict[str, Any]:
    """A valid item of ``task``; every sentinel must come back with a prediction."""
    item_id = f"sentinel-{task}-{n}"
    if task == "classify":
        return {"id": item_id, "text": f"An ordinary sentence, number {n}."}
    if task == "zero_shot":
        return {"id": item_id, "text": f"The match {n} went to penalties.", "labels": ["sports", "politics", "food"]}
    if task == "nli":
        return {"id": item_id, "premise": f"{n} cats sleep on the mat.", "hypothesis": "Animals are resting."}
    if task == "rerank":
        return {"id": item_id, "query": f"question {n}", "documents": ["an answer", "noise", "more noise"]}
    assert task == "moderate"
    return {"id": item_id, "text": f"Have a nice day, friend number {n}."}


def v(text: str = "A perfectly fine text.", **fields: Any) -> dict[str, Any]:
    return {"text": text, **fields}


def zs(labels: Any = ("sports", "politics"), **fields: Any) -> dict[str, Any]:
    return {
        "text": "The striker scored twice.",
        "labels": list(labels) if isinstance(labels, tuple) else labels,
        **fields,
    }


def rr(documents: Any = ("first document", "second document"), **fields: Any) -> dict[str, Any]:
    docs = list(documents) if isinstance(documents, tuple) else documents
    return {"query": "which document?", "documents": docs, **fields}


AT_LIMIT = "é" * (LIMIT // 2)  # exactly LIMIT bytes, half as many characters
assert len(AT_LIMIT.encode()) == LIMIT

CLASSIFY_CASES = [
    case("empty_text", INVALID, "text", text=""),
    case("whitespace_only_text", INVALID, "text", text=" \t\n\r\u3000\u00a0 "),
    case("text_1mb", TOO_LARGE, "text", text="x" * 1_000_000),
    case("text_exactly_at_byte_limit", OK, text=AT_LIMIT),
    case("text_one_byte_over_limit", TOO_LARGE, "text", text=AT_LIMIT + "!"),
    case("emoji_over_byte_limit_under_char_limit", TOO_LARGE, "text", text="😀" * (LIMIT // 4 + 1)),
    case("lone_surrogate_in_text", INVALID, "text", text="abc\ud800def"),
    case("nul_in_text", INVALID, "NUL", text="before\x00after"),
    case("control_characters", OK, text="\x01\x02\x1b[31mred\x1b[0m bell\x07 del\x7f"),
    case("rtl_text", OK, text="مرحبا بالعالم \u202b\u05e9\u05dc\u05d5\u05dd\u202c"),
    case("zero_width_characters", OK, text="zero\u200bwidth\u200cnon\u200djoiner\ufeff"),
    case("zero_width_only", OK, text="\u200b\u200c\u200d"),
    case("emoji_only", OK, text="😀🔥👍🏽👨‍👩‍👧"),
    case("punctuation_only", OK, text="?!…;:—()[]{}"),
    case("combining_marks", OK, text="Z̷̢͎a̸̗l̵̰g̶͉o̷̮ text"),
    case("text_as_number", INVALID, "text", text=42),
    case("text_as_bool", INVALID, "text", text=True),
    case("text_as_list", INVALID, "text", text=["a", "list"]),
    case("text_as_object", INVALID, "text", text={"a": 1}),
    case("text_null", INVALID, "text", text=None),
    case("missing_text", INVALID, "text"),
    case("nested_100_in_text", INVALID, "text", text=nested(100)),
    case("nested_100_in_extra_field", INVALID, "meta", text="fine", meta=nested(100)),
    case("extra_field", INVALID, "label", text="fine", label="positive"),
    bare("missing_id", v(), INVALID, "id"),
    bare("id_float", {"id": 1.5, **v()}, INVALID, "id"),
    bare("id_bool", {"id": True, **v()}, INVALID, "id"),
    bare("id_null", {"id": None, **v()}, INVALID, "id"),
    bare("id_list", {"id": ["a"], **v()}, INVALID, "id"),
    bare("id_object", {"id": {"a": "b"}, **v()}, INVALID, "id"),
    bare("id_empty_string", {"id": "", **v()}, INVALID, "id"),
    bare("id_huge_string_300", {"id": "i" * 300, **v()}, INVALID, "id"),
    bare("id_huge_int_10e30", {"id": 10**30, **v()}, INVALID, "id", key=str(10**30)),
    bare("id_small_int", {"id": 1234567, **v()}, INVALID, "id", key="1234567"),
    bare("id_at_max_length_256", {"id": "m" * 256, **v()}, OK, key="m" * 256),
    bare("id_unicode", {"id": "ид-é-😀-مرحبا", **v()}, OK, key="ид-é-😀-مرحبا"),
    bare("id_control_characters", {"id": "tab\tnewline\nnul\x00", **v()}, OK, key="tab\tnewline\nnul\x00"),
    bare("item_is_list", ["id", "text"], INVALID, "item"),
    bare("item_is_string", "just a string", INVALID, "item"),
    bare("item_is_null", None, INVALID, "item"),
    bare("item_is_number", 7, INVALID, "item"),
    bare("item_is_empty_object", {}, INVALID, "id"),
    bare("duplicate_id", {"id": "sentinel-classify-0", "text": ""}, DUPLICATE, key="sentinel-classify-0"),
]

ZERO_SHOT_CASES = [
    case("labels_as_string", INVALID, "labels", **zs("sports")),
    case("labels_empty_list", INVALID, "labels", **zs([])),
    case("labels_10k", TOO_LARGE, "labels", **zs([f"label {i}" for i in range(10_000)])),
    case("labels_duplicate", INVALID, "distinct", **zs(["same", "same"])),
    case("label_empty_string", INVALID, "labels", **zs(["", "politics"])),
    case("labels_not_strings", INVALID, "labels", **zs([1, 2])),
    case("labels_as_object", INVALID, "labels", **zs({"a": "b"})),
    case("label_over_byte_limit", TOO_LARGE, "labels", **zs(["x" * (LIMIT + 1), "short"])),
    case("labels_unicode", OK, **zs(["رياضة", "политика", "😀"])),
    case("labels_with_braces", OK, **zs(["{}", "{x}"])),
    case("template_without_placeholder", INVALID, "hypothesis_template", **zs(hypothesis_template="This is it.")),
    case("template_two_placeholders", INVALID, "hypothesis_template", **zs(hypothesis_template="{} and {}")),
    case("template_not_string", INVALID, "hypothesis_template", **zs(hypothesis_template=5)),
    case("template_empty", INVALID, "hypothesis_template", **zs(hypothesis_template="")),
    case("multi_label_string_true", INVALID, "multi_label", **zs(multi_label="true")),
    case("multi_label_int", INVALID, "multi_label", **zs(multi_label=1)),
    case("multi_label_true", OK, **zs(multi_label=True)),
    case("zero_shot_missing_text", INVALID, "text", labels=["a", "b"]),
    case("zero_shot_missing_labels", INVALID, "labels", text="no labels at all"),
]

# str.format fails on these, although each contains "{}" exactly once (checked apart: see the test).
TEMPLATE_FORMAT_CASES = [
    case("template_named_field", INVALID, "hypothesis_template", **zs(hypothesis_template="{} is {topic}.")),
    case("template_unbalanced_brace", INVALID, "hypothesis_template", **zs(hypothesis_template="This is {} {")),
    case("template_mixed_numbering", INVALID, "hypothesis_template", **zs(hypothesis_template="{} or {0}")),
]

NLI_CASES = [
    case("nli_missing_hypothesis", INVALID, "hypothesis", premise="A premise."),
    case("nli_empty_premise", INVALID, "premise", premise="", hypothesis="A hypothesis."),
    case("nli_hypothesis_number", INVALID, "hypothesis", premise="A premise.", hypothesis=3.14),
    case("nli_premise_over_limit", TOO_LARGE, "premise", premise="p" * (LIMIT + 1), hypothesis="h"),
    case("nli_wrong_field_names", INVALID, "premise", text="A premise.", hypothesis="A hypothesis."),
    case("nli_lone_surrogate_hypothesis", INVALID, "hypothesis", premise="A premise.", hypothesis="\udfff"),
]

RERANK_CASES = [
    case("documents_as_object", INVALID, "documents", **rr({"a": "b"})),
    case("documents_as_string", INVALID, "documents", **rr("one document")),
    case("documents_empty_list", INVALID, "documents", **rr([])),
    case("documents_10k", TOO_LARGE, "documents", **rr(["d"] * 10_000)),
    case("document_empty_string", INVALID, "documents", **rr(["", "x"])),
    case("documents_not_strings", INVALID, "documents", **rr([1, 2])),
    case("document_over_byte_limit", TOO_LARGE, "documents", **rr(["d" * (LIMIT + 1)])),
    case("top_k_string", INVALID, "top_k", **rr(top_k="2")),
    case("top_k_negative", INVALID, "top_k", **rr(top_k=-1)),
    case("top_k_zero", INVALID, "top_k", **rr(top_k=0)),
    case("top_k_float", INVALID, "top_k", **rr(top_k=1.5)),
    case("top_k_bool", INVALID, "top_k", **rr(top_k=True)),
    case("top_k_nan", INVALID, "top_k", **rr(top_k=math.nan)),
    case("top_k_above_document_count", OK, **rr(top_k=10)),
    case("top_k_null", OK, **rr(top_k=None)),
    case("query_empty", INVALID, "query", **rr(query="")),
    case("query_missing", INVALID, "query", documents=["a", "b"]),
]

MODERATE_CASES = [
    case("policy_unknown", ErrorCode.UNKNOWN_POLICY, "no-such-policy", text="hello", policy="no-such-policy"),
    case("policy_as_number", INVALID, "policy", text="hello", policy=5),
    case("policy_empty_string", INVALID, "policy", text="hello", policy=""),
    case("policy_name_too_long", INVALID, "policy", text="hello", policy="p" * 200),
    case("policy_null", OK, text="hello", policy=None),
    case("policy_default_by_name", OK, text="hello", policy="default"),
    case("moderate_nul_text", INVALID, "NUL", text="a\x00b"),
]

# A lone surrogate cannot be encoded as UTF-8: an item id carrying one must not cost its neighbours.
ID_SURROGATE_CASES = [bare("id_lone_surrogate", {"id": "id-\udc80", **v()}, INVALID, "id", key=None)]


@dataclass(frozen=True)
class Envelope:
    """A job-level kind: every item of its message gets ``expect``."""

    kind: str
    task: Any
    expect: str
    mention: str | None = None
    model: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    items_task: str = "classify"


ENVELOPES = [
    Envelope("unknown_task", "translate", ErrorCode.UNKNOWN_TASK, "translate"),
    Envelope("task_wrong_case", "CLASSIFY", ErrorCode.UNKNOWN_TASK, "CLASSIFY"),
    Envelope("task_not_string", 5, INVALID, "task"),
    Envelope("task_name_10k_chars", "t" * 10_000, INVALID, "task"),
    Envelope("task_lone_surrogate", "classify\ud800", INVALID, "task"),  # not even a valid string
    Envelope("unknown_model", "classify", ErrorCode.UNKNOWN_MODEL, "no-such-model", model="no-such-model"),
    Envelope("model_not_string", "classify", INVALID, "model", model=7),
    Envelope("model_empty_string", "classify", INVALID, "model", model=""),
    Envelope("model_wrong_for_task", "rerank", ErrorCode.UNSUPPORTED_MODEL, "sentiment", "sentiment", {}, "rerank"),
    Envelope("envelope_extra_field_nested_100", "classify", INVALID, "meta", extra={"meta": nested(100)}),
]


@dataclass
class Sent:
    """One message of path 1, and what each of its items should come back as."""

    name: str
    task: str
    job_id: str
    expected: dict[str, tuple[str, str | None, str, Any]] = field(default_factory=dict)
    """Result key → (expectation, mention, kind, raw item)."""


def bulk_queue(settings: SiftSettings) -> str:
    return queue_name(settings.queue_prefix, Lane.BULK)


def send_job(client: SiftClient, settings: SiftSettings, job: dict[str, Any]) -> None:
    client.app.send_task(INFER_TASK, kwargs={"job": job}, queue=bulk_queue(settings))


def publish_raw_body(client: SiftClient, settings: SiftSettings, body: bytes) -> None:
    """A ``sift.infer`` message whose body bytes are exactly ``body`` (no serializer on our side)."""
    queue = client.app.amqp.queues[bulk_queue(settings)]
    message = client.app.amqp.as_task_v2(uuid.uuid4().hex, INFER_TASK, args=(), kwargs={})
    with client.app.producer_or_acquire() as producer:
        producer.publish(
            body,
            exchange=queue.exchange,
            routing_key=queue.routing_key,
            content_type="application/json",
            content_encoding="utf-8",
            headers=message.headers,
            **message.properties,
        )


def key_of(c: Case, index: int) -> str:
    if c.key == POSITIONAL:
        return f"#{index}"
    if c.key is not None:
        return c.key
    assert isinstance(c.item, dict) and isinstance(c.item["id"], str)
    return c.item["id"]


def send_cases(client: SiftClient, settings: SiftSettings, name: str, task: str, cases: list[Case]) -> Sent:
    """One message: the cases, a valid sentinel before every third one and at the end."""
    sent = Sent(name, task, new_job_id(f"corpus-{name}"))
    items: list[Any] = []
    for n, c in enumerate(cases):
        if n % 3 == 0:
            item = sentinel(task, n)
            sent.expected[item["id"]] = (OK, None, "sentinel", item)
            items.append(item)
        if c.expect == DUPLICATE:
            assert key_of(c, len(items)) in sent.expected, f"{c.kind} must repeat an earlier id"
        else:
            sent.expected[key_of(c, len(items))] = (c.expect, c.mention, c.kind, c.item)
        items.append(c.item)
        TRIED["worker"].add(c.kind)
    last = sentinel(task, len(cases))
    sent.expected[last["id"]] = (OK, None, "sentinel", last)
    items.append(last)
    send_job(client, settings, {"job_id": sent.job_id, "task": task, "items": items, "enqueued_at": time.time()})
    return sent


def send_envelope(client: SiftClient, settings: SiftSettings, env: Envelope) -> Sent:
    sent = Sent(env.kind, env.items_task, new_job_id(f"corpus-{env.kind}"))
    items = [sentinel(env.items_task, 0), sentinel(env.items_task, 1)]
    for item in items:
        sent.expected[item["id"]] = (env.expect, env.mention, env.kind, item)
    job = {"job_id": sent.job_id, "task": env.task, "items": items, "enqueued_at": time.time(), **env.extra}
    if env.model is not None:
        job["model"] = env.model
    send_job(client, settings, job)
    TRIED["worker"].add(env.kind)
    return sent


def check_prediction(result: ItemResult, task: str, item: Any, labels: Callable[[str], list[str]]) -> str | None:
    """Why ``result`` is not a valid prediction for ``item``, or None when it is."""
    if result.error is not None:
        return f"expected a prediction, got {result.error.code}: {result.error.message}"
    if not result.model:
        return "no model in a successful result"
    if task == "classify" and (result.label not in labels("sentiment") or not result.scores):
        return f"label {result.label!r} / scores {result.scores} are not the sentiment model's"
    if task == "nli" and result.label not in labels("nli"):
        return f"label {result.label!r} is not an NLI label"
    if task == "zero_shot" and (result.label not in item["labels"] or len(result.scores) != len(item["labels"])):
        return f"label {result.label!r} / {len(result.scores)} scores do not match the candidate labels"
    if task == "rerank":
        docs = item["documents"]
        want = min(item.get("top_k") or len(docs), len(docs))
        ranking = result.ranking or []
        if len(ranking) != want or any(not 0 <= r.index < len(docs) for r in ranking):
            return f"ranking {ranking} should rank {want} of {len(docs)} documents"
    if task == "moderate" and (result.moderation is None or result.label not in {"allow", "flag"}):
        return f"no moderation verdict ({result.label!r})"
    return None


def check_error(result: ItemResult, code: str, mention: str | None) -> str | None:
    if result.error is None:
        return f"expected {code}, got a prediction (label {result.label!r})"
    if result.error.code != code:
        return f"expected {code}, got {result.error.code}: {result.error.message}"
    if not result.error.message.strip():
        return "empty error message"
    if mention is not None and mention not in result.error.message:
        return f"message does not mention {mention!r}: {result.error.message}"
    if result.label is not None or result.scores:
        return "an error result that carries a prediction"
    return None


def check_sent(
    client: SiftClient, sent: Sent, labels: Callable[[str], list[str]], extra_ok: int = 0
) -> tuple[list[str], dict[str, ItemResult]]:
    """Problems with one message's stored results (missing, wrong code, extra results)."""
    problems: list[str] = []
    results = client.store.get_many(sent.job_id, list(sent.expected))
    stored = set(client.store.stored_ids(sent.job_id))
    if len(stored) != len(sent.expected) + extra_ok:
        problems.append(f"{sent.name}: {len(stored)} results stored for {len(sent.expected)} distinct keys")
    missing = [k for k in sent.expected if k not in results]
    if missing:
        kinds = sorted({sent.expected[k][2] for k in missing})
        problems.append(f"{sent.name}: {len(missing)}/{len(sent.expected)} results missing (kinds: {kinds})")
    for key, result in results.items():
        expect, mention, kind, item = sent.expected[key]
        if expect == OK:
            problem = check_prediction(result, sent.task, item, labels)
        else:
            problem = check_error(result, expect, mention)
        if problem:
            problems.append(f"{sent.name} / {kind} ({key[:40]!r}): {problem}")
    return problems, results


def wait_for_barrier(client: SiftClient, settings: SiftSettings, expected: dict[str, int] | None = None) -> None:
    """The worker takes the bulk queue in order: once this job is answered, everything sent before was taken in.

    Messages taken in together are answered in whatever order their batches complete, so the jobs in
    ``expected`` (job id -> results) are then waited for too.
    """
    job_id = new_job_id("corpus-barrier")
    send_job(client, settings, {"job_id": job_id, "task": "classify", "items": [v(id="b")], "enqueued_at": time.time()})
    result = client.result(ItemRef(job_id, "b"), timeout_s=RESULT_TIMEOUT_S)
    assert result.ok, result.error
    for job, count in (expected or {}).items():
        wait_until(lambda job=job, count=count: client.store.count(job) >= count, timeout_s=RESULT_TIMEOUT_S, what=job)


@pytest.mark.timeout(180)
def test_every_bad_item_of_a_raw_message_gets_its_own_answer(
    client: SiftClient, settings: SiftSettings, worker: WorkerProcess, id2label: Callable[[str], list[str]]
) -> None:
    assert settings.limits() == DEFAULT_LIMITS, "the corpus is written for the default limits"
    plan = [
        ("classify", "classify", CLASSIFY_CASES),
        ("zero_shot", "zero_shot", ZERO_SHOT_CASES),
        ("nli", "nli", NLI_CASES),
        ("rerank", "rerank", RERANK_CASES),
        ("moderate", "moderate", MODERATE_CASES),
    ]
    sent = [send_cases(client, settings, name, task, cases) for name, task, cases in plan]
    sent += [send_envelope(client, settings, env) for env in ENVELOPES]
    wait_for_barrier(client, settings, {message.job_id: len(message.expected) for message in sent})

    problems: list[str] = []
    for message in sent:
        problems += check_sent(client, message, id2label)[0]
    assert worker.process is not None and worker.process.poll() is None, "the worker died"
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)


@pytest.mark.timeout(120)
def test_a_bad_hypothesis_template_costs_no_other_item(
    client: SiftClient, settings: SiftSettings, worker: WorkerProcess, id2label: Callable[[str], list[str]]
) -> None:
    """Templates with "{}" exactly once pass validation, but ``str.format`` raises on them at inference."""
    sent = [send_cases(client, settings, f"zero_shot-{c.kind}", "zero_shot", [c]) for c in TEMPLATE_FORMAT_CASES]
    wait_for_barrier(client, settings, {message.job_id: len(message.expected) for message in sent})

    problems = [p for message in sent for p in check_sent(client, message, id2label)[0]]
    assert worker.process is not None and worker.process.poll() is None, "the worker died"
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)


@pytest.mark.timeout(120)
def test_an_id_with_a_lone_surrogate_costs_no_other_item(
    client: SiftClient, settings: SiftSettings, worker: WorkerProcess, id2label: Callable[[str], list[str]]
) -> None:
    """JSON carries "\\udc80" fine, but it cannot become a UTF-8 Redis key: the item needs an error, keyed usably."""
    [bad] = ID_SURROGATE_CASES
    job_id = new_job_id("corpus-id-surrogate")
    items = [sentinel("classify", 0), bad.item, sentinel("classify", 1)]
    send_job(client, settings, {"job_id": job_id, "task": "classify", "items": items, "enqueued_at": time.time()})
    TRIED["worker"].add(bad.kind)
    wait_for_barrier(client, settings, {job_id: len(items)})

    stored = set(client.store.stored_ids(job_id))
    sentinels = {items[0]["id"], items[2]["id"]}
    results = client.store.get_many(job_id, sorted(stored))
    assert worker.process is not None and worker.process.poll() is None, "the worker died"
    assert sentinels <= stored, f"neighbours of the bad id were lost: stored {sorted(stored)}"
    for item_id in sentinels:
        assert check_prediction(results[item_id], "classify", None, id2label) is None, results[item_id]
    [other] = stored - sentinels
    assert check_error(results[other], INVALID, "id") is None, results[other]


@pytest.mark.timeout(120)
def test_undecodable_messages_leave_the_worker_serving(
    client: SiftClient, settings: SiftSettings, worker: WorkerProcess, id2label: Callable[[str], list[str]]
) -> None:
    """A body the broker's JSON decoder cannot read (100,000-deep nesting, invalid UTF-8) at all.

    The worker cannot read the job id of such a message, so it can only drop it: that is acceptable
    when it says so in its log, survives, and goes on with the next message.
    """
    assert worker.log_path is not None
    log_before = len(worker.log_path.read_text(errors="replace"))
    jobs = {}
    for kind in ("nested_100k_in_message", "invalid_utf8_in_message"):
        job_id = new_job_id(f"corpus-{kind}")
        job = {"job_id": job_id, "task": "classify", "items": [v(id="ok"), v(id="bad", text="@BAD@")]}
        body = json.dumps([[], {"job": {**job, "enqueued_at": time.time()}}, EMBED]).encode()
        bad = deep_json(DEEP).encode() if kind.startswith("nested") else b'"caf\xe9 \xff\xfe"'
        publish_raw_body(client, settings, body.replace(b'"@BAD@"', bad))
        jobs[kind] = job_id
        TRIED["worker"].add(kind)
    wait_for_barrier(client, settings)

    assert worker.process is not None and worker.process.poll() is None, "the worker died"
    assert client.app.control.ping(destination=[worker.hostname], timeout=5)
    log = worker.log_path.read_text(errors="replace")[log_before:]
    for kind, job_id in jobs.items():
        results = client.store.get_many(job_id, ["ok", "bad"])
        if results:  # decoded after all: then both items must be answered properly
            assert set(results) == {"ok", "bad"}, (kind, results)
            assert check_prediction(results["ok"], "classify", None, id2label) is None, results["ok"]
            assert check_error(results["bad"], INVALID, "text") is None, results["bad"]
            OBSERVED[kind] = "per-item results"
        else:
            OBSERVED[kind] = "message dropped, logged"
    dropped = sum(1 for how in OBSERVED.values() if how.startswith("message dropped"))
    assert log.count("Can't decode message body") >= dropped, "a dropped message must be logged"


@dataclass(frozen=True)
class Line:
    kind: str
    raw: bytes
    expect: str
    key: str | None
    """Result id: None for ``line-<number>`` (a line that cannot give one)."""
    mention: str | None = None


def line(kind: str, expect: str, mention: str | None = None, **fields: Any) -> Line:
    item = {"id": f"bf-{kind}", **fields}
    return Line(kind, json.dumps(item).encode(), expect, item["id"], mention)


def raw_line(kind: str, raw: bytes, expect: str, mention: str | None = None, key: str | None = None) -> Line:
    return Line(kind, raw, expect, key, mention)


def good(n: int) -> Line:
    return line(f"sentinel-{n}", OK, text=f"An ordinary review, number {n}.")


INVALID_JSON = ErrorCode.INVALID_JSON
BACKFILL_LINES = [
    raw_line("utf8_bom_on_first_line", b'\xef\xbb\xbf{"id": "bf-bom", "text": "a BOM before me"}', INVALID_JSON, "BOM"),
    good(1),
    raw_line("empty_line", b"", INVALID_JSON),
    raw_line("whitespace_only_line", b" \t ", INVALID_JSON),
    raw_line("non_json_line", b"this is not json", INVALID_JSON),
    raw_line("json_array_line", b'["a", "b"]', INVALID_JSON, "list"),
    raw_line("json_string_line", b'"just a string"', INVALID_JSON, "str"),
    raw_line("json_number_line", b"42", INVALID_JSON, "int"),
    raw_line("json_null_line", b"null", INVALID_JSON, "NoneType"),
    good(2),
    raw_line("trailing_garbage", b'{"id": "bf-trailing", "text": "x"} trailing', INVALID_JSON),
    raw_line("two_objects_on_one_line", b'{"id": "bf-a", "text": "a"}{"id": "bf-b", "text": "b"}', INVALID_JSON),
    raw_line("invalid_utf8", b'{"id": "bf-latin1", "text": "caf\xe9 cr\xe8me"}', INVALID_JSON, "utf-8"),
    raw_line("utf8_encoded_lone_surrogate", b'{"id": "bf-cesu", "text": "\xed\xa0\x80"}', INVALID_JSON, "utf-8"),
    line("lone_surrogate_in_text", INVALID, "text", text="a\ud800b"),
    line("nul_in_text", INVALID, "NUL", text="a\x00b"),
    raw_line("nested_100k_line", deep_json(DEEP).encode(), INVALID_JSON),
    raw_line("nested_100k_in_field", b'{"id": "bf-deep", "text": ' + deep_json(DEEP).encode() + b"}", INVALID_JSON),
    line("nested_100_in_text", INVALID, "text", text=nested(100)),
    good(3),
    line("text_1mb", TOO_LARGE, "text", text="x" * 1_000_000),
    line("text_exactly_at_byte_limit", OK, text=AT_LIMIT),
    line("text_one_byte_over_limit", TOO_LARGE, "text", text=AT_LIMIT + "!"),
    raw_line(
        "duplicate_id",
        json.dumps({"id": "bf-sentinel-1", "text": "again"}).encode(),
        ErrorCode.DUPLICATE_ID,
        "bf-sentinel-1",
        key="bf-sentinel-1",
    ),
    raw_line("missing_id", b'{"text": "no id, still worth an answer"}', OK),
    raw_line("integer_id", b'{"id": 987654321, "text": "numeric ids are common"}', OK, key="987654321"),
    raw_line("huge_integer_id", b'{"id": ' + str(10**30).encode() + b', "text": "big"}', OK, key=str(10**30)),
    raw_line("id_float", b'{"id": 1.5, "text": "x"}', INVALID, "id"),
    raw_line("id_bool", b'{"id": true, "text": "x"}', INVALID, "id"),
    raw_line("id_null", b'{"id": null, "text": "x"}', INVALID, "id"),
    raw_line("id_huge_string_300", json.dumps({"id": "i" * 300, "text": "x"}).encode(), INVALID, "id"),
    raw_line("id_empty_string", b'{"id": "", "text": "x"}', INVALID, "id"),
    raw_line("id_unicode", json.dumps({"id": "бф-é-😀", "text": "x"}).encode(), OK, key="бф-é-😀"),
    good(4),
    line("text_as_number", INVALID, "text", text=42),
    line("missing_text", INVALID, "text"),
    line("extra_field", INVALID, "label", text="fine", label="positive"),
    line("whitespace_only_text", INVALID, "text", text=" \t "),
    line("empty_text", INVALID, "text", text=""),
    raw_line("item_is_empty_object", b"{}", INVALID, "text"),
    raw_line("crlf_line_ending", b'{"id": "bf-crlf", "text": "a windows line"}\r', OK, key="bf-crlf"),
    raw_line("unicode_line_separators", '{"id": "bf-ls", "text": "a\u2028b\u0085c"}'.encode(), OK, key="bf-ls"),
    line("rtl_text", OK, text="مرحبا بالعالم"),
    line("zero_width_characters", OK, text="zero\u200bwidth"),
    line("emoji_only", OK, text="😀🔥"),
    line("punctuation_only", OK, text="?!…"),
    line("control_characters", OK, text="\x01\x1b[31mred"),
    good(5),
]


def run_backfill_file(
    settings: SiftSettings, tmp_path: Path, name: str, lines: list[Line], idle_timeout_s: float = 60
) -> tuple[Any, list[dict[str, Any]]]:
    path = tmp_path / f"{name}.jsonl"
    path.write_bytes(b"\n".join(entry.raw for entry in lines))  # the last line has no newline
    out = tmp_path / f"{name}.results.jsonl"
    assert settings.redis_url and settings.registry
    env = cli_env(redis_url=settings.redis_url, registry=str(settings.registry), queue_prefix=settings.queue_prefix)
    args = ["backfill", str(path), "--task", "classify", "--out", str(out), "--no-progress"]
    done = run_sift([*args, "--idle-timeout", str(idle_timeout_s)], env, timeout_s=idle_timeout_s + 60)
    results = [json.loads(text) for text in out.read_text(encoding="utf-8").splitlines()] if out.exists() else []
    return done, results


def check_backfill(lines: list[Line], results: list[dict[str, Any]], labels: list[str]) -> list[str]:
    """Match result lines to input lines by id (and by code when an id repeats)."""
    problems = []
    if len(results) != len(lines):
        problems.append(f"{len(results)} output lines for {len(lines)} input lines")
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for result in results:
        by_id[result["id"]].append(result)
    for number, entry in enumerate(lines, start=1):
        key = entry.key or f"line-{number}"
        candidates = by_id.get(key, [])
        found = next((r for r in candidates if r.get("error", {}).get("code", OK) == entry.expect), None)
        if found is None:
            got = [r.get("error", {}).get("code", OK) for r in candidates] or "no result"
            problems.append(f"line {number} / {entry.kind} ({key[:40]!r}): expected {entry.expect}, got {got}")
            continue
        candidates.remove(found)
        if entry.expect == OK:
            if found.get("label") not in labels or not found.get("scores") or not found.get("model"):
                problems.append(f"line {number} / {entry.kind}: not a valid prediction: {found}")
        else:
            message = found["error"]["message"]
            if not message.strip() or (entry.mention and entry.mention not in message):
                problems.append(f"line {number} / {entry.kind}: message does not mention {entry.mention!r}: {message}")
    return problems


@pytest.mark.timeout(150)
def test_backfill_of_a_bad_input_file_answers_every_line(
    settings: SiftSettings, worker: WorkerProcess, tmp_path: Path, id2label: Callable[[str], list[str]]
) -> None:
    TRIED["backfill"].update(entry.kind for entry in BACKFILL_LINES if not entry.kind.startswith("sentinel"))

    done, results = run_backfill_file(settings, tmp_path, "corpus", BACKFILL_LINES)

    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    problems = check_backfill(BACKFILL_LINES, results, id2label("sentiment"))
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)


@pytest.mark.timeout(150)
def test_backfill_line_with_a_lone_surrogate_id_costs_no_other_line(
    settings: SiftSettings, worker: WorkerProcess, tmp_path: Path, id2label: Callable[[str], list[str]]
) -> None:
    """``{"id": "bf-\\udc80", ...}``: valid JSON, but the id cannot be a UTF-8 Redis key."""
    bad = raw_line("id_lone_surrogate", b'{"id": "bf-\\udc80", "text": "fine"}', INVALID, "id", key="line-2")
    lines = [good(1), bad, good(2)]
    TRIED["backfill"].add(bad.kind)

    done, results = run_backfill_file(settings, tmp_path, "surrogate-id", lines, idle_timeout_s=20)

    problems = check_backfill(lines, results, id2label("sentiment"))
    if done.returncode != 0:
        problems.insert(0, f"sift backfill exited {done.returncode}: {done.stderr.strip()[-600:]}")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)


@pytest.mark.timeout(90)
def test_the_worker_survives_the_corpus(client: SiftClient, settings: SiftSettings, worker: WorkerProcess) -> None:
    assert worker.process is not None and worker.process.poll() is None, "the shared worker died"
    assert client.app.control.ping(destination=[worker.hostname], timeout=5), "the worker does not answer a ping"
    ref = client.submit("classify", {"id": "after-corpus", "text": "Still standing."})
    assert client.result(ref, timeout_s=RESULT_TIMEOUT_S).ok
    handle = client.submit_many("rerank", [{"id": "r", "query": "q", "documents": ["a", "b"]}])
    assert all(r.ok for r in client.wait(handle, timeout_s=RESULT_TIMEOUT_S).values())

    tried = TRIED["worker"] | TRIED["backfill"]
    print(
        f"\nbad-input corpus: {len(tried)} distinct kinds tried of {len(CORPUS_KINDS)} in the corpus "
        f"(worker messages: {len(TRIED['worker'])}, backfill lines: {len(TRIED['backfill'])}, "
        f"both: {len(TRIED['worker'] & TRIED['backfill'])}); undecodable messages: {OBSERVED or 'not run'}"
    )
    assert tried <= CORPUS_KINDS, sorted(tried - CORPUS_KINDS)
    assert len(CORPUS_KINDS) >= 40, sorted(CORPUS_KINDS)
    if TRIED["worker"] and TRIED["backfill"]:  # the whole module ran, not a -k selection
        assert len(tried) >= 40, sorted(tried)


CORPUS_KINDS = (
    {c.kind for c in CLASSIFY_CASES + ZERO_SHOT_CASES + TEMPLATE_FORMAT_CASES + NLI_CASES + RERANK_CASES}
    | {c.kind for c in MODERATE_CASES + ID_SURROGATE_CASES}
    | {env.kind for env in ENVELOPES}
    | {entry.kind for entry in BACKFILL_LINES if not entry.kind.startswith("sentinel")}
    | {"nested_100k_in_message", "invalid_utf8_in_message"}
)
