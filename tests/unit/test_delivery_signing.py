"""Webhook signatures: what a receiver's ``verify_signature`` accepts and refuses."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from sift.delivery import SignatureError, sign, verify_signature

SECRET = "whsec-unit-test-0123456789abcdef"
BODY = b'{"type":"sift.results","job_id":"j","results":[{"id":"1","label":"POSITIVE"}]}'


def test_a_fresh_signature_verifies_and_returns_its_timestamp() -> None:
    header = sign(SECRET, BODY)
    stamp = verify_signature(SECRET, header, BODY)
    assert abs(stamp - time.time()) < 5


def test_the_header_is_stripe_style_hmac_sha256_over_timestamp_dot_body() -> None:
    """Receivers in other languages re-implement it from the README: pin the exact scheme."""
    header = sign(SECRET, BODY, timestamp=1_700_000_000)
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"


def test_a_tampered_body_is_refused() -> None:
    header = sign(SECRET, BODY)
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(SECRET, header, BODY.replace(b"POSITIVE", b"NEGATIVE"))


def test_a_wrong_secret_is_refused() -> None:
    header = sign(SECRET, BODY)
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature("another-secret-0123456789abcdef", header, BODY)


def test_a_stale_timestamp_is_refused_even_with_a_valid_signature() -> None:
    old = int(time.time()) - 301
    header = sign(SECRET, BODY, timestamp=old)
    with pytest.raises(SignatureError, match="tolerance"):
        verify_signature(SECRET, header, BODY, tolerance_s=300)
    assert verify_signature(SECRET, header, BODY, tolerance_s=400) == old


def test_a_timestamp_from_the_future_is_refused() -> None:
    header = sign(SECRET, BODY, timestamp=int(time.time()) + 3600)
    with pytest.raises(SignatureError, match="tolerance"):
        verify_signature(SECRET, header, BODY)


def test_a_replayed_signature_with_a_forged_timestamp_is_refused() -> None:
    """Moving t forward to pass the age check breaks the signature, because t is signed."""
    old = int(time.time()) - 3600
    digest = sign(SECRET, BODY, timestamp=old).split("v1=")[1]
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(SECRET, f"t={int(time.time())},v1={digest}", BODY)


def test_any_matching_v1_passes_so_secrets_can_rotate() -> None:
    stamp = int(time.time())
    old_sig = sign("old-secret-0123456789abcdef", BODY, timestamp=stamp).split("v1=")[1]
    new_sig = sign(SECRET, BODY, timestamp=stamp).split("v1=")[1]
    assert verify_signature(SECRET, f"t={stamp},v1={old_sig},v1={new_sig}", BODY) == stamp


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "no Sift-Signature header"),
        ("", "no Sift-Signature header"),
        ("v1=abc", "no t="),
        ("t=12,v0=abc", "no v1 signature"),
        ("t=soon,v1=abc", "not a number"),
        ("garbage", "not name=value"),
    ],
)
def test_malformed_headers_are_refused_with_a_reason(header: str | None, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        verify_signature(SECRET, header, BODY)


def test_an_empty_secret_is_a_usage_error_not_a_pass() -> None:
    with pytest.raises(ValueError, match="empty"):
        sign("", BODY)
    with pytest.raises(ValueError, match="empty"):
        verify_signature(b"", sign(SECRET, BODY), BODY)
