"""Moderation policies: categories, each an NLI hypothesis and a threshold."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sift.settings import SettingsError


class Category(BaseModel):
    """One thing a policy looks for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hypothesis: str = Field(min_length=1)
    threshold: float = Field(ge=0.0, le=1.0)


class Cascade(BaseModel):
    """Score with a small NLI model first; only the items it is unsure of go on to the policy's model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1)
    """Registry role of the small NLI model that scores every item first."""
    margin: float = Field(ge=0.0, le=1.0)
    """An item is escalated when any category's small-model score lies within this of the category's threshold
    (0: never escalate; 1: always)."""

    def is_unsure(self, scores: list[float], thresholds: list[float]) -> bool:
        """Whether a small-model answer is too close to a threshold to keep."""
        return any(abs(score - threshold) < self.margin for score, threshold in zip(scores, thresholds, strict=True))


class Policy(BaseModel):
    """A named, versioned set of categories scored by one NLI model role (optionally after a cascade)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = ""
    """Filled from the policy's key in the file."""
    version: int = Field(ge=1)
    model: str = Field(min_length=1)
    categories: dict[str, Category] = Field(min_length=1)
    cascade: Cascade | None = None
    """Optional: a small model that answers the items it is sure of, so only the rest cost ``model``."""

    @model_validator(mode="after")
    def _cascade_is_another_model(self) -> Policy:
        if self.cascade is not None and self.cascade.model == self.model:
            raise ValueError(f"policy cascade model {self.cascade.model!r} is the policy's own model")
        return self

    def without_cascade(self) -> Policy:
        """The same policy scored by its own model alone (to measure what the cascade changes)."""
        return self.model_copy(update={"cascade": None})


class PolicySet(BaseModel):
    """Every policy a worker knows, and the one used when an item names none."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    default: str
    policies: dict[str, Policy] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _name_policies(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("policies"), dict):
            data = {**data, "policies": {k: _with_name(k, v) for k, v in data["policies"].items()}}
        return data

    @model_validator(mode="after")
    def _default_exists(self) -> PolicySet:
        if self.default not in self.policies:
            raise ValueError(f"default policy {self.default!r} is not among {sorted(self.policies)}")
        return self


def load_policies(path: Path | None = None) -> PolicySet:
    """Read policies from ``path``, or the shipped default when None."""
    try:
        text = (
            resources.files("workers.config").joinpath("moderation.yaml").read_text()
            if path is None
            else Path(path).read_text()
        )
        return PolicySet.model_validate(yaml.safe_load(text))
    except (OSError, yaml.YAMLError, ValidationError) as err:
        raise SettingsError(f"invalid moderation policy file {path or '(built-in)'}: {err}") from err


def _with_name(name: str, policy: Any) -> Any:
    return {**policy, "name": name} if isinstance(policy, dict) else policy
