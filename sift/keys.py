"""Every Redis key and queue name sift uses, in one place.

Keys of one job share the hash tag ``{job_id}`` so they live in one Redis Cluster slot.
The results-write script also appends to the global results stream, so it needs one Redis node
(as Celery's Redis transport does anyway).
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


def results_stream_key(prefix: str) -> str:
    """Stream: every newly stored result of every job, for consumer groups (fields job_id, id, result)."""
    return f"{prefix}:results"


def callback_key(prefix: str, job_id: str) -> str:
    """String: the webhook URL results of the job are POSTed to."""
    return f"{prefix}:job:{{{job_id}}}:callback"


def webhook_failures_key(prefix: str) -> str:
    """Stream: webhook batches given up on after their retries (or refused with a 4xx), oldest first."""
    return f"{prefix}:webhooks:failed"
