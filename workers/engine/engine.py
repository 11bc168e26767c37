"""The engine: one job in, one result per item out. Bad items never cost their neighbours."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from prometheus_client import CollectorRegistry

from sift.contract import (
    ErrorCode,
    ErrorInfo,
    Item,
    ItemRejected,
    ItemResult,
    Job,
    Lane,
    Limits,
    ModerateItem,
    TaskName,
    Timings,
    parse_item,
    parse_task,
)
from sift.contract.items import item_key, printable
from sift.telemetry import WorkerMetrics
from workers.engine.forward import NO_RETRY, Encoded, RetryPolicy, encode, score, warm_up
from workers.engine.heads import HeadOutput, Pair, UnsupportedModel, check_supported, head_output, sequences_for
from workers.engine.loading import LoadedModel, add_realtime_session, load_model
from workers.engine.logit_cache import CachedLogits, LogitCache, dedupe, model_key_for
from workers.engine.policy import Cascade, Policy, PolicySet
from workers.engine.registry import Registry

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Admission:
    """One job taken in by a worker: an outcome slot per item, filled as its items are answered."""

    job: Job
    ids: list[str]
    outcomes: list[dict[str, Any]]
    started: float
    """Wall-clock time the worker took the job."""
    clock: float
    """``perf_counter`` at the same moment, for the inference time of its items."""
    pending: int = 0
    """Items still waiting for their model; the job is answered when this reaches 0."""

    @property
    def done(self) -> bool:
        """Every item has its prediction or its error."""
        return self.pending == 0


@dataclass(eq=False)
class Unit:
    """One accepted item's sequences, tokenized, waiting for its forward passes.

    An item is one sequence (classify) or several (one per label, hypothesis or document);
    its rows may be scored in different batches, and it is answered when the last one is.
    """

    admission: Admission
    index: int
    item: Item
    policy: Policy | None
    role: str
    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    truncated: list[bool]
    logits: np.ndarray
    todo: list[int]
    """Rows not scored yet (rows the logit cache answered never are)."""
    failures: dict[int, str] = field(default_factory=dict)
    cache_keys: list[str] = field(default_factory=list)
    """The logit cache's key of each row; empty when the cache is off. Keys, not texts: 44 bytes a row."""
    escalate_to: str | None = None
    """Set on the first stage of a cascade policy: the role that answers the item if this small model is unsure."""
    needs_escalation: bool = False
    """Scored, and unsure: the item waits for :meth:`Engine.escalate` to send it to ``escalate_to``."""

    @property
    def lane(self) -> Lane:
        """The lane of the item's job."""
        return self.admission.job.lane


Row = tuple[Unit, int]
"""One sequence of one unit: the thing a forward pass scores."""


@dataclass
class _Accepted:
    """A valid item and the sequences its model scores."""

    index: int
    item: Item
    policy: Policy | None
    sequences: list[Pair]
    escalate_to: str | None = None


@dataclass
class _Lookup:
    """What the logit cache knows of one job's sequences of one model."""

    keys: list[str]
    """Per sequence, its cache key (empty when the cache is off)."""
    firsts: list[int]
    """Per distinct sequence, the position of its first occurrence."""
    slots: list[int]
    """Per sequence, the index of its distinct sequence in ``firsts`` and ``found``."""
    found: list[CachedLogits | None]
    """Per distinct sequence, its cached logits, or None when it must be scored."""


class Engine:
    """Preloaded models for one device, and the logic that turns jobs into results."""

    def __init__(
        self,
        models: dict[str, LoadedModel],
        registry: Registry,
        policies: PolicySet,
        limits: Limits,
        worker: str,
        retry: RetryPolicy = NO_RETRY,
        *,
        cache: LogitCache | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.retry = retry
        self.models = models
        self.registry = registry
        self.policies = policies
        self.limits = limits
        self.worker = worker
        # Without a cache or metrics (tests, benchmarks, fidelity) the engine runs exactly as before:
        # a disabled cache computes no key, and the metrics go to a registry nobody serves.
        self.cache = cache if cache is not None else LogitCache(None, "sift", ttl_s=1, enabled=False)
        self.metrics = metrics if metrics is not None else WorkerMetrics(CollectorRegistry())
        self.model_keys = {role: model_key_for(loaded) for role, loaded in models.items()}
        """Per role, the identity of everything that shapes its logits: what cache entries are keyed on."""

    @classmethod
    def load(
        cls,
        registry: Registry,
        roles: Iterable[str],
        device: torch.device,
        policies: PolicySet,
        limits: Limits,
        worker: str,
        retry: RetryPolicy = NO_RETRY,
        *,
        cache: LogitCache | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> Engine:
        """Load and warm up ``roles`` on ``device``; raises if a role is not in the registry.

        ``cache``: where logits of sequences already scored are reused (default: none);
        ``metrics``: where cache hits and misses are counted (default: a private registry).
        """
        models = {}
        for role in roles:
            if role not in registry.models:
                raise KeyError(f"role {role!r} is not in the model registry (known: {sorted(registry.models)})")
            models[role] = load_model(role, registry.models[role], device)
            warm_up(models[role])
        return cls(models, registry, policies, limits, worker, retry, cache=cache, metrics=metrics)

    def open_realtime_sessions(self, bulk_niceness: int = 0) -> list[str]:
        """Give each ONNX Runtime model a session for real-time passes beside the one for bulk passes, whose thread
        pool runs ``bulk_niceness`` lower; returns those roles. The loaded session, warmed up at load, serves real
        time: only the new bulk session is warmed up here."""
        roles = []
        for role, loaded in self.models.items():
            if add_realtime_session(loaded, bulk_niceness):
                warm_up(loaded)
                roles.append(role)
        return roles

    def run(self, job: Job) -> list[ItemResult]:
        """Answer every item of ``job``: a prediction or a clear per-item error, in item order."""
        admission, units = self.admit(job)
        while units:  # twice for the items a cascade escalates, else once
            by_role: dict[str, list[Row]] = defaultdict(list)
            for unit in units:
                by_role[unit.role] += [(unit, row) for row in unit.todo]
            for role, rows in by_role.items():
                self.forward(role, rows)
            units = self.escalate(units)
        return self.results(admission)

    def admit(self, job: Job) -> tuple[Admission, list[Unit]]:
        """Take ``job`` in: errors for its bad items (or all, past its deadline), tokenized units for the rest.

        Items the logit cache answers in full are answered here; only units with rows to score are returned.
        """
        admission = Admission(
            job=job,
            ids=[item_key(raw, index) for index, raw in enumerate(job.items)],
            outcomes=[{} for _ in job.items],
            started=time.time(),
            clock=time.perf_counter(),
        )
        if job.deadline is not None and admission.started > job.deadline:
            late_ms = (admission.started - job.deadline) * 1000.0
            expired = _error(ErrorCode.EXPIRED, f"the job's deadline passed {late_ms:.0f} ms before a worker took it")
            for outcome in admission.outcomes:
                outcome["error"] = expired
            return admission, []
        units: list[Unit] = []
        for role, accepted in self._accept(admission).items():
            units += self._tokenize(admission, role, accepted)
        admission.pending = len(units)
        for unit in units:
            if not unit.todo:
                self._answer(unit)
        return admission, [unit for unit in units if unit.todo]

    def forward(self, role: str, rows: list[Row], *, realtime: bool = False) -> list[Unit]:
        """Score ``rows`` of ``role`` in token-budget batches; answer and return the units this completes.

        With the cache on, a sequence that repeats in ``rows`` (a backfill's duplicate texts, messages
        held together) is scored once, and what was scored is stored for the next ones. ``realtime``: on the
        models' real-time sessions (:meth:`open_realtime_sessions`), beside a bulk pass on another thread; two
        calls at once must hold rows of different units.
        """
        loaded = self.models[role]
        keyed = self.cache.active
        keys = [unit.cache_keys[k] for unit, k in rows] if keyed else []
        firsts, slots = dedupe(keys) if keyed else (list(range(len(rows))), list(range(len(rows))))
        unique = [rows[i] for i in firsts] if keyed else rows
        encoded = Encoded(
            [unit.input_ids[k] for unit, k in unique],
            None if "token_type_ids" not in loaded.input_names else [_types(unit, k) for unit, k in unique],
            [unit.truncated[k] for unit, k in unique],
        )
        scored = score(loaded, encoded, self.retry, realtime=realtime)
        if keyed:
            # Rows that failed are NaN: store_keys never caches them, so they are tried again next time.
            self.cache.store_keys([keys[i] for i in firsts], scored.logits, encoded.truncated)
            self.metrics.record_cache(role, hits=0, misses=0, duplicates=len(rows) - len(firsts))
        touched: dict[int, Unit] = {}
        for position, (unit, k) in enumerate(rows):
            slot = slots[position]
            unit.logits[k] = scored.logits[slot]
            if slot in scored.failures:
                unit.failures[k] = scored.failures[slot]
            unit.todo.remove(k)
            touched[id(unit)] = unit
        completed = [unit for unit in touched.values() if not unit.todo]
        for unit in completed:
            self._answer(unit)
        return completed

    def escalate(self, units: Iterable[Unit]) -> list[Unit]:
        """Second stage of a cascade: the units among ``units`` whose small model was unsure, tokenized for the
        policy's model. Returns the new units with rows to score (those the cache answers in full are answered
        here); call it on the thread that admits jobs, after the forward pass that scored ``units``."""
        waiting: dict[tuple[int, str], tuple[Admission, list[_Accepted]]] = {}
        for unit in units:
            if not unit.needs_escalation or unit.escalate_to is None or unit.policy is None:
                continue
            unit.needs_escalation = False
            member = _Accepted(unit.index, unit.item, unit.policy, sequences_for(unit.item, unit.policy))
            waiting.setdefault((id(unit.admission), unit.escalate_to), (unit.admission, []))[1].append(member)
        fresh: list[Unit] = []
        for (_, role), (admission, accepted) in waiting.items():
            for unit in self._tokenize(admission, role, accepted):
                if unit.todo:
                    fresh.append(unit)
                else:
                    self._answer(unit)
        return fresh

    def results(self, admission: Admission) -> list[ItemResult]:
        """The item results of an answered job, in item order."""
        job = admission.job
        timings = Timings(
            queued_ms=max(0.0, (admission.started - job.enqueued_at) * 1000.0),
            inference_ms=(time.perf_counter() - admission.clock) * 1000.0,
        )
        task = printable(job.task)
        return [
            ItemResult(job_id=job.job_id, id=item_id, task=task, timings=timings, worker=self.worker, **outcome)
            for item_id, outcome in zip(admission.ids, admission.outcomes, strict=True)
        ]

    def _accept(self, admission: Admission) -> dict[str, list[_Accepted]]:
        """Validate items; record an error outcome for each rejected one; group the rest by model role."""
        job, ids, outcomes = admission.job, admission.ids, admission.outcomes
        by_role: dict[str, list[_Accepted]] = defaultdict(list)
        try:
            task = parse_task(job.task)
        except ItemRejected as rejected:
            for outcome in outcomes:
                outcome["error"] = rejected.error
            return by_role
        seen: set[str] = set()
        for index, raw in enumerate(job.items):
            try:
                if ids[index] in seen:
                    raise ItemRejected(_error(ErrorCode.DUPLICATE_ID, f"id {ids[index]!r} appears twice in this job"))
                seen.add(ids[index])
                item = parse_item(task, raw, self.limits)
                policy = self._policy_for(item)
                role = self._role_for(task, job.model, policy)
                check_supported(item, self.models[role].info)
                escalate_to = None
                if policy is not None and policy.cascade is not None and job.model is None:
                    # A cascade: the small model answers first; the policy's model only where it is unsure.
                    escalate_to, role = role, self._role_for(task, policy.cascade.model, policy)
                    check_supported(item, self.models[role].info)
                sequences = sequences_for(item, policy)
            except ItemRejected as rejected:
                outcomes[index]["error"] = rejected.error
                continue
            except UnsupportedModel as err:
                outcomes[index]["error"] = _error(ErrorCode.UNSUPPORTED_MODEL, str(err))
                continue
            except Exception as err:  # noqa: BLE001 - validation should have caught it; cost only this item
                outcomes[index]["error"] = _error(ErrorCode.INVALID_INPUT, f"cannot expand this item: {err!r}")
                continue
            by_role[role].append(_Accepted(index, item, policy, sequences, escalate_to))
        return by_role

    def _tokenize(self, admission: Admission, role: str, accepted: list[_Accepted]) -> list[Unit]:
        """A job's sequences of ``role``: looked up in the cache, the rest tokenized in one call, split into units."""
        loaded = self.models[role]
        sequences = [pair for member in accepted for pair in member.sequences]
        lookup = self._look_up(role, sequences)
        known = lookup.found
        # Each distinct sequence the cache does not know is tokenized once; repeats share its token ids.
        missing = [u for u, entry in enumerate(known) if entry is None]
        # (No tokenizer call at all when the cache knows every sequence.)
        to_encode = [sequences[lookup.firsts[u]] for u in missing]
        encoded = _encode_isolating(loaded, to_encode) if to_encode else Encoded([], None, [])
        ids: list[list[int]] = [[] for _ in known]  # cache hits keep no token ids: they are never scored
        types: list[list[int]] | None = None if encoded.token_type_ids is None else [[] for _ in known]
        truncated = [entry is not None and entry.truncated for entry in known]
        for j, u in enumerate(missing):
            ids[u], truncated[u] = encoded.input_ids[j], encoded.truncated[j]
            if types is not None and encoded.token_type_ids is not None:
                types[u] = encoded.token_type_ids[j]
        units, first = [], 0
        for member in accepted:
            slots = lookup.slots[first : first + len(member.sequences)]
            keys = lookup.keys[first : first + len(member.sequences)]
            first += len(member.sequences)
            logits = np.full((len(slots), loaded.info.num_labels), np.nan, dtype=np.float32)
            todo = []
            for k, u in enumerate(slots):
                entry = known[u]
                if entry is None:
                    todo.append(k)
                else:
                    logits[k] = entry.logits
            units.append(
                Unit(
                    admission=admission,
                    index=member.index,
                    item=member.item,
                    policy=member.policy,
                    role=role,
                    input_ids=[ids[u] for u in slots],
                    token_type_ids=None if types is None else [types[u] for u in slots],
                    truncated=[truncated[u] for u in slots],
                    logits=logits,
                    todo=todo,
                    cache_keys=keys,
                    escalate_to=member.escalate_to,
                )
            )
        return units

    def _look_up(self, role: str, sequences: list[Pair]) -> _Lookup:
        """The cache's entries of the distinct ``sequences`` (one MGET); with the cache off, all unknown."""
        if not self.cache.active:
            everything = list(range(len(sequences)))
            return _Lookup(keys=[], firsts=everything, slots=everything, found=[None] * len(sequences))
        keys = self.cache.keys(self.model_keys[role], sequences)
        firsts, slots = dedupe(keys)
        found = self.cache.lookup_keys([keys[i] for i in firsts], self.models[role].info.num_labels)
        hits = sum(entry is not None for entry in found)
        self.metrics.record_cache(role, hits=hits, misses=len(found) - hits)
        return _Lookup(keys=keys, firsts=firsts, slots=slots, found=found)

    def _answer(self, unit: Unit) -> None:
        """Turn a fully scored unit's logits into its item's outcome (or, unsure in a cascade, escalate it)."""
        info = self.models[unit.role].info
        output: HeadOutput | None = None
        error: ErrorInfo | None = None
        if unit.failures:
            first = unit.failures[min(unit.failures)]
            error = _error(ErrorCode.INFERENCE_FAILED, f"the model raised on this item: {first}")
        else:
            try:
                output = head_output(unit.item, unit.logits, info, unit.policy)
            except Exception as err:  # a head bug costs only this item
                log.exception("head failed on an item of %s", unit.role)
                error = _error(ErrorCode.INFERENCE_FAILED, f"post-processing failed: {err!r}")
        cascade = unit.policy.cascade if unit.policy is not None and unit.escalate_to is not None else None
        if cascade is not None and unit.policy is not None:
            # Anything but a confident small-model answer (an error included) goes on to the policy's model.
            unsure = output is None or _unsure(output, cascade)
            self.metrics.record_cascade(unit.policy.name, escalated=unsure)
            if unsure:
                unit.needs_escalation = True  # still pending: escalate() hands it to the policy's model
                return
        outcome = unit.admission.outcomes[unit.index]
        outcome.update({"model": info.role, "model_source": info.source, "revision": info.revision})
        if output is not None:
            outcome.update(output.as_fields())
            outcome["truncated"] = any(unit.truncated)
        else:
            outcome["error"] = error
        unit.admission.pending -= 1

    def _policy_for(self, item: Item) -> Policy | None:
        if not isinstance(item, ModerateItem):
            return None
        name = item.policy or self.policies.default
        if name not in self.policies.policies:
            known = ", ".join(sorted(self.policies.policies))
            raise ItemRejected(_error(ErrorCode.UNKNOWN_POLICY, f"unknown policy {name!r}; known: {known}"))
        return self.policies.policies[name]

    def _role_for(self, task: TaskName, requested: str | None, policy: Policy | None) -> str:
        role = requested or (policy.model if policy else None) or self.registry.default_role(task)
        if role is None or role not in self.registry.models:
            known = ", ".join(sorted(self.registry.models))
            raise ItemRejected(_error(ErrorCode.UNKNOWN_MODEL, f"unknown model {role!r}; known: {known}"))
        if role not in self.models:
            loaded = ", ".join(sorted(self.models))
            raise ItemRejected(
                _error(ErrorCode.MODEL_NOT_LOADED, f"model {role!r} is not loaded on worker {self.worker} ({loaded})")
            )
        return role


def _encode_isolating(loaded: LoadedModel, sequences: list[Pair]) -> Encoded:
    """Tokenize all at once; if the tokenizer raises, retry one by one so only culprits fail."""
    try:
        return encode(loaded, sequences)
    except Exception:
        log.exception("batch tokenization failed in %s; retrying sequence by sequence", loaded.info.role)
    ids: list[list[int]] = []
    types: list[list[int]] | None = [] if "token_type_ids" in loaded.input_names else None
    truncated: list[bool] = []
    for sequence in sequences:
        try:
            one = encode(loaded, [sequence])
        except Exception:  # noqa: BLE001
            one = Encoded([[]], [[]] if types is not None else None, [False])
        ids += one.input_ids
        truncated += one.truncated
        if types is not None and one.token_type_ids is not None:
            types += one.token_type_ids
    return Encoded(ids, types, truncated)


def _unsure(output: HeadOutput, cascade: Cascade) -> bool:
    """Whether a small model's moderation answer lies too close to a threshold to keep."""
    if output.moderation is None:
        return True
    categories = output.moderation.categories
    return cascade.is_unsure([c.score for c in categories], [c.threshold for c in categories])


def _types(unit: Unit, row: int) -> list[int]:
    return unit.token_type_ids[row] if unit.token_type_ids is not None else [0] * len(unit.input_ids[row])


def _error(code: ErrorCode, message: str) -> ErrorInfo:
    return ErrorInfo(code=code, message=message)
