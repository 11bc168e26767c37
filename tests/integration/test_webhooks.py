"""The webhook dispatcher against a real redis-server and a real HTTP receiver."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from sift_it_helpers import ROOT, cli_env, new_job_id, run_sift, sift_executable, wait_until
from webhook_receiver import HANG, WebhookReceiver

from sift.contract import ItemResult
from sift.delivery import SignatureError, register_callback, verify_signature
from sift.delivery.destinations import parse_networks
from sift.delivery.failures import recent_failures
from sift.delivery.stream import ResultStreamConsumer
from sift.delivery.webhooks import GROUP, RetryPolicy, WebhookDispatcher, WebhookOptions
from sift.results_store import ResultStore

pytestmark = pytest.mark.integration

SECRET = "whsec-" + uuid.uuid4().hex
RECEIVER_NETWORK = parse_networks("127.0.0.1/32")
"""The test receivers listen on loopback: refused by the SSRF guard unless allowed (SIFT_WEBHOOK_ALLOWED_NETWORKS)."""
FAST = WebhookOptions(
    secret=SECRET.encode(),
    timeout_s=0.5,
    retry=RetryPolicy(max_attempts=4, backoff_s=0.05, backoff_max_s=0.2),
    batch_size=100,
    claim_idle_s=1.0,
    allowed_networks=RECEIVER_NETWORK,
)


def register(client: redis.Redis, prefix: str, job_id: str, url: str) -> None:
    """``register_callback`` for a test receiver, whose loopback address is allowed."""
    register_callback(client, prefix, job_id, url, ttl_s=60, allowed_networks=RECEIVER_NETWORK)


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own: its own results stream, 'webhooks' group and failure records."""
    return f"hooks-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def store(raw_redis: redis.Redis, prefix: str) -> ResultStore:
    return ResultStore(raw_redis, prefix=prefix, ttl_s=60)


@pytest.fixture
def dispatcher(raw_redis: redis.Redis, prefix: str) -> Iterator[WebhookDispatcher]:
    with WebhookDispatcher(raw_redis, FAST, prefix=prefix, consumer="d-1") as running:
        yield running


def results(job_id: str, ids: list[str]) -> list[ItemResult]:
    return [ItemResult(job_id=job_id, id=i, task="classify", label="POSITIVE") for i in ids]


def drive(dispatcher: WebhookDispatcher, until: Callable[[], Any], timeout_s: float = 20) -> None:
    """Run the dispatcher round by round until ``until()`` holds."""
    deadline = time.monotonic() + timeout_s
    while not until():
        if time.monotonic() > deadline:
            pytest.fail(f"dispatcher did not get there within {timeout_s} s")
        dispatcher.run_once(block_s=0.05)


def settled(dispatcher: WebhookDispatcher) -> Callable[[], bool]:
    return lambda: dispatcher.consumer.pending() == 0 and dispatcher.run_once(block_s=0.05) == 0


def test_results_arrive_once_per_item_after_500s_signed(
    dispatcher: WebhookDispatcher, store: ResultStore, raw_redis: redis.Redis, prefix: str
) -> None:
    job_id = new_job_id("retry")
    ids = [f"i-{k}" for k in range(7)]
    with WebhookReceiver([500, 503]) as receiver:
        register(raw_redis, prefix, job_id, receiver.url())
        store.write(job_id, results(job_id, ids[:4]))
        store.write(job_id, results(job_id, ids[:4]))  # a redelivered write: publishes nothing
        store.write(job_id, results(job_id, ids[4:]))
        drive(dispatcher, lambda: sorted(receiver.accepted_ids()) == ids)
        drive(dispatcher, settled(dispatcher))

    assert Counter(receiver.accepted_ids()) == Counter(dict.fromkeys(ids, 1))
    assert [r.answered for r in receiver.requests] == [500, 503, 200]
    assert [r.headers["sift-attempt"] for r in receiver.requests] == ["1", "2", "3"]
    assert len({r.headers["sift-delivery"] for r in receiver.requests}) == 1  # one batch, retried
    for request in receiver.requests:
        assert request.headers["content-type"] == "application/json"
        verify_signature(SECRET, request.headers["sift-signature"], request.body)
        with pytest.raises(SignatureError):
            verify_signature("not-the-secret-0123456789", request.headers["sift-signature"], request.body)
    payload = receiver.accepted()[0].payload
    assert payload.type == "sift.results" and payload.job_id == job_id
    assert payload.results == [store.get(job_id, i) for i in ids]
    assert recent_failures(raw_redis, prefix) == []


@pytest.mark.parametrize("status", [400, 404, 410, 302])
def test_a_4xx_or_redirect_is_given_up_at_once_and_recorded(
    dispatcher: WebhookDispatcher, store: ResultStore, raw_redis: redis.Redis, prefix: str, status: int
) -> None:
    job_id = new_job_id("refused")
    with WebhookReceiver([status]) as receiver:
        register(raw_redis, prefix, job_id, receiver.url("/hook?token=s3cret"))
        store.write(job_id, results(job_id, ["a", "b"]))
        drive(dispatcher, lambda: recent_failures(raw_redis, prefix))
        drive(dispatcher, settled(dispatcher))

    assert len(receiver.requests) == 1  # no retry
    [failure] = recent_failures(raw_redis, prefix)
    assert (failure.job_id, failure.item_ids, failure.attempts, failure.status) == (job_id, ("a", "b"), 1, status)
    assert "not retried" in failure.reason
    assert "s3cret" not in failure.url and failure.url == receiver.url()  # tokens stay out of the record
    assert dispatcher.consumer.pending() == 0


@pytest.mark.parametrize("status", [408, 429])
def test_408_and_429_are_retried(
    dispatcher: WebhookDispatcher, store: ResultStore, raw_redis: redis.Redis, prefix: str, status: int
) -> None:
    job_id = new_job_id("slowdown")
    with WebhookReceiver([status], headers={"Retry-After": "0"}) as receiver:
        register(raw_redis, prefix, job_id, receiver.url())
        store.write(job_id, results(job_id, ["a"]))
        drive(dispatcher, lambda: receiver.accepted_ids() == ["a"])
    assert [r.answered for r in receiver.requests] == [status, 200]
    assert recent_failures(raw_redis, prefix) == []


def test_a_receiver_that_does_not_answer_in_time_is_retried(
    dispatcher: WebhookDispatcher, store: ResultStore, raw_redis: redis.Redis, prefix: str
) -> None:
    job_id = new_job_id("timeout")
    with WebhookReceiver([HANG], hang_s=1.5) as receiver:
        register(raw_redis, prefix, job_id, receiver.url())
        store.write(job_id, results(job_id, ["a"]))
        started = time.monotonic()
        drive(dispatcher, lambda: receiver.accepted_ids() == ["a"])
        assert time.monotonic() - started < 1.5  # it gave up waiting after timeout_s, not after the hang
    assert [r.headers["sift-attempt"] for r in receiver.requests] == ["1", "2"]


def test_an_unreachable_receiver_is_given_up_after_max_attempts_and_recorded(
    dispatcher: WebhookDispatcher, store: ResultStore, raw_redis: redis.Redis, prefix: str
) -> None:
    with WebhookReceiver() as closed:
        url = closed.url()  # nothing listens there once the receiver is gone
    job_id = new_job_id("unreachable")
    register(raw_redis, prefix, job_id, url)
    store.write(job_id, results(job_id, ["a", "b", "c"]))
    drive(dispatcher, lambda: recent_failures(raw_redis, prefix))

    [failure] = recent_failures(raw_redis, prefix)
    assert (failure.item_ids, failure.attempts, failure.status) == (("a", "b", "c"), FAST.retry.max_attempts, None)
    assert "ConnectError" in failure.reason
    assert dispatcher.consumer.pending() == 0


def test_results_of_jobs_without_a_callback_are_confirmed_and_not_sent(
    dispatcher: WebhookDispatcher, store: ResultStore, raw_redis: redis.Redis, prefix: str
) -> None:
    with WebhookReceiver() as receiver:
        with_hook, without = new_job_id("with"), new_job_id("without")
        register(raw_redis, prefix, with_hook, receiver.url())
        store.write(without, results(without, ["x", "y"]))
        store.write(with_hook, results(with_hook, ["a"]))
        drive(dispatcher, settled(dispatcher))
    assert [(r.payload.job_id, r.item_ids) for r in receiver.requests] == [(with_hook, ["a"])]


def test_a_corrupt_callback_url_is_recorded_not_sent(
    dispatcher: WebhookDispatcher, store: ResultStore, raw_redis: redis.Redis, prefix: str
) -> None:
    job_id = new_job_id("corrupt")
    raw_redis.set(f"{prefix}:job:{{{job_id}}}:callback", "ftp://example.com/x")  # written around register_callback
    store.write(job_id, results(job_id, ["a"]))
    drive(dispatcher, lambda: recent_failures(raw_redis, prefix))
    [failure] = recent_failures(raw_redis, prefix)
    assert failure.attempts == 0 and "only http and https" in failure.reason


def test_batches_hold_one_job_and_at_most_batch_size_results(
    raw_redis: redis.Redis, store: ResultStore, prefix: str
) -> None:
    options = WebhookOptions(
        secret=SECRET.encode(),
        timeout_s=0.5,
        retry=FAST.retry,
        batch_size=3,
        claim_idle_s=1.0,
        allowed_networks=RECEIVER_NETWORK,
    )
    job_a, job_b = new_job_id("a"), new_job_id("b")
    with WebhookReceiver() as receiver, WebhookDispatcher(raw_redis, options, prefix=prefix) as dispatcher:
        register(raw_redis, prefix, job_a, receiver.url("/a"))
        register(raw_redis, prefix, job_b, receiver.url("/b"))
        store.write(job_a, results(job_a, [f"a{k}" for k in range(7)]))
        store.write(job_b, results(job_b, ["b0", "b1"]))
        drive(dispatcher, lambda: len(receiver.accepted_ids()) == 9)

    sizes = sorted((r.path, len(r.item_ids)) for r in receiver.requests)
    assert sizes == [("/a", 1), ("/a", 3), ("/a", 3), ("/b", 2)]
    assert all({res.job_id for res in r.payload.results} == {r.payload.job_id} for r in receiver.requests)


def test_results_a_dead_dispatcher_read_are_delivered_by_another(
    store: ResultStore, raw_redis: redis.Redis, prefix: str
) -> None:
    job_id = new_job_id("orphan")
    with WebhookReceiver() as receiver:
        register(raw_redis, prefix, job_id, receiver.url())
        store.write(job_id, results(job_id, ["a", "b"]))
        dead = ResultStreamConsumer(raw_redis, prefix=prefix, group=GROUP, consumer="dead")
        assert len(dead.read(block_s=0.05)) == 2  # read, then "crashed" before delivering or acking

        with WebhookDispatcher(raw_redis, FAST, prefix=prefix, consumer="alive") as alive:
            alive.run_once(block_s=0.05)
            assert receiver.requests == []  # not idle long enough: the owner may still be retrying
            drive(alive, lambda: sorted(receiver.accepted_ids()) == ["a", "b"])
            assert alive.consumer.pending() == 0


def test_stop_during_backoff_leaves_the_batch_unconfirmed(
    store: ResultStore, raw_redis: redis.Redis, prefix: str
) -> None:
    patient = WebhookOptions(
        secret=SECRET.encode(),
        timeout_s=0.5,
        retry=RetryPolicy(max_attempts=5, backoff_s=30, backoff_max_s=30),
        claim_idle_s=60,
        allowed_networks=RECEIVER_NETWORK,
    )
    job_id = new_job_id("stop")
    with WebhookReceiver(then=500) as receiver, WebhookDispatcher(raw_redis, patient, prefix=prefix) as dispatcher:
        register(raw_redis, prefix, job_id, receiver.url())
        store.write(job_id, results(job_id, ["a"]))
        thread = threading.Thread(target=dispatcher.run, kwargs={"block_s": 0.05})
        thread.start()
        wait_until(lambda: receiver.requests, timeout_s=10, what="the first attempt")
        stopped_at = time.monotonic()
        dispatcher.stop()
        thread.join(timeout=10)
        assert not thread.is_alive() and time.monotonic() - stopped_at < 2  # not after the 30 s backoff
    assert dispatcher.consumer.pending() == 1  # neither delivered nor given up: kept for a restart or a peer
    assert recent_failures(raw_redis, prefix) == []


def test_a_killed_sift_deliver_process_loses_nothing(
    store: ResultStore, raw_redis: redis.Redis, prefix: str, settings
) -> None:
    """`sift deliver` is SIGKILLed while retrying a batch; a second dispatcher delivers it."""
    job_id = new_job_id("killed")
    ids = [f"i-{k}" for k in range(5)]
    env = cli_env(
        redis_url=settings.redis_url,
        queue_prefix=prefix,
        webhook_secret=SECRET,
        webhook_timeout_s="0.5",
        webhook_backoff_s="0.2",
        webhook_backoff_max_s="0.5",
        webhook_max_attempts="50",
        webhook_claim_idle_s="1.5",
        webhook_allowed_networks="127.0.0.1/32",
    )
    with WebhookReceiver(then=500) as receiver:
        register(raw_redis, prefix, job_id, receiver.url())
        store.write(job_id, results(job_id, ids))
        process = subprocess.Popen(
            [sift_executable(), "deliver", "--consumer", "doomed"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_until(lambda: len(receiver.requests) >= 2, timeout_s=60, what="sift deliver retrying")
        finally:
            os.kill(process.pid, signal.SIGKILL)
            _out, err = process.communicate(timeout=10)
        assert "consumer 'doomed' of group 'webhooks'" in err
        assert "private networks: 127.0.0.1/32" in err  # the SSRF guard's exception, read from the environment
        summary = raw_redis.xpending(f"{prefix}:results", GROUP)
        assert [(c["name"], c["pending"]) for c in summary["consumers"]] == [(b"doomed", 5)]

        receiver.answer_from_now(200)
        options = WebhookOptions(
            secret=SECRET.encode(), timeout_s=0.5, retry=FAST.retry, claim_idle_s=1.5, allowed_networks=RECEIVER_NETWORK
        )
        with WebhookDispatcher(raw_redis, options, prefix=prefix, consumer="rescuer") as rescuer:
            drive(rescuer, lambda: sorted(receiver.accepted_ids()) == ids)
            assert rescuer.consumer.pending() == 0
    assert Counter(receiver.accepted_ids()) == Counter(dict.fromkeys(ids, 1))
    assert all(verify_signature(SECRET, r.headers["sift-signature"], r.body) for r in receiver.requests)


def test_sift_deliver_refuses_to_start_without_a_secret(settings) -> None:
    done = run_sift(["deliver"], cli_env(redis_url=settings.redis_url), timeout_s=60)
    assert done.returncode == 2
    assert "SIFT_WEBHOOK_SECRET is not set" in done.stderr

    short = run_sift(["deliver"], cli_env(redis_url=settings.redis_url, webhook_secret="abc"), timeout_s=60)
    assert short.returncode == 2
    assert "at least 16" in short.stderr
