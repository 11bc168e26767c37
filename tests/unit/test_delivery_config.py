"""Callback URL validation, retry rules and delivery settings: the inputs a user gets wrong."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest
import redis

from sift.delivery import register_callback, validate_callback_url
from sift.delivery.callbacks import MAX_URL_LENGTH
from sift.delivery.settings import DeliverySettings, load_delivery_settings
from sift.delivery.webhooks import RetryPolicy, WebhookOptions, _retry_after_s, is_retryable_status
from sift.settings import SettingsError


@pytest.mark.parametrize(
    "url", ["https://hooks.example.com/sift", "http://93.184.215.14:8080/cb?token=abc", "HTTPS://EXAMPLE.COM"]
)
def test_http_and_https_urls_are_accepted(url: str) -> None:
    assert validate_callback_url(url) == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty"),
        ("ftp://example.com/x", "only http and https"),
        ("javascript:alert(1)", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("example.com/hook", "only http and https"),
        ("https:///no-host", "no host"),
        ("http://example.com:99999/", "malformed"),
        ("http://example.com/a b", "whitespace or control"),
        ("http://example.com/\r\nX-Injected: 1", "whitespace or control"),
        ("https://example.com/" + "a" * MAX_URL_LENGTH, "characters long"),
    ],
)
def test_bad_callback_urls_are_refused_with_a_reason(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_callback_url(url)


def test_register_callback_refuses_bad_input_before_touching_redis() -> None:
    # Nothing listens on port 1: reaching Redis would raise ConnectionError instead of ValueError.
    nowhere = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    with pytest.raises(ValueError, match="only http and https"):
        register_callback(nowhere, "sift", "job-1", "gopher://example.com", ttl_s=60)
    with pytest.raises(ValueError, match="job id"):
        register_callback(nowhere, "sift", "job with spaces", "https://example.com", ttl_s=60)
    with pytest.raises(ValueError, match="TTL"):
        register_callback(nowhere, "sift", "job-1", "https://example.com", ttl_s=0)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 429])
def test_server_errors_timeouts_and_rate_limits_are_retried(status: int) -> None:
    assert is_retryable_status(status)


@pytest.mark.parametrize("status", [300, 301, 400, 401, 403, 404, 410, 413, 422])
def test_other_answers_are_not_retried(status: int) -> None:
    assert not is_retryable_status(status)


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    policy = RetryPolicy(max_attempts=8, backoff_s=0.5, backoff_max_s=3.0)
    assert [policy.delay_before(n) for n in range(2, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_retry_after_lengthens_the_wait_but_never_past_the_cap() -> None:
    policy = RetryPolicy(max_attempts=5, backoff_s=0.5, backoff_max_s=10.0)
    assert policy.delay_before(2, retry_after_s=4.0) == 4.0
    assert policy.delay_before(2, retry_after_s=0.1) == 0.5
    assert policy.delay_before(2, retry_after_s=3600.0) == 10.0


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    assert _retry_after_s("7") == 7.0
    assert _retry_after_s(None) is None
    assert _retry_after_s("soon") is None
    in_a_minute = _retry_after_s(formatdate(time.time() + 60, usegmt=True))
    assert in_a_minute is not None and 55 <= in_a_minute <= 61


def test_the_dispatcher_refuses_to_run_without_a_secret() -> None:
    with pytest.raises(SettingsError, match="SIFT_WEBHOOK_SECRET is not set"):
        WebhookOptions.from_settings(DeliverySettings(webhook_secret=None))


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(SettingsError, match="at least 16"):
        DeliverySettings(webhook_secret="short").require_webhook_secret()


def test_options_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIFT_WEBHOOK_SECRET", "s" * 32)
    monkeypatch.setenv("SIFT_WEBHOOK_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("SIFT_WEBHOOK_BATCH_SIZE", "7")
    options = WebhookOptions.from_settings(load_delivery_settings())
    assert options.secret == b"s" * 32
    assert options.retry.max_attempts == 3
    assert options.batch_size == 7
    assert "sss" not in repr(options)  # the secret stays out of logs


def test_bad_environment_values_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIFT_WEBHOOK_MAX_ATTEMPTS", "many")
    with pytest.raises(SettingsError, match="SIFT_WEBHOOK_MAX_ATTEMPTS"):
        load_delivery_settings()


def test_claim_idle_must_outlast_one_attempt_and_its_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIFT_WEBHOOK_CLAIM_IDLE_S", "30")
    monkeypatch.setenv("SIFT_WEBHOOK_TIMEOUT_S", "10")
    monkeypatch.setenv("SIFT_WEBHOOK_BACKOFF_MAX_S", "60")
    with pytest.raises(SettingsError, match="webhook_claim_idle_s"):
        load_delivery_settings()


@pytest.mark.parametrize(
    "bad",
    [
        {"secret": b""},
        {"timeout_s": 0},
        {"batch_size": 0},
        {"retry": RetryPolicy(max_attempts=0)},
    ],
)
def test_webhook_options_refuse_values_that_cannot_work(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        WebhookOptions(**{"secret": b"s" * 32, **bad})  # type: ignore[arg-type]
