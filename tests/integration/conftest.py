"""Fixtures of the integration tests: private redis-servers (pytest-redis) and real worker processes.

One worker is shared by the whole session (model loading takes seconds); tests keep apart by
using job ids of their own. Tests that need a worker of their own (restarts, a password) start
it themselves, on a redis-server of their own where they look at broker-wide state.
"""

from __future__ import annotations

import json
import secrets
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from pytest_redis import factories

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sift_it_helpers, whatever pytest's import mode

from sift_it_helpers import REDIS_SERVER, redis_url_of, start_worker

from producers.client import SiftClient
from sift.local import WorkerProcess
from sift.settings import SiftSettings
from workers.engine.registry import Registry, load_registry

REDIS_PASSWORD = "sift-it-" + secrets.token_hex(12)
"""A fresh random password each session."""
# pytest-redis makes redis close clients idle for 30 s; an idle worker between tests must keep its link.
_IDLE_TIMEOUT_S = 3600

redis_server = factories.redis_proc(executable=REDIS_SERVER, port=None, timeout=_IDLE_TIMEOUT_S)
"""The session's shared redis-server, on a random port (never the machine's 6379)."""
redis_restart_server = factories.redis_proc(executable=REDIS_SERVER, port=None, timeout=_IDLE_TIMEOUT_S)
"""The restart tests' own redis-server: they look at kombu's broker-wide ``unacked`` keys."""
redis_password_server = factories.redis_proc(
    executable=REDIS_SERVER, port=None, timeout=_IDLE_TIMEOUT_S, password=REDIS_PASSWORD
)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")


@pytest.fixture(scope="session")
def redis_password() -> str:
    return REDIS_PASSWORD


@pytest.fixture(scope="session")
def registry(offline_registry: Path) -> Registry:
    return load_registry(offline_registry)


@pytest.fixture(scope="session")
def id2label(registry: Registry) -> Callable[[str], list[str]]:
    """A role's labels as its model's config.json lists them, in id order."""

    def labels(role: str) -> list[str]:
        config = json.loads((Path(registry.models[role].source) / "config.json").read_text())
        return [label for _, label in sorted((int(k), v) for k, v in config["id2label"].items())]

    return labels


@pytest.fixture(scope="session")
def settings(redis_server: Any, offline_registry: Path) -> SiftSettings:
    """Settings of the shared worker and its clients: the session's redis, a queue prefix of its own."""
    return SiftSettings(
        redis_url=redis_url_of(redis_server), registry=offline_registry, queue_prefix=f"it-{uuid.uuid4().hex[:8]}"
    )


@pytest.fixture(scope="session")
def worker(settings: SiftSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """The session's shared worker, serving every role of the offline registry."""
    process = start_worker(settings, tmp_path_factory.mktemp("shared-worker") / "worker.log")
    yield process
    process.stop()


@pytest.fixture(scope="session")
def client(settings: SiftSettings) -> Iterator[SiftClient]:
    with SiftClient(settings) as sift_client:
        yield sift_client


@pytest.fixture(scope="session")
def raw_redis(settings: SiftSettings) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(settings.require_redis_url())
    yield connection
    connection.close()
