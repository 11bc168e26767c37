"""Request and response bodies of the HTTP API: thin wrappers around :mod:`sift.contract`.

Items travel as plain JSON objects, as in :class:`~sift.contract.Job`: each is validated on its own,
so one bad item becomes one error result instead of failing the whole request. The OpenAPI schema
still shows their shape, generated from the contract's item models.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema

from sift.contract import ITEM_MODELS, ItemResult, JobId, Lane, TaskName
from sift.delivery.callbacks import MAX_URL_LENGTH, validate_callback_url


def _item_schema() -> dict[str, Any]:
    """The contract's item schemas, with ``id`` optional: the ingress numbers items that lack one."""
    variants = []
    for task, model in ITEM_MODELS.items():
        schema = model.model_json_schema()
        schema["required"] = [name for name in schema.get("required", []) if name != "id"]
        schema["title"] = f"{schema['title']} (task {task.value})"
        variants.append(schema)
    return {
        "type": "object",
        "description": "One item, in the schema of the job's task. An item that does not match it is answered "
        "with an error result of its own (code invalid_input or too_large); the others go on.",
        "anyOf": variants,
    }


JsonItem = Annotated[dict[str, Any], WithJsonSchema(_item_schema())]


# Constrained strings refuse lone surrogates ("unable to parse raw data as a unicode string"): what
# Redis and the workers get is always valid UTF-8.
ModelRole = Annotated[str, StringConstraints(min_length=1, max_length=128)]
"""A registry role, as :attr:`sift.contract.Job.model` takes it."""

CallbackUrl = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_URL_LENGTH),
    AfterValidator(validate_callback_url),
    WithJsonSchema({"type": "string", "format": "uri", "maxLength": MAX_URL_LENGTH}),
]
"""An absolute http(s) URL the job's results are POSTed to (signed; see ``sift deliver``)."""


# Field docstrings become the fields' descriptions in the OpenAPI schema.
_DOCUMENTED = ConfigDict(use_attribute_docstrings=True)


class SubmitRequest(BaseModel):
    """One job: items of one task, for one model, on one lane."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    task: TaskName
    items: list[JsonItem] = Field(min_length=1)
    """Items without an ``id`` get their position in this list (``"0"``, ``"1"``, ...) as id, so that resending
    the same request under the same ``job_id`` is idempotent. A job sent over several requests needs explicit ids."""
    model: ModelRole | None = None
    """Registry role to use; unset means the task's default model."""
    lane: Lane = Lane.REALTIME
    """``realtime`` for interactive traffic, ``bulk`` for backfills (kept apart so bulk never delays realtime)."""
    job_id: JobId | None = None
    """Your own id makes a retry idempotent: a result already stored is never replaced. Unset: a new id."""
    callback_url: CallbackUrl | None = None
    """Webhook: the job's results are POSTed here in signed batches as they are stored."""
    deadline_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600, allow_inf_nan=False)
    """Items no worker has taken this many seconds after submission are answered ``expired``, not computed."""


class SubmitAccepted(BaseModel):
    """What was queued: the job's id, the ids its results will be stored under, and items refused at once."""

    model_config = _DOCUMENTED

    job_id: str
    task: TaskName
    lane: Lane
    queued: int
    """Items sent to the workers."""
    item_ids: list[str]
    """The id of each submitted item, in request order; fetch one at ``results_url + /items/{id}``."""
    rejected: list[ItemResult]
    """Items that failed validation here, with their error result (already stored, except duplicate ids)."""
    results_url: str


class JobResults(BaseModel):
    """One page of a job's stored results, and counts over the whole job."""

    model_config = _DOCUMENTED

    job_id: str
    expected: int | None
    """Distinct items submitted to this job through the ingress; null when it was submitted otherwise."""
    stored: int
    """Items that have a result now."""
    errors: int
    """Stored results that are errors (see each result's ``error.code``)."""
    complete: bool
    """True when every expected item has its result."""
    results: list[ItemResult]
    next_cursor: int | None
    """Pass as ``cursor`` to get the next page; null on the last page."""


class Health(BaseModel):
    """Liveness or readiness."""

    model_config = _DOCUMENTED

    status: str
    message: str | None = None
