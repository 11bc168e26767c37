"""The HTTP routes: health and readiness (open), jobs and results under ``/v1`` (behind API keys)."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from producers.client import QueueFull, SiftClient
from producers.ingress.errors import ApiError, ApiProblem
from producers.ingress.ledger import SubmissionLedger
from producers.ingress.metrics import IngressMetrics
from producers.ingress.schemas import Health, JobResults, SubmitAccepted, SubmitRequest
from producers.ingress.settings import IngressSettings
from sift.contract import ItemResult, JobId, Lane
from sift.contract.items import MAX_ID_CHARS, item_key, printable
from sift.delivery.callbacks import register_callback
from sift.keys import errors_key, results_key

MAX_PAGE = 1000
_REDIS_CURSOR_MAX = 2**64 - 1


@dataclass(frozen=True)
class Services:
    """What the routes work with; built once per app."""

    client: SiftClient
    ledger: SubmissionLedger
    metrics: IngressMetrics
    settings: IngressSettings
    probe: redis.Redis
    """A Redis connection with short timeouts, so readiness answers quickly when Redis hangs."""


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ApiError} for status in statuses}


JobIdPath = Annotated[JobId, Path(description="The job's id (letters, digits and . _ : -).")]
ItemIdPath = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS, description="The item's id.")]


def health_router(services: Services) -> APIRouter:
    """``/healthz``, ``/readyz`` and ``/metrics``: unauthenticated, for orchestrators and scrapers."""
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", response_model=Health)
    def healthz() -> Health:
        """The process is alive and serving (says nothing about Redis)."""
        return Health(status="ok")

    @router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
    def readyz() -> Any:
        """Ready when Redis (queue and results store) answers a PING; 503 otherwise."""
        try:
            services.probe.ping()
        except RedisError:
            body = Health(status="unavailable", message="Redis (queue and results store) does not answer")
            headers = {"Retry-After": str(services.settings.ingress_retry_after_s)}
            return JSONResponse(body.model_dump(), status_code=503, headers=headers)
        return Health(status="ready")

    @router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    def metrics() -> Response:
        """Prometheus metrics of this ingress process."""
        return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router


def jobs_router(services: Services) -> APIRouter:
    """``/v1/jobs``: submit a job, read its results."""
    router = APIRouter(prefix="/v1", tags=["jobs"])
    client = services.client
    limits = services.settings
    prefix = client.settings.queue_prefix
    results_ttl_s = client.settings.result_ttl_s

    @router.post(
        "/jobs",
        status_code=202,
        response_model=SubmitAccepted,
        responses=_errors(400, 401, 413, 422, 429, 503),
        summary="Submit a job",
        description=(
            f"Queue up to {limits.max_items_per_request} items of one task ({limits.max_request_bytes} bytes of "
            "request at most). Answers 202 at once; results are read back with GET. Answers 429 with "
            "Retry-After when the lane's queue is full: the request never waits for room."
        ),
    )
    def submit_job(request: SubmitRequest, response: Response) -> SubmitAccepted:
        if len(request.items) > limits.max_items_per_request:
            raise ApiProblem(
                422,
                "too_many_items",
                f"{len(request.items)} items, over the limit of {limits.max_items_per_request} per request: "
                "split the job over several requests with the same job_id, giving every item an id "
                "(positional ids restart at 0 in each request)",
            )
        job_id = request.job_id or uuid.uuid4().hex
        items = [raw if "id" in raw else {**raw, "id": str(index)} for index, raw in enumerate(request.items)]
        item_ids = [item_key(raw, index) for index, raw in enumerate(items)]
        try:
            _ensure_room(client, request.lane, messages=math.ceil(len(items) / client.settings.chunk_size))
            if request.callback_url is not None:
                # Before submitting: results stored before registration would not be delivered.
                register_callback(client.redis, prefix, job_id, request.callback_url, ttl_s=results_ttl_s)
            handle = client.submit_many(
                request.task,
                items,
                model=request.model,
                lane=request.lane,
                job_id=job_id,
                deadline_s=request.deadline_s,
            )
        except QueueFull as full:
            services.metrics.queue_full.labels(request.lane.value).inc()
            raise ApiProblem(
                429,
                "queue_full",
                f"{full}; retry after {limits.ingress_retry_after_s} s with job_id {job_id!r} "
                "(a retry under the same job_id never stores an item twice)",
                {"Retry-After": str(limits.ingress_retry_after_s)},
            ) from None
        services.ledger.record(job_id, sorted(set(item_ids)))
        services.metrics.items_submitted.labels(request.task.value, request.lane.value).inc(handle.submitted)
        services.metrics.items_rejected.labels(request.task.value, request.lane.value).inc(len(handle.rejected))
        results_url = f"/v1/jobs/{job_id}"
        response.headers["Location"] = results_url
        return SubmitAccepted(
            job_id=job_id,
            task=request.task,
            lane=request.lane,
            queued=handle.submitted,
            item_ids=item_ids,
            rejected=handle.rejected,
            results_url=results_url,
        )

    @router.get(
        "/jobs/{job_id}",
        response_model=JobResults,
        responses=_errors(401, 404, 422, 503),
        summary="Read a job's results",
    )
    def job_results(
        job_id: JobIdPath,
        cursor: Annotated[int, Query(ge=0, le=_REDIS_CURSOR_MAX, description="From next_cursor; 0 starts.")] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="About this many results per page.")] = 100,
    ) -> JobResults:
        """The job's stored results, a page at a time (in no particular order), with counts over the whole job."""
        with client.redis.pipeline(transaction=False) as pipe:
            pipe.hlen(results_key(prefix, job_id))
            pipe.scard(errors_key(prefix, job_id))
            stored, errors = (int(count) for count in pipe.execute())
        expected = services.ledger.expected(job_id)
        if expected is None and stored == 0:
            raise ApiProblem(
                404,
                "unknown_job",
                f"no job {job_id!r}: nothing was submitted under this id here and it has no stored result "
                "(results expire SIFT_RESULT_TTL_S after their last write)",
            )
        next_cursor, page = client.redis.hscan(results_key(prefix, job_id), cursor=cursor, count=limit)
        assert isinstance(page, dict)  # HSCAN without NOVALUES: id -> result JSON
        return JobResults(
            job_id=job_id,
            expected=expected,
            stored=stored,
            errors=errors,
            complete=expected is not None and stored >= expected,
            results=[ItemResult.model_validate_json(body) for body in page.values()],
            next_cursor=int(next_cursor) or None,
        )

    @router.get(
        "/jobs/{job_id}/items/{item_id:path}",
        response_model=ItemResult,
        responses=_errors(401, 404, 422, 503),
        summary="Read one item's result",
    )
    def item_result(job_id: JobIdPath, item_id: ItemIdPath) -> ItemResult:
        """The item's result; 404 ``result_pending`` (with Retry-After) until a worker has answered it."""
        result = client.store.get(job_id, item_id)
        if result is not None:
            return result
        shown = f"item {printable(item_id)!r} of job {job_id!r}"
        if services.ledger.knows(job_id, item_id):
            retry = {"Retry-After": str(limits.ingress_retry_after_s)}
            raise ApiProblem(404, "result_pending", f"{shown} has no result yet: retry in a moment", retry)
        raise ApiProblem(
            404,
            "unknown_item",
            f"no {shown}: it was not submitted here, or its result expired (SIFT_RESULT_TTL_S)",
        )

    return router


def _ensure_room(client: SiftClient, lane: Lane, *, messages: int) -> None:
    """Raise :class:`QueueFull` unless all of a job's messages fit under the lane's bound, so none is sent in vain."""
    bound = client.settings.queue_bound(lane)
    depth = client.queue_depth(lane)
    if depth + messages > bound:
        raise QueueFull(
            f"the {lane.value} queue holds {depth} messages and this job needs {messages} more, "
            f"over its bound of {bound}"
        )
