"""Plain helpers of the integration tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from sift.contract import ItemResult, Lane
from sift.keys import queue_name
from sift.local import WorkerProcess
from sift.settings import SiftSettings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
REDIS_SERVER = shutil.which("redis-server")
WORKER_START_TIMEOUT_S = 120


def new_job_id(label: str = "it") -> str:
    """A job id unique to one test, in the contract's alphabet."""
    safe = re.sub(r"[^A-Za-z0-9._:-]+", "-", label)[:60]
    return f"{safe}-{uuid.uuid4().hex[:12]}"


def wait_until(predicate: Callable[[], Any], *, timeout_s: float, interval_s: float = 0.02, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what or predicate}")
        time.sleep(interval_s)


def start_worker(settings: SiftSettings, log_path: Path, **kwargs: Any) -> WorkerProcess:
    """Start a worker with one torch thread; when it does not come up, fail with the end of its log."""
    worker = WorkerProcess(settings, threads=1, log_path=log_path, **kwargs)
    try:
        worker.start(timeout_s=WORKER_START_TIMEOUT_S)
    except (RuntimeError, TimeoutError) as err:
        worker.kill()
        tail = log_path.read_text(errors="replace")[-4000:] if log_path.exists() else "(no log)"
        pytest.fail(f"worker did not start ({err}); log tail:\n{tail}")
    return worker


def redis_url_of(proc: Any, password: str | None = None) -> str:
    """URL of a pytest-redis executor, with the password when given."""
    auth = f":{password}@" if password else ""
    return f"redis://{auth}{proc.host}:{proc.port}/0"


def cli_env(**sift: str) -> dict[str, str]:
    """A user's shell environment: no SIFT_* leaking from the test run, plus the ``sift`` settings given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIFT_")}
    env.update({f"SIFT_{k.upper()}": v for k, v in sift.items()})
    env["HF_HUB_OFFLINE"] = "1"
    return env


def sift_executable() -> str:
    """The ``sift`` console script of this virtual environment."""
    script = Path(sys.executable).parent / "sift"
    return str(script) if script.exists() else (shutil.which("sift") or "sift")


def run_sift(args: list[str], env: dict[str, str], timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``sift ARGS`` from the repository root as a user would, capturing its output."""
    return subprocess.run(
        [sift_executable(), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False
    )


def squash(text: str) -> str:
    """Collapse whitespace, so that rich's line wrapping does not split what a test looks for."""
    return " ".join(text.split())


SCORE_TOL = 1e-5
"""Largest score difference between two computations of the same answer (batching, padding, thread counts)."""


def assert_same_answer(got: ItemResult, want: ItemResult, tol: float = SCORE_TOL) -> None:
    """The same answer: id, error, label, model, truncation, scores, ranking and moderation (scores within ``tol``;
    0 when both came from the very same logits)."""
    assert (got.id, got.error, got.label, got.truncated, got.model) == (
        want.id,
        want.error,
        want.label,
        want.truncated,
        want.model,
    )
    assert [s.label for s in got.scores] == [s.label for s in want.scores]
    np.testing.assert_allclose([s.score for s in got.scores], [s.score for s in want.scores], atol=tol, rtol=0)
    if want.ranking is None:
        assert got.ranking is None
    else:
        assert got.ranking is not None
        assert [d.index for d in got.ranking] == [d.index for d in want.ranking]
        np.testing.assert_allclose([d.score for d in got.ranking], [d.score for d in want.ranking], atol=tol, rtol=0)
    assert (got.moderation is None) == (want.moderation is None)
    if got.moderation is not None and want.moderation is not None:
        assert got.moderation.flagged == want.moderation.flagged
        for g, w in zip(got.moderation.categories, want.moderation.categories, strict=True):
            assert (g.category, g.threshold, g.flagged) == (w.category, w.threshold, w.flagged)
            np.testing.assert_allclose(g.score, w.score, atol=tol, rtol=0)


UNACKED = "unacked"
"""kombu's Redis transport: delivery tag -> [message, exchange, routing key] of messages taken, not acked."""


def task_ids_in_broker(broker: redis.Redis, settings: SiftSettings) -> set[str]:
    """Celery task ids of messages kombu holds unacknowledged or has queued."""
    bodies: list[Any] = list(broker.hvals(UNACKED))
    ids = {json.loads(body)[0]["headers"]["id"] for body in bodies}
    queued: list[Any] = list(broker.lrange(queue_name(settings.queue_prefix, Lane.BULK), 0, -1))
    return ids | {json.loads(body)["headers"]["id"] for body in queued}


def items_of_queued_messages(broker: redis.Redis, settings: SiftSettings) -> dict[str, set[str]]:
    """Celery task id -> item ids of every message in the bulk queue (read before any worker starts)."""
    queued: list[Any] = list(broker.lrange(queue_name(settings.queue_prefix, Lane.BULK), 0, -1))
    messages = {}
    for raw in queued:
        body = json.loads(raw)
        args, kwargs, _embed = json.loads(base64.b64decode(body["body"]))
        job = kwargs.get("job") or args[0]
        messages[body["headers"]["id"]] = {item["id"] for item in job["items"]}
    return messages
