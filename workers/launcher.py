"""``sift workers``: one pinned worker process per visible GPU, or N CPU workers.

This only starts and stops processes; Celery and Redis do all the scheduling.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from types import FrameType

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Child:
    """One worker process to start: its command and its environment changes."""

    argv: list[str]
    env: dict[str, str]


def visible_gpus(environ: dict[str, str]) -> list[str]:
    """GPU ids this launcher may hand out: ``CUDA_VISIBLE_DEVICES`` if set, else all CUDA sees."""
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    import torch  # only asks the driver how many devices exist; creates no CUDA context

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def plan_children(
    worker_args: list[str], gpus: list[str], cpu_workers: int, cores: int, threads: int | None
) -> list[Child]:
    """One child per GPU (each sees only its GPU as cuda:0), or ``cpu_workers`` CPU children."""
    base = [sys.executable, "-m", "sift.cli", "worker", *worker_args]
    if gpus:
        return [
            Child([*base, "--device", "cuda:0", "--hostname", f"sift-gpu{gpu}@%h"], {"CUDA_VISIBLE_DEVICES": gpu})
            for gpu in gpus
        ]
    per_child = threads or max(1, cores // cpu_workers)
    return [
        Child(
            [*base, "--device", "cpu", "--threads", str(per_child), "--hostname", f"sift-cpu{i}@%h"],
            {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(per_child)},
        )
        for i in range(cpu_workers)
    ]


def run_children(children: list[Child]) -> int:
    """Start every child, forward SIGINT/SIGTERM to them, and wait; returns the worst exit code."""
    processes = [subprocess.Popen(c.argv, env={**os.environ, **c.env}) for c in children]
    log.info("started %d worker(s): pids %s", len(processes), [p.pid for p in processes])

    def forward(signum: int, _frame: FrameType | None) -> None:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [process.wait() for process in processes]
    return max(codes, key=abs) if codes else 0
