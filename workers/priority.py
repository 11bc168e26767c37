"""CPU priority of a worker's bulk threads: real-time passes and the event loop go first when cores are contended.

A CPU cannot preempt a forward pass, but the kernel's scheduler can prefer one thread over another. On Linux the
nice value is a property of each thread (not of the process, whatever POSIX says), and a thread starts with the nice
value of the thread that created it. So a thread that raises its own nice value before it starts a thread pool
(ONNX Runtime's intra-op pool, torch's OpenMP team) has its pool at that value too. An unprivileged process may
raise a nice value but never lower it again, which is why only threads that do nothing but bulk work are lowered.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_NICENESS = 19


def lower_this_thread(niceness: int) -> bool:
    """Raise the calling thread's nice value by ``niceness`` (capped at 19); False where this OS cannot.

    Threads this thread creates afterwards start at the new value.
    """
    if niceness <= 0:
        return False
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(MAX_NICENESS, current + niceness))
    except (AttributeError, OSError, OverflowError, ValueError) as err:  # not Linux: a thread id is no process id
        log.warning("could not lower the priority of thread %s (%s); bulk passes keep the default", tid, err)
        return False
    return True


def thread_niceness() -> int:
    """The calling thread's nice value."""
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def made_at_lower_priority(niceness: int, make: Callable[[], T]) -> T:
    """``make()`` run on a short-lived thread whose nice value is raised by ``niceness`` first.

    What ``make`` starts (an ONNX Runtime session's thread pool) keeps that value; the calling thread keeps its own.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            lower_this_thread(niceness)
            outcome.append(make())
        except BaseException as err:  # noqa: BLE001 - raised again in the calling thread
            failure.append(err)

    thread = threading.Thread(target=run, name="sift-lower-priority")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]
