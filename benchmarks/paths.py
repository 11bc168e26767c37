"""In-process measurements: the naive baselines a user would write, and sift's engine alone."""

from __future__ import annotations

import dataclasses
import gc
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.stats import percentile

WARM_UP_ITEMS = 4
"""Items every path runs once, untimed, before its timed run (first-shape kernels, lazy init)."""


@dataclass
class PathResult:
    """One way of running one model over a set of items: how fast, and how long each unit took."""

    model: str
    path: str
    items: int
    tokens: int
    """Tokens of the inputs, special tokens included, unpadded."""
    seconds: float
    latency_of: str
    """What one latency sample is: ``item`` (a call on one item) or ``job of N`` (a call on N items)."""
    latencies_ms: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    useful_flops: float | None = None
    """FLOPs of the inputs at their own lengths (see ``benchmarks.flops``); set by the runner."""
    padded_flops: float | None = None
    """FLOPs as the engine's batcher pads them, where the path batches that way."""
    cpu_s: float | None = None
    """CPU seconds (all threads) of the process doing the work, over the timed run."""

    @property
    def cores_used(self) -> float | None:
        """Average cores busy in the working process: below the thread count, the machine was contended."""
        return None if self.cpu_s is None or self.seconds <= 0 else self.cpu_s / self.seconds

    @property
    def items_per_s(self) -> float:
        """Items per second of wall time."""
        return self.items / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        """Unpadded tokens per second of wall time."""
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def p50_ms(self) -> float | None:
        """Median latency, or None without samples."""
        return percentile(self.latencies_ms, 50) if self.latencies_ms else None

    @property
    def p99_ms(self) -> float | None:
        """99th percentile latency, or None without samples."""
        return percentile(self.latencies_ms, 99) if self.latencies_ms else None

    def gflops(self, padded: bool = False) -> float | None:
        """Achieved GFLOP/s: useful (unpadded) FLOPs per second, or padded ones with ``padded``."""
        flops = self.padded_flops if padded else self.useful_flops
        return None if flops is None or self.seconds <= 0 else flops / self.seconds / 1e9

    def as_json(self) -> dict[str, Any]:
        """Every figure, for the JSON report (latency samples included)."""
        return {
            "model": self.model,
            "path": self.path,
            "items": self.items,
            "tokens": self.tokens,
            "seconds": self.seconds,
            "items_per_s": self.items_per_s,
            "tokens_per_s": self.tokens_per_s,
            "latency_of": self.latency_of,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "latency_samples": len(self.latencies_ms),
            "cpu_s": self.cpu_s,
            "cores_used": self.cores_used,
            "useful_flops": self.useful_flops,
            "padded_flops": self.padded_flops,
            "useful_gflops_per_s": self.gflops(),
            "padded_gflops_per_s": self.gflops(padded=True),
            "latencies_ms": [round(x, 3) for x in self.latencies_ms],
            **self.extra,
        }


def classify_items(texts: Sequence[str], prefix: str = "t") -> list[dict[str, Any]]:
    """``classify`` items with ids ``<prefix>0``, ``<prefix>1``, ..."""
    return [{"id": f"{prefix}{i}", "text": text} for i, text in enumerate(texts)]


def rerank_items(pairs: Sequence[tuple[str, str]], prefix: str = "p") -> list[dict[str, Any]]:
    """``rerank`` items of one document each, so that an item is one scored query-document pair."""
    return [{"id": f"{prefix}{i}", "query": q, "documents": [d]} for i, (q, d) in enumerate(pairs)]


def with_prefix(items: Sequence[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """The same items under ids prefixed with ``prefix`` (a second job over the same inputs)."""
    return [{**item, "id": f"{prefix}{item['id']}"} for item in items]


def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize()


def naive_pipeline(
    model: str, source: str, device: Any, dtype: Any, inputs: Sequence[str | dict[str, str]], tokens: int
) -> PathResult:
    """transformers ``pipeline("text-classification")`` called on one item at a time."""
    from transformers import pipeline

    classifier: Any = pipeline("text-classification", model=source, device=device, dtype=dtype)
    for one in inputs[:WARM_UP_ITEMS]:
        classifier(one)
    latencies: list[float] = []
    cpu = time.process_time()
    start = time.perf_counter()
    for one in inputs:
        began = time.perf_counter()
        classifier(one)
        latencies.append((time.perf_counter() - began) * 1000.0)
    seconds = time.perf_counter() - start
    cpu_s = time.process_time() - cpu
    del classifier
    gc.collect()
    return PathResult(
        model, "naive: pipeline, 1 item/call", len(inputs), tokens, seconds, "item", latencies, cpu_s=cpu_s
    )


def cross_encoder_paths(
    model: str,
    source: str,
    device: Any,
    dtype: Any,
    pairs: Sequence[tuple[str, str]],
    tokens_per_pair: Sequence[int],
    single_items: int,
) -> list[PathResult]:
    """sentence-transformers ``CrossEncoder.predict``: one pair per call (first ``single_items``), then
    ``batch_size=32`` over all pairs in one call."""
    from sentence_transformers import CrossEncoder

    encoder = CrossEncoder(source, device=str(device), model_kwargs={"dtype": dtype})
    encoder.predict(list(pairs[:WARM_UP_ITEMS]), batch_size=32, show_progress_bar=False)
    singles = list(pairs[:single_items])
    latencies: list[float] = []
    cpu = time.process_time()
    start = time.perf_counter()
    for pair in singles:
        began = time.perf_counter()
        encoder.predict([pair], show_progress_bar=False)
        latencies.append((time.perf_counter() - began) * 1000.0)
    one_seconds = time.perf_counter() - start
    one_cpu_s = time.process_time() - cpu
    cpu = time.process_time()
    start = time.perf_counter()
    encoder.predict(list(pairs), batch_size=32, show_progress_bar=False)
    _sync(device)
    batched_seconds = time.perf_counter() - start
    batched_cpu_s = time.process_time() - cpu
    del encoder
    gc.collect()
    return [
        PathResult(
            model,
            "naive: CrossEncoder.predict, 1 pair/call",
            len(singles),
            sum(tokens_per_pair[: len(singles)]),
            one_seconds,
            "item",
            latencies,
            cpu_s=one_cpu_s,
        ),
        PathResult(
            model,
            "CrossEncoder.predict(batch_size=32)",
            len(pairs),
            sum(tokens_per_pair),
            batched_seconds,
            f"call of {len(pairs)}",
            [batched_seconds * 1000.0],
            cpu_s=batched_cpu_s,
        ),
    ]


def engine_with_budget(engine: Any, role: str, batch_tokens: int, min_fill: float | None = None) -> Any:
    """A copy of ``engine`` serving ``role`` with another token budget on its device (and ``min_fill``),
    same weights, nothing reloaded."""
    from workers.engine.engine import Engine

    loaded = engine.models[role]
    field = "cpu_batch_tokens" if loaded.device.type == "cpu" else "batch_tokens"
    update: dict[str, Any] = {field: batch_tokens}
    if min_fill is not None:
        update["min_fill"] = min_fill
    spec = loaded.spec.model_copy(update=update)
    models = {**engine.models, role: dataclasses.replace(loaded, spec=spec)}
    return Engine(models, engine.registry, engine.policies, engine.limits, engine.worker, engine.retry)


def engine_job(task: str, model: str, items: Sequence[dict[str, Any]]) -> Any:
    """A bulk ``Job`` of ``items`` under a fresh id, as a producer would send it."""
    from sift.contract import Job, Lane

    return Job(
        job_id=f"bench-{uuid.uuid4().hex[:12]}",
        task=task,
        model=model,
        items=list(items),
        lane=Lane.BULK,
        enqueued_at=time.time(),
    )


def engine_latency_ms(engine: Any, model: str, task: str, item: dict[str, Any]) -> float:
    """Milliseconds of ``engine.run`` on a job of one item (the job built beforehand, as a worker receives it)."""
    job = engine_job(task, model, [item])
    began = time.perf_counter()
    _check(engine.run(job))
    return (time.perf_counter() - began) * 1000.0


def run_engine(
    engine: Any, model: str, task: str, items: Sequence[dict[str, Any]], tokens: int, job_size: int, label: str
) -> PathResult:
    """``engine.run(Job(...))`` over ``items`` in jobs of ``job_size``: the code a worker runs per message."""
    _check(engine.run(engine_job(task, model, items[:WARM_UP_ITEMS])))
    latencies: list[float] = []
    cpu = time.process_time()
    start = time.perf_counter()
    for offset in range(0, len(items), job_size):
        job = engine_job(task, model, items[offset : offset + job_size])
        began = time.perf_counter()
        results = engine.run(job)
        latencies.append((time.perf_counter() - began) * 1000.0)
        _check(results)
    seconds = time.perf_counter() - start
    cpu_s = time.process_time() - cpu
    unit = "item" if job_size == 1 else f"job of {min(job_size, len(items))}"
    return PathResult(model, label, len(items), tokens, seconds, unit, latencies, cpu_s=cpu_s)


def _check(results: Sequence[Any]) -> None:
    errors = [r.error for r in results if r.error is not None]
    if errors:
        raise RuntimeError(f"{len(errors)} items failed in a benchmark run, e.g. {errors[0]}")
