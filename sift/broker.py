"""The Celery application both sides share: JSON only, late acks, one queue per lane."""

from __future__ import annotations

from celery import Celery
from kombu.entity import Queue

from sift.contract.jobs import Lane
from sift.keys import queue_name
from sift.settings import SiftSettings

BRPOP_TIMEOUT_S = 0.1
"""How long kombu's BRPOP blocks before it is sent again with the queues consumed now."""


def make_celery_app(settings: SiftSettings) -> Celery:
    """Build the Celery app for ``settings``; producers send with it, workers consume with it."""
    app = Celery("sift", broker=settings.require_redis_url(), set_as_current=False)
    lanes = (Lane.REALTIME, Lane.BULK)
    queues = [Queue(queue_name(settings.queue_prefix, lane)) for lane in lanes]  # type: ignore[no-untyped-call]
    app.conf.update(
        # Pickle over a network broker is remote code execution waiting to happen.
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        # Results go to sift's own store, keyed by job and item; Celery's backend would duplicate them.
        task_ignore_result=True,
        # Ack only after results are written; a killed worker's messages are redelivered.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=settings.prefetch_multiplier,
        # The gathering consumer sizes its own intake; Celery's post-reconnect reduction would fight it.
        worker_enable_prefetch_count_reduction=False,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            # Consume queues in the order given (realtime first): the real-time lane is drained
            # before bulk work is taken, instead of kombu's default round robin.
            "queue_order_strategy": "priority",
            # kombu's BRPOP timeout (1 s by default). A worker that resumes its paused bulk intake is heard
            # only when the BRPOP in flight (real-time lane only) returns: a short timeout bounds that idle gap.
            "polling_interval": BRPOP_TIMEOUT_S,
        },
        # rediss://: verify the server (kombu's default for rediss without options is not to).
        broker_use_ssl=settings.redis_tls() or False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        task_queues=queues,
        task_default_queue=queue_name(settings.queue_prefix, Lane.BULK),
        # Flower reads task events.
        worker_send_task_events=True,
        worker_hijack_root_logger=False,
    )
    return app
