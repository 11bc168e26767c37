"""Per-job webhook URLs: where the dispatcher POSTs a job's results."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

import redis
from pydantic import TypeAdapter, ValidationError

from sift.contract.jobs import JobId
from sift.delivery.destinations import IPNetwork, allowed_networks_from_env, check_address, literal_address
from sift.keys import callback_key

MAX_URL_LENGTH = 2048
"""Longest callback URL accepted (what browsers and most proxies accept)."""

_SCHEMES = ("http", "https")
_JOB_ID: TypeAdapter[str] = TypeAdapter(JobId)


def validate_callback_url(url: str, *, allowed_networks: Sequence[IPNetwork] | None = None) -> str:
    """Return ``url`` if it is an absolute http(s) URL of sane length, else raise :class:`ValueError`.

    A host that is a literal IP address must be globally routable, or inside ``allowed_networks``
    (by default those of ``SIFT_WEBHOOK_ALLOWED_NETWORKS``): a loopback, private, link-local, ...
    address raises :class:`~sift.delivery.destinations.ForbiddenDestination` (a ``ValueError``).
    Host names are not resolved here, since their DNS answer may change before delivery: the
    dispatcher checks the addresses a name resolves to at delivery time, and refuses those.
    A bad ``SIFT_WEBHOOK_ALLOWED_NETWORKS`` raises :class:`~sift.settings.SettingsError`.
    """
    if not isinstance(url, str) or not url:
        raise ValueError("callback URL is empty: give an absolute http:// or https:// URL")
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"callback URL is {len(url)} characters long; the limit is {MAX_URL_LENGTH}")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise ValueError(f"callback URL {url[:80]!r} contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a non-numeric or out-of-range port
    except ValueError as error:
        raise ValueError(f"callback URL {url[:80]!r} is malformed: {error}") from None
    if parts.scheme.lower() not in _SCHEMES:
        shown = parts.scheme or "none"
        raise ValueError(f"callback URL {url[:80]!r} has scheme {shown!r}; only http and https are allowed")
    if not parts.hostname:
        raise ValueError(f"callback URL {url[:80]!r} has no host")
    address = literal_address(parts.hostname)
    if address is not None:
        check_address(address, allowed_networks_from_env() if allowed_networks is None else allowed_networks)
    return url


def register_callback(
    client: redis.Redis,
    prefix: str,
    job_id: str,
    url: str,
    ttl_s: int,
    *,
    allowed_networks: Sequence[IPNetwork] | None = None,
) -> None:
    """Ask for the job's results to be POSTed to ``url``; replaces an earlier URL of the job.

    Register before submitting: results stored before registration are not delivered.
    Raises :class:`ValueError` for a job id outside the contract's alphabet, a URL that is not
    http(s) or too long, a host that is a literal non-public IP address outside ``allowed_networks``
    (see :func:`validate_callback_url`), or a TTL below 1 s.
    """
    try:
        _JOB_ID.validate_python(job_id)
    except ValidationError:
        raise ValueError(f"job id {job_id[:80]!r} is not 1-128 characters of A-Z a-z 0-9 . _ : -") from None
    validate_callback_url(url, allowed_networks=allowed_networks)
    if ttl_s < 1:
        raise ValueError(f"callback TTL must be at least 1 s, got {ttl_s}")
    client.set(callback_key(prefix, job_id), url, ex=ttl_s)


def callback_for(client: redis.Redis, prefix: str, job_id: str) -> str | None:
    """The job's registered callback URL, or ``None`` when it has none (or it expired)."""
    value = client.get(callback_key(prefix, job_id))
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
