"""The HTTP ingress over real HTTP: ``sift ingress`` (uvicorn) or a uvicorn thread, a real redis-server, a real worker.

A client submits with httpx, polls until the worker has answered, and gets the model's answer; the
refusals (401, 413, 422, 429) are checked as a client sees them on the wire.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn
from fastapi import FastAPI
from sift_it_helpers import ROOT, cli_env, new_job_id, redis_url_of, run_sift, sift_executable, wait_until

from producers.ingress import IngressSettings, create_app
from sift.contract import Lane
from sift.delivery.callbacks import callback_for
from sift.keys import queue_name
from sift.local import free_port
from sift.settings import SiftSettings

pytestmark = pytest.mark.integration

KEY = "it-ingress-" + secrets.token_hex(12)
AUTH = {"Authorization": f"Bearer {KEY}"}
BODY_LIMIT = 64 * 1024
RESULT_TIMEOUT_S = 60


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def ingress_url(settings: SiftSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``sift ingress`` as a user starts it, on a free port, in front of the shared worker's queues."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("ingress") / "ingress.log"
    env = cli_env(
        redis_url=settings.require_redis_url(),
        queue_prefix=settings.queue_prefix,
        api_keys=f"other-key-{secrets.token_hex(8)},{KEY}",
        max_request_bytes=str(BODY_LIMIT),
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sift_executable(), "ingress", "--port", str(port)], env=env, cwd=ROOT, stdout=log, stderr=log
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: process.poll() is not None or _healthy(url), timeout_s=60, what="sift ingress to serve")
        if process.poll() is not None:
            pytest.fail(f"sift ingress exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def http(ingress_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ingress_url, headers=AUTH, timeout=10) as client:
        yield client


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """``app`` on a real uvicorn server in a thread, on a free port; its URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, name="ingress-under-test", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout_s=30, what="uvicorn to start")
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def poll_result(http: httpx.Client, job_id: str, item_id: str) -> dict[str, Any]:
    """GET the item until it has a result; until then the ingress must say 'pending', never 'unknown'."""

    def fetch() -> dict[str, Any] | None:
        response = http.get(f"/v1/jobs/{job_id}/items/{item_id}")
        if response.status_code == 200:
            return dict(response.json())
        assert response.status_code == 404, response.text
        assert response.json()["error"] == "result_pending", response.text
        assert response.headers["Retry-After"] == "1"
        return None

    return dict(wait_until(fetch, timeout_s=RESULT_TIMEOUT_S, interval_s=0.1, what=f"result of {item_id}"))


def metric(http: httpx.Client, name: str, **labels: str) -> float:
    wanted = sorted(f'{k}="{v}"' for k, v in labels.items())
    for line in http.get("/metrics").text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and sorted(match.group(1).split(",")) == wanted:
            return float(match.group(2))
    return 0.0


def test_submit_then_poll_gets_the_models_answer(
    http: httpx.Client, worker: Any, id2label: Callable[[str], list[str]]
) -> None:
    job_id = new_job_id("ingress-classify")
    items = [
        {"id": "good", "text": "I loved every minute of it"},
        {"text": "no id given"},
        {"id": "blank", "text": " "},
    ]
    response = http.post("/v1/jobs", json={"task": "classify", "job_id": job_id, "items": items})
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/v1/jobs/{job_id}"
    accepted = response.json()
    assert accepted["item_ids"] == ["good", "1", "blank"]  # an item without id gets its position
    assert accepted["queued"] == 2 and accepted["lane"] == "realtime"
    # The blank item is answered at once, and only it: the others go on.
    assert [(r["id"], r["error"]["code"]) for r in accepted["rejected"]] == [("blank", "invalid_input")]

    labels = id2label("sentiment")
    for item_id in ("good", "1"):
        result = poll_result(http, job_id, item_id)
        assert result["error"] is None and result["model"] == "sentiment"
        assert result["label"] in labels
        assert sorted(score["label"] for score in result["scores"]) == sorted(labels)
        assert result["label"] == result["scores"][0]["label"]

    page = http.get(f"/v1/jobs/{job_id}").json()
    assert (page["expected"], page["stored"], page["errors"], page["complete"]) == (3, 3, 1, True)
    assert {r["id"] for r in page["results"]} == {"good", "1", "blank"} and page["next_cursor"] is None

    # The same job again (a client retrying after a timeout): nothing new to expect, nothing stored twice.
    again = http.post("/v1/jobs", json={"task": "classify", "job_id": job_id, "items": items})
    assert again.status_code == 202
    page = http.get(f"/v1/jobs/{job_id}").json()
    assert (page["expected"], page["stored"], page["complete"]) == (3, 3, True)

    assert metric(http, "sift_ingress_items_submitted_total", task="classify", lane="realtime") >= 4
    assert metric(http, "sift_ingress_items_rejected_total", task="classify", lane="realtime") >= 2
    assert metric(http, "sift_ingress_requests_total", method="POST", route="/v1/jobs", status="202") >= 2


def test_zero_shot_on_the_bulk_lane_picks_one_of_the_candidates(http: httpx.Client, worker: Any) -> None:
    candidates = ["sports", "politics", "cooking"]
    body = {
        "task": "zero_shot",
        "lane": "bulk",
        "items": [{"id": "z", "text": "The match ended 2-1", "labels": candidates}],
    }
    accepted = http.post("/v1/jobs", json=body).json()
    result = poll_result(http, accepted["job_id"], "z")
    assert result["label"] in candidates and {s["label"] for s in result["scores"]} == set(candidates)


def test_a_deadline_passed_before_a_worker_takes_the_job_is_answered_expired(http: httpx.Client, worker: Any) -> None:
    body = {"task": "classify", "deadline_s": 0.001, "items": [{"id": "late", "text": "too late to matter"}]}
    accepted = http.post("/v1/jobs", json=body)
    assert accepted.status_code == 202, accepted.text
    result = poll_result(http, accepted.json()["job_id"], "late")
    assert result["error"]["code"] == "expired" and result["label"] is None
    for bad in (0, -1, "soon"):
        refused = http.post("/v1/jobs", json={**body, "deadline_s": bad})
        assert refused.status_code == 422, refused.text


def test_unknown_jobs_and_items_are_404_and_say_so(http: httpx.Client) -> None:
    response = http.get("/v1/jobs/never-submitted")
    assert response.status_code == 404 and response.json()["error"] == "unknown_job"
    accepted = http.post("/v1/jobs", json={"task": "classify", "items": [{"id": "x", "text": ""}]}).json()
    missing = http.get(f"/v1/jobs/{accepted['job_id']}/items/y")
    assert missing.status_code == 404
    assert missing.json()["error"] == "unknown_item" and "no item 'y' of job" in missing.json()["message"]
    assert http.get(f"/v1/jobs/{accepted['job_id']}/items/x").json()["error"]["code"] == "invalid_input"


def test_keys_are_required_on_the_api_but_not_on_health(ingress_url: str) -> None:
    body = {"task": "classify", "items": [{"text": "hi"}]}
    assert httpx.post(f"{ingress_url}/v1/jobs", json=body).status_code == 401
    wrong = httpx.post(f"{ingress_url}/v1/jobs", json=body, headers={"X-API-Key": "nope-" + secrets.token_hex(8)})
    assert wrong.status_code == 401 and wrong.json() == {"error": "unauthorized", "message": "the API key is not valid"}
    assert httpx.post(f"{ingress_url}/v1/jobs", json=body, headers={"X-API-Key": KEY}).status_code == 202
    assert httpx.get(f"{ingress_url}/healthz").status_code == 200
    assert httpx.get(f"{ingress_url}/readyz").json() == {"status": "ready", "message": None}
    assert "sift_ingress_requests_total" in httpx.get(f"{ingress_url}/metrics").text


def test_bodies_over_the_limit_are_413_by_length_and_by_stream(http: httpx.Client) -> None:
    big = b'{"task": "classify", "items": [{"text": "' + b"x" * BODY_LIMIT + b'"}]}'
    by_length = http.post("/v1/jobs", content=big, headers={"Content-Type": "application/json"})
    assert by_length.status_code == 413

    def stream() -> Iterator[bytes]:  # chunked: no Content-Length to judge by
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    by_stream = http.post("/v1/jobs", content=stream(), headers={"Content-Type": "application/json"})
    assert by_stream.status_code == 413
    assert by_stream.json()["error"] == "too_large"
    assert http.get("/healthz").status_code == 200  # and the server is none the worse


def test_malformed_envelopes_are_422_over_http(http: httpx.Client) -> None:
    response = http.post("/v1/jobs", json={"task": "classify", "items": [], "lane": "express"})
    assert response.status_code == 422
    message = response.json()["message"]
    assert "body.items: List should have at least 1 item" in message
    assert "body.lane: Input should be 'realtime' or 'bulk'" in message
    not_json = http.post("/v1/jobs", content=b"{task: classify", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 422 and "JSON decode error" in not_json.json()["message"]


def test_callback_url_is_registered_for_the_job(http: httpx.Client, settings: SiftSettings, raw_redis: Any) -> None:
    job_id = new_job_id("ingress-callback")
    url = "https://hooks.example.com/sift?job=1"
    body = {"task": "classify", "job_id": job_id, "callback_url": url, "items": [{"text": "hello"}]}
    assert http.post("/v1/jobs", json=body).status_code == 202
    assert callback_for(raw_redis, settings.queue_prefix, job_id) == url


def test_a_full_queue_is_429_at_once_and_nothing_more_is_queued(redis_server: Any) -> None:
    # A prefix no worker consumes, so the queue only grows; a bound of 2 messages.
    settings = SiftSettings(
        redis_url=redis_url_of(redis_server),
        queue_prefix=f"ingress-429-{uuid.uuid4().hex[:8]}",
        max_queued_realtime=2,
        chunk_size=2,
    )
    queue = queue_name(settings.queue_prefix, Lane.REALTIME)
    depth = redis.Redis.from_url(settings.require_redis_url())
    with (
        serving(create_app(settings, IngressSettings(api_keys=KEY))) as url,
        httpx.Client(base_url=url, headers=AUTH, timeout=10) as http,
    ):
        three_messages = {"task": "classify", "items": [{"text": f"t{i}"} for i in range(5)]}
        refused = http.post("/v1/jobs", json=three_messages)
        assert refused.status_code == 429  # all or nothing: 3 messages do not fit under a bound of 2
        assert depth.llen(queue) == 0

        first = http.post("/v1/jobs", json={"task": "classify", "items": [{"id": "a", "text": "one"}]})
        assert first.status_code == 202
        assert http.post("/v1/jobs", json={"task": "classify", "items": [{"text": "two"}]}).status_code == 202
        full = http.post("/v1/jobs", json={"task": "classify", "job_id": "retry-me", "items": [{"text": "three"}]})
        assert full.status_code == 429
        assert full.headers["Retry-After"] == "1"
        assert full.json()["error"] == "queue_full"
        assert "realtime queue holds 2 messages" in full.json()["message"]
        assert "retry after 1 s with job_id 'retry-me'" in full.json()["message"]
        assert depth.llen(queue) == 2

        # The bulk lane has a bound of its own.
        bulk = http.post("/v1/jobs", json={"task": "classify", "lane": "bulk", "items": [{"text": "later"}]})
        assert bulk.status_code == 202
        assert metric(http, "sift_ingress_queue_full_total", lane="realtime") == 2

        # Queued but not answered (no worker here): pending, not unknown.
        pending = http.get(f"/v1/jobs/{first.json()['job_id']}/items/a")
        assert pending.status_code == 404 and pending.json()["error"] == "result_pending"
        page = http.get(f"/v1/jobs/{first.json()['job_id']}").json()
        assert (page["expected"], page["stored"], page["complete"], page["results"]) == (1, 0, False, [])
    depth.close()


def test_the_cli_refuses_to_serve_without_keys(settings: SiftSettings, tmp_path: Path) -> None:
    result = run_sift(["ingress", "--port", str(free_port())], cli_env(redis_url=settings.require_redis_url()), 60)
    assert result.returncode == 2, result.stdout + result.stderr
    message = " ".join(result.stderr.split())
    assert "the ingress has no API keys: set SIFT_API_KEYS" in message
    assert "SIFT_INGRESS_ALLOW_ANONYMOUS=true" in message
