"""``sift health`` as a user runs it: against the shared live worker, a stopped Redis, and a stuck deployment."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sift_it_helpers import cli_env, redis_url_of, run_sift, squash

from producers.client import SiftClient
from sift.contract import ErrorCode, ErrorInfo, Lane
from sift.dead_letters import DeadLetter, DeadLetters
from sift.local import EmbeddedRedis, WorkerProcess
from sift.settings import SiftSettings


def test_a_deployment_with_a_live_worker_is_healthy(settings: SiftSettings, worker: WorkerProcess) -> None:
    env = cli_env(redis_url=settings.require_redis_url(), queue_prefix=settings.queue_prefix)
    shown = run_sift(["health", "--timeout", "3"], env)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    text = squash(shown.stdout)
    assert worker.hostname in text
    assert text.endswith("healthy")

    as_json = run_sift(["health", "--json", "--timeout", "3"], env)
    assert as_json.returncode == 0, as_json.stdout + as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["healthy"] is True and report["redis_ok"] is True
    ours = next(w for w in report["workers"] if w["name"] == worker.hostname)
    assert sorted(ours["queues"]) == sorted(f"{settings.queue_prefix}.{lane.value}" for lane in Lane)
    assert {lane["lane"]: lane["consumers"] for lane in report["lanes"]}["realtime"] == [worker.hostname]


def test_a_stopped_redis_is_unhealthy_and_says_where_without_the_password() -> None:
    with EmbeddedRedis(password="health-secret-42") as server:
        url = server.url
        server.stop()
        shown = run_sift(["health"], cli_env(redis_url=url))
        as_json = run_sift(["health", "--json"], cli_env(redis_url=url))
    assert shown.returncode == 1
    text = squash(shown.stdout + shown.stderr)
    assert f"unhealthy: cannot reach Redis at redis://:***@127.0.0.1:{server.port}/0" in text
    assert "Connection refused" in text
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert report["healthy"] is False and report["redis_ok"] is False
    assert "health-secret-42" not in shown.stdout + shown.stderr + as_json.stdout + as_json.stderr


def test_a_full_queue_nobody_drains_is_unhealthy(redis_server: Any, worker: WorkerProcess) -> None:
    # A deployment of its own on the shared Redis: the shared worker answers the ping but serves other queues.
    stuck = SiftSettings(
        redis_url=redis_url_of(redis_server), queue_prefix=f"hc-{uuid.uuid4().hex[:8]}", max_queued_bulk=2
    )
    with SiftClient(stuck) as client:
        client.submit_many("classify", [{"id": str(i), "text": "x"} for i in range(4)], chunk_size=2)
        DeadLetters(client.redis, prefix=stuck.queue_prefix).push(
            [
                DeadLetter(
                    job_id="j",
                    task="classify",
                    item={"id": "1", "text": "x"},
                    error=ErrorInfo(code=ErrorCode.INFERENCE_FAILED, message="boom"),
                    failed_at=0.0,
                )
            ]
        )
    env = cli_env(redis_url=stuck.require_redis_url(), queue_prefix=stuck.queue_prefix, max_queued_bulk="2")
    shown = run_sift(["health", "--json", "--timeout", "3"], env)
    assert shown.returncode == 1, shown.stdout + shown.stderr
    report = json.loads(shown.stdout)
    assert report["workers"] == []
    assert worker.hostname in report["other_workers"]
    assert report["dead_letters"] == 1
    assert f"queue {stuck.queue_prefix}.bulk is full (2/2 messages): producers block or fail" in report["problems"]
    assert any(p.startswith(f"no live worker consumes {stuck.queue_prefix}.realtime") for p in report["problems"])
    assert "1 dead letter(s): see `sift dead list`" in report["warnings"]

    table = squash(run_sift(["health", "--timeout", "3"], env).stdout)
    assert f"unhealthy: no live worker consumes {stuck.queue_prefix}.realtime or {stuck.queue_prefix}.bulk" in table


def test_a_bad_timeout_is_refused() -> None:
    shown = run_sift(["health", "--timeout", "-1"], cli_env(redis_url="redis://127.0.0.1:1/0"))
    assert shown.returncode == 2
    assert "--timeout must be a positive number of seconds" in squash(shown.stderr)
