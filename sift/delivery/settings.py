"""Settings of result delivery, read from ``SIFT_*`` environment variables (next to ``SiftSettings``)."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sift.delivery.destinations import IPNetwork, parse_networks
from sift.settings import SettingsError

MIN_SECRET_LENGTH = 16
"""Shortest webhook secret accepted: HMAC is only as strong as its key."""


class DeliverySettings(BaseSettings):
    """The results stream's cap and the webhook dispatcher's behaviour.

    Every field maps to ``SIFT_<FIELD>``, e.g. ``SIFT_WEBHOOK_SECRET``, ``SIFT_WEBHOOK_MAX_ATTEMPTS``.
    """

    model_config = SettingsConfigDict(env_prefix="SIFT_", extra="ignore", frozen=True)

    webhook_secret: SecretStr | None = None
    """Key of the HMAC-SHA256 ``Sift-Signature`` of every webhook; ``sift deliver`` refuses to start without it."""
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    """Per request: connect, send and wait for the receiver's answer."""
    webhook_max_attempts: int = Field(default=6, ge=1, le=50)
    """Attempts of one batch (the first included) before it is given up and recorded as failed."""
    webhook_backoff_s: float = Field(default=1.0, ge=0)
    """Wait before the second attempt; doubled before each next one."""
    webhook_backoff_max_s: float = Field(default=60.0, ge=0)
    """Longest wait between attempts (also caps a receiver's ``Retry-After``)."""
    webhook_batch_size: int = Field(default=100, ge=1, le=10_000)
    """Most results in one POST."""
    webhook_claim_idle_s: float = Field(default=120.0, gt=0)
    """A dispatcher takes over results another one read but has not confirmed for this long (it died)."""
    webhook_failures_max: int = Field(default=100_000, ge=1)
    """Failed webhook batches kept on record (the oldest are dropped past this)."""
    # NoDecode: the variable is comma-separated CIDRs, not the JSON list pydantic-settings expects by default.
    webhook_allowed_networks: Annotated[tuple[IPNetwork, ...], NoDecode] = ()
    """Networks webhooks may reach although they are not globally routable (trusted internal receivers).

    Comma-separated CIDRs, e.g. ``10.0.5.0/24,fd00:5::/64``; empty by default: only public addresses.
    """

    @field_validator("webhook_allowed_networks", mode="before")
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        return parse_networks(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _claim_idle_outlasts_one_attempt(self) -> Self:
        # A dispatcher refreshes its claim before each attempt; a peer must not take over in between.
        held = self.webhook_timeout_s + self.webhook_backoff_max_s
        if self.webhook_claim_idle_s <= held:
            raise ValueError(
                f"webhook_claim_idle_s ({self.webhook_claim_idle_s:g}) must exceed webhook_timeout_s + "
                f"webhook_backoff_max_s ({held:g}), or dispatchers would take over batches still being retried"
            )
        return self

    def require_webhook_secret(self) -> bytes:
        """The webhook secret as bytes, or a :class:`SettingsError` saying how to set one."""
        secret = self.webhook_secret.get_secret_value() if self.webhook_secret is not None else ""
        how = "e.g. export SIFT_WEBHOOK_SECRET=$(python -c 'import secrets; print(secrets.token_hex(32))')"
        if not secret:
            raise SettingsError(f"SIFT_WEBHOOK_SECRET is not set: webhooks are always signed; {how}")
        if len(secret) < MIN_SECRET_LENGTH:
            raise SettingsError(
                f"SIFT_WEBHOOK_SECRET is {len(secret)} characters; use at least {MIN_SECRET_LENGTH}: {how}"
            )
        return secret.encode()


def load_delivery_settings() -> DeliverySettings:
    """Read :class:`DeliverySettings` from the environment; a bad value is a :class:`SettingsError`."""
    try:
        return DeliverySettings()
    except ValidationError as error:
        problems = "; ".join(_describe(e["loc"], e["msg"]) for e in error.errors())
        raise SettingsError(f"bad delivery settings: {problems}") from None


def _describe(loc: tuple[int | str, ...], message: str) -> str:
    field = "_".join(str(part) for part in loc)
    return f"SIFT_{field.upper()}: {message}" if field else message
