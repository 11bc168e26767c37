"""Every task end to end through Redis and a real worker, and parity with the in-process engine."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator

import pytest
import torch
import yaml
from sift_it_helpers import ROOT, new_job_id

from producers.client import SiftClient
from sift.contract import DEFAULT_LIMITS, ItemResult, Job, TaskName
from sift.local import WorkerProcess
from workers.engine.engine import Engine
from workers.engine.policy import load_policies
from workers.engine.registry import Registry

pytestmark = pytest.mark.integration

TOL = 1e-5
RESULT_TIMEOUT_S = 60


def check_common(result: ItemResult, ref_id: str, task: str, role: str, registry: Registry, worker: WorkerProcess):
    """The fields every successful result carries, whatever its task."""
    assert result.error is None, result.error
    assert result.ok
    assert result.id == ref_id
    assert result.task == task
    assert result.model == role
    assert result.model_source == registry.models[role].source
    assert result.revision
    assert result.truncated is False
    assert result.timings is not None
    assert result.timings.inference_ms > 0
    assert result.timings.queued_ms is not None and result.timings.queued_ms >= 0
    assert result.worker == worker.hostname


def submit_one(client: SiftClient, task: str, item: dict) -> ItemResult:
    ref = client.submit(task, item)
    result = client.result(ref, timeout_s=RESULT_TIMEOUT_S)
    assert result.job_id == ref.job_id
    assert result.id == ref.item_id
    return result


def test_the_worker_log_says_what_it_serves_and_how(worker: WorkerProcess, registry: Registry) -> None:
    # With no --loglevel, the worker still logs its start-up choices: an operator must see which dtype and runtime
    # each model got on this machine (bf16 or fp32 on a CPU depends on the CPU).
    assert worker.log_path is not None
    log = worker.log_path.read_text(errors="replace")
    for role in registry.models:
        assert re.search(rf"loaded {role} from .* on cpu as torch\.\w+ with (torch|onnxruntime), labels ", log), role
    assert f"worker {worker.hostname} ready on cpu with" in log


@pytest.mark.timeout(90)
def test_classify_through_the_queue(client, worker, registry, id2label) -> None:
    result = submit_one(client, "classify", {"id": "c-1", "text": "I love this phone, the camera is amazing."})

    check_common(result, "c-1", "classify", "sentiment", registry, worker)
    labels = id2label("sentiment")
    assert sorted(s.label for s in result.scores) == sorted(labels)
    assert result.label == result.scores[0].label
    scores = [s.score for s in result.scores]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert math.isclose(sum(scores), 1.0, abs_tol=1e-6)
    assert result.ranking is None and result.moderation is None


@pytest.mark.timeout(60)
def test_classify_marks_text_cut_at_max_length_as_truncated(client, worker) -> None:
    # ~1,500 word pieces, well under the byte limit but over the model's 512 positions.
    result = submit_one(client, "classify", {"id": "long", "text": "the service was fine " * 400})
    assert result.ok, result.error
    assert result.truncated is True


@pytest.mark.timeout(60)
@pytest.mark.parametrize("multi_label", [False, True])
def test_zero_shot_through_the_queue(client, worker, registry, multi_label: bool) -> None:
    candidates = ["sports", "politics", "cooking", "travel"]
    item = {"id": "z-1", "text": "The match went to extra time.", "labels": candidates, "multi_label": multi_label}
    result = submit_one(client, "zero_shot", item)

    check_common(result, "z-1", "zero_shot", "zero_shot", registry, worker)
    ranked = [s.label for s in result.scores]
    assert sorted(ranked) == sorted(candidates), "each candidate label exactly once"
    assert len(ranked) == len(set(ranked))
    assert result.label == ranked[0]
    scores = [s.score for s in result.scores]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    if not multi_label:
        assert math.isclose(sum(scores), 1.0, abs_tol=1e-6)


@pytest.mark.timeout(60)
def test_nli_through_the_queue(client, worker, registry, id2label) -> None:
    item = {"id": "n-1", "premise": "A man is playing a guitar on stage.", "hypothesis": "A man plays music."}
    result = submit_one(client, "nli", item)

    check_common(result, "n-1", "nli", "nli", registry, worker)
    labels = id2label("nli")
    assert len(labels) == 3
    assert sorted(s.label for s in result.scores) == sorted(labels)
    assert result.label == result.scores[0].label
    scores = [s.score for s in result.scores]
    assert scores == sorted(scores, reverse=True)
    assert math.isclose(sum(scores), 1.0, abs_tol=1e-6)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("top_k", [None, 3])
def test_rerank_through_the_queue(client, worker, registry, top_k: int | None) -> None:
    documents = [
        "Paris is the capital of France.",
        "Bananas are yellow.",
        "The Eiffel Tower is in Paris.",
        "Cats sleep a lot.",
        "France borders Spain.",
    ]
    item = {"id": "r-1", "query": "What is the capital of France?", "documents": documents}
    if top_k is not None:
        item["top_k"] = top_k
    result = submit_one(client, "rerank", item)

    check_common(result, "r-1", "rerank", "rerank", registry, worker)
    assert result.ranking is not None
    indices = [d.index for d in result.ranking]
    assert len(indices) == (top_k or len(documents))
    assert len(set(indices)) == len(indices)
    assert all(0 <= i < len(documents) for i in indices)
    scores = [d.score for d in result.ranking]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.timeout(60)
def test_moderate_through_the_queue(client, worker, registry) -> None:
    policy_file = yaml.safe_load((ROOT / "workers" / "config" / "moderation.yaml").read_text())
    default = policy_file["default"]
    policy = policy_file["policies"][default]
    result = submit_one(client, "moderate", {"id": "m-1", "text": "You are all idiots and I will find you."})

    check_common(result, "m-1", "moderate", policy["model"], registry, worker)
    moderation = result.moderation
    assert moderation is not None
    assert moderation.policy == default
    assert moderation.policy_version == policy["version"]
    assert [c.category for c in moderation.categories] == list(policy["categories"])
    for category in moderation.categories:
        assert category.threshold == policy["categories"][category.category]["threshold"]
        assert 0.0 <= category.score <= 1.0
        assert category.flagged == (category.score >= category.threshold)
    assert moderation.flagged == [c.category for c in moderation.categories if c.flagged]
    assert moderation.verdict == ("flag" if moderation.flagged else "allow")
    assert result.label == moderation.verdict
    assert sorted(s.label for s in result.scores) == sorted(policy["categories"])
    assert {s.label: s.score for s in result.scores} == {c.category: c.score for c in moderation.categories}


# --- the queue adds nothing: same items, same answers as the engine in this process -------------------------

PARITY_ITEMS: dict[str, list[dict]] = {
    "classify": [
        {"id": "p-c-0", "text": "I absolutely loved this film."},
        {"id": "p-c-1", "text": "Terrible service, we waited an hour."},
        {"id": "p-c-2", "text": "ok"},
        {"id": "p-c-3", "text": "Ce produit est vraiment excellent. 🙂"},
    ],
    "zero_shot": [
        {"id": "p-z-0", "text": "The striker scored twice.", "labels": ["sports", "finance", "art"]},
        {
            "id": "p-z-1",
            "text": "Stocks fell sharply on Monday.",
            "labels": ["sports", "finance"],
            "multi_label": True,
            "hypothesis_template": "This text is about {}.",
        },
    ],
    "nli": [
        {"id": "p-n-0", "premise": "A dog runs in the park.", "hypothesis": "An animal is outside."},
        {"id": "p-n-1", "premise": "A dog runs in the park.", "hypothesis": "The dog is asleep."},
    ],
    "rerank": [
        {"id": "p-r-0", "query": "capital of France", "documents": ["Paris is in France.", "Bananas.", "Rome."]},
        {"id": "p-r-1", "query": "cats", "documents": ["Cats purr.", "Dogs bark.", "Fish swim."], "top_k": 2},
    ],
    "moderate": [
        {"id": "p-m-0", "text": "Have a lovely day!"},
        {"id": "p-m-1", "text": "Buy cheap pills now at example.com", "policy": "strict"},
    ],
}


@pytest.fixture(scope="module")
def local_engine(registry: Registry) -> Iterator[Engine]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield Engine.load(
            registry, list(registry.models), torch.device("cpu"), load_policies(), DEFAULT_LIMITS, "in-process"
        )
    finally:
        torch.set_num_threads(threads)


def assert_same_answer(queued: ItemResult, local: ItemResult) -> None:
    assert queued.error is None and local.error is None, (queued.error, local.error)
    assert (queued.id, queued.task, queued.model, queued.model_source, queued.revision) == (
        local.id,
        local.task,
        local.model,
        local.model_source,
        local.revision,
    )
    assert queued.label == local.label
    assert queued.truncated == local.truncated
    assert [s.label for s in queued.scores] == [s.label for s in local.scores]
    for q, loc in zip(queued.scores, local.scores, strict=True):
        assert q.score == pytest.approx(loc.score, abs=TOL)
    if local.ranking is None:
        assert queued.ranking is None
    else:
        assert queued.ranking is not None
        assert [d.index for d in queued.ranking] == [d.index for d in local.ranking]
        for q, loc in zip(queued.ranking, local.ranking, strict=True):
            assert q.score == pytest.approx(loc.score, abs=TOL)
    if local.moderation is None:
        assert queued.moderation is None
    else:
        assert queued.moderation is not None
        assert queued.moderation.model_dump(exclude={"categories"}) == local.moderation.model_dump(
            exclude={"categories"}
        )
        for q, loc in zip(queued.moderation.categories, local.moderation.categories, strict=True):
            assert (q.category, q.threshold, q.flagged) == (loc.category, loc.threshold, loc.flagged)
            assert q.score == pytest.approx(loc.score, abs=TOL)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("task", list(PARITY_ITEMS))
def test_queue_results_equal_in_process_engine(
    task: str, client: SiftClient, worker: WorkerProcess, local_engine: Engine
) -> None:
    items = PARITY_ITEMS[task]
    handle = client.submit_many(task, items, job_id=new_job_id(f"parity-{task}"))
    assert handle.rejected == [] and handle.submitted == len(items) and handle.messages == 1
    queued = client.wait(handle, timeout_s=RESULT_TIMEOUT_S)

    local = local_engine.run(Job(job_id=handle.job_id, task=task, items=items, enqueued_at=time.time()))
    assert set(queued) == {item["id"] for item in items}
    for result in local:
        assert_same_answer(queued[result.id], result)


def test_parity_covers_every_task() -> None:
    assert set(PARITY_ITEMS) == {t.value for t in TaskName}
