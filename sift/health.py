"""``sift health``: is Redis up, are the queues within their bounds, and are workers alive to drain them?

A deployment is unhealthy when Redis cannot be reached, when no live worker consumes its queues, when
real-time messages wait and no live worker consumes that queue, or when a queue is at its bound
(producers then block or fail). Dead letters, a nearly full queue and a lane without workers are
warnings: they need a person, but nothing is stuck yet. Bulk messages without a consumer are a warning
only, because a worker stops consuming the bulk queue while it holds enough bulk work.

Workers are found with Celery's broadcast ping, then asked which queues they consume, so workers of
other deployments on the same Redis are not counted. A worker answers control messages between forward
batches: one stuck in a batch longer than ``--timeout`` does not answer in time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
from kombu.exceptions import OperationalError
from pydantic import BaseModel, ConfigDict, computed_field
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sift.broker import make_celery_app
from sift.contract import Lane
from sift.keys import dead_letters_key, queue_name
from sift.settings import SiftSettings, redact_url

DEFAULT_TIMEOUT_S = 2.0
NEAR_FULL = 0.8
"""A queue this full (of its bound) is a warning."""


class LaneHealth(BaseModel):
    """One lane's queue: its depth, its bound, and the live workers consuming it."""

    model_config = ConfigDict(frozen=True)

    lane: Lane
    queue: str
    depth: int
    bound: int
    consumers: list[str]


class WorkerHealth(BaseModel):
    """A worker that answered the ping, and the queues it consumes (empty: it did not say)."""

    model_config = ConfigDict(frozen=True)

    name: str
    queues: list[str]


class HealthReport(BaseModel):
    """What ``sift health`` found; :attr:`problems` make it unhealthy, :attr:`warnings` do not."""

    model_config = ConfigDict(frozen=True)

    redis_url: str
    """The Redis URL with its password redacted."""
    redis_ok: bool
    lanes: list[LaneHealth] = []
    dead_letters: int | None = None
    workers: list[WorkerHealth] = []
    """Live workers consuming this deployment's queues."""
    other_workers: list[str] = []
    """Live workers on the same Redis that consume none of this deployment's queues."""
    problems: list[str] = []
    warnings: list[str] = []

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented use on a property
    @property
    def healthy(self) -> bool:
        """No problem found."""
        return not self.problems


def check_health(settings: SiftSettings, timeout_s: float = DEFAULT_TIMEOUT_S) -> HealthReport:
    """Look at Redis, the queues, the dead letters and the workers of ``settings``' deployment."""
    url = settings.require_redis_url()
    where = redact_url(url)
    client = redis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, **settings.redis_tls()
    )
    queues = {lane: queue_name(settings.queue_prefix, lane) for lane in Lane}
    try:
        pipe = client.pipeline(transaction=False)
        pipe.ping()
        for queue in queues.values():
            pipe.llen(queue)
        pipe.llen(dead_letters_key(settings.queue_prefix))
        _pong, *lengths, dead = pipe.execute()
    except redis.RedisError as err:
        return HealthReport(redis_url=where, redis_ok=False, problems=[f"cannot reach Redis at {where}: {err}"])
    finally:
        client.close()
    depths = dict(zip(queues, (int(n) for n in lengths), strict=True))
    try:
        consumed = _live_workers(settings, timeout_s)
    except (redis.RedisError, OperationalError) as err:
        return HealthReport(redis_url=where, redis_ok=False, problems=[f"cannot reach the broker at {where}: {err}"])
    return judge(settings, where, depths, int(dead), consumed)


def judge(
    settings: SiftSettings,
    redis_url: str,
    depths: Mapping[Lane, int],
    dead_letters: int,
    consumed: Mapping[str, list[str]],
) -> HealthReport:
    """The verdict on what was read: queue depths, dead letters, and each live worker's queues."""
    queues = {lane: queue_name(settings.queue_prefix, lane) for lane in Lane}
    ours = set(queues.values())
    workers = [WorkerHealth(name=n, queues=q) for n, q in sorted(consumed.items()) if not q or ours & set(q)]
    others = sorted(n for n, q in consumed.items() if q and not ours & set(q))
    problems: list[str] = []
    warnings: list[str] = []
    if not workers:
        seen = f" ({len(others)} other worker(s) answered, consuming other queues)" if others else ""
        problems.append(f"no live worker consumes {' or '.join(queues.values())}{seen}")
    lanes = []
    for lane, queue in queues.items():
        depth, bound = depths[lane], settings.queue_bound(lane)
        consumers = [w.name for w in workers if queue in w.queues or not w.queues]
        lanes.append(LaneHealth(lane=lane, queue=queue, depth=depth, bound=bound, consumers=consumers))
        if depth >= bound:
            problems.append(f"queue {queue} is full ({depth}/{bound} messages): producers block or fail")
        elif depth >= NEAR_FULL * bound:
            warnings.append(f"queue {queue} is {depth / bound:.0%} full ({depth}/{bound} messages)")
        if not consumers and workers:
            waiting = f"{depth} message(s) wait in {queue} and no live worker consumes it"
            if depth and lane is Lane.REALTIME:
                problems.append(waiting)
            elif depth:
                # Workers stop taking bulk messages while they hold enough bulk work: normal for a while.
                warnings.append(
                    f"{waiting} right now (workers pause bulk intake while busy; if it lasts, none serves it)"
                )
            else:
                warnings.append(f"no live worker consumes {queue}")
    if dead_letters:
        warnings.append(f"{dead_letters} dead letter(s): see `sift dead list`")
    return HealthReport(
        redis_url=redis_url,
        redis_ok=True,
        lanes=lanes,
        dead_letters=dead_letters,
        workers=workers,
        other_workers=others,
        problems=problems,
        warnings=warnings,
    )


def _live_workers(settings: SiftSettings, timeout_s: float) -> dict[str, list[str]]:
    """Worker name → queues it consumes, for every worker that answers a ping within ``timeout_s``."""
    app = make_celery_app(settings)
    try:
        replies: list[dict[str, Any]] = app.control.ping(timeout=timeout_s) or []
        names = sorted({name for reply in replies for name in reply})
        if not names:
            return {}
        # limit: return as soon as every pinged worker has answered, instead of waiting out the timeout.
        inspect = app.control.inspect(destination=names, timeout=timeout_s, limit=len(names))
        active: dict[str, list[dict[str, Any]]] = inspect.active_queues() or {}
        return {name: sorted(str(q.get("name")) for q in active.get(name) or []) for name in names}
    finally:
        app.close()


def print_health(console: Console, report: HealthReport) -> None:
    """The report as a table, then the verdict and any warnings."""
    table = Table(title="sift health", show_lines=False)
    table.add_column("check")
    table.add_column("state")
    table.add_column("detail", overflow="fold")
    redis_state = "[green]ok[/]" if report.redis_ok else "[red]down[/]"
    table.add_row("redis", redis_state, escape(report.redis_url))
    for lane in report.lanes:
        colour = "red" if lane.depth >= lane.bound else "yellow" if lane.depth >= NEAR_FULL * lane.bound else "green"
        consumers = f"{len(lane.consumers)} worker(s)" if lane.consumers else "no worker"
        table.add_row(
            f"queue {lane.lane.value}", f"[{colour}]{lane.depth}/{lane.bound}[/]", f"{escape(lane.queue)}, {consumers}"
        )
    if report.dead_letters is not None:
        colour = "yellow" if report.dead_letters else "green"
        table.add_row(
            "dead letters", f"[{colour}]{report.dead_letters}[/]", "see `sift dead list`" if report.dead_letters else ""
        )
    if report.redis_ok:
        names = "\n".join(escape(w.name) for w in report.workers) or "none"
        table.add_row("workers", f"[{'green' if report.workers else 'red'}]{len(report.workers)}[/]", names)
    console.print(table)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    if report.healthy:
        console.print("[bold green]healthy[/]")
    else:
        console.print(f"[bold red]unhealthy:[/] {escape('; '.join(report.problems))}")
