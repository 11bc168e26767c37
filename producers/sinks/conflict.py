"""The rule every results store follows when an item's result arrives twice.

A stored result is never replaced, except an error by a success: a redelivered message or
a resumed backfill cannot change an answer, but a retry that succeeds heals an earlier failure.
It is the rule of the Redis store's write script (``sift.results_store``), in Python for the sinks.
"""

from __future__ import annotations

from collections.abc import Iterable

from sift.contract import ItemResult


def replaces(stored: ItemResult, new: ItemResult) -> bool:
    """Whether ``new`` takes the place of ``stored``, the result already kept for the same item."""
    return stored.error is not None and new.error is None


def collapse(results: Iterable[ItemResult]) -> list[ItemResult]:
    """One result per (job id, item id): the one the rule keeps when they arrive in this order.

    Order of first appearance is preserved, so a batch written at once ends as if written one by one.
    """
    kept: dict[tuple[str, str], ItemResult] = {}
    for result in results:
        key = (result.job_id, result.id)
        stored = kept.get(key)
        if stored is None or replaces(stored, result):
            kept[key] = result
    return list(kept.values())
