"""The webhook dispatcher: POSTs each job's results to the job's callback URL, signed, with retries.

It is the consumer group ``webhooks`` of the global results stream; run as many dispatchers as
needed (``sift deliver``), each result goes to one of them. A batch is acknowledged only once the
receiver accepted it or it was given up and recorded, so a dispatcher that dies mid-way loses
nothing: a peer (or its restart) takes the batch over and sends it again. Delivery is therefore
at least once; receivers deduplicate by ``(job_id, id)``.

Before each attempt the callback host is resolved and every address that is not globally
routable (and not in ``SIFT_WEBHOOK_ALLOWED_NETWORKS``) is dropped; with none left the batch is
given up at once (:mod:`sift.delivery.destinations`). The POST then goes to the checked address
itself, with the URL's host in the ``Host`` header and as the TLS server name, so a DNS answer
that changes in between cannot send it elsewhere. Redirects are never followed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

import httpx
import redis

from sift.delivery.callbacks import callback_for, validate_callback_url
from sift.delivery.destinations import (
    ForbiddenDestination,
    IPAddress,
    IPNetwork,
    Resolver,
    literal_address,
    resolve_destination,
    system_resolver,
)
from sift.delivery.failures import WebhookFailure, record_failure, redact_url
from sift.delivery.payload import WebhookPayload
from sift.delivery.settings import DeliverySettings
from sift.delivery.signing import SIGNATURE_HEADER, sign
from sift.delivery.stream import ResultStreamConsumer, StreamEntry

log = logging.getLogger(__name__)

GROUP = "webhooks"
"""The consumer group every dispatcher joins."""
USER_AGENT = "sift-webhooks/1"
DELIVERY_HEADER = "Sift-Delivery"
"""Id of the batch; the same on every attempt of it."""
ATTEMPT_HEADER = "Sift-Attempt"
"""1 for the first attempt of a batch, 2 for its first retry, ..."""
_REDIS_RETRY_MAX_S = 30.0


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and how patiently, one batch is sent."""

    max_attempts: int = 6
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0

    def delay_before(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait before attempt number ``attempt`` (2 is the first retry).

        Doubles from ``backoff_s``; a receiver's ``Retry-After`` may lengthen it; ``backoff_max_s`` caps both.
        """
        delay = self.backoff_s * 2.0 ** max(0, attempt - 2)
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)
        return min(delay, self.backoff_max_s)


def is_retryable_status(status: int) -> bool:
    """True for answers worth retrying: 5xx, 408 Request Timeout and 429 Too Many Requests."""
    return status >= 500 or status in (408, 429)


@dataclass(frozen=True)
class WebhookOptions:
    """What a dispatcher needs besides Redis: the signing secret, timeouts, retries, batching."""

    secret: bytes = field(repr=False)
    timeout_s: float = 10.0
    retry: RetryPolicy = RetryPolicy()
    batch_size: int = 100
    claim_idle_s: float = 120.0
    failures_max: int = 100_000
    allowed_networks: tuple[IPNetwork, ...] = ()
    """Networks that may be POSTed to although not globally routable; empty: public addresses only."""

    def __post_init__(self) -> None:
        if not self.secret:
            raise ValueError("webhooks are always signed: the secret must not be empty")
        if self.timeout_s <= 0 or self.claim_idle_s <= 0:
            raise ValueError(f"timeout_s and claim_idle_s must be positive, got {self.timeout_s}, {self.claim_idle_s}")
        if self.retry.max_attempts < 1 or self.batch_size < 1 or self.failures_max < 1:
            raise ValueError("max_attempts, batch_size and failures_max must each be at least 1")

    @classmethod
    def from_settings(cls, settings: DeliverySettings) -> WebhookOptions:
        """Options from ``SIFT_WEBHOOK_*``; raises ``SettingsError`` without a usable secret."""
        return cls(
            secret=settings.require_webhook_secret(),
            timeout_s=settings.webhook_timeout_s,
            retry=RetryPolicy(
                max_attempts=settings.webhook_max_attempts,
                backoff_s=settings.webhook_backoff_s,
                backoff_max_s=settings.webhook_backoff_max_s,
            ),
            batch_size=settings.webhook_batch_size,
            claim_idle_s=settings.webhook_claim_idle_s,
            failures_max=settings.webhook_failures_max,
            allowed_networks=settings.webhook_allowed_networks,
        )


@dataclass(frozen=True)
class Outcome:
    """How sending one batch ended."""

    delivered: bool
    attempts: int
    status: int | None
    reason: str


def default_consumer_name() -> str:
    """``host-pid``: unique per dispatcher process, so a restart's old entries are taken over, not mixed."""
    return f"{socket.gethostname()}-{os.getpid()}"


class WebhookDispatcher:
    """Deliver results to callback URLs until :meth:`stop` is called."""

    def __init__(
        self,
        client: redis.Redis,
        options: WebhookOptions,
        *,
        prefix: str = "sift",
        consumer: str | None = None,
        http: httpx.Client | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        """``http``: a client of your own (mTLS, CA bundle); by default one with ``options.timeout_s``.

        Whatever the client, requests go to the checked address, with redirects off. Give a client
        of your own ``limits=httpx.Limits(max_keepalive_connections=0)``: its pool is keyed by that
        address, so a kept-alive connection could carry host B's POST over a TLS session made for
        host A. Proxies do not mix with the pinned address (an HTTP proxy's tunnel would check the
        certificate against the IP); send through an egress proxy by other means.
        ``resolver``: how host names are resolved (the system's ``getaddrinfo`` by default).
        """
        self._redis = client
        self._options = options
        self._prefix = prefix
        self.consumer = ResultStreamConsumer(
            client,
            prefix=prefix,
            group=GROUP,
            consumer=consumer or default_consumer_name(),
            claim_idle_s=options.claim_idle_s,
            count=options.batch_size,
        )
        # Redirects are not followed: a signed body must go where the job asked, and nowhere else.
        # An explicit transport takes no proxy from the environment (it would see only the pinned IP),
        # and keeps no connection alive (the pool is keyed by IP, not by the host the TLS session checked).
        self._http = http or httpx.Client(
            transport=httpx.HTTPTransport(limits=httpx.Limits(max_keepalive_connections=0)),
            timeout=options.timeout_s,
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
        )
        self._owns_http = http is None
        self._resolver = resolver
        self._stop = threading.Event()
        self._held: set[str] = set()
        self._last_touch = 0.0

    def close(self) -> None:
        """Release the HTTP client (when this dispatcher made it)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> WebhookDispatcher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def stop(self) -> None:
        """Ask :meth:`run` to return soon; a batch being retried stays unconfirmed and is sent again later."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop.is_set()

    def run(self, *, block_s: float = 1.0) -> None:
        """Dispatch until :meth:`stop`; rides out Redis outages with growing pauses."""
        self.consumer.ensure_group()
        pause = 0.5
        while not self._stop.is_set():
            try:
                self.run_once(block_s=block_s)
                pause = 0.5
            except (redis.ConnectionError, redis.TimeoutError) as error:
                log.warning("Redis unavailable (%s); retrying in %.1f s", error, pause)
                self._stop.wait(pause)
                pause = min(pause * 2, _REDIS_RETRY_MAX_S)

    def run_once(self, *, block_s: float | None = 1.0) -> int:
        """Read one round of results and deliver them; returns how many were confirmed."""
        entries = self.consumer.read(block_s=block_s)
        self._held = {entry.entry_id for entry in entries}
        self._last_touch = time.monotonic()
        by_job: dict[str, list[StreamEntry]] = {}
        for entry in entries:
            by_job.setdefault(entry.job_id, []).append(entry)
        done = 0
        for job_id, job_entries in by_job.items():
            if self._stop.is_set():
                break
            done += self._dispatch_job(job_id, job_entries)
        return done

    def _dispatch_job(self, job_id: str, entries: list[StreamEntry]) -> int:
        url = callback_for(self._redis, self._prefix, job_id)
        if url is None:
            return self._confirm(entries)  # no callback: nothing to deliver
        try:
            validate_callback_url(url, allowed_networks=self._options.allowed_networks)
        except ValueError as error:  # written around register_callback, or a literal IP refused: record, never retry
            self._give_up(job_id, url, entries, Outcome(False, 0, None, str(error)))
            return self._confirm(entries)
        done = 0
        size = self._options.batch_size
        for chunk in (entries[start : start + size] for start in range(0, len(entries), size)):
            outcome = self._deliver(url, job_id, chunk)
            if outcome is None:
                return done  # stopping: the rest stays pending for a restart or a peer
            if outcome.delivered:
                log.info("delivered %d results of job %s to %s", len(chunk), job_id, redact_url(url))
            else:
                self._give_up(job_id, url, chunk, outcome)
            done += self._confirm(chunk)
        return done

    def _deliver(self, url: str, job_id: str, chunk: Sequence[StreamEntry]) -> Outcome | None:
        """POST one batch until accepted, refused or out of attempts; None when stopped in between."""
        try:
            target = httpx.URL(url)
            host = target.raw_host.decode("ascii")
        except (httpx.InvalidURL, UnicodeError) as error:
            return Outcome(False, 0, None, f"cannot send to this URL: {error}")
        port = target.port or (443 if target.scheme == "https" else 80)
        payload = WebhookPayload(delivery_id=uuid.uuid4().hex, job_id=job_id, results=[e.result for e in chunk])
        body = payload.model_dump_json(exclude_none=True).encode()
        policy = self._options.retry
        status: int | None = None
        reason = ""
        retry_after: float | None = None
        for attempt in range(1, policy.max_attempts + 1):
            if attempt > 1:
                delay = policy.delay_before(attempt, retry_after)
                log.warning("job %s to %s: %s; attempt %d in %.1f s", job_id, redact_url(url), reason, attempt, delay)
                if self._stop.wait(delay):
                    return None
            self._keep_claim()
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign(self._options.secret, body),
                DELIVERY_HEADER: payload.delivery_id,
                ATTEMPT_HEADER: str(attempt),
            }
            retry_after = None
            try:
                # Resolved again on each attempt, checked, then connected to as checked: no second lookup.
                addresses = resolve_destination(host, port, self._options.allowed_networks, self._resolver)
            except ForbiddenDestination as error:
                return Outcome(False, attempt - 1, None, str(error))  # attempts: requests actually sent
            except (OSError, UnicodeError) as error:  # DNS failures pass more often than not: retried
                status, reason = None, f"cannot resolve {host}: {error}"
                continue
            try:
                status, retry_after = self._post(target, addresses, body, headers)
            except (httpx.UnsupportedProtocol, httpx.InvalidURL) as error:
                return Outcome(False, attempt, None, f"cannot send to this URL: {error}")
            except httpx.TimeoutException:
                status, reason = None, f"no answer within {self._options.timeout_s:g} s"
                continue
            except httpx.TransportError as error:
                status, reason = None, f"{type(error).__name__}: {error}"
                continue
            if 200 <= status < 300:
                return Outcome(True, attempt, status, "delivered")
            reason = f"HTTP {status}"
            if not is_retryable_status(status):
                return Outcome(False, attempt, status, f"{reason}, not retried (only 5xx, 408 and 429 are)")
        return Outcome(False, policy.max_attempts, status, f"{reason}, after {policy.max_attempts} attempts")

    def _post(
        self, target: httpx.URL, addresses: Sequence[IPAddress], body: bytes, headers: Mapping[str, str]
    ) -> tuple[int, float | None]:
        """POST to the first of ``addresses`` that takes the connection; its status and ``Retry-After``.

        The URL's host goes in the ``Host`` header and, for https, is the name the TLS certificate is
        checked against (httpx's ``sni_hostname`` extension). Like ``socket.create_connection``, the next
        address is tried only when connecting failed: nothing was sent yet. Raises the last error.
        """
        pinned_headers = {**headers, "Host": target.netloc.decode("ascii")}
        name = target.raw_host.decode("ascii")
        sni = {"sni_hostname": name} if target.scheme == "https" and literal_address(name) is None else {}
        failure: httpx.ConnectError | None = None
        for address in addresses:
            try:
                # Streamed and never read: a receiver's answer body is of no use, however large.
                with self._http.stream(
                    "POST",
                    target.copy_with(host=str(address)),
                    content=body,
                    headers=pinned_headers,
                    extensions=sni,
                    follow_redirects=False,  # even if a client of the caller's own follows them
                ) as response:
                    return response.status_code, _retry_after_s(response.headers.get("Retry-After"))
            except httpx.ConnectError as error:
                failure = error
        raise failure or httpx.ConnectError(f"no address to connect to for {name}")

    def _keep_claim(self) -> None:
        """Refresh this dispatcher's hold on the round's unconfirmed entries, so peers do not take them over."""
        now = time.monotonic()
        if self._held and now - self._last_touch >= 1.0:
            self.consumer.touch(self._held)
            self._last_touch = now

    def _give_up(self, job_id: str, url: str, entries: Sequence[StreamEntry], outcome: Outcome) -> None:
        failure = WebhookFailure(
            job_id=job_id,
            url=url,
            item_ids=tuple(e.result.id for e in entries),
            attempts=outcome.attempts,
            status=outcome.status,
            reason=outcome.reason,
        )
        record_failure(self._redis, self._prefix, failure, max_len=self._options.failures_max)
        log.error("gave up on %d results of job %s to %s: %s", len(entries), job_id, redact_url(url), outcome.reason)

    def _confirm(self, entries: Sequence[StreamEntry]) -> int:
        ids = [entry.entry_id for entry in entries]
        self.consumer.ack(ids)
        self._held.difference_update(ids)
        return len(ids)


def _retry_after_s(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
