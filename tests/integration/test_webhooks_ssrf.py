"""The dispatcher's SSRF guard against a real redis-server and real HTTP(S) receivers.

Callback URLs come from clients; the dispatcher POSTs from inside the deployment. It must refuse
internal addresses (loopback, private, link-local such as cloud metadata) unless an operator allowed
them, and send to the address it checked rather than resolve the name again.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sift_it_helpers import cli_env, new_job_id, run_sift
from webhook_receiver import WebhookReceiver

from sift.contract import ItemResult
from sift.delivery import register_callback
from sift.delivery.destinations import IPNetwork, Resolver, parse_networks, system_resolver
from sift.delivery.failures import WebhookFailure, recent_failures
from sift.delivery.webhooks import RetryPolicy, WebhookDispatcher, WebhookOptions
from sift.keys import callback_key
from sift.results_store import ResultStore

pytestmark = pytest.mark.integration

SECRET = b"whsec-" + uuid.uuid4().hex.encode()
LOOPBACK = parse_networks("127.0.0.1/32")
RETRY = RetryPolicy(max_attempts=3, backoff_s=0.05, backoff_max_s=0.1)


def options(allowed: tuple[IPNetwork, ...] = ()) -> WebhookOptions:
    """Fast retries; no allowed network unless given, as a dispatcher with SIFT_WEBHOOK_ALLOWED_NETWORKS unset."""
    return WebhookOptions(secret=SECRET, timeout_s=2.0, retry=RETRY, claim_idle_s=5.0, allowed_networks=allowed)


def resolver_with(table: dict[str, list[str]]) -> Resolver:
    """Names of the reserved ``.test`` domain answered from ``table``; other names by the system resolver."""

    def resolve(host: str, port: int) -> list[str]:
        return table[host] if host in table else system_resolver(host, port)

    return resolve


class Recorder:
    """An HTTP client transport that records each request and answers 200: shows whether any was attempted."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self._answer))

    def _answer(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200)


@pytest.fixture
def prefix() -> str:
    return f"ssrf-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def store(raw_redis: redis.Redis, prefix: str) -> ResultStore:
    return ResultStore(raw_redis, prefix=prefix, ttl_s=60)


def publish(store: ResultStore, job_id: str, ids: list[str]) -> None:
    store.write(job_id, [ItemResult(job_id=job_id, id=i, task="classify", label="POSITIVE") for i in ids])


def run_until(dispatcher: WebhookDispatcher, done: Callable[[], Any], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"dispatcher did not get there within {timeout_s} s")
        dispatcher.run_once(block_s=0.05)


def only_failure(client: redis.Redis, prefix: str, dispatcher: WebhookDispatcher) -> WebhookFailure:
    """Run until a failure is recorded; it must be the only one, and nothing may stay pending (no retry)."""
    run_until(dispatcher, lambda: recent_failures(client, prefix))
    [failure] = recent_failures(client, prefix)
    assert dispatcher.consumer.pending() == 0
    return failure


@pytest.mark.parametrize("allowed", [(), LOOPBACK], ids=["not-allowed", "allowed"])
def test_a_receiver_on_loopback_gets_results_only_when_its_network_is_allowed(
    raw_redis: redis.Redis, store: ResultStore, prefix: str, allowed: tuple[IPNetwork, ...]
) -> None:
    job_id = new_job_id("loopback")
    with (
        WebhookReceiver() as receiver,
        WebhookDispatcher(raw_redis, options(allowed), prefix=prefix, consumer="d") as dispatcher,
    ):
        # Registered by a producer whose setting allows it; the dispatcher's own setting decides.
        register_callback(raw_redis, prefix, job_id, receiver.url(), ttl_s=60, allowed_networks=LOOPBACK)
        publish(store, job_id, ["a", "b"])
        if allowed:
            run_until(dispatcher, lambda: receiver.accepted_ids() == ["a", "b"])
            assert recent_failures(raw_redis, prefix) == []
            return
        failure = only_failure(raw_redis, prefix, dispatcher)
    assert receiver.requests == []
    assert (failure.job_id, failure.item_ids, failure.attempts, failure.status) == (job_id, ("a", "b"), 0, None)
    assert "127.0.0.1 is loopback, not globally routable" in failure.reason
    assert "SIFT_WEBHOOK_ALLOWED_NETWORKS" in failure.reason


def test_a_host_name_resolving_to_loopback_is_refused_at_delivery(
    raw_redis: redis.Redis, store: ResultStore, prefix: str
) -> None:
    job_id = new_job_id("localhost")
    with WebhookReceiver() as receiver, WebhookDispatcher(raw_redis, options(), prefix=prefix) as dispatcher:
        url = receiver.url(host="localhost")
        register_callback(raw_redis, prefix, job_id, url, ttl_s=60)  # names are only checked at delivery time
        publish(store, job_id, ["a"])
        failure = only_failure(raw_redis, prefix, dispatcher)
    assert receiver.requests == []
    assert failure.attempts == 0 and failure.status is None
    assert "callback host localhost resolves only to addresses that are not globally routable" in failure.reason
    assert "127.0.0.1 (loopback)" in failure.reason


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5:8080/hook",
        "http://192.168.1.20/hook",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://metadata.sift.test/computeMetadata/v1/",  # a name whose DNS answer is the metadata address
        "http://redis.sift.test:6379/",  # a name that resolves to a private service
    ],
)
def test_internal_addresses_are_refused_without_any_request(
    raw_redis: redis.Redis, store: ResultStore, prefix: str, url: str
) -> None:
    dns = resolver_with({"metadata.sift.test": ["169.254.169.254"], "redis.sift.test": ["10.0.0.7", "fd00::7"]})
    recorder = Recorder()
    job_id = new_job_id("internal")
    # Written around register_callback, which refuses literal internal IPs already.
    raw_redis.set(callback_key(prefix, job_id), url)
    publish(store, job_id, ["a"])
    with WebhookDispatcher(raw_redis, options(), prefix=prefix, http=recorder.client(), resolver=dns) as dispatcher:
        failure = only_failure(raw_redis, prefix, dispatcher)
    assert recorder.requests == []  # the recording client would have answered 200
    assert failure.attempts == 0 and failure.status is None
    assert "not globally routable" in failure.reason
    if "169.254" in url or "metadata" in url:
        assert "link-local" in failure.reason


@pytest.mark.parametrize("host", ["localhost", "hooks.sift.test"])
def test_an_allowed_name_is_posted_to_the_checked_address_with_its_own_host_header(
    raw_redis: redis.Redis, store: ResultStore, prefix: str, host: str
) -> None:
    # hooks.sift.test exists only in this test's resolver: the HTTP client cannot look it up itself, so a
    # delivery proves the POST went to the address the guard checked (no second lookup to rebind).
    dns = resolver_with({"hooks.sift.test": ["127.0.0.1"]})
    job_id = new_job_id("pinned")
    with (
        WebhookReceiver() as receiver,
        WebhookDispatcher(raw_redis, options(LOOPBACK), prefix=prefix, resolver=dns) as dispatcher,
    ):
        url = receiver.url("/hook?x=1", host=host)
        register_callback(raw_redis, prefix, job_id, url, ttl_s=60)
        publish(store, job_id, ["a"])
        run_until(dispatcher, lambda: receiver.accepted_ids() == ["a"])
    [request] = receiver.requests
    port = url.split(":")[2].split("/")[0]
    assert request.headers["host"] == f"{host}:{port}"
    assert request.path == "/hook?x=1"


def test_only_the_checked_addresses_of_a_mixed_answer_are_connected_to(
    raw_redis: redis.Redis, store: ResultStore, prefix: str
) -> None:
    dns = resolver_with({"mixed.sift.test": ["169.254.169.254", "10.0.0.1", "127.0.0.1"]})
    recorder = Recorder()
    job_id = new_job_id("mixed")
    register_callback(raw_redis, prefix, job_id, "http://mixed.sift.test:8080/hook", ttl_s=60)
    publish(store, job_id, ["a"])
    with WebhookDispatcher(
        raw_redis, options(LOOPBACK), prefix=prefix, http=recorder.client(), resolver=dns
    ) as dispatcher:
        run_until(dispatcher, lambda: recorder.requests)
    [request] = recorder.requests
    assert (request.url.host, request.url.port, request.headers["host"]) == ("127.0.0.1", 8080, "mixed.sift.test:8080")


def test_a_name_that_does_not_resolve_is_retried_then_recorded(
    raw_redis: redis.Redis, store: ResultStore, prefix: str
) -> None:
    def no_dns(host: str, _port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    job_id = new_job_id("nodns")
    register_callback(raw_redis, prefix, job_id, "https://hooks.sift.test/hook", ttl_s=60)
    publish(store, job_id, ["a"])
    with WebhookDispatcher(raw_redis, options(), prefix=prefix, resolver=no_dns) as dispatcher:
        failure = only_failure(raw_redis, prefix, dispatcher)
    assert failure.attempts == RETRY.max_attempts
    assert "cannot resolve hooks.sift.test" in failure.reason and "Temporary failure" in failure.reason


def test_a_redirect_is_not_followed_even_by_a_client_that_follows_redirects(
    raw_redis: redis.Redis, store: ResultStore, prefix: str
) -> None:
    job_id = new_job_id("redirect")
    follows = httpx.Client(follow_redirects=True)
    with WebhookReceiver() as inside, WebhookReceiver([307], headers={"Location": inside.url()}) as outside:
        register_callback(raw_redis, prefix, job_id, outside.url(), ttl_s=60, allowed_networks=LOOPBACK)
        publish(store, job_id, ["a"])
        with WebhookDispatcher(raw_redis, options(LOOPBACK), prefix=prefix, http=follows) as dispatcher:
            failure = only_failure(raw_redis, prefix, dispatcher)
    follows.close()
    assert len(outside.requests) == 1 and inside.requests == []
    assert (failure.status, failure.attempts) == (307, 1)


@pytest.fixture(scope="module")
def localhost_tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for the name ``localhost`` only (no IP in it): server and client contexts."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder: Path = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


@pytest.fixture
def https_client(localhost_tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> Iterator[httpx.Client]:
    """A client that trusts the test certificate, without keep-alive (as the dispatcher's docstring asks)."""
    client = httpx.Client(verify=localhost_tls[1], limits=httpx.Limits(max_keepalive_connections=0))
    yield client
    client.close()


def test_https_goes_to_the_checked_address_and_verifies_the_certificate_for_the_name(
    raw_redis: redis.Redis,
    store: ResultStore,
    prefix: str,
    localhost_tls: tuple[ssl.SSLContext, ssl.SSLContext],
    https_client: httpx.Client,
) -> None:
    """Connected to 127.0.0.1, the TLS server name is still ``localhost``: the certificate has no IP in it."""
    job_id = new_job_id("tls")
    with (
        WebhookReceiver(tls=localhost_tls[0]) as receiver,
        WebhookDispatcher(raw_redis, options(LOOPBACK), prefix=prefix, http=https_client) as dispatcher,
    ):
        register_callback(raw_redis, prefix, job_id, receiver.url(host="localhost"), ttl_s=60)
        publish(store, job_id, ["a"])
        run_until(dispatcher, lambda: receiver.accepted_ids() == ["a"])
    assert recent_failures(raw_redis, prefix) == []


def test_https_to_a_name_the_certificate_does_not_cover_fails_even_at_an_allowed_address(
    raw_redis: redis.Redis,
    store: ResultStore,
    prefix: str,
    localhost_tls: tuple[ssl.SSLContext, ssl.SSLContext],
    https_client: httpx.Client,
) -> None:
    """Pinning the address does not switch certificate checks off: they are made for the URL's name."""
    dns = resolver_with({"impostor.sift.test": ["127.0.0.1"]})
    job_id = new_job_id("tls-wrong-name")
    with (
        WebhookReceiver(tls=localhost_tls[0]) as receiver,
        WebhookDispatcher(raw_redis, options(LOOPBACK), prefix=prefix, http=https_client, resolver=dns) as dispatcher,
    ):
        register_callback(raw_redis, prefix, job_id, receiver.url(host="impostor.sift.test"), ttl_s=60)
        publish(store, job_id, ["a"])
        failure = only_failure(raw_redis, prefix, dispatcher)
    assert receiver.requests == []
    assert failure.attempts == RETRY.max_attempts
    assert "certificate verify failed" in failure.reason.lower()
    assert "impostor.sift.test" in failure.reason


def test_sift_deliver_refuses_a_bad_allowed_networks_setting(settings: Any) -> None:
    env = cli_env(redis_url=settings.redis_url, webhook_secret="s" * 32, webhook_allowed_networks="10.0.5.1/24")
    done = run_sift(["deliver"], env, timeout_s=60)
    assert done.returncode == 2
    assert "SIFT_WEBHOOK_ALLOWED_NETWORKS" in done.stderr and "host bits set" in done.stderr
