"""What a worker writes for each item, and what a producer reads back."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from sift.contract.errors import ErrorInfo


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LabelScore(_Frozen):
    """A label and its probability (or a cross-encoder score)."""

    label: str
    score: float


class RankedDocument(_Frozen):
    """A document of a rerank item, by its position in the input list."""

    index: int
    score: float


class CategoryScore(_Frozen):
    """One moderation category: entailment probability against its threshold."""

    category: str
    score: float
    threshold: float
    flagged: bool


class Moderation(_Frozen):
    """A moderation verdict under a named policy."""

    policy: str
    policy_version: int
    categories: list[CategoryScore]
    flagged: list[str]
    verdict: Literal["allow", "flag"]


class Timings(_Frozen):
    """Where the item's time went, in milliseconds."""

    queued_ms: float | None = None
    """From the producer's enqueue to the worker taking the message (clocks of two machines)."""
    inference_ms: float = 0.0
    """The item's message on the worker: validation, tokenization, forward passes, post-processing."""


class ItemResult(_Frozen):
    """The outcome of one item: a prediction, or ``error`` saying why there is none."""

    schema_version: Literal[1] = 1
    job_id: str
    id: str
    task: str
    model: str | None = None
    """Registry role that served the item."""
    model_source: str | None = None
    """Hugging Face id or local path the role was loaded from."""
    revision: str | None = None
    label: str | None = None
    """Top label: the predicted class, the best candidate, or the moderation verdict."""
    scores: list[LabelScore] = []
    """Labels with scores, best first."""
    ranking: list[RankedDocument] | None = None
    moderation: Moderation | None = None
    truncated: bool = False
    """True when some input was cut at the model's max length."""
    timings: Timings | None = None
    worker: str | None = None
    error: ErrorInfo | None = None

    @property
    def ok(self) -> bool:
        """True when the item got a prediction."""
        return self.error is None
