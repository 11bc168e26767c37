"""A cache of model logits per input sequence, shared by every worker through Redis.

An entry is keyed by the model's identity (source, revision, dtype, quantization, max length) and
the sequence (text, text_pair) it scored. Heads (labels, policy thresholds, hypothesis templates) run
after the cache, so zero-shot jobs whose hypotheses coincide share entries, and a changed policy never
serves a stale verdict. Entries expire ``ttl_s`` after they were computed; a hit does not extend them.

The cache is an optimisation only: a Redis error never fails inference. It is logged (at most once a
minute), the cache is bypassed for ``retry_after_s``, and every lookup meanwhile is a miss.

No torch here: the module is importable (and testable) without the worker extra.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import redis

from sift.settings import SiftSettings

if TYPE_CHECKING:
    from workers.engine.loading import LoadedModel

log = logging.getLogger(__name__)

Pair = tuple[str, str | None]
"""A sequence to score: a text, or a (text, text_pair) pair (the engine's ``heads.Pair``)."""

FORMAT_VERSION = 1
"""Part of every key: bumping it orphans entries written in an older value format (they expire)."""
ERROR_LOG_INTERVAL_S = 60.0
_VALUE_DTYPE = np.dtype("<f4")  # little-endian float32 whatever the worker's architecture
_T = TypeVar("_T")
_H = TypeVar("_H", bound=Hashable)


@dataclass(frozen=True)
class CachedLogits:
    """One sequence's logits row (float32) and whether its tokens were cut at ``max_length``."""

    logits: np.ndarray
    truncated: bool


def model_cache_key(*, source: str, revision: str, dtype: str, quantize: str, max_length: int) -> str:
    """Identity of everything that shapes a model's logits, as a short hex digest.

    ``dtype`` is the resolved dtype (``torch.bfloat16``, not ``auto``); ``revision`` the commit or
    local fingerprint that :func:`workers.engine.loading.load_model` reports.
    """
    identity = {
        "v": FORMAT_VERSION,
        "source": source,
        "revision": revision,
        "dtype": dtype,
        "quantize": quantize,
        "max_length": max_length,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def model_key_for(loaded: LoadedModel) -> str:
    """:func:`model_cache_key` of a loaded model."""
    return model_cache_key(
        source=loaded.info.source,
        revision=loaded.info.revision,
        dtype=str(loaded.dtype),
        quantize=loaded.spec.quantize,
        max_length=loaded.max_length,
    )


def sequence_key(prefix: str, model_key: str, sequence: Pair) -> str:
    """The Redis key of one sequence's logits under one model."""
    text, pair = sequence
    # JSON keeps (text, None) apart from (text, "") and from texts that contain a separator;
    # ensure_ascii escapes lone surrogates instead of failing to encode them.
    canonical = json.dumps([model_key, text, pair], ensure_ascii=True)
    # 128 bits: a collision is as unlikely as with all 256, and every key byte costs Redis memory.
    return f"{prefix}:logits:{hashlib.sha256(canonical.encode()).hexdigest()[:32]}"


def encode_value(logits: np.ndarray, truncated: bool) -> bytes:
    """One flag byte (truncated) followed by the row as little-endian float32."""
    row = np.ascontiguousarray(logits, dtype=_VALUE_DTYPE).reshape(-1)
    return (b"\x01" if truncated else b"\x00") + row.tobytes()


def decode_value(raw: bytes, num_labels: int | None = None) -> CachedLogits | None:
    """The entry in ``raw``, or None when it is not one this format wrote (or not ``num_labels`` wide)."""
    body = raw[1:]
    if len(raw) < 1 + _VALUE_DTYPE.itemsize or raw[0] not in (0, 1) or len(body) % _VALUE_DTYPE.itemsize:
        return None
    row = np.frombuffer(body, dtype=_VALUE_DTYPE).astype(np.float32)
    if (num_labels is not None and row.size != num_labels) or not np.isfinite(row).all():
        return None
    return CachedLogits(row, raw[0] == 1)


def dedupe(values: Sequence[_H]) -> tuple[list[int], list[int]]:
    """Positions of the first occurrence of each distinct value, and for every value the index of its first.

    ``dedupe(["a", "b", "a"]) == ([0, 1], [0, 1, 0])``: score ``values[0]`` and ``values[1]``, then
    row ``slots[i]`` of those scores answers ``values[i]``.
    """
    slot_of: dict[_H, int] = {}
    firsts: list[int] = []
    slots: list[int] = []
    for position, value in enumerate(values):
        if value not in slot_of:
            slot_of[value] = len(firsts)
            firsts.append(position)
        slots.append(slot_of[value])
    return firsts, slots


def cache_client(settings: SiftSettings, url: str | None = None, timeout_s: float = 0.5) -> redis.Redis:
    """A Redis client for the cache, with short timeouts: a stalled Redis costs a batch ``timeout_s``, not forever.

    ``url`` is a Redis of the cache's own (default: ``settings``' Redis); it takes the same TLS settings.
    """
    if url is not None:
        settings = settings.model_copy(update={"redis_url": url})
    return redis.Redis.from_url(
        settings.require_redis_url(),
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        **settings.redis_tls(),
    )


@dataclass
class Merged:
    """Per requested sequence, in request order: logits rows, truncation flags and failures."""

    logits: np.ndarray
    truncated: list[bool]
    failures: dict[int, str]


@dataclass
class CachePlan:
    """Which of a batch's sequences are known, and which (each once) must still be scored."""

    sequences: list[Pair]
    """Every sequence asked for, in order (duplicates included)."""
    slots: list[int]
    """``slots[i]``: index in ``unique`` of ``sequences[i]``."""
    unique: list[Pair]
    found: list[CachedLogits | None]
    """Per unique sequence: the cached entry, or None when it must be scored."""
    num_labels: int
    looked_up: bool = True
    """False when the cache is off: nothing was looked up, so nothing counts as a miss."""
    missing_slots: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.missing_slots = [u for u, entry in enumerate(self.found) if entry is None]

    @property
    def missing(self) -> list[Pair]:
        """The sequences to score, each once, in first-seen order."""
        return [self.unique[u] for u in self.missing_slots]

    @property
    def hits(self) -> int:
        """Distinct sequences served from the cache."""
        return len(self.unique) - len(self.missing_slots)

    @property
    def misses(self) -> int:
        """Distinct sequences looked up in the cache and not found (0 when the cache is off)."""
        return len(self.missing_slots) if self.looked_up else 0

    @property
    def duplicates(self) -> int:
        """Sequences that repeat an earlier one of the same batch (scored or looked up once)."""
        return len(self.sequences) - len(self.unique)

    def cached_only(self) -> Merged:
        """:meth:`merge` when nothing is :attr:`missing`: every row came from the cache."""
        return self.merge(np.empty((0, self.num_labels), dtype=np.float32), [], {})

    def merge(self, logits: np.ndarray, truncated: Sequence[bool], failures: Mapping[int, str]) -> Merged:
        """Combine cached rows with the scores of :attr:`missing` (rows, flags and failures indexed as ``missing``)."""
        if logits.shape != (len(self.missing_slots), self.num_labels) or len(truncated) != len(self.missing_slots):
            raise ValueError(
                f"expected logits of shape {(len(self.missing_slots), self.num_labels)} and as many truncation "
                f"flags, got {logits.shape} and {len(truncated)}"
            )
        unique_logits = np.empty((len(self.unique), self.num_labels), dtype=np.float32)
        unique_truncated = [False] * len(self.unique)
        for u, entry in enumerate(self.found):
            if entry is not None:
                unique_logits[u] = entry.logits
                unique_truncated[u] = entry.truncated
        unique_failures: dict[int, str] = {}
        for j, u in enumerate(self.missing_slots):
            unique_logits[u] = logits[j]
            unique_truncated[u] = bool(truncated[j])
            if j in failures:
                unique_failures[u] = failures[j]
        return Merged(
            logits=unique_logits[self.slots],
            truncated=[unique_truncated[u] for u in self.slots],
            failures={i: unique_failures[u] for i, u in enumerate(self.slots) if u in unique_failures},
        )


class LogitCache:
    """Logits of sequences already scored, in Redis, for ``ttl_s`` seconds after they were computed."""

    def __init__(
        self,
        client: redis.Redis | None,
        prefix: str,
        ttl_s: int,
        enabled: bool = True,
        *,
        retry_after_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s < 1:
            raise ValueError(f"the cache TTL must be at least 1 s, not {ttl_s}")
        self._redis = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.enabled = enabled
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._bypass_until = float("-inf")
        self._last_error_log = float("-inf")
        self.hits = 0
        """Distinct sequences found, since start."""
        self.misses = 0
        """Distinct sequences looked up and not found (Redis errors included), since start."""
        self.errors = 0
        """Redis calls that failed."""

    @property
    def active(self) -> bool:
        """Whether lookups go to Redis at all (enabled, with a client)."""
        return self.enabled and self._redis is not None

    @property
    def hit_rate(self) -> float:
        """Hits over lookups since start; 0.0 before the first lookup."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def keys(self, model_key: str, sequences: Sequence[Pair]) -> list[str]:
        """The Redis key of each sequence under ``model_key`` (for callers that keep keys, not texts)."""
        return [sequence_key(self.prefix, model_key, sequence) for sequence in sequences]

    def lookup(
        self, model_key: str, sequences: Sequence[Pair], num_labels: int | None = None
    ) -> list[CachedLogits | None]:
        """Cached entries of ``sequences`` (None for each miss), in one MGET round trip.

        An entry that is not ``num_labels`` wide (when given) or not readable counts as a miss.
        """
        return self.lookup_keys(self.keys(model_key, sequences), num_labels)

    def lookup_keys(self, keys: Sequence[str], num_labels: int | None = None) -> list[CachedLogits | None]:
        """:meth:`lookup` by the keys :meth:`keys` gave."""
        if not self.active or not keys:
            return [None] * len(keys)
        raw = self._call(lambda r: r.mget(list(keys)))
        found: list[CachedLogits | None] = (
            [None] * len(keys) if raw is None else [_decode(value, num_labels) for value in raw]
        )
        hits = sum(entry is not None for entry in found)
        self.hits += hits
        self.misses += len(found) - hits
        return found

    def store(self, model_key: str, sequences: Sequence[Pair], logits: np.ndarray, truncated: Sequence[bool]) -> int:
        """Cache each finite row of ``logits`` under its sequence, in one pipelined round trip; returns rows sent.

        Rows with NaN or infinity (sequences whose forward pass failed) are never cached.
        """
        return self.store_keys(self.keys(model_key, sequences), logits, truncated)

    def store_keys(self, keys: Sequence[str], logits: np.ndarray, truncated: Sequence[bool]) -> int:
        """:meth:`store` by the keys :meth:`keys` gave."""
        if len(keys) != len(logits) or len(keys) != len(truncated):
            raise ValueError(f"{len(keys)} sequences, {len(logits)} logits rows and {len(truncated)} truncation flags")
        if not self.active or not keys:
            return 0
        rows = [i for i in range(len(keys)) if np.isfinite(logits[i]).all()]
        if not rows:
            return 0

        def write(client: redis.Redis) -> int:
            pipe = client.pipeline(transaction=False)
            for i in rows:
                pipe.set(keys[i], encode_value(logits[i], bool(truncated[i])), ex=self.ttl_s)
            pipe.execute()
            return len(rows)

        return self._call(write) or 0

    def plan(self, model_key: str, sequences: Sequence[Pair], num_labels: int) -> CachePlan:
        """Deduplicate ``sequences``, look the distinct ones up, and say which must still be scored."""
        firsts, slots = dedupe(sequences)
        unique = [sequences[i] for i in firsts]
        found = self.lookup(model_key, unique, num_labels)
        return CachePlan(list(sequences), slots, unique, found, num_labels, looked_up=self.active)

    def _call(self, operation: Callable[[redis.Redis], _T]) -> _T | None:
        """Run ``operation`` unless the cache is bypassed after an error; None when it fails or is skipped."""
        now = self._clock()
        if self._redis is None or now < self._bypass_until:
            return None
        try:
            return operation(self._redis)
        except redis.RedisError as err:
            self.errors += 1
            self._bypass_until = now + self.retry_after_s
            if now - self._last_error_log >= ERROR_LOG_INTERVAL_S:
                self._last_error_log = now
                log.warning(
                    "logit cache unavailable (%r): scoring without it, retrying in %.0f s "
                    "(this warning repeats at most once a minute; %d failures so far)",
                    err,
                    self.retry_after_s,
                    self.errors,
                )
            return None


def _decode(value: object, num_labels: int | None) -> CachedLogits | None:
    return decode_value(value, num_labels) if isinstance(value, bytes) else None
