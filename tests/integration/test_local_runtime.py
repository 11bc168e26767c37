"""sift.local's children (the demo's and the tests' redis-server and workers) never outlive their parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.integration

PARENT = (
    "from sift.local import EmbeddedRedis; server = EmbeddedRedis().start(); "
    "print(server.process.pid, flush=True); import time; time.sleep(120)"
)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: it only waits for its new parent to reap it.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ", 1)[1][0] != "Z"


@pytest.mark.timeout(60)
def test_a_killed_parent_leaves_no_redis_server_behind() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert alive(child)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    still_alive = alive(child)
    if still_alive:
        os.kill(child, signal.SIGKILL)
    assert not still_alive, "redis-server outlived the process that started it"
