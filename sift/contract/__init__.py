"""sift's wire contract: jobs in, results out. Pydantic only; never imports torch."""

from sift.contract.errors import ErrorCode, ErrorInfo
from sift.contract.items import (
    DEFAULT_LIMITS,
    ITEM_MODELS,
    ClassifyItem,
    Item,
    ItemRejected,
    Limits,
    ModerateItem,
    NliItem,
    RerankItem,
    TaskName,
    ZeroShotItem,
    parse_item,
    parse_task,
)
from sift.contract.jobs import SCHEMA_VERSION, Job, JobId, Lane
from sift.contract.results import CategoryScore, ItemResult, LabelScore, Moderation, RankedDocument, Timings

__all__ = [
    "DEFAULT_LIMITS",
    "ITEM_MODELS",
    "SCHEMA_VERSION",
    "CategoryScore",
    "ClassifyItem",
    "ErrorCode",
    "ErrorInfo",
    "Item",
    "ItemRejected",
    "ItemResult",
    "Job",
    "JobId",
    "LabelScore",
    "Lane",
    "Limits",
    "ModerateItem",
    "Moderation",
    "NliItem",
    "RankedDocument",
    "RerankItem",
    "TaskName",
    "Timings",
    "ZeroShotItem",
    "parse_item",
    "parse_task",
]
