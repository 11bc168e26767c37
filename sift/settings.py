"""One typed settings object, read from ``SIFT_*`` environment variables at the edge."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import redis
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from sift.contract.items import Limits
from sift.contract.jobs import Lane


class SettingsError(Exception):
    """A setting is missing or wrong; the message says which and how to fix it."""


class SiftSettings(BaseSettings):
    """Deployment settings shared by producers and workers.

    Every field maps to ``SIFT_<FIELD>``; e.g. ``SIFT_REDIS_URL=redis://:secret@host:6379/0``,
    or over TLS ``SIFT_REDIS_URL=rediss://:secret@host:6380/0`` (the server certificate is always verified).
    """

    model_config = SettingsConfigDict(env_prefix="SIFT_", extra="ignore", frozen=True)

    redis_url: str | None = None
    """Broker and results store. Unset: ``sift demo`` starts a private redis-server; other commands refuse."""
    redis_ca_certs: Path | None = None
    """``rediss://`` only: PEM bundle of the CAs that sign the server certificate; unset means the system's CAs."""
    redis_certfile: Path | None = None
    """``rediss://`` only, for servers that require client certificates: this client's PEM certificate."""
    redis_keyfile: Path | None = None
    """The private key of ``redis_certfile`` (unset: the key is in ``redis_certfile``)."""
    queue_prefix: str = "sift"
    result_ttl_s: int = Field(default=7 * 24 * 3600, ge=1)
    """How long results stay in Redis after their last write."""
    results_stream_maxlen: int = Field(default=1_000_000, ge=1)
    """About how many results the global results stream keeps; a consumer group lagging further loses the oldest."""
    chunk_size: int = Field(default=256, ge=1, le=10_000)
    """Items per broker message when submitting many."""
    prefetch_multiplier: int = Field(default=64, ge=1)
    """Messages a worker may hold at once and gather batches from (its bulk intake pauses while it
    holds enough bulk work, so the rest of these slots serve the real-time lane)."""
    visibility_timeout_s: int = Field(default=3600, ge=1)
    """Redis redelivers an unacknowledged message after this long: keep it above the longest batch."""
    max_text_bytes: int = Field(default=16_384, ge=1)
    max_labels: int = Field(default=32, ge=1)
    max_documents: int = Field(default=128, ge=1)
    item_retries: int = Field(default=2, ge=0, le=10)
    """Retries of an item that makes the model raise when it is alone in its batch."""
    retry_backoff_s: float = Field(default=0.05, ge=0)
    """Wait before the first retry; doubled before each next one."""
    dead_letter_max: int = Field(default=100_000, ge=1)
    """Dead letters kept (the oldest are dropped past this)."""
    max_queued_realtime: int = Field(default=10_000, ge=1)
    """Messages the real-time queue may hold before producers block or fail."""
    max_queued_bulk: int = Field(default=4_000, ge=1)
    """Messages the bulk queue may hold (at 256 items a message, about a million items)."""
    on_queue_full: Literal["block", "fail"] = "block"
    """At a queue's bound: wait for room (up to ``queue_full_timeout_s``) or fail at once."""
    queue_full_timeout_s: float = Field(default=600.0, ge=0)
    cache_enabled: bool = True
    """Reuse the logits of a sequence already scored by the same model (revision, dtype, max length)."""
    cache_ttl_s: int = Field(default=3600, ge=1)
    """The dedup window: a sequence's logits are reused for this long after they were computed."""
    cache_redis_url: str | None = None
    """A Redis of the cache's own (e.g. with maxmemory and allkeys-lru); unset: the broker's Redis."""
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Workers serve Prometheus metrics on this port (``sift workers``: child i on port + i; 0: any free port)."""
    metrics_addr: str = "0.0.0.0"
    """Interface of the metrics server."""
    forward_thread: bool = True
    """Run forward passes on a thread of their own, so the worker's event loop keeps reading the broker and
    tokenizing the next messages meanwhile. Off: every pass blocks the loop, so a message Redis has already
    handed over waits unread in the socket for the whole pass (lost if the worker is killed then)."""
    realtime_thread: bool = True
    """On a worker that consumes both lanes (with ``forward_thread``): run real-time passes on a second thread,
    beside the bulk pass in flight, instead of after it. An ONNX Runtime model gets a second session for them
    (a second copy of its weights). Off: a real-time item waits for the bulk pass in flight."""
    bulk_niceness: int = Field(default=10, ge=0, le=19)
    """With the real-time thread: how much lower the CPU priority (nice value) of bulk passes is than the rest of
    the worker, so that the kernel runs a real-time pass (and the event loop) first while both want the cores.
    Applies to the forward thread and the bulk ONNX Runtime sessions' thread pools (Linux: nice is per thread).
    0: bulk and real-time passes share the cores evenly."""
    registry: Path | None = None
    """Model registry YAML; unset means the reference Hugging Face models."""
    policy: Path | None = None
    """Moderation policies YAML; unset means the shipped default policy."""

    def limits(self) -> Limits:
        """The item size limits, as the contract's validators take them."""
        return Limits(max_text_bytes=self.max_text_bytes, max_labels=self.max_labels, max_documents=self.max_documents)

    def queue_bound(self, lane: Lane) -> int:
        """How many messages ``lane``'s queue may hold."""
        return self.max_queued_realtime if lane is Lane.REALTIME else self.max_queued_bulk

    def require_redis_url(self) -> str:
        """The Redis URL, or a clear error telling the user how to give one."""
        if not self.redis_url:
            raise SettingsError(
                "SIFT_REDIS_URL is not set: export SIFT_REDIS_URL=redis://[:password@]host:port/db "
                "(or run `sift demo`, which starts a private Redis)"
            )
        return self.redis_url

    def redis_tls(self) -> dict[str, Any]:
        """TLS options for ``rediss://``, empty for ``redis://``; raises :class:`SettingsError` on contradictions.

        redis-py's ``SSLConnection`` and Celery's ``broker_use_ssl`` (kombu passes it to redis-py)
        take the same keys, so both sides use this one mapping. Certificates are always verified:
        kombu would otherwise silently skip verification for a ``rediss://`` URL without options.
        """
        url = self.require_redis_url()
        parts = urlsplit(url)
        in_url = sorted(k for k, _ in parse_qsl(parts.query) if k.startswith("ssl"))
        if in_url:
            raise SettingsError(
                f"SIFT_REDIS_URL carries TLS options ({', '.join(in_url)}): remove them and use SIFT_REDIS_CA_CERTS, "
                "SIFT_REDIS_CERTFILE and SIFT_REDIS_KEYFILE instead (sift always verifies the server certificate)"
            )
        files = {
            "SIFT_REDIS_CA_CERTS": self.redis_ca_certs,
            "SIFT_REDIS_CERTFILE": self.redis_certfile,
            "SIFT_REDIS_KEYFILE": self.redis_keyfile,
        }
        given = [name for name, path in files.items() if path is not None]
        if parts.scheme != "rediss":
            if given:
                raise SettingsError(
                    f"{', '.join(given)} set, but SIFT_REDIS_URL ({redact_url(url)}) is not TLS: "
                    "use a rediss:// URL, or unset them"
                )
            return {}
        if self.redis_keyfile is not None and self.redis_certfile is None:
            raise SettingsError("SIFT_REDIS_KEYFILE is set without SIFT_REDIS_CERTFILE: set both, or neither")
        for name, path in files.items():
            if path is not None and not path.is_file():
                raise SettingsError(f"{name}={path}: no such file")
        options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
        for key, path in (
            ("ssl_ca_certs", self.redis_ca_certs),
            ("ssl_certfile", self.redis_certfile),
            ("ssl_keyfile", self.redis_keyfile),
        ):
            if path is not None:
                options[key] = str(path)
        return options

    def redis_client(self) -> redis.Redis:
        """A redis-py client of the results store, over TLS for ``rediss://`` URLs."""
        return redis.Redis.from_url(self.require_redis_url(), **self.redis_tls())


def settings_error_message(err: ValidationError) -> str:
    """One line per bad ``SIFT_*`` variable of a :class:`SiftSettings` validation error (values not echoed)."""
    parts = []
    for problem in err.errors(include_input=False, include_url=False):
        name = "SIFT_" + "__".join(str(part) for part in problem["loc"]).upper()
        parts.append(f"{name}: {problem['msg']}")
    return "; ".join(parts) or str(err)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def cache_dir() -> Path:
    """Where sift builds and keeps offline models: ``SIFT_CACHE_DIR``, default ``~/.cache/sift``."""
    return Path(os.environ.get("SIFT_CACHE_DIR", Path.home() / ".cache" / "sift"))
