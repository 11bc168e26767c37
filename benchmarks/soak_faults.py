"""Soak: backfill jobs, one after another, under random worker SIGKILLs and Redis restarts.

After each job it checks what ``tests/integration/test_faults.py`` checks once: exactly one result per item
(results hash and done stream both hold one entry per item), no error result, and nothing left in the broker.
It runs long enough to meet the rare interleavings a two-minute test does not (a kill between kombu's BRPOP and
its write to the ``unacked`` hash, a kill while a worker holds kombu's restore mutex, ...).

Not collected by pytest. Runs on the offline bert-tiny model (random weights), so it needs no network::

    python benchmarks/soak_faults.py --minutes 30
    python benchmarks/soak_faults.py --minutes 10 --redis-crash   # SIGKILL Redis instead of a clean restart

Exit status 1 when any job ends with a missing, duplicated or failed result, or stalls.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
import yaml

from producers.client import SiftClient
from sift.contract import Lane
from sift.keys import done_stream_key, errors_key, queue_name, results_key
from sift.local import EmbeddedRedis, WorkerProcess
from sift.settings import SiftSettings, cache_dir
from workers.engine.registry import load_registry
from workers.offline_models import build_offline_models

UNACKED = "unacked"


class Worker:
    """A worker child started without waiting: it is ready once its log says so.

    (``WorkerProcess.start`` waits on a Celery ping, which fails once after a Redis restart.)
    """

    def __init__(self, settings: SiftSettings, log_path: Path, threads: int) -> None:
        self.log_path = log_path
        self.process = WorkerProcess(settings, threads=threads, log_path=log_path, models="sentiment")
        with log_path.open("ab") as log:
            self.process.process = subprocess.Popen(
                self.process.argv, env=self.process.env, stdout=log, stderr=subprocess.STDOUT
            )
        self._ready = False

    @property
    def ready(self) -> bool:
        if not self._ready and self.log_path.exists():
            self._ready = b" ready." in self.log_path.read_bytes()
        return self._ready

    @property
    def exited(self) -> int | None:
        assert self.process.process is not None
        return self.process.process.poll()

    def kill(self) -> None:
        self.process.kill()


def fast_registry(directory: Path) -> Path:
    cache = cache_dir() / "offline-models"
    rerank = load_registry(build_offline_models(cache)).models["rerank"]
    spec = {**rerank.model_dump(mode="json", exclude_none=True), "kind": "sequence_classification"}
    path = directory / "fast-registry.yaml"
    path.write_text(yaml.safe_dump({"models": {"sentiment": spec}, "tasks": {"classify": "sentiment"}}))
    return path


def restart_redis(server: EmbeddedRedis, crash: bool) -> None:
    if crash and server.process is not None:
        server.process.kill()  # no AOF flush: up to about a second of acknowledged writes may be gone
        server.process.wait()
        server.process = None
    server.stop()
    server.start()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="run new jobs until this much time has passed")
    parser.add_argument("--items", type=int, default=10_000, help="items per job")
    parser.add_argument("--chunk", type=int, default=50, help="items per broker message")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--kill-every-s", type=float, default=8.0, help="mean seconds between worker SIGKILLs")
    parser.add_argument("--restart-every-s", type=float, default=45.0, help="mean seconds between Redis restarts")
    parser.add_argument("--redis-crash", action="store_true", help="SIGKILL Redis instead of SIGTERM")
    parser.add_argument("--visibility-timeout-s", type=int, default=3)
    parser.add_argument("--stall-s", type=float, default=180.0, help="fail a job after this long without progress")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    work_dir = Path(tempfile.mkdtemp(prefix="sift-soak-"))
    server = EmbeddedRedis(appendonly=True).start()
    settings = SiftSettings(
        redis_url=server.url,
        registry=fast_registry(work_dir),
        queue_prefix=f"soak-{uuid.uuid4().hex[:8]}",
        chunk_size=args.chunk,
        visibility_timeout_s=args.visibility_timeout_s,
    )
    broker = redis.Redis.from_url(server.url)
    spawned = 0

    def spawn() -> Worker:
        nonlocal spawned
        spawned += 1
        return Worker(settings, work_dir / f"worker-{spawned}.log", args.threads)

    workers = [spawn() for _ in range(args.workers)]
    text = "review {}: " + "the food was fine, the staff were friendly enough and the room was clean. " * 4
    totals = {"jobs": 0, "items": 0, "kills": 0, "restarts": 0, "exits": 0, "bad_jobs": 0}
    started = time.monotonic()
    print(f"soak: logs and data in {work_dir}; {args.workers} workers, Redis on port {server.port}", flush=True)
    try:
        while time.monotonic() - started < args.minutes * 60:
            job_id = f"soak-{uuid.uuid4().hex[:12]}"
            items = [{"id": f"item-{i:06d}", "text": text.format(i)} for i in range(args.items)]
            job_started = time.monotonic()
            with SiftClient(settings) as client:
                client.submit_many("classify", items, job_id=job_id)
            kills = restarts = 0
            next_kill = time.monotonic() + rng.expovariate(1 / args.kill_every_s)
            next_restart = time.monotonic() + rng.expovariate(1 / args.restart_every_s)
            last_count, last_progress = -1, time.monotonic()
            stalled = False
            while True:
                count = int(broker.hlen(results_key(settings.queue_prefix, job_id)))
                now = time.monotonic()
                if count >= args.items:
                    break
                if count != last_count:
                    last_count, last_progress = count, now
                elif now - last_progress > args.stall_s:
                    stalled = True
                    break
                for index, worker in enumerate(workers):
                    if worker.exited is not None:
                        print(f"  {worker.log_path.name} exited by itself (code {worker.exited}); replacing it")
                        totals["exits"] += 1
                        workers[index] = spawn()
                if now >= next_kill:
                    ready = [i for i, w in enumerate(workers) if w.ready]
                    if ready:
                        index = rng.choice(ready)
                        workers[index].kill()
                        workers[index] = spawn()
                        kills += 1
                    next_kill = now + rng.expovariate(1 / args.kill_every_s)
                if now >= next_restart:
                    restart_redis(server, args.redis_crash)
                    restarts += 1
                    next_restart = now + rng.expovariate(1 / args.restart_every_s)
                time.sleep(0.05)
            drain_deadline = time.monotonic() + 60
            queue = queue_name(settings.queue_prefix, Lane.BULK)
            while (broker.hlen(UNACKED) or broker.llen(queue)) and time.monotonic() < drain_deadline:
                time.sleep(0.2)
            distinct = int(broker.hlen(results_key(settings.queue_prefix, job_id)))
            entries = int(broker.xlen(done_stream_key(settings.queue_prefix, job_id)))
            errors = int(broker.scard(errors_key(settings.queue_prefix, job_id)))
            left = int(broker.hlen(UNACKED)) + int(broker.llen(queue))
            ok = not stalled and distinct == args.items and entries == args.items and errors == 0 and left == 0
            totals["jobs"] += 1
            totals["items"] += args.items
            totals["kills"] += kills
            totals["restarts"] += restarts
            totals["bad_jobs"] += not ok
            print(
                f"job {totals['jobs']}: {'ok ' if ok else 'BAD'} {args.items} items sent, {distinct} results, "
                f"{entries - distinct} duplicates, {errors} errors, {left} messages left, {kills} kills, "
                f"{restarts} redis {'crashes' if args.redis_crash else 'restarts'}"
                f"{', STALLED' if stalled else ''}, {time.monotonic() - job_started:.1f} s",
                flush=True,
            )
            broker.delete(
                results_key(settings.queue_prefix, job_id),
                done_stream_key(settings.queue_prefix, job_id),
                errors_key(settings.queue_prefix, job_id),
            )
    finally:
        for worker in workers:
            worker.kill()
        broker.close()
        server.close()
    print(
        f"soak total: {totals['jobs']} jobs, {totals['items']} items, {totals['kills']} worker kills, "
        f"{totals['restarts']} redis restarts, {totals['exits']} workers exited by themselves, "
        f"{totals['bad_jobs']} bad jobs, "
        f"{time.monotonic() - started:.0f} s; worker logs in {work_dir}"
    )
    return 1 if totals["bad_jobs"] else 0


if __name__ == "__main__":
    sys.exit(main())
