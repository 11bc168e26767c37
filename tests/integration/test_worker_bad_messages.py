"""A producer that does not validate: raw messages with bad items, and malformed messages, at the worker."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sift_it_helpers import new_job_id, wait_until

from producers.client import SiftClient
from sift.contract import ErrorCode, ItemResult, Lane
from sift.keys import INFER_TASK, queue_name
from sift.local import WorkerProcess
from sift.settings import SiftSettings

pytestmark = pytest.mark.integration

TIMEOUT_S = 60


def send_raw(client: SiftClient, settings: SiftSettings, **kwargs: Any) -> None:
    """Put a message on the bulk queue exactly as given, bypassing the client's validation."""
    client.app.send_task(INFER_TASK, queue=queue_name(settings.queue_prefix, Lane.BULK), **kwargs)


def send_job(client: SiftClient, settings: SiftSettings, task: str, items: list[Any], **fields: Any) -> str:
    job_id = new_job_id(f"raw-{task}")
    job = {"job_id": job_id, "task": task, "items": items, "enqueued_at": time.time(), **fields}
    send_raw(client, settings, kwargs={"job": job})
    return job_id


def wait_results(client: SiftClient, job_id: str, expected: int) -> dict[str, ItemResult]:
    results = {r.id: r for r in client.iter_results(job_id, expected=expected, timeout_s=TIMEOUT_S)}
    assert len(results) == expected
    return results


def assert_error(result: ItemResult, code: ErrorCode) -> None:
    assert result.error is not None, f"{result.id} got a prediction, expected {code}"
    assert result.error.code == code, (result.id, result.error)
    assert result.error.message
    assert result.label is None and result.scores == []


def assert_prediction(result: ItemResult, labels: set[str] | None = None) -> None:
    assert result.error is None, (result.id, result.error)
    assert result.model and result.scores
    if labels is not None:
        assert result.label in labels


@pytest.mark.timeout(90)
def test_bad_items_get_errors_and_their_neighbours_get_predictions(
    client: SiftClient, settings: SiftSettings, worker: WorkerProcess, id2label
) -> None:
    sentiment = set(id2label("sentiment"))
    classify = send_job(
        client,
        settings,
        "classify",
        [
            {"id": "ok-1", "text": "Lovely little cafe."},
            {"id": "huge", "text": "x" * (settings.max_text_bytes + 1)},
            "not a dict",
            {"text": "an item without an id"},
            {"id": "wrong-type", "text": ["a", "list"]},
            {"id": "empty", "text": ""},
            {"id": "extra", "text": "fine", "label": "positive"},
            {"id": "ok-2", "text": "The soup was cold."},
        ],
    )
    unknown_task = send_job(client, settings, "translate", [{"id": "t-1", "text": "hola"}, {"id": "t-2"}])
    unknown_model = send_job(client, settings, "classify", [{"id": "u-1", "text": "hi"}], model="no-such-model")
    too_many_labels = [f"label {i}" for i in range(settings.max_labels + 1)]
    zero_shot = send_job(
        client,
        settings,
        "zero_shot",
        [
            {"id": "zs-ok", "text": "The match went to penalties.", "labels": ["sports", "politics"]},
            {"id": "zs-labels", "text": "Too many candidates.", "labels": too_many_labels},
            {"id": "zs-dupe", "text": "Same label twice.", "labels": ["a", "a"]},
        ],
    )
    moderate = send_job(
        client,
        settings,
        "moderate",
        [{"id": "m-ok", "text": "Have a nice day."}, {"id": "m-policy", "text": "hello", "policy": "no-such-policy"}],
    )
    rerank = send_job(
        client,
        settings,
        "rerank",
        [
            {"id": "r-docs", "query": "q", "documents": ["d"] * (settings.max_documents + 1)},
            {"id": "r-ok", "query": "q", "documents": ["first", "second"], "top_k": 1},
        ],
    )

    results = wait_results(client, classify, 8)
    assert_prediction(results["ok-1"], sentiment)
    assert_prediction(results["ok-2"], sentiment)
    assert_error(results["huge"], ErrorCode.TOO_LARGE)
    assert_error(results["#2"], ErrorCode.INVALID_INPUT)  # not a dict: keyed by its position
    assert_error(results["#3"], ErrorCode.INVALID_INPUT)  # no id: keyed by its position
    assert_error(results["wrong-type"], ErrorCode.INVALID_INPUT)
    assert_error(results["empty"], ErrorCode.INVALID_INPUT)
    assert_error(results["extra"], ErrorCode.INVALID_INPUT)

    results = wait_results(client, unknown_task, 2)
    assert_error(results["t-1"], ErrorCode.UNKNOWN_TASK)
    assert_error(results["t-2"], ErrorCode.UNKNOWN_TASK)
    assert results["t-1"].task == "translate"

    results = wait_results(client, unknown_model, 1)
    assert_error(results["u-1"], ErrorCode.UNKNOWN_MODEL)

    results = wait_results(client, zero_shot, 3)
    assert_prediction(results["zs-ok"], {"sports", "politics"})
    assert_error(results["zs-labels"], ErrorCode.TOO_LARGE)
    assert_error(results["zs-dupe"], ErrorCode.INVALID_INPUT)

    results = wait_results(client, moderate, 2)
    assert_prediction(results["m-ok"], {"allow", "flag"})
    assert_error(results["m-policy"], ErrorCode.UNKNOWN_POLICY)

    results = wait_results(client, rerank, 2)
    assert_error(results["r-docs"], ErrorCode.TOO_LARGE)
    assert results["r-ok"].error is None and results["r-ok"].ranking is not None
    assert len(results["r-ok"].ranking) == 1


@pytest.mark.timeout(60)
def test_duplicate_id_in_a_raw_message_keeps_the_first_items_answer(
    client: SiftClient, settings: SiftSettings, worker: WorkerProcess
) -> None:
    job_id = send_job(
        client,
        settings,
        "classify",
        [{"id": "same", "text": "first, valid"}, {"id": "same", "text": ""}, {"id": "other", "text": "fine"}],
    )
    results = wait_results(client, job_id, 2)
    assert_prediction(results["same"])
    assert_prediction(results["other"])
    assert client.store.count(job_id) == 2


@pytest.mark.timeout(90)
def test_malformed_messages_do_not_kill_the_worker(
    client: SiftClient, settings: SiftSettings, worker: WorkerProcess
) -> None:
    assert worker.log_path is not None
    log_before = worker.log_path.read_text(errors="replace")
    send_raw(client, settings, kwargs={"job": 42})
    send_raw(client, settings, kwargs={})
    send_raw(client, settings, args=[1, 2, 3])
    send_raw(client, settings, kwargs={"job": {"job_id": "spaces are not allowed", "items": [{"id": "x"}]}})
    send_raw(client, settings, kwargs={"job": {"items": "not a list"}, "surprise": True})
    # An envelope that is wrong but keyed: every item gets an error result instead of the message being lost.
    keyed = new_job_id("envelope")
    send_raw(
        client,
        settings,
        kwargs={
            "job": {
                "schema_version": 99,
                "job_id": keyed,
                "task": "classify",
                "items": [{"id": "e-1", "text": "hi"}, {"id": "e-2", "text": "there"}],
                "enqueued_at": time.time(),
            }
        },
    )
    # Then a good job on the same queue: the worker consumes in order, so it comes after all of the above.
    good = send_job(client, settings, "classify", [{"id": "after", "text": "still alive?"}])

    results = wait_results(client, good, 1)
    assert_prediction(results["after"])
    assert worker.process is not None and worker.process.poll() is None, "the worker process died"
    assert client.app.control.ping(destination=[worker.hostname], timeout=5)

    envelope = wait_results(client, keyed, 2)
    for item_id in ("e-1", "e-2"):
        assert_error(envelope[item_id], ErrorCode.INVALID_INPUT)
        assert "invalid job message" in envelope[item_id].error.message

    # The unkeyed messages were received and dropped with a logged reason, not silently.
    def new_log() -> str:
        return worker.log_path.read_text(errors="replace")[len(log_before) :]

    wait_until(
        lambda: new_log().count("dropping a message") >= 4, timeout_s=10, what="the worker to log dropped messages"
    )
