"""Per-task heads: what sequences an item needs, and how logits become its answer.

Pure numpy, no torch. The arithmetic follows the transformers pipelines
(``text-classification``, ``zero-shot-classification``) and sentence-transformers'
``CrossEncoder.predict`` so that sift's answers are the models' answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sift.contract import (
    CategoryScore,
    ClassifyItem,
    Item,
    LabelScore,
    ModerateItem,
    Moderation,
    NliItem,
    RankedDocument,
    RerankItem,
    ZeroShotItem,
)
from workers.engine.policy import Policy

Pair = tuple[str, str | None]
"""A sequence to score: a text, or a (text, text_pair) pair."""


class UnsupportedModel(Exception):
    """The model's head cannot serve the task (e.g. no entailment label for zero-shot)."""


@dataclass(frozen=True)
class ModelInfo:
    """What the heads need to know about a loaded model; read from its ``config.json``."""

    role: str
    source: str
    revision: str
    id2label: dict[int, str]
    kind: str = "sequence_classification"
    problem_type: str | None = None
    activation: str = "sigmoid"
    """Cross-encoder score activation: ``sigmoid`` or ``identity``."""
    note: str | None = None

    @property
    def num_labels(self) -> int:
        """Width of the classification head."""
        return len(self.id2label)

    @property
    def entailment_id(self) -> int:
        """Index of the entailment label, as the zero-shot pipeline finds it; -1 when absent."""
        for index, label in sorted(self.id2label.items()):
            if label.lower().startswith("entail"):
                return index
        return -1


@dataclass
class HeadOutput:
    """The prediction fields of an :class:`~sift.contract.ItemResult`."""

    label: str | None = None
    scores: list[LabelScore] = field(default_factory=list)
    ranking: list[RankedDocument] | None = None
    moderation: Moderation | None = None

    def as_fields(self) -> dict[str, Any]:
        """Keyword arguments for ``ItemResult``."""
        return {"label": self.label, "scores": self.scores, "ranking": self.ranking, "moderation": self.moderation}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis (the pipelines' formula)."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs: np.ndarray = shifted / shifted.sum(axis=-1, keepdims=True)
    return probs


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Logistic function."""
    probs: np.ndarray = 1.0 / (1.0 + np.exp(-logits))
    return probs


def sequences_for(item: Item, policy: Policy | None) -> list[Pair]:
    """The sequences a model must score to answer ``item``."""
    if isinstance(item, ClassifyItem):
        return [(item.text, None)]
    if isinstance(item, NliItem):
        return [(item.premise, item.hypothesis)]
    if isinstance(item, ZeroShotItem):
        return [(item.text, item.hypothesis_template.format(label)) for label in item.labels]
    if isinstance(item, RerankItem):
        return [(item.query, document) for document in item.documents]
    assert isinstance(item, ModerateItem) and policy is not None
    return [(item.text, category.hypothesis) for category in policy.categories.values()]


def check_supported(item: Item, info: ModelInfo) -> None:
    """Raise :class:`UnsupportedModel` when ``info``'s head cannot answer ``item``'s task."""
    if isinstance(item, ZeroShotItem | ModerateItem) and info.entailment_id < 0:
        raise UnsupportedModel(f"model {info.role!r} has no label starting with 'entail' in its id2label")
    if isinstance(item, RerankItem) and info.num_labels != 1:
        raise UnsupportedModel(
            f"model {info.role!r} has {info.num_labels} labels; rerank needs a 1-logit cross-encoder"
        )
    if isinstance(item, NliItem) and info.num_labels < 2:
        raise UnsupportedModel(f"model {info.role!r} has a single logit; NLI needs a label per class")


def head_output(item: Item, logits: np.ndarray, info: ModelInfo, policy: Policy | None) -> HeadOutput:
    """Turn the logits of ``item``'s sequences (one row each) into its answer."""
    logits = logits.astype(np.float64)
    if isinstance(item, ClassifyItem | NliItem):
        return _classification(logits[0], info)
    if isinstance(item, ZeroShotItem):
        return _zero_shot(item, logits, info)
    if isinstance(item, RerankItem):
        return _rerank(item, logits, info)
    assert isinstance(item, ModerateItem) and policy is not None
    return _moderation(item, logits, info, policy)


def _classification(row: np.ndarray, info: ModelInfo) -> HeadOutput:
    # text-classification pipeline: sigmoid for multi-label or single-logit heads, else softmax.
    if info.problem_type == "regression":
        probs = row
    elif info.problem_type == "multi_label_classification" or info.num_labels == 1:
        probs = sigmoid(row)
    else:
        probs = softmax(row)
    order = np.argsort(-probs, kind="stable")
    scores = [LabelScore(label=info.id2label[int(i)], score=float(probs[i])) for i in order]
    return HeadOutput(label=scores[0].label, scores=scores)


def _entailment_probs(logits: np.ndarray, info: ModelInfo, independent: bool) -> np.ndarray:
    entail = info.entailment_id
    if independent:
        # The pipeline's quirk, kept for parity: "contradiction" is index 0 unless entailment is.
        contradiction = -1 if entail == 0 else 0
        return softmax(logits[:, [contradiction, entail]])[:, 1]
    return softmax(logits[:, entail])


def _zero_shot(item: ZeroShotItem, logits: np.ndarray, info: ModelInfo) -> HeadOutput:
    independent = item.multi_label or len(item.labels) == 1
    probs = _entailment_probs(logits, info, independent)
    order = np.argsort(-probs, kind="stable")
    scores = [LabelScore(label=item.labels[int(i)], score=float(probs[i])) for i in order]
    return HeadOutput(label=scores[0].label, scores=scores)


def _rerank(item: RerankItem, logits: np.ndarray, info: ModelInfo) -> HeadOutput:
    raw = logits[:, 0]
    scores = sigmoid(raw) if info.activation == "sigmoid" else raw
    order = np.argsort(-scores, kind="stable")
    if item.top_k is not None:
        order = order[: item.top_k]
    return HeadOutput(ranking=[RankedDocument(index=int(i), score=float(scores[i])) for i in order])


def _moderation(item: ModerateItem, logits: np.ndarray, info: ModelInfo, policy: Policy) -> HeadOutput:
    probs = _entailment_probs(logits, info, independent=True)
    categories = [
        CategoryScore(
            category=name, score=float(p), threshold=category.threshold, flagged=bool(p >= category.threshold)
        )
        for (name, category), p in zip(policy.categories.items(), probs, strict=True)
    ]
    flagged = [c.category for c in categories if c.flagged]
    verdict = "flag" if flagged else "allow"
    ranked = sorted(categories, key=lambda c: -c.score)
    return HeadOutput(
        label=verdict,
        scores=[LabelScore(label=c.category, score=c.score) for c in ranked],
        moderation=Moderation(
            policy=policy.name,
            policy_version=policy.version,
            categories=categories,
            flagged=flagged,
            verdict=verdict,
        ),
    )
