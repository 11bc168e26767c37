"""A worker freezes its startup heap: the garbage collector stops walking the models' objects at every collection."""

from __future__ import annotations

import gc

from workers.worker import freeze_startup_heap


def test_objects_alive_at_startup_leave_the_collectors_reach_and_later_garbage_is_still_collected() -> None:
    startup = [[i] for i in range(1000)]  # stands for the models' modules, tensors' wrappers, vocabularies
    try:
        frozen = freeze_startup_heap()
        # Not an equality with gc.get_freeze_count(): a frozen object other threads drop leaves the count.
        assert frozen >= len(startup)
        tracked = {id(o) for o in gc.get_objects()}
        assert id(startup) not in tracked and id(startup[0]) not in tracked

        later: list[object] = []
        later.append(later)  # a reference cycle made after startup: only a collection frees it
        assert id(later) in {id(o) for o in gc.get_objects()}
        del later
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
