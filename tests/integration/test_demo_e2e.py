"""``sift demo`` as a user runs it: its own redis-server and worker, a summary, and nothing left behind.

The full demo (300 moderation lines, twice) takes about two minutes on two CPU cores, too long for
this suite; by default it runs on a few short lines of examples/moderation.jsonl through ``--examples``.
Set SIFT_IT_FULL_DEMO=1 to run it on the shipped examples/ directory itself.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from sift_it_helpers import EXAMPLES, cli_env, run_sift, squash

from sift.demo import DEMO_RUNS

pytestmark = pytest.mark.integration

SUBSET_LINES = 16
SUBSET_MAX_BYTES = 200
"""Long lines are left out of the subset: a handful of 1,000-character texts cost the demo 20 s here."""
SMALL_FILE_LINES = 40
"""Example files up to this size (bad_input.jsonl) are used whole."""


def process_table() -> dict[int, list[str]]:
    """Every live process's argv, from /proc (zombies and vanished processes are left out)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if raw:
            table[int(entry.name)] = raw.rstrip(b"\0").decode(errors="replace").split("\0")
    return table


def follows(argv: list[str], flag: str, value: str) -> bool:
    return any(a == flag and b == value for a, b in itertools.pairwise(argv)) or f"{flag}={value}" in argv


def leftovers(redis_port: str, worker_hostname: str) -> dict[int, list[str]]:
    """Processes that are the demo's redis-server or the demo's worker."""
    found = {}
    for pid, argv in process_table().items():
        is_redis = any("redis-server" in a for a in argv[:1]) and (
            follows(argv, "--port", redis_port) or any(a.endswith(f":{redis_port}") for a in argv)
        )
        is_worker = "sift.cli" in argv and "worker" in argv and follows(argv, "--hostname", worker_hostname)
        if is_redis or is_worker:
            found[pid] = argv
    return found


def test_the_leftover_scan_finds_live_processes(redis_server: Any) -> None:
    """The scan below can see a live redis-server by its port (else a clean result would prove nothing)."""
    assert os.getpid() in process_table()
    assert leftovers(str(redis_server.port), "nobody@nowhere"), "the session's redis-server is running"


@pytest.fixture
def examples_dir(tmp_path: Path) -> Path:
    if os.environ.get("SIFT_IT_FULL_DEMO") == "1":
        return EXAMPLES
    subset = tmp_path / "examples"
    subset.mkdir()
    for file_name in {name for name, _ in DEMO_RUNS}:
        lines = (EXAMPLES / file_name).read_bytes().splitlines(keepends=True)
        if len(lines) > SMALL_FILE_LINES:
            lines = [line for line in lines if len(line) <= SUBSET_MAX_BYTES][:SUBSET_LINES]
        (subset / file_name).write_bytes(b"".join(lines))
    return subset


def ids_of(path: Path) -> list[str]:
    """Ids of the lines that are JSON objects with a string id (what backfill keys results by)."""
    ids = []
    for line in path.read_bytes().splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and isinstance(value.get("id"), str):
            ids.append(value["id"])
    return ids


@pytest.mark.timeout(420)
def test_sift_demo_runs_and_cleans_up(offline_registry: Path, examples_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo-out"
    # No SIFT_REDIS_URL: the demo starts its own redis-server. The offline models come from the cache the
    # offline_registry fixture built (SIFT_CACHE_DIR/offline-models), so nothing is rebuilt.
    env = cli_env(cache_dir=str(offline_registry.parent.parent))

    done = run_sift(["demo", "--examples", str(examples_dir), "--out", str(out), "--models", "random"], env, 400)

    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    stdout = squash(done.stdout)
    port = re.search(r"started a private redis-server on redis://127\.0\.0\.1:(\d+)/0", stdout)
    assert port, stdout
    hostname = re.search(r"worker (\S+@\S+) ready", stdout)
    assert hostname, stdout
    assert f"random-weight stand-ins at {offline_registry.parent}" in stdout
    assert "labels are meaningless" in stdout
    assert "demo complete" in stdout
    assert stdout.count("label / error") == len(DEMO_RUNS), "one summary table per backfill"

    for file_name, task in DEMO_RUNS:
        in_path = examples_dir / file_name
        lines = len(in_path.read_bytes().splitlines())
        out_path = out / f"{in_path.stem}.{task}.jsonl"
        results = [json.loads(line) for line in out_path.read_text(encoding="utf-8").splitlines()]
        assert len(results) == lines, out_path
        assert all(r.get("id") and r["task"] == task for r in results)
        assert set(ids_of(in_path)) <= {r["id"] for r in results}
        assert any("error" not in r and r.get("label") for r in results)
        if file_name != "bad_input.jsonl":
            assert all("error" not in r for r in results), out_path
        assert f"{lines} lines," in stdout
    assert (out / "worker.log").exists()

    # Everything the demo started is gone once it has exited.
    assert leftovers(port.group(1), hostname.group(1)) == {}
