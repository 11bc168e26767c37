"""producers.metrics against figures computed by hand (in the comments)."""

from __future__ import annotations

import math

import pytest

from producers.metrics import (
    accuracy,
    average_precision,
    classification_metrics,
    confusion_matrix,
    dcg,
    has_relevant,
    macro_f1,
    ndcg_at_k,
    ranking_metrics,
    reciprocal_rank_at_k,
)

approx = pytest.approx


# --- classification ---------------------------------------------------------------------------


def test_perfect_predictions() -> None:
    gold = ["pos", "neg", "pos", "neu"]
    scores = classification_metrics(gold, list(gold))

    assert scores.accuracy == 1.0
    assert scores.macro_f1 == 1.0
    assert all(s.precision == s.recall == s.f1 == 1.0 for s in scores.per_class.values())
    assert {label: s.support for label, s in scores.per_class.items()} == {"neg": 1, "neu": 1, "pos": 2}
    assert scores.confusion.labels == ["neg", "neu", "pos"]
    assert scores.confusion.counts == [[1, 0, 0], [0, 1, 0], [0, 0, 2]]


def test_all_wrong() -> None:
    scores = classification_metrics(["a", "b", "a"], ["b", "a", "b"])

    assert scores.accuracy == 0.0
    assert scores.macro_f1 == 0.0
    assert all(s.precision == s.recall == s.f1 == 0.0 for s in scores.per_class.values())
    assert scores.confusion.counts == [[0, 2], [1, 0]]


def test_hand_computed_three_classes() -> None:
    # gold a a a b b c, predicted a a b b c c.
    # confusion (rows gold, columns predicted):   a  b  c
    #                                          a  2  1  0
    #                                          b  0  1  1
    #                                          c  0  0  1
    # accuracy 4/6.
    # a: P 2/2 = 1,   R 2/3, F1 = 2·1·(2/3) / (5/3) = 0.8
    # b: P 1/2,       R 1/2, F1 = 0.5
    # c: P 1/2,       R 1/1, F1 = 2·0.5·1 / 1.5 = 2/3
    # macro-F1 = (0.8 + 0.5 + 2/3) / 3 = 0.655555…
    gold = ["a", "a", "a", "b", "b", "c"]
    predicted = ["a", "a", "b", "b", "c", "c"]
    scores = classification_metrics(gold, predicted)

    assert scores.accuracy == approx(4 / 6)
    assert scores.confusion.counts == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    a, b, c = (scores.per_class[label] for label in "abc")
    assert (a.precision, a.recall, a.f1, a.support) == (approx(1.0), approx(2 / 3), approx(0.8), 3)
    assert (b.precision, b.recall, b.f1, b.support) == (approx(0.5), approx(0.5), approx(0.5), 2)
    assert (c.precision, c.recall, c.f1, c.support) == (approx(0.5), approx(1.0), approx(2 / 3), 1)
    assert scores.macro_f1 == approx((0.8 + 0.5 + 2 / 3) / 3)
    assert scores.confusion.count("a", "b") == 1
    assert scores.confusion.gold_total("a") == 3 and scores.confusion.predicted_total("c") == 2


def test_class_never_predicted_gets_zero_precision_not_an_error() -> None:
    # gold a a b, predicted a a a: b is never predicted. a: P 2/3, R 1, F1 0.8; b: P 0 (0/0), R 0, F1 0.
    scores = classification_metrics(["a", "a", "b"], ["a", "a", "a"])

    assert scores.per_class["b"].precision == 0.0 and scores.per_class["b"].f1 == 0.0
    assert scores.per_class["a"].f1 == approx(0.8)
    assert scores.macro_f1 == approx(0.4)


def test_class_absent_from_gold_but_predicted_counts_in_macro_f1() -> None:
    # gold a a, predicted a c: a: P 1, R 1/2, F1 2/3; c: P 0, R 0/0 = 0, F1 0 (support 0). macro = 1/3.
    scores = classification_metrics(["a", "a"], ["a", "c"])

    assert scores.per_class["c"].support == 0 and scores.per_class["c"].recall == 0.0
    assert scores.macro_f1 == approx(1 / 3)


def test_class_absent_from_both_sides_is_left_out_unless_named() -> None:
    # Classes default to those seen: an absent class does not drag macro-F1 down...
    assert classification_metrics(["a", "b"], ["a", "b"]).macro_f1 == 1.0
    # ...but an explicitly named one does, with an empty row and column.
    named = classification_metrics(["a", "b"], ["a", "b"], labels=["a", "b", "c"])
    assert named.macro_f1 == approx(2 / 3)
    assert named.confusion.counts == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]


def test_tied_f1_classes_average_plainly() -> None:
    # Two classes with the same F1 (0.5 each) and one perfect: macro = (0.5 + 0.5 + 1) / 3.
    # gold x x y y z, predicted x y x y z. x: P 1/2, R 1/2; y: P 1/2, R 1/2; z: 1.
    scores = classification_metrics(["x", "x", "y", "y", "z"], ["x", "y", "x", "y", "z"])

    assert scores.per_class["x"].f1 == scores.per_class["y"].f1 == approx(0.5)
    assert scores.macro_f1 == approx(2 / 3)
    assert scores.accuracy == approx(3 / 5)


def test_classification_rejects_empty_or_mismatched_input() -> None:
    with pytest.raises(ValueError, match="no items"):
        accuracy([], [])
    with pytest.raises(ValueError, match="2 gold labels but 1"):
        confusion_matrix(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="not among"):
        confusion_matrix(["a"], ["b"], labels=["a"])
    with pytest.raises(ValueError):
        macro_f1({})


# --- ranking ----------------------------------------------------------------------------------

# Query 1: five documents, graded relevance [3, 2, 0, 0, 1]; the model ranks them 2, 0, 4, 1, 3.
#   gains in rank order: 0, 3, 1, 2, 0
#   DCG  = 0/log2(2) + 3/log2(3) + 1/log2(4) + 2/log2(5) + 0 = 1.892789 + 0.5 + 0.861353 = 3.254142
#   IDCG = 3/log2(2) + 2/log2(3) + 1/log2(4)                   = 3 + 1.261860 + 0.5       = 4.761860
#   nDCG@10 = 3.254142 / 4.761860 = 0.683376
#   first relevant document at rank 2: RR = 0.5
#   relevant documents 0, 1, 4 (R = 3) at ranks 2, 4, 3: precisions 1/2, 3/4, 2/3 -> AP = 0.638889
# Query 2: relevance [0, 1], ranked 0, 1: nDCG = (1/log2(3)) / 1 = 0.630930, RR = 0.5, AP = 0.5.
# Query 3: relevance [0, 0, 0]: no relevant document, skipped.
# Means over the 2 scored queries: nDCG 0.657153, MRR 0.5, MAP 0.569444.
Q1 = ([2, 0, 4, 1, 3], [3, 2, 0, 0, 1])
Q2 = ([0, 1], [0, 1])
Q3 = ([1, 0, 2], [0, 0, 0])


def test_hand_computed_query() -> None:
    ranking, relevance = Q1
    assert dcg([0, 3, 1, 2, 0], 10) == approx(3.254142, abs=1e-6)
    assert ndcg_at_k(ranking, relevance) == approx(0.683376, abs=1e-6)
    assert reciprocal_rank_at_k(ranking, relevance) == 0.5
    assert average_precision(ranking, relevance) == approx(0.638889, abs=1e-6)


def test_ranking_metrics_average_scored_queries_and_count_skipped_ones() -> None:
    metrics = ranking_metrics([Q1, Q2, Q3])

    assert metrics.n_queries == 2 and metrics.n_skipped == 1
    assert metrics.ndcg == approx(0.657153, abs=1e-6)
    assert metrics.mrr == approx(0.5)
    assert metrics.map == approx(0.569444, abs=1e-6)
    assert metrics.as_dict() == {"ndcg@10": metrics.ndcg, "mrr@10": metrics.mrr, "map": metrics.map}


def test_perfect_and_worst_rankings() -> None:
    relevance = [0, 2, 1, 0]
    assert ndcg_at_k([1, 2, 0, 3], relevance) == approx(1.0)
    assert average_precision([1, 2, 0, 3], relevance) == 1.0
    assert reciprocal_rank_at_k([1, 2, 0, 3], relevance) == 1.0
    # Worst order: relevant ones last, at ranks 3 (grade 1) and 4 (grade 2).
    # DCG = 1/log2(4) + 2/log2(5); IDCG = 2 + 1/log2(3). AP = (1/3 + 2/4) / 2. RR = 1/3.
    worst = [0, 3, 2, 1]
    assert ndcg_at_k(worst, relevance) == approx((0.5 + 2 / math.log2(5)) / (2 + 1 / math.log2(3)))
    assert average_precision(worst, relevance) == approx((1 / 3 + 2 / 4) / 2)
    assert reciprocal_rank_at_k(worst, relevance) == approx(1 / 3)


def test_ties_in_relevance_grades_do_not_matter() -> None:
    # Two documents of grade 2: either order is ideal.
    assert ndcg_at_k([0, 1, 2], [2, 2, 0]) == approx(1.0)
    assert ndcg_at_k([1, 0, 2], [2, 2, 0]) == approx(1.0)


def test_cutoff_at_10() -> None:
    # Twelve documents, the only relevant one ranked 11th: outside the top 10.
    relevance = [0] * 12
    relevance[5] = 1
    ranking = [i for i in range(12) if i != 5]
    ranking.insert(10, 5)
    assert ranking.index(5) == 10
    assert ndcg_at_k(ranking, relevance) == 0.0
    assert reciprocal_rank_at_k(ranking, relevance) == 0.0
    assert average_precision(ranking, relevance) == approx(1 / 11)  # MAP has no cutoff
    assert ndcg_at_k(ranking, relevance, k=11) == approx(1 / math.log2(12))


def test_relevant_document_missing_from_a_cut_ranking_counts_zero_in_ap() -> None:
    # Relevant 0 and 2; the ranking returned only [0, 1]: AP = (1/1 + 0) / 2.
    assert average_precision([0, 1], [1, 0, 1]) == 0.5


def test_queries_without_relevant_documents() -> None:
    assert not has_relevant([0, 0]) and has_relevant([0, 3])
    for metric in (ndcg_at_k, reciprocal_rank_at_k, average_precision):
        with pytest.raises(ValueError, match="without a relevant document"):
            metric([0, 1], [0, 0])
    all_skipped = ranking_metrics([Q3, ([0], [0])])
    assert (all_skipped.n_queries, all_skipped.n_skipped) == (0, 2)
    assert all_skipped.ndcg is None and all_skipped.as_dict() == {}


def test_bad_rankings_are_rejected() -> None:
    with pytest.raises(ValueError, match="outside"):
        ndcg_at_k([0, 5], [1, 0])
    with pytest.raises(ValueError, match="twice"):
        average_precision([0, 0], [1, 0])
    with pytest.raises(ValueError, match=">= 0"):
        ranking_metrics([([0, 1], [-1, 1])])
