"""Celery task events (what Flower and `celery events` show): each message received, then succeeded, in order."""

from __future__ import annotations

import time
from typing import Any

import pytest

from producers.client import SiftClient
from sift.broker import make_celery_app
from sift.local import WorkerProcess
from sift.settings import SiftSettings

pytestmark = pytest.mark.integration


@pytest.mark.timeout(120)
def test_each_message_is_reported_received_then_succeeded(
    settings: SiftSettings, worker: WorkerProcess, client: SiftClient
) -> None:
    app = make_celery_app(settings)
    events: list[dict[str, Any]] = []
    try:
        with app.connection_for_read() as connection:
            receiver = app.events.Receiver(connection, handlers={"*": events.append})
            capture = receiver.itercapture(limit=None, timeout=2.0, wakeup=False)
            next(capture)  # subscribed: Redis pub/sub delivers only what is published after this
            ref = client.submit("classify", {"id": "ev", "text": "events for Flower"})
            assert client.result(ref, timeout_s=60).error is None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(e["type"] == "task-succeeded" for e in events):
                try:
                    next(capture)
                except TimeoutError:
                    continue
    finally:
        app.close()
    kinds = [e["type"] for e in events if e["type"].startswith("task-")]
    assert kinds[:2] == ["task-received", "task-succeeded"], kinds
    received, succeeded = (next(e for e in events if e["type"] == kind) for kind in kinds[:2])
    assert received["uuid"] == succeeded["uuid"] and received["name"] == "sift.infer"
    assert succeeded["result"] == "1 items"
