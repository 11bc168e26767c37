"""``sift workers``: one pinned worker process per visible GPU, or N CPU workers, each on its own slice of cores.

This only starts and stops processes; Celery and Redis do all the scheduling.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

from sift.settings import SettingsError, SiftSettings
from workers.cpus import format_cpu_list, slices

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
    worker_args: list[str],
    gpus: list[str],
    cpu_workers: int,
    cpus: Sequence[int],
    threads: int | None,
    settings: SiftSettings | None = None,
) -> list[Child]:
    """One child per GPU (each sees only its GPU as cuda:0), or ``cpu_workers`` CPU children, each pinned to its
    own equal slice of ``cpus`` (the launcher's own CPUs) with as many threads, unless ``threads`` says otherwise.

    With more CPU workers than CPUs there are no slices to give: the children run unpinned, one thread each.
    With ``SIFT_METRICS_PORT`` set (in ``settings``, default: this environment's, which the children
    inherit), child i serves its metrics on that port + i, so the children do not fight for one port.
    """
    if cpu_workers < 1:
        raise SettingsError(f"--cpu-workers must be at least 1, got {cpu_workers}")
    base = [sys.executable, "-m", "sift.cli", "worker", *worker_args]
    if gpus:
        children = [
            Child([*base, "--device", "cuda:0", "--hostname", f"sift-gpu{gpu}@%h"], {"CUDA_VISIBLE_DEVICES": gpu})
            for gpu in gpus
        ]
    else:
        pinned = slices(cpus, cpu_workers)
        if not pinned:
            log.warning("%d CPU workers on %d CPUs: each shares every CPU, unpinned", cpu_workers, len(cpus))
        children = []
        for i in range(cpu_workers):
            cpus_of_child = pinned[i] if pinned else []
            per_child = threads or len(cpus_of_child) or 1
            pin = ["--cpus", format_cpu_list(cpus_of_child)] if cpus_of_child else []
            argv = [*base, "--device", "cpu", *pin, "--threads", str(per_child), "--hostname", f"sift-cpu{i}@%h"]
            children.append(Child(argv, {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(per_child)}))
    ports = metrics_ports((settings or SiftSettings()).metrics_port, len(children))
    return [
        child if port is None else Child(child.argv, {**child.env, "SIFT_METRICS_PORT": str(port)})
        for child, port in zip(children, ports, strict=True)
    ]


def metrics_ports(base: int | None, count: int) -> list[int | None]:
    """The metrics port of each of ``count`` children: ``base + i``; 0 (any free port) for all when ``base`` is 0."""
    if base is None:
        return [None] * count
    if base == 0:
        return [0] * count
    if base + count - 1 > 65535:
        raise SettingsError(
            f"SIFT_METRICS_PORT={base} leaves no room for {count} workers (ports {base}..{base + count - 1}): "
            "choose a lower port"
        )
    return [base + i for i in range(count)]


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
