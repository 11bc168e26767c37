"""HMAC-SHA256 signatures of webhook bodies, in Stripe's scheme: ``Sift-Signature: t=<unix>,v1=<hex>``.

The signed message is ``f"{t}.".encode() + body``: binding the timestamp stops replays of an old
body, and the receiver's tolerance bounds how old a captured request may be. Standard library only,
so receivers can copy this module alone.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Sift-Signature"
"""HTTP header that carries the signature."""
DEFAULT_TOLERANCE_S = 300.0
"""How far a signature's timestamp may be from the receiver's clock (either way)."""
_SCHEME = "v1"


class SignatureError(ValueError):
    """A webhook signature is missing, malformed, wrong, or too old; the message says which."""


def _digest(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def _key(secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def sign(secret: str | bytes, body: bytes, *, timestamp: int | None = None) -> str:
    """The ``Sift-Signature`` header value for ``body``, signed now (or at ``timestamp``)."""
    stamp = int(time.time()) if timestamp is None else timestamp
    return f"t={stamp},{_SCHEME}={_digest(_key(secret), stamp, body)}"


def verify_signature(
    secret: str | bytes,
    header: str | None,
    body: bytes,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    *,
    now: float | None = None,
) -> int:
    """Check a ``Sift-Signature`` header against the raw request ``body``; returns its timestamp.

    Raises :class:`SignatureError` when the header is missing or malformed, no ``v1`` signature
    matches, or the timestamp is more than ``tolerance_s`` from ``now`` (default: this clock).
    Verify the body bytes exactly as received, before parsing the JSON.
    """
    if not header:
        raise SignatureError(f"no {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureError(f"malformed {SIGNATURE_HEADER} header: {part.strip()[:40]!r} is not name=value")
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError(f"malformed {SIGNATURE_HEADER} header: t={value[:20]!r} is not a number") from None
        elif name == _SCHEME:
            candidates.append(value)
        # Other schemes are ignored, so a sender can add one without breaking receivers.
    if timestamp is None:
        raise SignatureError(f"malformed {SIGNATURE_HEADER} header: no t=<unix time>")
    if not candidates:
        raise SignatureError(f"{SIGNATURE_HEADER} header has no {_SCHEME} signature")
    expected = _digest(_key(secret), timestamp, body)
    # Several v1 values may come while the sender rotates secrets; constant-time compare each.
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise SignatureError("signature does not match: wrong secret, or the body was changed")
    age = (time.time() if now is None else now) - timestamp
    if abs(age) > tolerance_s:
        raise SignatureError(f"signature timestamp is {age:.0f} s off this clock; the tolerance is {tolerance_s:.0f} s")
    return timestamp
