"""End to end: a producer registers a callback, a real worker computes, the dispatcher POSTs the results."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
from sift_it_helpers import new_job_id, wait_until
from webhook_receiver import WebhookReceiver

from producers.client import SiftClient
from sift.contract import ErrorCode
from sift.delivery import register_callback, verify_signature
from sift.delivery.destinations import parse_networks
from sift.delivery.webhooks import RetryPolicy, WebhookDispatcher, WebhookOptions
from sift.local import WorkerProcess
from sift.settings import SiftSettings

pytestmark = pytest.mark.integration

SECRET = "whsec-" + uuid.uuid4().hex
RECEIVER_NETWORK = parse_networks("127.0.0.1/32")  # the receiver is on loopback, refused unless allowed


@pytest.fixture
def dispatcher(raw_redis: redis.Redis, settings: SiftSettings) -> Iterator[WebhookDispatcher]:
    options = WebhookOptions(
        secret=SECRET.encode(),
        timeout_s=2,
        retry=RetryPolicy(max_attempts=5, backoff_s=0.1, backoff_max_s=0.5),
        allowed_networks=RECEIVER_NETWORK,
    )
    with WebhookDispatcher(raw_redis, options, prefix=settings.queue_prefix, consumer="e2e") as running:
        thread = threading.Thread(target=running.run, kwargs={"block_s": 0.2})
        thread.start()
        yield running
        running.stop()
        thread.join(timeout=30)


@pytest.mark.timeout(180)
def test_a_submitted_job_with_a_callback_receives_its_results_by_webhook(
    client: SiftClient, worker: WorkerProcess, dispatcher: WebhookDispatcher, raw_redis: redis.Redis
) -> None:
    job_id = new_job_id("e2e-hook")
    items = [{"id": f"t-{k}", "text": f"review number {k}: works as described"} for k in range(5)]
    items.append({"id": "empty", "text": ""})  # rejected by the client: its error result is delivered too
    with WebhookReceiver([500]) as receiver:  # the receiver's first answer is a failure
        register_callback(
            raw_redis,
            client.settings.queue_prefix,
            job_id,
            receiver.url(),
            ttl_s=600,
            allowed_networks=RECEIVER_NETWORK,
        )
        handle = client.submit_many("classify", items, job_id=job_id, chunk_size=2)
        expected_ids = sorted(item["id"] for item in items)
        assert handle.expected == len(expected_ids)
        try:
            stored = client.wait(handle, timeout_s=120)
        except TimeoutError as error:
            log = worker.log_path.read_text(errors="replace")[-3000:] if worker.log_path else "(no log)"
            pytest.fail(f"the worker did not answer: {error}; its log ends:\n{log}")
        wait_until(lambda: sorted(receiver.accepted_ids()) == expected_ids, timeout_s=60, what="every result by POST")

    assert Counter(receiver.accepted_ids()) == Counter(dict.fromkeys(expected_ids, 1))
    assert receiver.requests[0].answered == 500
    delivered = {}
    for request in receiver.requests:
        verify_signature(SECRET, request.headers["sift-signature"], request.body)
        assert request.payload.job_id == job_id
    for request in receiver.accepted():
        delivered.update({result.id: result for result in request.payload.results})
    assert delivered == stored  # exactly what the store holds, worker fields included
    assert delivered["empty"].error is not None and delivered["empty"].error.code == ErrorCode.INVALID_INPUT
    assert all(delivered[f"t-{k}"].ok and delivered[f"t-{k}"].worker == worker.hostname for k in range(5))
