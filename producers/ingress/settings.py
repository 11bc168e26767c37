"""The ingress's own settings: API keys and request limits, read from ``SIFT_*`` like the rest of sift."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sift.settings import SettingsError

MIN_KEY_CHARS = 16
_KEY_PATTERN = re.compile(r"[\x21-\x2b\x2d-\x7e]+")  # visible ASCII except the comma that separates keys
_KEY_HINT = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"


class IngressSettings(BaseSettings):
    """Settings of ``sift ingress``; e.g. ``SIFT_API_KEYS=key-one,key-two SIFT_MAX_REQUEST_BYTES=2097152``.

    Broker, results store and queue bounds come from :class:`~sift.settings.SiftSettings`.
    """

    model_config = SettingsConfigDict(env_prefix="SIFT_", extra="ignore", frozen=True)

    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    """Accepted API keys, comma-separated in ``SIFT_API_KEYS`` (several let keys be rotated without downtime)."""
    ingress_allow_anonymous: bool = False
    """Serve without API keys. Off by default: without keys the ingress refuses to start."""
    max_request_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    """Largest request body accepted; larger ones get 413 before they are read in full."""
    max_items_per_request: int = Field(default=1000, ge=1)
    """Most items one submission may carry; split bigger jobs over requests with the same ``job_id``."""
    ingress_retry_after_s: int = Field(default=1, ge=1)
    """``Retry-After`` of 429 (queue full) and 503 (Redis unavailable) answers."""
    ingress_host: str = "127.0.0.1"
    ingress_port: int = Field(default=8000, ge=1, le=65535)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        """``SIFT_API_KEYS`` is comma-separated, not JSON; surrounding spaces and empty entries are dropped."""
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("api_keys")
    @classmethod
    def _strong_keys(cls, keys: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        # The message names the key's position only: a key must never end up in a log.
        for position, key in enumerate(keys, start=1):
            value = key.get_secret_value()
            if len(value) < MIN_KEY_CHARS:
                raise ValueError(
                    f"key #{position} has {len(value)} characters; "
                    f"use at least {MIN_KEY_CHARS} random ones ({_KEY_HINT})"
                )
            if not _KEY_PATTERN.fullmatch(value):
                raise ValueError(f"key #{position} may hold only visible ASCII characters other than ',' ({_KEY_HINT})")
        return keys

    def require_keys_or_anonymous(self) -> None:
        """Raise :class:`SettingsError` unless keys are set or anonymous access was asked for explicitly."""
        if not self.api_keys and not self.ingress_allow_anonymous:
            raise SettingsError(
                "the ingress has no API keys: set SIFT_API_KEYS=key1,key2 (" + _KEY_HINT + "), "
                "or set SIFT_INGRESS_ALLOW_ANONYMOUS=true to serve WITHOUT authentication (anyone who can reach "
                "the port can then submit work)"
            )


def load_ingress_settings(**overrides: Any) -> IngressSettings:
    """Read :class:`IngressSettings` from the environment; a wrong value becomes a readable :class:`SettingsError`."""
    try:
        return IngressSettings(**overrides)
    except ValidationError as err:
        problems = "; ".join(
            f"SIFT_{str(problem['loc'][0]).upper()}: {problem['msg']}"
            for problem in err.errors(include_url=False, include_input=False)
        )
        raise SettingsError(problems) from None
