"""Bulk threads lower their own CPU priority, threads they start inherit it, and nothing else is lowered."""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from workers.priority import MAX_NICENESS, lower_this_thread, made_at_lower_priority, thread_niceness

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="a nice value per thread is Linux's"),
    # Lowered from 15 or more, a thread would hit the cap of 19 and the checks below could not tell.
    pytest.mark.skipif(sys.platform == "linux" and thread_niceness() > 15, reason="the tests run at nice > 15"),
]


def _on_a_new_thread(action):
    with ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(action).result()


def test_a_thread_lowers_itself_only_and_the_threads_it_starts_inherit_it() -> None:
    own = thread_niceness()

    def lowered_then_child() -> tuple[bool, int, int]:
        changed = lower_this_thread(3)
        child: list[int] = []
        started = threading.Thread(target=lambda: child.append(thread_niceness()))
        started.start()
        started.join()
        return changed, thread_niceness(), child[0]

    assert _on_a_new_thread(lowered_then_child) == (True, own + 3, own + 3)
    assert thread_niceness() == own


def test_zero_changes_nothing_and_the_value_is_capped_at_19() -> None:
    own = thread_niceness()
    assert _on_a_new_thread(lambda: (lower_this_thread(0), thread_niceness())) == (False, own)
    assert _on_a_new_thread(lambda: (lower_this_thread(40), thread_niceness())) == (True, MAX_NICENESS)


def test_what_is_made_at_lower_priority_keeps_it_and_the_caller_does_not() -> None:
    own = thread_niceness()
    release = threading.Event()
    seen: list[int] = []

    def make_a_pool() -> threading.Thread:
        worker = threading.Thread(target=lambda: (seen.append(thread_niceness()), release.wait(10)), daemon=True)
        worker.start()  # like a session's thread pool: started by the maker, outliving it
        return worker

    pool = made_at_lower_priority(4, make_a_pool)
    release.set()
    pool.join(10)
    assert seen == [own + 4]
    assert thread_niceness() == own


def test_an_error_while_making_is_raised_in_the_caller() -> None:
    def broken() -> None:
        raise OSError("no session")

    with pytest.raises(OSError, match="no session"):
        made_at_lower_priority(2, broken)
