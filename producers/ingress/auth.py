"""API-key authentication: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from typing import Annotated

from fastapi import Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from producers.ingress.errors import ApiProblem

HOW_TO_AUTHENTICATE = "send your API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"


class ApiKeys:
    """The set of accepted keys, kept only as SHA-256 digests.

    Comparing digests makes every comparison the same length, so its time says nothing about a key's
    length either; every key is compared, so the time does not say which one matched.
    """

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = tuple(_digest(key) for key in keys)
        if not self._digests:
            raise ValueError("ApiKeys needs at least one key")

    def accepts(self, presented: str) -> bool:
        """True when ``presented`` is one of the keys."""
        digest = _digest(presented)
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(digest, known)
        return matched


def _digest(key: str) -> bytes:
    # Header values arrive decoded as latin-1 (bytes unchanged); surrogatepass keeps any str encodable.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


_bearer = HTTPBearer(auto_error=False, description="An API key from SIFT_API_KEYS, as a bearer token.")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key from SIFT_API_KEYS.")


def api_key_guard(keys: ApiKeys | None) -> Callable[..., None]:
    """A FastAPI dependency that lets a request through only with a valid key (every request when ``keys`` is None)."""

    def require_api_key(
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
        api_key: Annotated[str | None, Security(_api_key_header)],
    ) -> None:
        if keys is None:
            return
        presented = bearer.credentials if bearer is not None else api_key
        if not presented:
            raise ApiProblem(401, "unauthorized", f"missing API key: {HOW_TO_AUTHENTICATE}", _CHALLENGE)
        if not keys.accepts(presented):
            raise ApiProblem(401, "unauthorized", "the API key is not valid", _CHALLENGE)

    return require_api_key


_CHALLENGE = {"WWW-Authenticate": "Bearer"}
