"""Cross-message batching: items of many messages share forward passes, real-time first, none left behind."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sift.contract import DEFAULT_LIMITS, ErrorCode, Job, Lane
from workers.engine.engine import Engine
from workers.engine.policy import load_policies
from workers.engine.registry import load_registry
from workers.gather import HOLD_BULK_S, Gatherer, Held

TEXTS = [
    f"message {i}: the delivery was {'late' if i % 2 else 'early'} and the box was {'x ' * (i % 7)}" for i in range(64)
]


@pytest.fixture(scope="module")
def engine(offline_registry: Path) -> Engine:
    torch.set_num_threads(2)
    registry = load_registry(offline_registry)
    return Engine.load(registry, ["sentiment", "rerank"], torch.device("cpu"), load_policies(), DEFAULT_LIMITS, "t")


def job(job_id: str, texts: list[str], lane: Lane = Lane.REALTIME, **fields: object) -> Job:
    items = [{"id": f"{job_id}-{i}", "text": t} for i, t in enumerate(texts)]
    return Job(job_id=job_id, task="classify", items=items, lane=lane, enqueued_at=time.time(), **fields)


def admit(gatherer: Gatherer, one: Job) -> Held | None:
    admission, units = gatherer.engine.admit(one)
    return gatherer.add(admission, units, handle=one.job_id)


def run_until_idle(gatherer: Gatherer) -> list[tuple[str, int]]:
    """Step until nothing is held; returns (job id, step number) of each completed message, in order."""
    done: list[tuple[str, int]] = []
    for number in range(1, 10_000):
        report = gatherer.step()
        if report is None:
            return done
        done += [(held.handle, number) for held in report.completed]
    raise AssertionError("the gatherer never ran dry")


def test_one_item_messages_share_one_forward_pass_and_match_engine_run(engine: Engine) -> None:
    gatherer = Gatherer(engine)
    # Lengths within min_fill of each other, so the planner has no reason to cut.
    jobs = [job(f"rt{i}", [f"review number {i} says the delivery was late"]) for i in range(12)]
    for one in jobs:
        assert admit(gatherer, one) is None
    assert gatherer.held == 12

    report = gatherer.step()

    assert report is not None and report.role == "sentiment"
    assert report.items == 12, "twelve one-item messages fit one budget: one forward pass"
    assert sorted(held.handle for held in report.completed) == sorted(one.job_id for one in jobs)
    assert gatherer.held == 0 and gatherer.buffered_tokens() == 0
    for held in report.completed:
        gathered = engine.results(held.admission)[0]
        alone = engine.run(held.admission.job)[0]
        assert gathered.label == alone.label
        np.testing.assert_allclose([s.score for s in gathered.scores], [s.score for s in alone.scores], atol=1e-5)


def test_a_real_time_item_goes_in_the_next_batch_ahead_of_a_bulk_backlog(engine: Engine) -> None:
    small = dataclasses.replace(
        engine.models["sentiment"], spec=engine.models["sentiment"].spec.model_copy(update={"cpu_batch_tokens": 256})
    )
    gatherer = Gatherer(
        Engine({**engine.models, "sentiment": small}, engine.registry, engine.policies, engine.limits, "t")
    )
    admit(gatherer, job("bulk-a", TEXTS, Lane.BULK))
    admit(gatherer, job("bulk-b", TEXTS, Lane.BULK))
    admit(gatherer, job("urgent", [TEXTS[0]], Lane.REALTIME))

    first = gatherer.step()

    assert first is not None
    assert [held.handle for held in first.completed] == ["urgent"]
    assert first.items == 1, "a real-time item runs alone, not padded out with bulk rows"
    order = run_until_idle(gatherer)
    assert [job_id for job_id, _ in order] == ["bulk-a", "bulk-b"], "bulk messages finish in arrival order"
    assert order[0][1] < order[1][1]


def test_every_item_of_every_message_is_answered_exactly_once(engine: Engine) -> None:
    gatherer = Gatherer(engine)
    jobs = [job(f"j{i}", TEXTS[i : i + 5 + i % 9], Lane.BULK if i % 3 else Lane.REALTIME) for i in range(20)]
    for one in jobs:
        admit(gatherer, one)
    completed = run_until_idle(gatherer)
    assert sorted(job_id for job_id, _ in completed) == sorted(one.job_id for one in jobs)
    assert gatherer.held == 0 and gatherer.buffered_tokens() == 0


def test_mixed_models_in_one_message_complete_together(engine: Engine) -> None:
    gatherer = Gatherer(engine)
    rerank = Job(
        job_id="mixed",
        task="rerank",
        items=[{"id": "q", "query": "late box", "documents": ["the box was late", "fine", "ok"]}],
        enqueued_at=time.time(),
    )
    admit(gatherer, rerank)
    admit(gatherer, job("classify", TEXTS[:3]))
    done = dict(run_until_idle(gatherer))
    assert set(done) == {"mixed", "classify"}
    ranked = gatherer.engine.run(rerank)[0]
    assert ranked.error is None and len(ranked.ranking) == 3


def test_a_message_with_nothing_to_compute_is_handed_back_at_once(engine: Engine) -> None:
    gatherer = Gatherer(engine)
    expired = job("late", TEXTS[:2], deadline=time.time() - 1)
    held = admit(gatherer, expired)
    assert held is not None and gatherer.held == 0
    results = engine.results(held.admission)
    assert [r.error.code for r in results if r.error] == [ErrorCode.EXPIRED, ErrorCode.EXPIRED]

    invalid = admit(gatherer, job("bad", ["", "   "]))
    assert invalid is not None, "items that all fail validation need no forward pass"


def with_max_wait(engine: Engine, role: str, max_wait_ms: float) -> Engine:
    """A copy of ``engine`` whose ``role`` holds part-full batches up to ``max_wait_ms`` (same weights)."""
    loaded = engine.models[role]
    spec = loaded.spec.model_copy(update={"max_wait_ms": max_wait_ms})
    models = {**engine.models, role: dataclasses.replace(loaded, spec=spec)}
    return Engine(models, engine.registry, engine.policies, engine.limits, engine.worker)


def test_due_in_waits_for_more_items_only_up_to_max_wait(engine: Engine) -> None:
    gatherer = Gatherer(with_max_wait(engine, "sentiment", 50.0))
    assert gatherer.due_in(time.monotonic()) is None, "idle: nothing to schedule"
    admit(gatherer, job("one", [TEXTS[0]]))
    wait = gatherer.due_in(time.monotonic())
    assert wait is not None and 0.04 < wait <= 0.05
    assert gatherer.due_in(time.monotonic() + 1.0) == 0.0, "past max_wait the batch runs part-full"
    while gatherer.buffered_tokens() < gatherer.budget("sentiment"):
        admit(gatherer, job(f"fill{gatherer.held}", [TEXTS[gatherer.held % len(TEXTS)]]))
    assert gatherer.due_in(time.monotonic()) == 0.0, "a full budget runs at once"


def test_shipped_max_wait_runs_a_lone_item_at_once(engine: Engine) -> None:
    assert engine.models["sentiment"].spec.max_wait_ms == 0.0, "the stand-ins batch as the shipped registry does"
    gatherer = Gatherer(engine)
    admit(gatherer, job("one", [TEXTS[0]]))
    assert gatherer.due_in(time.monotonic()) == 0.0, "continuous batching: an idle device takes a lone item now"


def test_drain_hands_back_every_held_message(engine: Engine) -> None:
    gatherer = Gatherer(engine)
    for i in range(3):
        admit(gatherer, job(f"d{i}", TEXTS[:4], Lane.BULK))
    assert sorted(held.handle for held in gatherer.drain()) == ["d0", "d1", "d2"]
    assert gatherer.held == 0 and gatherer.step() is None and gatherer.buffered_tokens() == 0


def test_bulk_intake_pauses_on_lookahead_tokens_then_on_seconds_of_work_once_speed_is_known(engine: Engine) -> None:
    gatherer = Gatherer(engine)
    while gatherer.buffered_tokens(Lane.BULK) < gatherer.lookahead_tokens():
        assert not gatherer.holds_enough_bulk(), "less than the lookahead: keep taking bulk messages"
        admit(gatherer, job(f"b{gatherer.held}", TEXTS[:16], Lane.BULK))
    assert gatherer.bulk_work_s() is None, "no pass timed yet"
    assert gatherer.holds_enough_bulk(), "speed unknown: the lookahead alone decides"

    report = gatherer.step()
    assert report is not None and report.seconds > 0
    seconds = gatherer.bulk_work_s()
    assert seconds is not None and seconds > 0
    # At the measured speed this backlog is worth `seconds`; pausing needs the lookahead and HOLD_BULK_S of work.
    lookahead = gatherer.buffered_tokens(Lane.BULK) >= gatherer.lookahead_tokens()
    assert gatherer.holds_enough_bulk() == (lookahead and seconds >= HOLD_BULK_S)
    while not gatherer.holds_enough_bulk():
        admit(gatherer, job(f"b{gatherer.held}", TEXTS[:16], Lane.BULK))
    assert (gatherer.bulk_work_s() or 0.0) >= HOLD_BULK_S
    gatherer.drain()
    assert gatherer.bulk_work_s() == 0.0 and not gatherer.holds_enough_bulk()


def small_budget(engine: Engine, tokens: int = 256) -> Engine:
    """``engine`` with a sentiment budget of ``tokens``, so a few messages make many passes."""
    loaded = engine.models["sentiment"]
    small = dataclasses.replace(loaded, spec=loaded.spec.model_copy(update={"cpu_batch_tokens": tokens}))
    return Engine({**engine.models, "sentiment": small}, engine.registry, engine.policies, engine.limits, "t")


def test_passes_planned_ahead_never_share_a_row_and_answer_like_engine_run(engine: Engine) -> None:
    gatherer = Gatherer(small_budget(engine))
    jobs = [job(f"b{i}", TEXTS[i * 16 : (i + 1) * 16], Lane.BULK) for i in range(4)]
    for one in jobs:
        admit(gatherer, one)
    completed: list[Held] = []
    while True:
        # Two passes begun before either runs, as the worker hands them to its forward thread.
        first, second = gatherer.begin_step(), gatherer.begin_step()
        if first is None:
            break
        steps = [first] if second is None else [first, second]
        rows = [(id(unit), k) for step in steps for unit, k in step.rows]
        assert len(rows) == len(set(rows)), "a row planned twice would be scored twice"
        for step in steps:
            gatherer.engine.forward(step.role, step.rows)
            completed += gatherer.finish_step(step, 0.01).completed
    assert sorted(held.handle for held in completed) == sorted(one.job_id for one in jobs)
    assert gatherer.held == 0 and gatherer.buffered_tokens() == 0
    for held in completed:
        for gathered, alone in zip(engine.results(held.admission), engine.run(held.admission.job), strict=True):
            assert gathered.label == alone.label
            np.testing.assert_allclose([s.score for s in gathered.scores], [s.score for s in alone.scores], atol=1e-5)


def test_a_cancelled_pass_gives_its_rows_back_and_real_time_rows_are_seen_waiting(engine: Engine) -> None:
    gatherer = Gatherer(small_budget(engine))
    admit(gatherer, job("bulk", TEXTS, Lane.BULK))
    running, queued = gatherer.begin_step(), gatherer.begin_step()
    assert running is not None and queued is not None and not queued.realtime
    assert not gatherer.realtime_waiting()

    admit(gatherer, job("urgent", [TEXTS[0]], Lane.REALTIME))
    assert gatherer.realtime_waiting()
    gatherer.cancel_step(queued)  # what the worker does with a bulk pass that has not started
    urgent = gatherer.begin_step()
    assert urgent is not None and urgent.realtime and [u.admission.job.job_id for u, _ in urgent.rows] == ["urgent"]
    assert not gatherer.realtime_waiting()
    replanned = gatherer.begin_step()
    assert replanned is not None and {(id(u), k) for u, k in replanned.rows} & {(id(u), k) for u, k in queued.rows}

    done: list[str] = []
    for step in (running, urgent, replanned):
        gatherer.engine.forward(step.role, step.rows)
        done += [held.handle for held in gatherer.finish_step(step, 0.01).completed]
    assert done == ["urgent"], "the real-time item is answered by its own pass, ahead of the bulk message"
    assert [job_id for job_id, _ in run_until_idle(gatherer)] == ["bulk"]
    assert gatherer.held == 0 and gatherer.buffered_tokens() == 0


def test_due_in_counts_only_rows_no_pass_holds(engine: Engine) -> None:
    gatherer = Gatherer(with_max_wait(small_budget(engine), "sentiment", 50.0))
    admit(gatherer, job("bulk", TEXTS[:40], Lane.BULK))
    assert gatherer.due_in(time.monotonic()) == 0.0, "more than a budget held: due now"
    while gatherer.begin_step() is not None:
        pass
    wait = gatherer.due_in(time.monotonic())
    assert wait is not None and wait > 0, "everything is planned: nothing more is due before max_wait"


def test_a_real_time_pass_runs_and_is_answered_beside_a_bulk_pass_still_running(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    gatherer = Gatherer(small_budget(engine))
    admit(gatherer, job("bulk", TEXTS[:32], Lane.BULK))
    assert gatherer.begin_step(Lane.REALTIME) is None, "no real-time row waits"
    bulk = gatherer.begin_step(Lane.BULK)
    assert bulk is not None and not bulk.realtime
    admit(gatherer, job("urgent", [TEXTS[40]], Lane.REALTIME))
    next_bulk = gatherer.begin_step(Lane.BULK)
    assert next_bulk is not None and not next_bulk.realtime, "the bulk thread's lane plans bulk rows only"
    gatherer.cancel_step(next_bulk)
    urgent = gatherer.begin_step(Lane.REALTIME)
    assert urgent is not None and urgent.realtime and [u.admission.job.job_id for u, _ in urgent.rows] == ["urgent"]

    model = gatherer.engine.models["sentiment"].model
    real_forward = model.forward
    urgent_done = threading.Event()
    waited: list[bool] = []

    def forward(**inputs: torch.Tensor) -> object:
        if threading.current_thread().name == "bulk":
            # The bulk pass cannot finish before the real-time one has: they must run side by side.
            waited.append(urgent_done.wait(30))
        return real_forward(**inputs)

    monkeypatch.setattr(model, "forward", forward)
    bulk_pass = threading.Thread(target=gatherer.engine.forward, args=(bulk.role, bulk.rows), name="bulk")
    bulk_pass.start()
    gatherer.engine.forward(urgent.role, urgent.rows, realtime=True)
    answered = gatherer.finish_step(urgent, 0.01).completed
    urgent_done.set()
    bulk_pass.join(30)
    assert waited and all(waited), "the real-time pass ran while the bulk pass was held mid-way"
    assert [held.handle for held in answered] == ["urgent"], "answered while the bulk pass still ran"

    completed = answered + gatherer.finish_step(bulk, 0.01).completed
    monkeypatch.undo()
    while (step := gatherer.step()) is not None:
        completed += step.completed
    assert [held.handle for held in completed] == ["urgent", "bulk"]
    assert gatherer.held == 0 and gatherer.buffered_tokens() == 0
    for held in completed:
        for gathered, alone in zip(engine.results(held.admission), engine.run(held.admission.job), strict=True):
            assert gathered.label == alone.label
            np.testing.assert_allclose([s.score for s in gathered.scores], [s.score for s in alone.scores], atol=1e-5)
