"""Model cascade: a small NLI model answers the moderation items it is sure of; the rest go to the policy's model."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from sift.contract import DEFAULT_LIMITS, ItemResult, Job, Lane
from sift.settings import SettingsError
from workers.engine.engine import Engine
from workers.engine.policy import Cascade, Category, Policy, PolicySet, load_policies
from workers.engine.registry import load_registry
from workers.gather import Gatherer

SMALL, LARGE = "nli", "zero_shot"
TEXTS = [f"post {i}: {'you are all idiots' if i % 3 else 'buy cheap pills now'} {'!' * (i % 5)}" for i in range(12)]
CATEGORIES = {
    "harassment": Category(hypothesis="This text insults or harasses a person.", threshold=0.5),
    "spam": Category(hypothesis="This text is spam.", threshold=0.5),
}


def policies(margin: float) -> PolicySet:
    cascade = Policy(
        name="cascade", version=1, model=LARGE, categories=CATEGORIES, cascade=Cascade(model=SMALL, margin=margin)
    )
    return PolicySet(
        default="cascade",
        policies={
            "cascade": cascade,
            "large": cascade.without_cascade().model_copy(update={"name": "large"}),
            "small": cascade.without_cascade().model_copy(update={"name": "small", "model": SMALL}),
        },
    )


@pytest.fixture(scope="module")
def models(offline_registry: Path) -> Engine:
    torch.set_num_threads(2)
    return Engine.load(
        load_registry(offline_registry), [SMALL, LARGE], torch.device("cpu"), policies(0.0), DEFAULT_LIMITS, "t"
    )


@pytest.fixture(scope="module")
def alone(models: Engine) -> dict[str, list[ItemResult]]:
    """Each model's own answers (the small model's and the policy model's), the yardsticks of the cascade."""
    return {name: engine_with(models, 0.0).run(moderate(name)) for name in ("small", "large")}


def engine_with(models: Engine, margin: float) -> Engine:
    """The loaded models, serving the policies of a cascade with ``margin``."""
    return Engine(models.models, models.registry, policies(margin), models.limits, "t")


def moderate(policy: str, lane: Lane = Lane.BULK, model: str | None = None) -> Job:
    items = [{"id": f"i{n}", "text": text, "policy": policy} for n, text in enumerate(TEXTS)]
    return Job(job_id=f"j-{policy}", task="moderate", items=items, lane=lane, enqueued_at=time.time(), model=model)


def scores(result: ItemResult) -> dict[str, float]:
    assert result.ok and result.moderation is not None, result.error
    return {c.category: c.score for c in result.moderation.categories}


def distance_to_threshold(result: ItemResult) -> float:
    assert result.moderation is not None
    return min(abs(c.score - c.threshold) for c in result.moderation.categories)


def test_margin_zero_keeps_every_small_answer_and_one_escalates_every_item(
    models: Engine, alone: dict[str, list[ItemResult]]
) -> None:
    small, large = alone["small"], alone["large"]

    never = engine_with(models, 0.0).run(moderate("cascade"))
    always = engine_with(models, 1.0).run(moderate("cascade"))

    assert [r.model for r in never] == [SMALL] * len(TEXTS)
    assert [r.model for r in always] == [LARGE] * len(TEXTS)
    for cascaded, alone in [*zip(never, small, strict=True), *zip(always, large, strict=True)]:
        assert cascaded.moderation is not None and alone.moderation is not None
        assert cascaded.moderation.verdict == alone.moderation.verdict
        np.testing.assert_allclose(list(scores(cascaded).values()), list(scores(alone).values()), atol=1e-5)
        assert cascaded.moderation.policy == "cascade"


def test_only_items_near_a_threshold_are_escalated_and_each_gets_that_models_answer(
    models: Engine, alone: dict[str, list[ItemResult]]
) -> None:
    small, large = alone["small"], alone["large"]
    # A margin between the distances the small model's answers lie from the thresholds: some escalate, some not.
    margin = float(np.median([distance_to_threshold(r) for r in small]))
    engine = engine_with(models, margin)

    cascaded = engine.run(moderate("cascade"))

    unsure = [distance_to_threshold(r) < margin for r in small]
    assert 0 < sum(unsure) < len(TEXTS)
    assert [r.model for r in cascaded] == [LARGE if u else SMALL for u in unsure]
    for result, was_unsure, alone_small, alone_large in zip(cascaded, unsure, small, large, strict=True):
        expected = alone_large if was_unsure else alone_small
        np.testing.assert_allclose(list(scores(result).values()), list(scores(expected).values()), atol=1e-5)
    escalated = engine.metrics.cascade_items.labels("cascade", "escalated")._value.get()
    kept = engine.metrics.cascade_items.labels("cascade", "kept")._value.get()
    assert (escalated, kept) == (sum(unsure), len(TEXTS) - sum(unsure))


def test_gathered_batches_answer_a_cascade_like_engine_run(models: Engine, alone: dict[str, list[ItemResult]]) -> None:
    small = alone["small"]
    margin = float(np.median([distance_to_threshold(r) for r in small]))
    engine = engine_with(models, margin)
    expected = engine.run(moderate("cascade", Lane.REALTIME))
    gatherer = Gatherer(engine)
    jobs = [moderate("cascade", Lane.REALTIME), moderate("cascade")]
    for job in jobs:
        admission, units = engine.admit(job)
        assert gatherer.add(admission, units, handle=job.lane) is None

    completed = []
    while (report := gatherer.step()) is not None:
        completed += report.completed

    assert gatherer.held == 0 and len(completed) == 2
    for held in completed:
        results = engine.results(held.admission)
        assert [r.model for r in results] == [r.model for r in expected]
        for got, want in zip(results, expected, strict=True):
            np.testing.assert_allclose(list(scores(got).values()), list(scores(want).values()), atol=1e-5)


def test_a_job_that_names_its_model_skips_the_cascade(models: Engine) -> None:
    results = engine_with(models, 1.0).run(moderate("cascade", model=SMALL))
    assert [r.model for r in results] == [SMALL] * len(TEXTS)


def test_a_cascade_model_that_is_not_loaded_is_a_per_item_error(models: Engine) -> None:
    only_large = Engine({LARGE: models.models[LARGE]}, models.registry, policies(0.5), models.limits, "t")
    results = only_large.run(moderate("cascade"))
    assert all(r.error is not None and r.error.code.value == "model_not_loaded" for r in results)


def test_policy_files_reject_a_bad_cascade(tmp_path: Path) -> None:
    def policy_file(cascade: dict[str, object]) -> Path:
        path = tmp_path / "policy.yaml"
        categories = {"spam": {"hypothesis": "This text is spam.", "threshold": 0.5}}
        body = {"version": 1, "model": LARGE, "categories": categories, "cascade": cascade}
        path.write_text(yaml.safe_dump({"default": "p", "policies": {"p": body}}))
        return path

    assert load_policies(policy_file({"model": SMALL, "margin": 0.2})).policies["p"].cascade == Cascade(
        model=SMALL, margin=0.2
    )
    with pytest.raises(SettingsError, match="policy's own model"):
        load_policies(policy_file({"model": LARGE, "margin": 0.2}))
    with pytest.raises(SettingsError, match="margin"):
        load_policies(policy_file({"model": SMALL, "margin": 1.5}))
    with pytest.raises(SettingsError, match="threshhold"):
        load_policies(policy_file({"model": SMALL, "margin": 0.2, "threshhold": 0.1}))
