"""The engine: one job in, one result per item out. Bad items never cost their neighbours."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from sift.contract import (
    ErrorCode,
    ErrorInfo,
    Item,
    ItemRejected,
    ItemResult,
    Job,
    Limits,
    ModerateItem,
    TaskName,
    Timings,
    parse_item,
    parse_task,
)
from sift.contract.items import item_key, printable
from workers.engine.forward import NO_RETRY, Encoded, RetryPolicy, encode, score, warm_up
from workers.engine.heads import Pair, UnsupportedModel, check_supported, head_output, sequences_for
from workers.engine.loading import LoadedModel, load_model
from workers.engine.policy import Policy, PolicySet
from workers.engine.registry import Registry

log = logging.getLogger(__name__)


@dataclass
class _Accepted:
    """A valid item waiting for its model: which rows of the role's sequences are its own."""

    index: int
    item: Item
    policy: Policy | None
    first_row: int = 0
    rows: int = 0


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
    ) -> None:
        self.retry = retry
        self.models = models
        self.registry = registry
        self.policies = policies
        self.limits = limits
        self.worker = worker

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
    ) -> Engine:
        """Load and warm up ``roles`` on ``device``; raises if a role is not in the registry."""
        models = {}
        for role in roles:
            if role not in registry.models:
                raise KeyError(f"role {role!r} is not in the model registry (known: {sorted(registry.models)})")
            models[role] = load_model(role, registry.models[role], device)
            warm_up(models[role])
        return cls(models, registry, policies, limits, worker, retry)

    def run(self, job: Job) -> list[ItemResult]:
        """Answer every item of ``job``: a prediction or a clear per-item error, in item order."""
        started = time.time()
        clock = time.perf_counter()
        outcomes: list[dict[str, Any]] = [{} for _ in job.items]
        ids = [item_key(raw, index) for index, raw in enumerate(job.items)]
        if job.deadline is not None and started > job.deadline:
            late_ms = (started - job.deadline) * 1000.0
            expired = _error(ErrorCode.EXPIRED, f"the job's deadline passed {late_ms:.0f} ms before a worker took it")
            for outcome in outcomes:
                outcome["error"] = expired
        else:
            for role, members in self._accept(job, ids, outcomes).items():
                self._infer(self.models[role], members, outcomes)
        timings = Timings(
            queued_ms=max(0.0, (started - job.enqueued_at) * 1000.0),
            inference_ms=(time.perf_counter() - clock) * 1000.0,
        )
        return [
            ItemResult(
                job_id=job.job_id, id=ids[i], task=printable(job.task), timings=timings, worker=self.worker, **outcome
            )
            for i, outcome in enumerate(outcomes)
        ]

    def _accept(self, job: Job, ids: list[str], outcomes: list[dict[str, Any]]) -> dict[str, list[_Accepted]]:
        """Validate items; record an error outcome for each rejected one; group the rest by model role."""
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
            except ItemRejected as rejected:
                outcomes[index]["error"] = rejected.error
                continue
            except UnsupportedModel as err:
                outcomes[index]["error"] = _error(ErrorCode.UNSUPPORTED_MODEL, str(err))
                continue
            by_role[role].append(_Accepted(index, item, policy))
        return by_role

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

    def _infer(self, loaded: LoadedModel, members: list[_Accepted], outcomes: list[dict[str, Any]]) -> None:
        """Score every member's sequences in shared batches and fill in their outcomes."""
        sequences: list[Pair] = []
        expanded: list[_Accepted] = []
        for member in members:
            try:
                member_sequences = sequences_for(member.item, member.policy)
            except Exception as err:  # noqa: BLE001 - validation should have caught it; cost only this item
                outcomes[member.index]["error"] = _error(ErrorCode.INVALID_INPUT, f"cannot expand this item: {err!r}")
                continue
            member.first_row, member.rows = len(sequences), len(member_sequences)
            sequences += member_sequences
            expanded.append(member)
        members = expanded
        if not members:
            return
        encoded = _encode_isolating(loaded, sequences)
        scored = score(loaded, encoded, self.retry)
        info = loaded.info
        identity = {"model": info.role, "model_source": info.source, "revision": info.revision}
        for member in members:
            rows = range(member.first_row, member.first_row + member.rows)
            outcome = outcomes[member.index]
            outcome.update(identity)
            failed = [scored.failures[r] for r in rows if r in scored.failures]
            if failed:
                outcome["error"] = _error(ErrorCode.INFERENCE_FAILED, f"the model raised on this item: {failed[0]}")
                continue
            head = head_output(member.item, scored.logits[rows.start : rows.stop], info, member.policy)
            outcome.update(head.as_fields())
            outcome["truncated"] = any(encoded.truncated[r] for r in rows)


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


def _error(code: ErrorCode, message: str) -> ErrorInfo:
    return ErrorInfo(code=code, message=message)
