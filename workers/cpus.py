"""CPU slices: which cores a CPU worker runs on (``--cpus 0-3``), parsed, checked and pinned.

A CPU worker pinned to its own slice keeps its threads on those cores: two workers on one machine do not take
turns on the same cores, and a dedicated real-time worker is not slowed by a bulk worker's forward passes.
Linux's CPU-list syntax (as ``taskset -c`` and ``/sys/devices/system/cpu/online`` write it).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

from sift.settings import SettingsError


def parse_cpu_list(text: str) -> list[int]:
    """``"0-3,8"`` → ``[0, 1, 2, 3, 8]`` (sorted, each once); raises :class:`SettingsError` on anything else."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise SettingsError(f"--cpus {text!r}: {part!r} is not a CPU number or range (e.g. 0-3,8)")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise SettingsError(f"--cpus {text!r}: the range {part!r} runs backwards")
        cpus.update(range(low, high + 1))
    return sorted(cpus)


def format_cpu_list(cpus: Sequence[int]) -> str:
    """The shortest CPU-list text of ``cpus``: ``[0, 1, 2, 3, 8]`` → ``"0-3,8"``."""
    runs: list[list[int]] = []
    for cpu in sorted(set(cpus)):
        if runs and cpu == runs[-1][-1] + 1:
            runs[-1].append(cpu)
        else:
            runs.append([cpu])
    return ",".join(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity: a container's or a `taskset`'s limit included)."""
    return sorted(os.sched_getaffinity(0))


def pin_to(cpus: Sequence[int]) -> None:
    """Pin every thread of this process to ``cpus``, and so every thread it starts after (threads inherit it).

    Call it before the thread pools start (torch's OpenMP pool, ONNX Runtime's, the tokenizer's): a pool sizes
    itself when it starts. A CPU this process may not use is refused, not silently dropped.
    """
    allowed = set(allowed_cpus())
    if outside := sorted(set(cpus) - allowed):
        raise SettingsError(
            f"--cpus {format_cpu_list(cpus)}: CPU(s) {format_cpu_list(outside)} are not available to this process "
            f"(it may use {format_cpu_list(sorted(allowed))})"
        )
    # sched_setaffinity pins one thread: threads started at import time (before this call) are pinned one by one.
    for thread in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(thread), set(cpus))


def slices(cpus: Sequence[int], count: int) -> list[list[int]]:
    """``cpus`` cut into ``count`` equal, disjoint slices (a remainder is left unused); [] when there are too few."""
    size = len(cpus) // count if count > 0 else 0
    if size == 0:
        return []
    ordered = sorted(cpus)
    return [ordered[i * size : (i + 1) * size] for i in range(count)]
