"""`sift worker --cpus`: a CPU worker pinned to its slice runs every one of its threads there."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sift_it_helpers import WORKER_START_TIMEOUT_S, cli_env, run_sift

from producers.client import SiftClient
from sift.local import WorkerProcess
from sift.settings import SiftSettings
from workers.cpus import allowed_cpus

pytestmark = pytest.mark.integration


def cpus_allowed_of_threads(pid: int) -> dict[str, str]:
    """Thread id -> ``Cpus_allowed_list`` of every thread of process ``pid``."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                found[task.name] = line.split(":", 1)[1].strip()
    return found


@pytest.mark.timeout(240)
def test_a_pinned_worker_keeps_every_thread_on_its_slice_and_serves(settings: SiftSettings, tmp_path: Path) -> None:
    cpu = allowed_cpus()[-1]
    pinned = settings.model_copy(update={"queue_prefix": f"pin-{uuid.uuid4().hex[:8]}"})
    log_path = tmp_path / "worker.log"
    worker = WorkerProcess(pinned, cpus=str(cpu), models="sentiment", log_path=log_path)
    worker.start(timeout_s=WORKER_START_TIMEOUT_S)
    try:
        with SiftClient(pinned) as client:
            result = client.result(client.submit("classify", {"id": "a", "text": "pinned"}), timeout_s=60)
        assert result.error is None and result.label
        assert worker.process is not None
        # After a forward pass: torch's pool, the forward thread, the metrics and Celery threads all exist by now.
        threads = cpus_allowed_of_threads(worker.process.pid)
        assert len(threads) > 1
        assert set(threads.values()) == {str(cpu)}, threads
    finally:
        worker.stop()


def test_a_cpu_the_worker_may_not_use_stops_it_at_once_with_the_reason(settings: SiftSettings) -> None:
    # Malformed lists stop it the same way; their messages are unit-tested (tests/unit/test_launcher.py).
    done = run_sift(["worker", "--cpus", "4096"], cli_env(redis_url=settings.redis_url or ""), timeout_s=60)
    assert done.returncode == 2, done.stderr
    assert "not available to this process" in " ".join(done.stderr.split())
