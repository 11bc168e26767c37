"""The input items of each task, and the one function that validates them.

Both sides call :func:`parse_item`: the producer to fail fast, the worker because
it cannot trust every producer. Limits are configurable, so they arrive through
pydantic's validation context rather than as constants in the schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from sift.contract.errors import ErrorCode, ErrorInfo

TOO_LARGE = "too_large"
MAX_ID_CHARS = 256


def is_utf8(value: str) -> bool:
    """False for strings with lone surrogates: JSON can carry them, UTF-8 and Redis keys cannot."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(value: str) -> str:
    """``value`` with lone surrogates escaped, safe to echo back in a result or a log."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


# pydantic's str validation already rejects lone surrogates ("unable to parse raw data as a unicode string").
ItemId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]


def usable_id(value: Any) -> str | None:
    """``value`` as a result key (integers become strings), or None when it cannot be one."""
    if isinstance(value, int) and not isinstance(value, bool):
        # Python refuses to print ints of over 4,300 digits; anything near that is no id anyway.
        value = str(value) if value.bit_length() < 4 * MAX_ID_CHARS else None
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS and is_utf8(value):
        return value
    return None


def item_key(raw: Any, index: int) -> str:
    """The key an item's result is stored under: its id when usable, else ``#<position>``."""
    return usable_id(raw.get("id") if isinstance(raw, dict) else None) or f"#{index}"


class TaskName(StrEnum):
    """The five things sift does."""

    CLASSIFY = "classify"
    ZERO_SHOT = "zero_shot"
    NLI = "nli"
    RERANK = "rerank"
    MODERATE = "moderate"


@dataclass(frozen=True)
class Limits:
    """Size limits applied to every item; one configured set per deployment."""

    max_text_bytes: int = 16_384
    max_labels: int = 32
    max_documents: int = 128


DEFAULT_LIMITS = Limits()


def _limits(info: ValidationInfo) -> Limits:
    context = info.context or {}
    limits = context.get("limits", DEFAULT_LIMITS)
    assert isinstance(limits, Limits)
    return limits


def check_text(value: str, info: ValidationInfo) -> str:
    """Reject blank text, text that is not valid UTF-8, and text over the byte limit."""
    if not value.strip():
        raise PydanticCustomError("empty_text", "text is empty or only whitespace")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as err:
        raise PydanticCustomError("invalid_text", "text is not valid UTF-8 (lone surrogate)") from err
    if "\x00" in value:
        raise PydanticCustomError("invalid_text", "text contains a NUL character")
    limit = _limits(info).max_text_bytes
    if size > limit:
        raise PydanticCustomError(
            TOO_LARGE, "text is {size} bytes, over the limit of {limit}", {"size": size, "limit": limit}
        )
    return value


def check_texts(texts: list[str], limit: int, what: str, info: ValidationInfo) -> list[str]:
    """At most ``limit`` texts (checked first, so a 10k-long list costs nothing more), each a valid text."""
    if len(texts) > limit:
        raise PydanticCustomError(
            TOO_LARGE, "{n} {what}, over the limit of {limit}", {"n": len(texts), "what": what, "limit": limit}
        )
    for text in texts:
        check_text(text, info)
    return texts


class _Item(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    id: ItemId


class ClassifyItem(_Item):
    """One text to label with a sequence classifier (sentiment by default)."""

    text: str

    _text = field_validator("text")(check_text)


class ZeroShotItem(_Item):
    """One text scored against candidate labels through an NLI model."""

    text: str
    labels: list[str] = Field(min_length=1)
    hypothesis_template: str = "This example is {}."
    multi_label: bool = False

    _text = field_validator("text")(check_text)

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: list[str], info: ValidationInfo) -> list[str]:
        check_texts(labels, _limits(info).max_labels, "labels", info)
        if len(set(labels)) != len(labels):
            raise PydanticCustomError("duplicate_label", "candidate labels must be distinct")
        return labels

    @field_validator("hypothesis_template")
    @classmethod
    def _template(cls, template: str, info: ValidationInfo) -> str:
        check_text(template, info)
        if template.count("{}") != 1:
            raise PydanticCustomError("bad_template", "hypothesis_template must contain '{}' exactly once")
        try:
            template.format("label")
        except (ValueError, KeyError, IndexError) as err:
            raise PydanticCustomError(
                "bad_template",
                "hypothesis_template is not a valid format string ({error}); write braces as {{{{ }}}}",
                {"error": str(err)},
            ) from err
        return template


class NliItem(_Item):
    """A premise and a hypothesis to classify as entailment / neutral / contradiction."""

    premise: str
    hypothesis: str

    _premise = field_validator("premise", "hypothesis")(check_text)


class RerankItem(_Item):
    """A query and the documents to rank against it with a cross-encoder."""

    query: str
    documents: list[str] = Field(min_length=1)
    top_k: int | None = Field(default=None, ge=1)

    _query = field_validator("query")(check_text)

    @field_validator("documents")
    @classmethod
    def _documents(cls, documents: list[str], info: ValidationInfo) -> list[str]:
        return check_texts(documents, _limits(info).max_documents, "documents", info)


class ModerateItem(_Item):
    """A text checked against a moderation policy (the worker's default when unnamed)."""

    text: str
    policy: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None

    _text = field_validator("text")(check_text)


Item = ClassifyItem | ZeroShotItem | NliItem | RerankItem | ModerateItem

ITEM_MODELS: dict[TaskName, type[_Item]] = {
    TaskName.CLASSIFY: ClassifyItem,
    TaskName.ZERO_SHOT: ZeroShotItem,
    TaskName.NLI: NliItem,
    TaskName.RERANK: RerankItem,
    TaskName.MODERATE: ModerateItem,
}


_TASKS = {task.value: task for task in TaskName}


class ItemRejected(Exception):
    """An item failed validation; ``error`` is what its result will carry."""

    def __init__(self, error: ErrorInfo) -> None:
        super().__init__(error.message)
        self.error = error


def parse_task(name: object) -> TaskName:
    """Return the task called ``name`` or raise :class:`ItemRejected` (``unknown_task``)."""
    if isinstance(name, str) and name in _TASKS:
        return _TASKS[name]
    known = ", ".join(t.value for t in TaskName)
    raise ItemRejected(ErrorInfo(code=ErrorCode.UNKNOWN_TASK, message=f"unknown task {name!r}; known: {known}"))


def parse_item(task: TaskName, raw: Any, limits: Limits = DEFAULT_LIMITS) -> Item:
    """Validate one raw item for ``task``; raise :class:`ItemRejected` with a clear error."""
    model = ITEM_MODELS[task]
    try:
        item = model.model_validate(raw, context={"limits": limits})
    except ValidationError as err:
        raise ItemRejected(describe_validation_error(err)) from err
    assert isinstance(item, Item)
    return item


def describe_validation_error(err: ValidationError) -> ErrorInfo:
    """One readable sentence per problem, and ``too_large`` when a size limit was the cause."""
    problems = err.errors(include_url=False, include_input=False)
    code = ErrorCode.TOO_LARGE if any(p["type"] == TOO_LARGE for p in problems) else ErrorCode.INVALID_INPUT
    parts = []
    for problem in problems[:5]:
        where = ".".join(str(part) for part in problem["loc"]) or "item"
        parts.append(f"{where}: {problem['msg']}")
    if len(problems) > 5:
        parts.append(f"and {len(problems) - 5} more")
    return ErrorInfo(code=code, message="; ".join(parts))
