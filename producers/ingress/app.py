"""Build the ingress: a FastAPI app over :class:`~producers.client.SiftClient`, so HTTP and Python producers agree."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import fastapi
import redis
from fastapi import Depends, FastAPI

import sift
from producers.client import SiftClient
from producers.ingress.auth import ApiKeys, api_key_guard
from producers.ingress.errors import install_error_handlers
from producers.ingress.ledger import SubmissionLedger
from producers.ingress.metrics import IngressMetrics, MetricsMiddleware
from producers.ingress.routes import Services, health_router, jobs_router
from producers.ingress.settings import IngressSettings, load_ingress_settings
from sift.delivery.destinations import allowed_networks_from_env
from sift.settings import SettingsError, SiftSettings

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0

DESCRIPTION = """\
Submit classification, zero-shot, NLI, rerank and moderation jobs to sift's queues over HTTP and read
their results back. Bodies follow `sift.contract`; every error is `{"error": code, "message": text}`.
Authenticate with `Authorization: Bearer <key>` or `X-API-Key: <key>`.
"""


def create_app(settings: SiftSettings | None = None, ingress: IngressSettings | None = None) -> FastAPI:
    """The ingress app for ``settings`` (Redis, queues) and ``ingress`` (keys, limits), both from env by default.

    Raises :class:`~sift.settings.SettingsError` when Redis is not configured, or when no API key is set
    and anonymous access was not asked for. Does not connect to Redis: ``/readyz`` says when it can.
    """
    if "max_body_size" not in inspect.signature(FastAPI).parameters:
        # Older FastAPI versions take the keyword into app.extra without a word, leaving bodies unlimited.
        raise SettingsError(f"FastAPI {fastapi.__version__} cannot limit request bodies: pip install 'fastapi>=0.165'")
    settings = settings or SiftSettings()
    ingress = ingress or load_ingress_settings()
    ingress.require_keys_or_anonymous()
    # A bad SIFT_WEBHOOK_ALLOWED_NETWORKS fails here, at startup, not as a 500 on the first callback_url.
    allowed_networks_from_env()
    keys = ApiKeys(key.get_secret_value() for key in ingress.api_keys) if ingress.api_keys else None
    if keys is None:
        log.warning("the ingress serves WITHOUT authentication (SIFT_INGRESS_ALLOW_ANONYMOUS=true)")
    # An HTTP request must never wait for room in a queue: at the bound the client fails at once (429).
    client = SiftClient(settings.model_copy(update={"on_queue_full": "fail"}))
    probe = redis.Redis.from_url(
        settings.require_redis_url(),
        socket_timeout=PROBE_TIMEOUT_S,
        socket_connect_timeout=PROBE_TIMEOUT_S,
        **settings.redis_tls(),
    )
    metrics = IngressMetrics()
    services = Services(
        client=client,
        ledger=SubmissionLedger(client.redis, prefix=settings.queue_prefix, ttl_s=settings.result_ttl_s),
        metrics=metrics,
        settings=ingress,
        probe=probe,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        probe.close()
        client.close()

    app = FastAPI(
        title="sift ingress",
        version=sift.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        max_body_size=ingress.max_request_bytes,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    install_error_handlers(app, retry_after_s=ingress.ingress_retry_after_s)
    app.include_router(health_router(services))
    app.include_router(jobs_router(services), dependencies=[Depends(api_key_guard(keys))])
    return app
