"""Cross-message batching: items of many messages, gathered per model into token-budget batches.

Real-time traffic arrives as many one-item messages, bulk traffic as large ones; a device wants
full batches of similar lengths either way. The gatherer holds the tokenized items of every
message a worker has taken (and not yet acknowledged), and each :meth:`Gatherer.step` runs ONE
forward batch, so the worker's event loop gets control back between batches to take in new
messages: a real-time item that arrives during a backfill waits for one batch at most, not for a
whole bulk message (none, where the worker runs real-time batches on a thread of their own beside
the bulk one: :meth:`Gatherer.begin_step` plans each lane apart for that).

Which batch: per model, the real-time rows if there are any (alone, so a real-time item pays
for its own forward pass only), else the bulk rows in arrival order, up to ``lookahead``
budgets of tokens, are planned with the padding-aware planner; the batch holding the most
urgent row runs. So the oldest work always progresses (no starvation) while nearby
messages fill the batch. When a step completes every item of a message, the message is handed
back to its owner (``on_done``) to write its results and acknowledge it.

No Celery and no torch here: the Celery side lives in :mod:`workers.consumer`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sift.contract import Lane
from workers.batcher import plan_batches
from workers.engine.engine import Admission, Engine, Row, Unit
from workers.engine.forward import batch_limits

LOOKAHEAD_BUDGETS = 4
"""Rows considered per step, in batch budgets: enough to sort by length, few enough to stay in order."""
HOLD_BULK_S = 0.5
"""Seconds of bulk work (at the measured speed) a worker holds before it pauses its bulk intake. A
resumed intake is heard only when the broker's blocking read in flight returns (0.1 s, sift.broker):
holding several of those keeps a fast model busy meanwhile."""
RATE_SMOOTHING = 0.2
"""Weight of the newest forward pass in each model's running tokens-per-second estimate."""


@dataclass(eq=False)
class Held:
    """A message the worker holds: its job's admission, and the handle its owner acks it with."""

    admission: Admission
    handle: Any
    received: float
    """``time.monotonic()`` when it arrived."""


@dataclass
class _RoleQueue:
    """Units of one model waiting for forward passes, per lane, in arrival order."""

    realtime: list[tuple[Unit, float]] = field(default_factory=list)
    bulk: list[tuple[Unit, float]] = field(default_factory=list)
    tokens: dict[Lane, int] = field(default_factory=lambda: dict.fromkeys(Lane, 0))
    """Unscored tokens (unpadded) of each lane."""

    def oldest(self) -> float | None:
        """Arrival time of the most urgent unit: the first real-time one, else the first bulk one."""
        for lane in (self.realtime, self.bulk):
            if lane:
                return lane[0][1]
        return None


@dataclass
class Step:
    """One forward batch chosen by :meth:`Gatherer.begin_step`."""

    role: str
    rows: list[Row]
    lengths: list[int]
    generation: int
    realtime: bool
    """Real-time rows (they are never batched with bulk rows)."""


@dataclass
class StepReport:
    """What one step did, for logs and metrics."""

    role: str
    items: int
    rows: int
    padded_tokens: int
    seconds: float
    completed: list[Held]


class Gatherer:
    """Holds admitted messages and runs their items through ``engine`` one forward batch at a time."""

    def __init__(self, engine: Engine, lookahead: int = LOOKAHEAD_BUDGETS) -> None:
        self.engine = engine
        self.lookahead = lookahead
        self._queues: dict[str, _RoleQueue] = {role: _RoleQueue() for role in engine.models}
        self._held: dict[int, Held] = {}
        self._planned: set[tuple[int, int]] = set()
        """Rows of steps begun and not finished: (id of the unit, row), never planned twice."""
        self._planned_tokens: dict[str, int] = dict.fromkeys(engine.models, 0)
        self._generation = 0
        self._tokens_per_s: dict[str, float] = {}
        """Per model: unpadded tokens its forward passes get through per second (a running average)."""

    @property
    def held(self) -> int:
        """Messages taken in and not yet handed back."""
        return len(self._held)

    def buffered_tokens(self, lane: Lane | None = None) -> int:
        """Unscored tokens (of one lane, or all): what the worker still has to compute for the messages it holds."""
        lanes = list(Lane) if lane is None else [lane]
        return sum(queue.tokens[one] for queue in self._queues.values() for one in lanes)

    def bulk_work_s(self) -> float | None:
        """Seconds the held bulk rows will take at each model's measured speed; None before any pass is timed."""
        total = 0.0
        for role, queue in self._queues.items():
            tokens = queue.tokens[Lane.BULK]
            if tokens:
                rate = self._tokens_per_s.get(role)
                if rate is None:
                    return None
                total += tokens / rate
        return total

    def holds_enough_bulk(self) -> bool:
        """Whether the held bulk work keeps the device busy without more: ``lookahead`` budgets of tokens,
        and :data:`HOLD_BULK_S` seconds of work once the speed is known. Flow control pauses bulk intake then."""
        if self.buffered_tokens(Lane.BULK) < self.lookahead_tokens():
            return False
        seconds = self.bulk_work_s()
        return seconds is None or seconds >= HOLD_BULK_S

    def lookahead_tokens(self) -> int:
        """Tokens worth holding so the device never waits for the next message: ``lookahead`` of the largest budget."""
        return self.lookahead * max(self.budget(role) for role in self.engine.models)

    def budget(self, role: str) -> int:
        """Padded tokens of one forward pass of ``role`` on this worker's device."""
        return batch_limits(self.engine.models[role]).max_tokens

    def add(self, admission: Admission, units: list[Unit], handle: Any) -> Held | None:
        """Take in one admitted message; returns it at once when it has nothing left to compute."""
        held = Held(admission, handle, time.monotonic())
        if admission.done:
            return held
        self._held[id(admission)] = held
        for unit in units:
            self._enqueue(unit, held.received)
        return None

    def _enqueue(self, unit: Unit, arrival: float) -> None:
        queue = self._queues[unit.role]
        lane = queue.realtime if unit.lane is Lane.REALTIME else queue.bulk
        lane.append((unit, arrival))
        queue.tokens[unit.lane] += sum(len(unit.input_ids[k]) for k in unit.todo)

    def due_in(self, now: float) -> float | None:
        """Seconds until a step should run: 0 when a model has a full batch or waited long enough; None if idle."""
        soonest: float | None = None
        for role, queue in self._queues.items():
            oldest = queue.oldest()
            if oldest is None:
                continue
            spec = self.engine.models[role].spec
            full = sum(queue.tokens.values()) - self._planned_tokens[role] >= self.budget(role)
            if full or len(queue.realtime) + len(queue.bulk) >= spec.max_batch_items:
                return 0.0
            wait = max(0.0, oldest + spec.max_wait_ms / 1000.0 - now)
            soonest = wait if soonest is None else min(soonest, wait)
        return soonest

    def step(self) -> StepReport | None:
        """Run one forward batch of the most urgent model, here and now; None when nothing is held."""
        step = self.begin_step()
        if step is None:
            return None
        began = time.perf_counter()
        self.engine.forward(step.role, step.rows)
        return self.finish_step(step, time.perf_counter() - began)

    def begin_step(self, lane: Lane | None = None) -> Step | None:
        """Choose the next forward batch among the rows no begun step holds (of ``lane`` only, when given); run
        ``engine.forward(step.role, step.rows)``, then :meth:`finish_step` it, or :meth:`cancel_step` one that never
        ran. Between the two, only :meth:`add`, more :meth:`begin_step` and other steps' :meth:`finish_step`.

        Steps of one lane run on one thread in the order begun and finish in that order; a real-time step may run
        on a thread of its own beside a bulk one and finish before it (their rows never belong to the same unit).
        """
        role = self._most_urgent_role(lane)
        if role is None:
            return None
        candidates = self._candidates(role, self._queues[role], lane)
        lengths = [len(unit.input_ids[k]) for unit, k in candidates]
        batches = plan_batches(lengths, batch_limits(self.engine.models[role]))
        batch = sorted(next(b for b in batches if 0 in b))  # candidate 0 is the most urgent row
        step = Step(
            role=role,
            rows=[candidates[i] for i in batch],
            lengths=[lengths[i] for i in batch],
            generation=self._generation,
            realtime=candidates[0][0].lane is Lane.REALTIME,
        )
        self._plan(step, +1)
        return step

    def cancel_step(self, step: Step) -> None:
        """Forget a begun step whose forward pass never ran: its rows can be planned again."""
        if step.generation == self._generation:
            self._plan(step, -1)

    def _plan(self, step: Step, sign: int) -> None:
        keys = {(id(unit), k) for unit, k in step.rows}
        if sign > 0:
            self._planned |= keys
        else:
            self._planned -= keys
        self._planned_tokens[step.role] += sign * sum(step.lengths)

    def finish_step(self, step: Step, seconds: float) -> StepReport:
        """Account for a step whose forward pass ran; hand back the messages it completed."""
        if step.generation != self._generation:
            # Drained while the forward pass ran: its messages were handed back already.
            return StepReport(step.role, 0, 0, 0, seconds, [])
        self._plan(step, -1)
        if seconds > 0:
            rate = sum(step.lengths) / seconds
            previous = self._tokens_per_s.get(step.role)
            self._tokens_per_s[step.role] = (
                rate if previous is None else RATE_SMOOTHING * rate + (1 - RATE_SMOOTHING) * previous
            )
        queue = self._queues[step.role]
        for (unit, _), length in zip(step.rows, step.lengths, strict=True):
            queue.tokens[unit.lane] -= length
        queue.realtime = [entry for entry in queue.realtime if entry[0].todo]
        queue.bulk = [entry for entry in queue.bulk if entry[0].todo]
        # A cascade's unsure items go on to the policy's model, keeping their place in line.
        unsure = {id(unit): unit for unit, _ in step.rows if unit.needs_escalation}
        for unit in self.engine.escalate(unsure.values()):
            held = self._held.get(id(unit.admission))
            self._enqueue(unit, held.received if held is not None else time.monotonic())
        completed = [held for held in self._held.values() if held.admission.done]
        for held in completed:
            del self._held[id(held.admission)]
        return StepReport(
            role=step.role,
            items=len({id(unit) for unit, _ in step.rows}),
            rows=len(step.rows),
            padded_tokens=len(step.rows) * max(step.lengths),
            seconds=seconds,
            completed=completed,
        )

    def drain(self) -> list[Held]:
        """Hand back every held message unfinished (their owner requeues them) and forget them."""
        held = list(self._held.values())
        self._held.clear()
        self._planned.clear()
        self._planned_tokens = dict.fromkeys(self.engine.models, 0)
        self._generation += 1
        self._queues = {role: _RoleQueue() for role in self.engine.models}
        return held

    def _most_urgent_role(self, only: Lane | None = None) -> str | None:
        """The model whose most urgent unplanned row is a real-time one, oldest first; else the oldest bulk one
        (of lane ``only``, when given)."""
        best: tuple[int, float, str] | None = None
        for role, queue in self._queues.items():
            for rank, (kind, lane) in enumerate(((Lane.REALTIME, queue.realtime), (Lane.BULK, queue.bulk))):
                if only not in (None, kind):
                    continue
                arrival = next((at for unit, at in lane if self._unplanned(unit)), None)
                if arrival is not None:
                    key = (rank, arrival, role)
                    best = key if best is None or key < best else best
                    break
        return None if best is None else best[2]

    def _unplanned(self, unit: Unit) -> list[int]:
        """Rows of ``unit`` still to score that no begun step holds."""
        # A copy: the forward thread may be removing this unit's scored rows from todo meanwhile.
        return [k for k in list(unit.todo) if (id(unit), k) not in self._planned]

    def realtime_waiting(self) -> bool:
        """Some real-time row waits that no begun step holds."""
        return any(self._unplanned(unit) for queue in self._queues.values() for unit, _ in queue.realtime)

    def _candidates(self, role: str, queue: _RoleQueue, lane: Lane | None = None) -> list[Row]:
        """Unscored rows of ``role`` (of ``lane`` only, when given), most urgent first, up to ``lookahead`` budgets
        of tokens.

        Real-time rows, when there are any, are batched only with each other: a real-time item
        should pay for its own forward pass, not for a budget's worth of bulk rows beside it.
        """
        limit = self.lookahead * self.budget(role)
        rows: list[Row] = []
        tokens = 0
        realtime = (
            [] if lane is Lane.BULK else [(unit, todo) for unit, _ in queue.realtime if (todo := self._unplanned(unit))]
        )
        bulk = [] if lane is Lane.REALTIME else queue.bulk
        for unit, todo in realtime or ((unit, self._unplanned(unit)) for unit, _ in bulk):
            for k in todo:
                rows.append((unit, k))
                tokens += len(unit.input_ids[k])
            if tokens >= limit:
                break
        return rows
