"""A Redis that requires a password: the right one works end to end, a wrong one fails clearly, none leaks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu.exceptions import OperationalError
from sift_it_helpers import redis_url_of, start_worker

from producers.client import ItemRef, SiftClient
from sift.local import WorkerProcess
from sift.settings import SiftSettings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def password_settings(redis_password_server: Any, redis_password: str, offline_registry: Path) -> SiftSettings:
    return SiftSettings(
        redis_url=redis_url_of(redis_password_server, redis_password),
        registry=offline_registry,
        queue_prefix=f"pw-{uuid.uuid4().hex[:8]}",
    )


@pytest.fixture(scope="module")
def password_worker(
    password_settings: SiftSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    process = start_worker(password_settings, tmp_path_factory.mktemp("pw-worker") / "worker.log", models="sentiment")
    yield process
    process.stop()


def test_the_password_is_required(redis_password_server: Any) -> None:
    """The server really refuses clients without the password (else the tests below prove nothing)."""
    anonymous = redis.Redis.from_url(redis_url_of(redis_password_server))
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    anonymous.close()


@pytest.mark.timeout(120)
def test_a_job_completes_with_the_password(
    password_settings: SiftSettings, password_worker: WorkerProcess, id2label
) -> None:
    with SiftClient(password_settings) as client:
        ref = client.submit("classify", {"id": "pw-1", "text": "Locked down but working."})
        result = client.result(ref, timeout_s=60)
    assert result.ok, result.error
    assert result.label in id2label("sentiment")
    assert result.worker == password_worker.hostname


@pytest.mark.timeout(60)
def test_a_wrong_password_fails_clearly(password_settings: SiftSettings, redis_password: str) -> None:
    assert password_settings.redis_url
    wrong = password_settings.model_copy(
        update={"redis_url": password_settings.redis_url.replace(redis_password, "not-the-password")}
    )
    with SiftClient(wrong) as client:
        with pytest.raises((OperationalError, redis.AuthenticationError)) as submitting:
            client.submit("classify", {"id": "pw-2", "text": "should not be sent"})
        with pytest.raises(redis.AuthenticationError) as reading:
            client.result(ItemRef("some-job", "pw-2"), timeout_s=5)
    for raised in (submitting.value, reading.value):
        message = str(raised).lower()
        assert "password" in message or "auth" in message, raised
        assert redis_password not in str(raised)


@pytest.mark.timeout(60)
def test_the_password_does_not_appear_in_the_worker_log(
    password_worker: WorkerProcess, password_settings: SiftSettings, redis_password: str
) -> None:
    # Make the worker log a job first, so that the log holds more than its start-up banner.
    with SiftClient(password_settings) as client:
        assert client.result(client.submit("classify", {"text": "log me"}), timeout_s=60).ok
    assert password_worker.log_path is not None
    log = password_worker.log_path.read_text(errors="replace")
    assert "ready" in log and "sift.infer" in log, "this is the worker's log"
    assert redis_password not in log
