"""The JSON body of a webhook, as receivers parse it (pydantic only: no HTTP client needed)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from sift.contract.results import ItemResult


class WebhookPayload(BaseModel):
    """Results of one job; a job's results may span many POSTs, and a POST may come more than once."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["sift.results"] = "sift.results"
    delivery_id: str
    """Id of the batch, the same on each retry of it (also in the ``Sift-Delivery`` header)."""
    job_id: str
    results: list[ItemResult]
