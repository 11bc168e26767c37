"""Per-item error codes: what a result's ``error`` field can say."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class ErrorCode(StrEnum):
    """Why an item got no prediction. Stable strings: clients switch on them."""

    INVALID_INPUT = "invalid_input"
    """The item does not match its task's schema (missing field, wrong type, empty text)."""
    TOO_LARGE = "too_large"
    """A text, label list or document list is beyond a configured limit."""
    UNKNOWN_TASK = "unknown_task"
    UNKNOWN_MODEL = "unknown_model"
    MODEL_NOT_LOADED = "model_not_loaded"
    """The model exists in the registry but this worker was not started with it."""
    UNKNOWN_POLICY = "unknown_policy"
    DUPLICATE_ID = "duplicate_id"
    """Another item of the same job already uses this id."""
    INVALID_JSON = "invalid_json"
    """A backfill line is not a JSON object."""
    INFERENCE_FAILED = "inference_failed"
    """The model raised on this item alone (its batch-mates were processed)."""
    UNSUPPORTED_MODEL = "unsupported_model"
    """The model cannot serve this task (e.g. no entailment label for zero-shot)."""
    EXPIRED = "expired"
    """The job's deadline passed while it was still queued; it cost no compute."""


class ErrorInfo(BaseModel):
    """A machine-readable code and a sentence a person can act on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: ErrorCode
    message: str
