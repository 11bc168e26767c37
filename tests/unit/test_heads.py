"""Task heads on hand-made logits: the pipelines' arithmetic, without a model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sift.contract import ClassifyItem, ModerateItem, NliItem, RerankItem, ZeroShotItem
from workers.engine.heads import ModelInfo, UnsupportedModel, check_supported, head_output, sequences_for
from workers.engine.policy import load_policies

NLI = ModelInfo(role="nli", source="s", revision="r", id2label={0: "ENTAILMENT", 1: "NEUTRAL", 2: "CONTRADICTION"})
SENTIMENT = ModelInfo(role="sentiment", source="s", revision="r", id2label={0: "NEGATIVE", 1: "POSITIVE"})
CROSS = ModelInfo(role="rerank", source="s", revision="r", id2label={0: "LABEL_0"}, kind="cross_encoder")


def test_classification_is_a_softmax_ranked_best_first() -> None:
    out = head_output(ClassifyItem(id="1", text="t"), np.array([[0.0, math.log(3)]]), SENTIMENT, None)
    assert out.label == "POSITIVE"
    assert [(s.label, round(s.score, 6)) for s in out.scores] == [("POSITIVE", 0.75), ("NEGATIVE", 0.25)]


def test_single_logit_classifier_uses_sigmoid_like_the_pipeline() -> None:
    out = head_output(ClassifyItem(id="1", text="t"), np.array([[0.0]]), CROSS, None)
    assert out.scores[0].score == pytest.approx(0.5)


def test_zero_shot_single_label_mode_softmaxes_entailment_across_labels() -> None:
    item = ZeroShotItem(id="1", text="t", labels=["a", "b"])
    logits = np.array([[math.log(1), 0, 0], [math.log(3), 0, 0]])
    out = head_output(item, logits, NLI, None)
    assert [(s.label, round(s.score, 6)) for s in out.scores] == [("b", 0.75), ("a", 0.25)]


def test_zero_shot_multi_label_uses_entailment_vs_contradiction_per_label() -> None:
    # entailment is index 0, so the pipeline takes the *last* index as contradiction.
    item = ZeroShotItem(id="1", text="t", labels=["a", "b"], multi_label=True)
    logits = np.array([[0.0, 9.0, 0.0], [math.log(4), 9.0, 0.0]])
    out = head_output(item, logits, NLI, None)
    assert {s.label: round(s.score, 6) for s in out.scores} == {"a": 0.5, "b": 0.8}


def test_rerank_sorts_by_sigmoid_score_and_keeps_top_k() -> None:
    item = RerankItem(id="1", query="q", documents=["x", "y", "z"], top_k=2)
    out = head_output(item, np.array([[0.0], [2.0], [-1.0]]), CROSS, None)
    assert out.ranking is not None
    assert [r.index for r in out.ranking] == [1, 0]
    assert out.ranking[1].score == pytest.approx(0.5)


def test_moderation_flags_categories_at_their_thresholds() -> None:
    policy = load_policies().policies["default"]
    item = ModerateItem(id="1", text="t")
    names = list(policy.categories)
    # spam gets a very high entailment logit, the other categories none.
    logits = np.zeros((len(names), 3))
    logits[names.index("spam"), 0] = 10.0
    out = head_output(item, logits, NLI, policy)
    assert out.moderation is not None
    assert out.moderation.flagged == ["spam"] and out.moderation.verdict == "flag" and out.label == "flag"
    assert out.moderation.policy == "default"
    assert all(c.flagged == (c.score >= c.threshold) for c in out.moderation.categories)
    assert out.scores[0].label == "spam"


def test_sequences_expand_each_task() -> None:
    policy = load_policies().policies["default"]
    assert sequences_for(ClassifyItem(id="1", text="t"), None) == [("t", None)]
    assert sequences_for(NliItem(id="1", premise="p", hypothesis="h"), None) == [("p", "h")]
    zero_shot = ZeroShotItem(id="1", text="t", labels=["a"], hypothesis_template="About {}.")
    assert sequences_for(zero_shot, None) == [("t", "About a.")]
    assert len(sequences_for(ModerateItem(id="1", text="t"), policy)) == len(policy.categories)


def test_heads_refuse_models_that_cannot_serve_the_task() -> None:
    with pytest.raises(UnsupportedModel, match="entail"):
        check_supported(ZeroShotItem(id="1", text="t", labels=["a"]), SENTIMENT)
    with pytest.raises(UnsupportedModel, match="1-logit"):
        check_supported(RerankItem(id="1", query="q", documents=["d"]), NLI)
    with pytest.raises(UnsupportedModel, match="single logit"):
        check_supported(NliItem(id="1", premise="p", hypothesis="h"), CROSS)
