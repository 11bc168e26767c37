"""An engine whose cache Redis cannot be reached answers exactly as one without a cache."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import torch

from sift.contract import DEFAULT_LIMITS, Job
from sift.local import free_port
from workers.engine.engine import Engine
from workers.engine.logit_cache import LogitCache
from workers.engine.policy import load_policies
from workers.engine.registry import load_registry

ITEMS = [
    {"id": "a", "premise": "A dog runs in the park.", "hypothesis": "An animal is outside."},
    {"id": "b", "premise": "A dog runs in the park.", "hypothesis": "An animal is outside."},
    {"id": "c", "premise": "word " * 2000, "hypothesis": "Words."},
    {"id": "bad", "premise": "", "hypothesis": "An empty premise is refused."},
]


@pytest.fixture(scope="module")
def plain(offline_registry: Path) -> Engine:
    registry = load_registry(offline_registry)
    return Engine.load(registry, ["nli"], torch.device("cpu"), load_policies(), DEFAULT_LIMITS, "t")


def run(engine: Engine, items: list[Any]) -> list[Any]:
    return engine.run(Job(job_id="fallback", task="nli", items=items, enqueued_at=time.time()))


def test_an_engine_without_a_cache_computes_no_cache_key(plain: Engine) -> None:
    _admission, units = plain.admit(Job(job_id="keys", task="nli", items=ITEMS, enqueued_at=time.time()))
    assert not plain.cache.active
    assert units and all(unit.cache_keys == [] for unit in units)


def test_an_unreachable_cache_costs_nothing_but_misses(plain: Engine) -> None:
    nobody = redis.Redis(host="127.0.0.1", port=free_port(), socket_timeout=0.5, socket_connect_timeout=0.5)
    cache = LogitCache(nobody, prefix="fallback", ttl_s=60)
    cached = Engine(plain.models, plain.registry, plain.policies, plain.limits, "t", plain.retry, cache=cache)

    want, got = run(plain, ITEMS), run(cached, ITEMS)

    assert cache.errors >= 1 and cache.hits == 0
    for g, w in zip(got, want, strict=True):
        assert (g.id, g.error, g.label, g.truncated) == (w.id, w.error, w.label, w.truncated)
        np.testing.assert_allclose([s.score for s in g.scores], [s.score for s in w.scores], atol=1e-5, rtol=0)
