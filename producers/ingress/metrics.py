"""Prometheus metrics of the ingress, on a registry of each app's own (several apps can live in one process)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED_ROUTE = "<unmatched>"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class IngressMetrics:
    """Requests by route and status, their latency, items submitted, and backpressure refusals."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "sift_ingress_requests",
            "HTTP requests answered, by route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sift_ingress_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.items_submitted = Counter(
            "sift_ingress_items_submitted",
            "Items queued for the workers, by task and lane.",
            ["task", "lane"],
            registry=self.registry,
        )
        self.items_rejected = Counter(
            "sift_ingress_items_rejected",
            "Items refused at submission with an error result (invalid, too large, duplicate id), by task and lane.",
            ["task", "lane"],
            registry=self.registry,
        )
        self.queue_full = Counter(
            "sift_ingress_queue_full",
            "Submissions answered 429 because the lane's queue was at its bound, by lane.",
            ["lane"],
            registry=self.registry,
        )


class MetricsMiddleware:
    """Counts and times every HTTP request under its route template (never the raw path: ids would explode it)."""

    def __init__(self, app: ASGIApp, metrics: IngressMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            # The router stores the matched route in the (shared) scope.
            route = getattr(scope.get("route"), "path_format", UNMATCHED_ROUTE)
            method = scope.get("method") if scope.get("method") in _METHODS else "OTHER"
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)
