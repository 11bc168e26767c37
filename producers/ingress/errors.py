"""One error shape for every failed request, and the handlers that produce it.

Every 4xx and 5xx answer is ``{"error": <stable code>, "message": <a sentence to act on>}``; a 422
also lists each problem. Handlers never echo the offending input back: it may be large, binary, or
not even serializable (a bare ``NaN`` body once made FastAPI's default 422 handler fail with a 500).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from pydantic import BaseModel, ConfigDict
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from sift.contract.items import printable

log = logging.getLogger(__name__)

_CODES = {
    400: "invalid_json",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "queue_full",
    503: "unavailable",
}
_MESSAGES = {
    400: "the request body is not valid JSON (or nests too deeply, or holds a number too long to parse)",
    413: "the request body is over the size limit (SIFT_MAX_REQUEST_BYTES)",
}


class Problem(BaseModel):
    """One thing wrong with a request: where (``loc``) and what (``msg``)."""

    loc: list[str | int]
    msg: str
    type: str


class ApiError(BaseModel):
    """The body of every error answer."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    error: str
    """Stable code to switch on: unauthorized, not_found, result_pending, too_large, invalid_request, queue_full..."""
    message: str
    """What went wrong and what to do about it."""
    problems: list[Problem] | None = None
    """For ``invalid_request``: each problem found in the request."""


class ApiProblem(Exception):
    """Raised by routes to answer ``status`` with an :class:`ApiError`."""

    def __init__(self, status: int, error: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = ApiError(error=error, message=message)
        self.headers = dict(headers or {})


def error_response(status: int, error: ApiError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """A JSON response of ``error``."""
    return JSONResponse(error.model_dump(exclude_none=True), status_code=status, headers=dict(headers or {}))


def install_error_handlers(app: FastAPI, retry_after_s: int) -> None:
    """Map every known failure to an :class:`ApiError` answer; only real bugs are left to become a 500."""
    retry = {"Retry-After": str(retry_after_s)}

    async def on_problem(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiProblem)
        return error_response(exc.status, exc.error, exc.headers)

    async def on_http_exception(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _CODES.get(exc.status_code, "http_error")
        message = _MESSAGES.get(exc.status_code) or str(exc.detail)
        return error_response(exc.status_code, ApiError(error=code, message=message), exc.headers)

    async def on_invalid_request(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = [_problem(raw) for raw in exc.errors()]
        listed = "; ".join(f"{'.'.join(str(p) for p in problem.loc)}: {problem.msg}" for problem in problems[:5])
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        error = ApiError(error="invalid_request", message=f"invalid request: {listed}{more}", problems=problems[:50])
        return error_response(422, error)

    async def on_broker_down(_request: Request, exc: Exception) -> JSONResponse:
        # The details (host, port, password errors) go to the log, not to the client.
        log.warning("Redis is unavailable: %s: %s", type(exc).__name__, exc)
        error = ApiError(error="unavailable", message="the queue and results store (Redis) is unavailable: retry later")
        return error_response(503, error, retry)

    app.add_exception_handler(ApiProblem, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
    app.add_exception_handler(RequestValidationError, on_invalid_request)
    app.add_exception_handler(RedisError, on_broker_down)
    app.add_exception_handler(OperationalError, on_broker_down)


def _problem(raw: Any) -> Problem:
    """A validation error reduced to strings: pydantic's own may carry the (unserializable) input."""
    loc = [part if isinstance(part, int) else _printable(str(part)) for part in raw.get("loc", ())]
    return Problem(loc=loc, msg=_printable(str(raw.get("msg", ""))), type=str(raw.get("type", "")))


def _printable(text: str) -> str:
    return printable(text)[:500]
