"""Result delivery: a global Redis Stream of results read with consumer groups, and per-job webhooks.

Imports nothing heavy (no torch, no HTTP client): producers and webhook receivers use it alone.
The dispatcher is in :mod:`sift.delivery.webhooks`, the stream reader in :mod:`sift.delivery.stream`.
"""

from sift.delivery.callbacks import callback_for, register_callback, validate_callback_url
from sift.delivery.destinations import ForbiddenDestination
from sift.delivery.payload import WebhookPayload
from sift.delivery.signing import SIGNATURE_HEADER, SignatureError, sign, verify_signature

__all__ = [
    "SIGNATURE_HEADER",
    "ForbiddenDestination",
    "SignatureError",
    "WebhookPayload",
    "callback_for",
    "register_callback",
    "sign",
    "validate_callback_url",
    "verify_signature",
]
