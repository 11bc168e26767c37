"""A real HTTP webhook receiver for the delivery tests: a threaded ``http.server`` on a free port.

It answers from a script (e.g. 500, 500, then 200 forever) and records every request it got.
It listens on 127.0.0.1, over plain HTTP or, given a server TLS context, over HTTPS.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sift.delivery import WebhookPayload

HANG = -1
"""A scripted answer: wait ``hang_s`` before answering 200, so the sender times out first."""


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it, and what it answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def payload(self) -> WebhookPayload:
        return WebhookPayload.model_validate_json(self.body)

    @property
    def item_ids(self) -> list[str]:
        return [result.id for result in self.payload.results]


class WebhookReceiver:
    """Answers POSTs with ``answers`` in order, then with ``then``; ``headers`` go on every answer."""

    def __init__(
        self,
        answers: Sequence[int] = (),
        *,
        then: int = 200,
        hang_s: float = 2.0,
        headers: dict[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._answers = list(answers)
        self._then = then
        self._hang_s = hang_s
        self._extra_headers = headers or {}
        self._lock = threading.Lock()
        self.requests: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = receiver._next_answer()
                receiver._record(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, status))
                if status == HANG:
                    time.sleep(receiver._hang_s)
                    status = 200
                try:
                    self.send_response(status)
                    for name, value in receiver._extra_headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender gave up waiting (a timeout test)

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:  # a failed handshake (the sender refused the certificate) drops that connection only
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._scheme = "https" if tls is not None else "http"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _next_answer(self) -> int:
        with self._lock:
            return self._answers.pop(0) if self._answers else self._then

    def _record(self, request: Received) -> None:
        with self._lock:
            self.requests.append(request)

    def answer_from_now(self, status: int) -> None:
        """Answer every later request with ``status``."""
        with self._lock:
            self._answers.clear()
            self._then = status

    def url(self, path: str = "/hook", *, host: str | None = None) -> str:
        """The receiver's URL; ``host`` replaces its address (e.g. ``localhost``, a name that resolves to it)."""
        address, port = self._server.server_address[:2]
        return f"{self._scheme}://{host or address!s}:{port}{path}"

    def accepted(self) -> list[Received]:
        """Requests answered with a 2xx in time (what the sender saw as delivered)."""
        with self._lock:
            return [r for r in self.requests if 200 <= r.answered < 300]

    def accepted_ids(self) -> list[str]:
        return [item_id for request in self.accepted() for item_id in request.item_ids]

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
