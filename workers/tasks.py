"""Register ``sift.infer`` on a worker's Celery app, bound to its preloaded engine, store and dead letters."""

from __future__ import annotations

from typing import Any

from celery import Celery, Task

from sift.dead_letters import DeadLetters
from sift.keys import INFER_TASK
from sift.results_store import ResultStore
from workers.consumer import GatheringTask
from workers.engine.engine import Engine
from workers.gather import Gatherer


def register_tasks(
    app: Celery, engine: Engine, store: ResultStore, dead_letters: DeadLetters, bulk_queue: str | None = None
) -> Task:
    """Register ``sift.infer``; ``bulk_queue`` is the bulk lane's queue when this worker consumes it."""

    @app.task(  # type: ignore[untyped-decorator]  # celery ships no type hints
        name=INFER_TASK, bind=True, base=GatheringTask, acks_late=True, reject_on_worker_lost=True
    )
    def infer(self: GatheringTask, job: Any = None, **unexpected: Any) -> dict[str, int]:
        return GatheringTask.run(self, job, **unexpected)

    infer.gatherer = Gatherer(engine)
    infer.store = store
    infer.dead_letters = dead_letters
    infer.bulk_queue = bulk_queue
    return infer
