"""What a queued message shows to Celery's monitoring: a summary of its job, never the items' texts."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
import redis
from sift_it_helpers import new_job_id

from producers.client import SiftClient
from sift.contract import Lane
from sift.keys import queue_name
from sift.settings import SiftSettings

pytestmark = pytest.mark.integration

SECRET = "the account number is 4111 1111 1111 1111"


def test_headers_summarize_the_job_and_the_body_keeps_the_items(settings: SiftSettings, raw_redis: redis.Redis) -> None:
    # A queue prefix no worker consumes, so the messages stay in Redis to be read.
    quiet = settings.model_copy(update={"queue_prefix": f"headers-{uuid.uuid4().hex[:8]}"})
    with SiftClient(quiet) as client:
        ref = client.submit("classify", {"id": "a", "text": SECRET}, model="sentiment", job_id=new_job_id("hdr"))
        handle = client.submit_many("classify", [{"id": f"b{i}", "text": SECRET} for i in range(3)], chunk_size=2)

    [realtime] = raw_redis.lrange(queue_name(quiet.queue_prefix, Lane.REALTIME), 0, -1)
    bulk = raw_redis.lrange(queue_name(quiet.queue_prefix, Lane.BULK), 0, -1)
    assert len(bulk) == handle.messages == 2
    envelopes = [json.loads(raw) for raw in [realtime, *bulk]]
    for envelope in envelopes:
        headers = envelope["headers"]
        assert SECRET not in json.dumps(headers), "a text leaked into the headers Flower and `celery events` show"
        assert headers["argsrepr"] == "()"
    summary = f"{{'job': <{ref.job_id}: 1 classify items, model sentiment, realtime lane>}}"
    assert envelopes[0]["headers"]["kwargsrepr"] == summary
    assert sorted(e["headers"]["kwargsrepr"] for e in envelopes[1:]) == [
        f"{{'job': <{handle.job_id}: 1 classify items, bulk lane>}}",  # kombu pushes on the left: newest first
        f"{{'job': <{handle.job_id}: 2 classify items, bulk lane>}}",
    ]
    # The body is untouched: the worker still gets every item.
    _args, kwargs, _embed = json.loads(base64.b64decode(envelopes[0]["body"]))
    assert kwargs["job"]["items"] == [{"id": "a", "text": SECRET}]
