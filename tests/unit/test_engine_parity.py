"""sift's answers are the models' answers: parity with plain transformers and CrossEncoder, fp32, 1e-4."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from sift.contract import DEFAULT_LIMITS, ItemResult, Job
from workers.engine.engine import Engine
from workers.engine.policy import load_policies
from workers.engine.registry import Registry, load_registry

TOL = 1e-4
TEXTS = [
    "I absolutely loved this film, the acting was superb.",
    "Terrible service. We waited an hour and the food was cold.",
    "ok",
    "The quarterly report shows revenue grew by 12% while costs stayed flat, " * 3,
    "Ce produit est vraiment excellent, je le recommande.",
    "🙂 great stuff!!!",
]


@pytest.fixture(scope="module")
def registry(offline_registry: Path) -> Registry:
    return load_registry(offline_registry)


@pytest.fixture(scope="module")
def engine(registry: Registry) -> Engine:
    torch.set_num_threads(2)
    return Engine.load(registry, registry.models, torch.device("cpu"), load_policies(), DEFAULT_LIMITS, "test")


def run(engine: Engine, task: str, items: list[dict]) -> list[ItemResult]:
    results = engine.run(Job(job_id="parity", task=task, items=items, enqueued_at=time.time()))
    assert all(r.error is None for r in results), [r.error for r in results]
    return results


def test_classify_matches_text_classification_pipeline(engine: Engine, registry: Registry) -> None:
    reference = pipeline("text-classification", model=registry.models["sentiment"].source, top_k=None, device="cpu")
    results = run(engine, "classify", [{"id": str(i), "text": t} for i, t in enumerate(TEXTS)])
    for text, result in zip(TEXTS, results, strict=True):
        expected = reference(text)[0] if isinstance(reference(text)[0], list) else reference(text)
        assert [s.label for s in result.scores] == [e["label"] for e in expected]
        np.testing.assert_allclose([s.score for s in result.scores], [e["score"] for e in expected], atol=TOL)
        assert result.label == expected[0]["label"]


@pytest.mark.parametrize("multi_label", [False, True])
def test_zero_shot_matches_zero_shot_pipeline(engine: Engine, registry: Registry, multi_label: bool) -> None:
    reference = pipeline("zero-shot-classification", model=registry.models["zero_shot"].source, device="cpu")
    labels = ["sports", "politics", "food", "technology"]
    template = "This text is about {}."
    items = [
        {"id": str(i), "text": t, "labels": labels, "hypothesis_template": template, "multi_label": multi_label}
        for i, t in enumerate(TEXTS)
    ]
    for text, result in zip(TEXTS, run(engine, "zero_shot", items), strict=True):
        expected = reference(text, candidate_labels=labels, hypothesis_template=template, multi_label=multi_label)
        got = {s.label: s.score for s in result.scores}
        want = dict(zip(expected["labels"], expected["scores"], strict=True))
        assert got.keys() == want.keys()
        np.testing.assert_allclose([got[k] for k in labels], [want[k] for k in labels], atol=TOL)
        assert result.label == expected["labels"][0]


def test_zero_shot_single_label_uses_independent_softmax_like_the_pipeline(engine: Engine, registry: Registry) -> None:
    reference = pipeline("zero-shot-classification", model=registry.models["zero_shot"].source, device="cpu")
    [result] = run(engine, "zero_shot", [{"id": "a", "text": TEXTS[0], "labels": ["cinema"]}])
    expected = reference(TEXTS[0], candidate_labels=["cinema"])
    assert result.scores[0].score == pytest.approx(expected["scores"][0], abs=TOL)


def test_nli_matches_plain_model(engine: Engine, registry: Registry) -> None:
    source = registry.models["nli"].source
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(source).eval()
    pairs = [(TEXTS[i], TEXTS[(i + 1) % len(TEXTS)]) for i in range(len(TEXTS))]
    results = run(engine, "nli", [{"id": str(i), "premise": p, "hypothesis": h} for i, (p, h) in enumerate(pairs)])
    for (premise, hypothesis), result in zip(pairs, results, strict=True):
        with torch.inference_mode():
            logits = model(**tokenizer(premise, hypothesis, return_tensors="pt")).logits[0]
        probs = torch.softmax(logits, -1).numpy()
        labels = model.config.id2label
        got = {s.label: s.score for s in result.scores}
        np.testing.assert_allclose([got[labels[i]] for i in range(len(probs))], probs, atol=TOL)
        assert result.label == labels[int(probs.argmax())]


def test_rerank_matches_cross_encoder(engine: Engine, registry: Registry) -> None:
    from sentence_transformers import CrossEncoder

    cross_encoder = CrossEncoder(registry.models["rerank"].source, device="cpu")
    query = "how do I cook rice"
    [result] = run(engine, "rerank", [{"id": "q", "query": query, "documents": TEXTS}])
    expected = cross_encoder.predict([(query, doc) for doc in TEXTS], batch_size=32)
    assert result.ranking is not None
    got = {r.index: r.score for r in result.ranking}
    np.testing.assert_allclose([got[i] for i in range(len(TEXTS))], expected, atol=TOL)
    assert [r.index for r in result.ranking] == list(np.argsort(-expected, kind="stable"))


def test_long_text_is_truncated_at_max_length_and_says_so(engine: Engine, registry: Registry) -> None:
    long_text = "word " * 2000
    results = run(engine, "classify", [{"id": "long", "text": long_text}, {"id": "short", "text": "fine"}])
    assert results[0].truncated is True
    assert results[1].truncated is False
    # The truncated result is the model's answer on the first max_length tokens.
    reference = pipeline("text-classification", model=registry.models["sentiment"].source, top_k=None, device="cpu")
    expected = reference(long_text, truncation=True, max_length=512)
    expected = expected[0] if isinstance(expected[0], list) else expected
    np.testing.assert_allclose([s.score for s in results[0].scores], [e["score"] for e in expected], atol=TOL)


def test_batching_does_not_change_answers(engine: Engine) -> None:
    items = [{"id": str(i), "text": t} for i, t in enumerate(TEXTS * 5)]
    together = run(engine, "classify", items)
    alone = [run(engine, "classify", [item])[0] for item in items]
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_allclose([s.score for s in a.scores], [s.score for s in b.scores], atol=TOL)
