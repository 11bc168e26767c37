"""Evaluation metrics in plain Python: producers install light, so no numpy and no torch here.

Classification (classify, nli, zero_shot): accuracy, a confusion matrix, per-class precision,
recall and F1, and macro-F1. Ranking (rerank): nDCG@k with graded relevance, MRR@k and MAP,
computed per query and averaged over the queries that have at least one relevant document.

A ranking is a list of document indices, best first; ``relevance[i]`` is the graded relevance
(0 = not relevant) of document ``i`` of the query's input list.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ConfusionMatrix:
    """``counts[i][j]``: items whose gold label is ``labels[i]`` and predicted label is ``labels[j]``."""

    labels: list[str]
    counts: list[list[int]]

    def count(self, gold: str, predicted: str) -> int:
        """Items of gold label ``gold`` predicted as ``predicted``."""
        return self.counts[self.labels.index(gold)][self.labels.index(predicted)]

    def gold_total(self, label: str) -> int:
        """Items whose gold label is ``label`` (the class's support)."""
        return sum(self.counts[self.labels.index(label)])

    def predicted_total(self, label: str) -> int:
        """Items predicted as ``label``."""
        column = self.labels.index(label)
        return sum(row[column] for row in self.counts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: rows are gold labels, columns predicted labels."""
        return {"labels": list(self.labels), "counts": [list(row) for row in self.counts]}


@dataclass(frozen=True)
class ClassScores:
    """Precision, recall and F1 of one class, and its support (how many gold items it has)."""

    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ClassificationMetrics:
    """Everything :func:`classification_metrics` computes over one set of predictions."""

    accuracy: float
    macro_f1: float
    per_class: dict[str, ClassScores]
    confusion: ConfusionMatrix


@dataclass(frozen=True)
class RankingMetrics:
    """Mean nDCG@k, MRR@k and MAP over the scored queries; ``None`` when no query could be scored."""

    k: int
    ndcg: float | None
    mrr: float | None
    map: float | None
    n_queries: int
    """Queries scored: those with at least one relevant document."""
    n_skipped: int
    """Queries without any relevant document: every metric is undefined for them."""

    def as_dict(self) -> dict[str, float]:
        """Metric name → value, e.g. ``{"ndcg@10": 0.5, "mrr@10": 0.5, "map": 0.4}``; empty if none was scored."""
        named = {f"ndcg@{self.k}": self.ndcg, f"mrr@{self.k}": self.mrr, "map": self.map}
        return {name: value for name, value in named.items() if value is not None}


def _check_pairs(gold: Sequence[str], predicted: Sequence[str]) -> None:
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    if not gold:
        raise ValueError("no items to score")


def accuracy(gold: Sequence[str], predicted: Sequence[str]) -> float:
    """Share of items whose prediction equals the gold label. Raises ``ValueError`` for no items."""
    _check_pairs(gold, predicted)
    return sum(g == p for g, p in zip(gold, predicted, strict=True)) / len(gold)


def confusion_matrix(
    gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str] | None = None
) -> ConfusionMatrix:
    """Count (gold, predicted) pairs. ``labels`` defaults to every label seen on either side, sorted."""
    _check_pairs(gold, predicted)
    names = list(labels) if labels is not None else sorted(set(gold) | set(predicted))
    index = {label: i for i, label in enumerate(names)}
    unknown = (set(gold) | set(predicted)) - index.keys()
    if unknown:
        raise ValueError(f"labels {sorted(unknown)} are not among {names}")
    counts = [[0] * len(names) for _ in names]
    for g, p in zip(gold, predicted, strict=True):
        counts[index[g]][index[p]] += 1
    return ConfusionMatrix(names, counts)


def _ratio(numerator: int, denominator: int) -> float:
    # An undefined ratio (no predictions, or no gold items, of a class) counts as 0, as scikit-learn's
    # zero_division=0 does: a class the model never predicts gets precision 0, not a free pass.
    return numerator / denominator if denominator else 0.0


def class_scores(confusion: ConfusionMatrix, label: str) -> ClassScores:
    """Precision, recall and F1 of ``label``, read from the confusion matrix."""
    hits = confusion.count(label, label)
    support = confusion.gold_total(label)
    precision = _ratio(hits, confusion.predicted_total(label))
    recall = _ratio(hits, support)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return ClassScores(precision=precision, recall=recall, f1=f1, support=support)


def macro_f1(per_class: dict[str, ClassScores]) -> float:
    """Unweighted mean of the classes' F1: every class counts the same, however rare."""
    if not per_class:
        raise ValueError("no classes to average")
    return sum(scores.f1 for scores in per_class.values()) / len(per_class)


def classification_metrics(
    gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str] | None = None
) -> ClassificationMetrics:
    """Accuracy, per-class scores and macro-F1 over the classes of the confusion matrix.

    With ``labels`` left out, the classes are those seen in ``gold`` or ``predicted`` (scikit-learn's
    default): a class absent from both does not drag macro-F1 down, a class only ever predicted does.
    """
    confusion = confusion_matrix(gold, predicted, labels)
    per_class = {label: class_scores(confusion, label) for label in confusion.labels}
    return ClassificationMetrics(
        accuracy=accuracy(gold, predicted), macro_f1=macro_f1(per_class), per_class=per_class, confusion=confusion
    )


def _check_ranking(ranking: Sequence[int], relevance: Sequence[int]) -> None:
    if any(grade < 0 for grade in relevance):
        raise ValueError(f"relevance grades must be >= 0, got {list(relevance)}")
    if len(set(ranking)) != len(ranking):
        raise ValueError(f"ranking {list(ranking)} lists a document twice")
    if any(not 0 <= index < len(relevance) for index in ranking):
        raise ValueError(f"ranking {list(ranking)} has an index outside 0..{len(relevance) - 1}")


def has_relevant(relevance: Sequence[int]) -> bool:
    """True when at least one document is relevant: the ranking metrics are defined only then."""
    return any(grade > 0 for grade in relevance)


def dcg(gains: Sequence[int], k: int) -> float:
    """Discounted cumulative gain of the first ``k`` gains, in rank order: sum of gain / log2(rank + 1).

    Linear gain, as trec_eval and pytrec_eval (used by BEIR and MTEB) compute it; with binary
    relevance it equals the exponential-gain variant.
    """
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains[:k], start=1))


def ndcg_at_k(ranking: Sequence[int], relevance: Sequence[int], k: int = 10) -> float:
    """DCG@k of ``ranking`` over the ideal DCG@k of the query's own relevance labels (best order)."""
    _check_ranking(ranking, relevance)
    ideal = dcg(sorted(relevance, reverse=True), k)
    if ideal == 0:
        raise ValueError("nDCG is undefined for a query without a relevant document")
    return dcg([relevance[index] for index in ranking], k) / ideal


def reciprocal_rank_at_k(ranking: Sequence[int], relevance: Sequence[int], k: int = 10) -> float:
    """1 / rank of the first relevant document within the top ``k``; 0 when none is there."""
    _check_ranking(ranking, relevance)
    if not has_relevant(relevance):
        raise ValueError("reciprocal rank is undefined for a query without a relevant document")
    for rank, index in enumerate(ranking[:k], start=1):
        if relevance[index] > 0:
            return 1.0 / rank
    return 0.0


def average_precision(ranking: Sequence[int], relevance: Sequence[int]) -> float:
    """Mean of precision@rank at each relevant document's rank, over ALL the query's relevant documents.

    A relevant document missing from ``ranking`` (cut by a top_k) contributes 0, as in trec_eval.
    """
    _check_ranking(ranking, relevance)
    n_relevant = sum(grade > 0 for grade in relevance)
    if n_relevant == 0:
        raise ValueError("average precision is undefined for a query without a relevant document")
    hits = 0
    total = 0.0
    for rank, index in enumerate(ranking, start=1):
        if relevance[index] > 0:
            hits += 1
            total += hits / rank
    return total / n_relevant


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def ranking_metrics(queries: Iterable[tuple[Sequence[int], Sequence[int]]], k: int = 10) -> RankingMetrics:
    """Mean nDCG@k, MRR@k and MAP over ``(ranking, relevance)`` pairs; queries with nothing relevant are skipped."""
    ndcgs: list[float] = []
    reciprocal_ranks: list[float] = []
    precisions: list[float] = []
    skipped = 0
    for ranking, relevance in queries:
        if not has_relevant(relevance):
            _check_ranking(ranking, relevance)
            skipped += 1
            continue
        ndcgs.append(ndcg_at_k(ranking, relevance, k))
        reciprocal_ranks.append(reciprocal_rank_at_k(ranking, relevance, k))
        precisions.append(average_precision(ranking, relevance))
    return RankingMetrics(
        k=k,
        ndcg=_mean(ndcgs),
        mrr=_mean(reciprocal_ranks),
        map=_mean(precisions),
        n_queries=len(ndcgs),
        n_skipped=skipped,
    )
