"""Survive a broker connection lost mid-read: Celery's consumer, with one kombu 5.7 failure made recoverable.

When Redis drops the connection while kombu has a ``BRPOP`` in flight, Celery's cleanup closes the
channel twice: the first close (``Connection.collect``) fails on that ``BRPOP``'s read, so the
unacknowledged messages are not given back; the second finds the transport already detached, and
giving them back raises ``AttributeError`` (``'NoneType' object has no attribute 'hostname'``), which
Celery treats as unrecoverable: the worker exits. This consumer catches that one error, lets Celery
reconnect as usual, and remembers that the messages it held are still in kombu's ``unacked`` hash, so
that :class:`~workers.consumer.MessagePump` gives them back by their delivery tags on the new
connection instead of leaving them there until the visibility timeout.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer

log = logging.getLogger(__name__)


class ReconnectingConsumer(Consumer):  # type: ignore[misc]  # celery ships no type hints
    """Celery's consumer; ``worker_consumer`` names it (see :func:`workers.worker.run_worker`)."""

    unacked_left_behind = False
    """Set when closing the lost connection could not give the held messages back."""

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        """Celery's cleanup of a lost connection, minus the fatal ``AttributeError`` described above."""
        try:
            super().on_connection_error_after_connected(exc)
        except AttributeError as err:
            log.warning(
                "closing the lost broker connection failed (%s); the held messages stay unacknowledged and are "
                "given back once reconnected",
                err,
            )
            self.unacked_left_behind = True

    def take_unacked_left_behind(self) -> bool:
        """Whether the last reconnection left held messages behind; reading it clears it."""
        left, self.unacked_left_behind = self.unacked_left_behind, False
        return left


def give_back(consumer: Any, delivery_tags: list[str]) -> int:
    """Put the messages of ``delivery_tags`` back, next in line, in their queues from kombu's ``unacked`` hash.

    Uses the Redis transport's own ``restore_by_tag`` on ``consumer``'s current channel; a tag that
    is no longer in the hash (already restored or acknowledged) restores nothing. Returns how many
    tags were tried; a broker error is logged, and Redis redelivers those messages after the
    visibility timeout instead.
    """
    connection = getattr(consumer, "connection", None)
    if connection is None or not delivery_tags:
        return 0
    try:
        qos = connection.default_channel.qos
        for tag in delivery_tags:
            qos.restore_by_tag(tag)  # to the end BRPOP takes from: next in line
    except Exception as err:  # noqa: BLE001 - the visibility timeout still redelivers them
        log.warning("could not give back %d held messages (%s); Redis redelivers them later", len(delivery_tags), err)
        return 0
    return len(delivery_tags)
