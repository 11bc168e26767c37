"""Every Redis key and queue name sift uses, in one place.

Keys of one job share the hash tag ``{job_id}`` so they live in one Redis Cluster slot
(the results-write script touches them together).
"""

from __future__ import annotations

from sift.contract.jobs import Lane

INFER_TASK = "sift.infer"
"""Celery task name: the only task on sift's queues."""


def queue_name(prefix: str, lane: Lane) -> str:
    """Broker queue of a lane, e.g. ``sift.realtime``."""
    return f"{prefix}.{lane.value}"


def dead_letters_key(prefix: str) -> str:
    """List of dead letters: items that failed alone after their retries, oldest first."""
    return f"{prefix}:dead"


def results_key(prefix: str, job_id: str) -> str:
    """Hash: item id → result JSON."""
    return f"{prefix}:job:{{{job_id}}}:results"


def errors_key(prefix: str, job_id: str) -> str:
    """Set: ids whose stored result is an error (a later success may replace it)."""
    return f"{prefix}:job:{{{job_id}}}:errors"


def done_stream_key(prefix: str, job_id: str) -> str:
    """Stream: one entry per newly stored result, so readers can block until results arrive."""
    return f"{prefix}:job:{{{job_id}}}:done"
