"""CPU paths: ``python -m benchmarks.cpu_paths [--quick] [--out out/cpu-paths]``.

Which way of running each model on a CPU is fastest while still giving fp32's answers? On the same deterministic
inputs (``benchmarks.data``, the realistic length mix) and through sift's own ``Engine.run`` (jobs of 256 items, the
code a worker runs per message), each path below is timed and its answers compared item by item with the reference,
torch fp32 with all cores in one process:

* torch fp32, all cores in one process (the reference and the default);
* torch fp32, one process per core with one thread each, each over half of the inputs, in parallel (total items/s);
* torch dynamic int8 (``quantize: int8``) and torch bf16 (``dtype: bfloat16``, weights cast);
* ONNX Runtime fp32 (``cpu_runtime: onnx``), also one process per core, and ORT's own dynamic int8 quantization of
  the same export (``onnxruntime.quantization.quantize_dynamic``; measured here only, not a registry option).

Models: the offline stand-ins of ``workers.offline_models`` (DistilBERT 6x768 as ``sentiment``, also the shape of
``zero_shot``; TinyBERT 4x312 as ``nli``; bert-tiny 2x128 as ``rerank``; random weights) and, when it has been built
(``sift build-sentiment-model``), the real fine-tuned sentiment model (MiniLM-L6) on the same texts and on its
held-out tweets. A stand-in's speed is the real model's (same shapes); its agreement is not (a random classifier
gives every input the same label; the random cross-encoder ranks on near-ties), so a lossy path (int8, bf16) can be
chosen for a role only where a real model of that role agreed.

Agreement: classification, the top label; rerank (one document per item, as ``benchmarks.run``), the top document of
each group of :data:`RERANK_GROUP` consecutive pairs (also the whole order of each group, and the side of the decision
threshold of every pair). A path is faithful when its agreement is at least :data:`FAITHFUL_AGREEMENT` percent.
Timings: :attr:`Plan.rounds` rounds over the same first items, the paths interleaved in each round (so that a busy
neighbour slows all of them alike); the table shows the median round and the range. A path much slower than the
reference has its agreement measured on the timed items only (the table's ``n``).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import json
import logging
import multiprocessing
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.run import cpu_model, loadavg

FAITHFUL_AGREEMENT = 99.5
"""Percent of items whose label (rerank: top document) must match the reference's."""
RERANK_GROUP = 8
"""Consecutive query-document pairs compared as one ranking."""
SLOW_FRACTION = 0.5
"""A path under this share of the reference's speed has its agreement measured on the timed items only."""
FASTER_MARGIN = 1.10
"""A path must be this much faster than the reference on every model of a role to replace it: less is noise."""
JOB_ITEMS = 256
"""Items per job, as ``SIFT_CHUNK_SIZE`` sends them to a worker."""
WARM_UP_ITEMS = 8

REFERENCE = "torch fp32"
PER_CORE = " x{n} procs"
"""Suffix of a per-core path: ``n`` processes with one thread each, over 1/n of the items each, in parallel."""
FAITHFUL = "faithful"
NOT_FAITHFUL = "NOT faithful"
REFERENCE_VERDICT = "reference"
RANDOM = "random-weight stand-in"
REAL = "real, fine-tuned"


# --------------------------------------------------------------------------------------------------------------------
# Agreement (pure numpy).


@dataclass(frozen=True)
class Agreement:
    """How a path's scores compare with the reference's on the same items."""

    n: int
    agree_pct: float
    """Classification: same top label. Rerank: same top document in each group of pairs."""
    max_abs_diff: float
    """Largest |score - reference score| (scores as sift returns them: probabilities, sigmoid outputs)."""
    order_pct: float | None = None
    """Rerank only: same order of every document in the group."""
    sign_pct: float | None = None
    """Rerank only: each pair on the same side of the decision threshold (0.5 after a sigmoid, 0 without)."""


def _max_abs_diff(reference: np.ndarray, candidate: np.ndarray) -> float:
    if reference.size == 0:
        return 0.0
    difference = np.abs(candidate.astype(np.float64) - reference.astype(np.float64))
    # NaN (a failed item) compares as infinitely far off rather than vanishing from the maximum.
    return float(np.max(np.where(np.isnan(difference), np.inf, difference)))


def classification_agreement(reference: np.ndarray, candidate: np.ndarray) -> Agreement:
    """Top-label agreement of two ``(items, labels)`` score arrays (first label wins ties, as sift's heads do)."""
    if reference.shape != candidate.shape or reference.ndim != 2:
        raise ValueError(f"score arrays differ in shape: {reference.shape} vs {candidate.shape}")
    n = reference.shape[0]
    same = np.argmax(reference, axis=1) == np.argmax(candidate, axis=1)
    return Agreement(n, 100.0 * float(same.mean()) if n else 100.0, _max_abs_diff(reference, candidate))


def _groups(n: int, size: int) -> list[slice]:
    """Consecutive groups of ``size``; a shorter last group counts if it still ranks two or more documents."""
    return [slice(start, min(start + size, n)) for start in range(0, n, size) if min(start + size, n) - start >= 2]


def _order(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-scores, kind="stable")


def rerank_agreement(
    reference: np.ndarray, candidate: np.ndarray, *, group: int = RERANK_GROUP, threshold: float = 0.5
) -> Agreement:
    """Agreement of two score vectors of query-document pairs, ranked in consecutive groups of ``group``."""
    if reference.shape != candidate.shape or reference.ndim != 1:
        raise ValueError(f"score vectors differ in shape: {reference.shape} vs {candidate.shape}")
    groups = _groups(len(reference), group)
    if not groups:
        raise ValueError(f"rerank agreement needs at least 2 pairs, got {len(reference)}")
    orders = [(_order(reference[g]), _order(candidate[g])) for g in groups]
    top = sum(int(want[0] == got[0]) for want, got in orders)
    whole = sum(int(np.array_equal(want, got)) for want, got in orders)
    sides = (reference >= threshold) == (candidate >= threshold)
    return Agreement(
        n=len(reference),
        agree_pct=100.0 * top / len(groups),
        max_abs_diff=_max_abs_diff(reference, candidate),
        order_pct=100.0 * whole / len(groups),
        sign_pct=100.0 * float(sides.mean()),
    )


def median_top_gap(scores: np.ndarray, *, group: int = RERANK_GROUP) -> float:
    """Median gap between the two best scores of each group: a path's score error above it swaps top documents."""
    gaps = [float(np.diff(np.sort(scores[g])[-2:])[0]) for g in _groups(len(scores), group)]
    return float(np.median(gaps)) if gaps else 0.0


def verdict(agreement: Agreement | None, *, reference: bool = False) -> str:
    """``reference``, ``faithful`` (label and decision agreement >= 99.5%) or ``NOT faithful``."""
    if reference:
        return REFERENCE_VERDICT
    if agreement is None:
        return NOT_FAITHFUL
    rates = [agreement.agree_pct] + ([agreement.sign_pct] if agreement.sign_pct is not None else [])
    return FAITHFUL if min(rates) >= FAITHFUL_AGREEMENT else NOT_FAITHFUL


def median_rate(items: int, seconds: Sequence[float]) -> float:
    """Items per second of the median round (rounds of ``items`` items)."""
    return items / statistics.median(seconds) if seconds else 0.0


# --------------------------------------------------------------------------------------------------------------------
# Paths and workloads.


@dataclass(frozen=True)
class CpuPath:
    """One way of running a model on the CPU."""

    name: str
    spec: dict[str, str]
    """The registry fields that select it."""
    processes: int = 1
    """1: one process with all cores' threads. N: N processes with one thread each, over 1/N of the items each."""
    ort_int8: bool = False
    """Serve ORT's dynamic int8 quantization of the fp32 export (benchmark only)."""

    @property
    def is_reference(self) -> bool:
        """Whether this is the path every other is compared with."""
        return self.name == REFERENCE

    @property
    def exact(self) -> bool:
        """float32 arithmetic like the reference's (so within ~1e-6 of it); int8 and bf16 paths are lossy."""
        return self.spec["dtype"] == "float32" and self.spec["quantize"] == "none" and not self.ort_int8


TORCH_FP32 = {"dtype": "float32", "quantize": "none", "cpu_runtime": "torch"}
ORT_FP32 = {"dtype": "float32", "quantize": "none", "cpu_runtime": "onnx"}


def cpu_paths(cores: int) -> list[CpuPath]:
    """Every path measured, the reference first (``ort``: ONNX Runtime)."""
    per_core = PER_CORE.format(n=cores)
    paths = [
        CpuPath(REFERENCE, TORCH_FP32),
        CpuPath("torch int8", {**TORCH_FP32, "quantize": "int8"}),
        CpuPath("torch bf16", {**TORCH_FP32, "dtype": "bfloat16"}),
        CpuPath("ort fp32", ORT_FP32),
        CpuPath("ort int8", ORT_FP32, ort_int8=True),
    ]
    if cores > 1:
        paths.insert(1, CpuPath(REFERENCE + per_core, TORCH_FP32, processes=cores))
        paths.insert(5, CpuPath("ort fp32" + per_core, ORT_FP32, processes=cores))
    return paths


@dataclass(frozen=True)
class Workload:
    """One model on one dataset: the items sent to the engine and how many of them each timing round takes."""

    model: str
    """E.g. ``DistilBERT 6x768``."""
    weights: str
    """:data:`RANDOM` or :data:`REAL`."""
    dataset: str
    role: str
    task: str
    """``classify`` or ``rerank`` (one document per item)."""
    registry: Any
    """The :class:`~workers.engine.registry.Registry` serving ``role``."""
    items: list[dict[str, Any]]
    timed: int
    """The first ``timed`` items are each timing round's."""


@dataclass
class Row:
    """A path's measurement on one workload."""

    workload: Workload
    path: CpuPath
    seconds: list[float] = field(default_factory=list)
    """Wall time of each timing round."""
    cpu_seconds: list[float] = field(default_factory=list)
    """CPU time (all processes) of each timing round."""
    scores: np.ndarray | None = None
    agreement: Agreement | None = None
    skipped: str | None = None
    note: str | None = None
    reference_gap: float | None = None
    """Rerank: :func:`median_top_gap` of the reference's scores on the same items."""

    @property
    def items_per_s(self) -> float:
        """Items per second of the median round."""
        return median_rate(self.workload.timed, self.seconds)

    @property
    def range(self) -> tuple[float, float]:
        """Slowest and fastest round, in items per second."""
        rates = [self.workload.timed / s for s in self.seconds] or [0.0]
        return min(rates), max(rates)

    @property
    def cores_used(self) -> float | None:
        """CPU seconds per wall second over the rounds: under the thread count, something else had the cores."""
        return sum(self.cpu_seconds) / sum(self.seconds) if self.seconds else None


# --------------------------------------------------------------------------------------------------------------------
# Running the engine (also inside the per-core child processes).


def _registry_for(workload_registry: Any, role: str, path: CpuPath) -> Any:
    spec = workload_registry.models[role].model_copy(update=path.spec)
    return workload_registry.model_copy(update={"models": {**workload_registry.models, role: spec}})


def ort_int8_file(fp32_path: Path) -> Path:
    """ORT's dynamic int8 quantization of an exported fp32 file, written once next to it."""
    quantization = importlib.import_module("onnxruntime.quantization")  # the onnx extra; it ships no type hints

    target = fp32_path.with_name("model.int8-dynamic.onnx")
    if target.is_file():
        return target
    staging = target.with_name(f".{target.name}.{os.getpid()}")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer advises pre-processing for CNNs on the root logger
    try:
        # Without VNNI, x86 int8 kernels multiply u8 x s8 with int16 saturation: ORT's advice is 7-bit weights.
        quantization.quantize_dynamic(
            fp32_path, staging, weight_type=quantization.QuantType.QInt8, reduce_range=not cpu_flags()["vnni"]
        )
    finally:
        root.setLevel(level)
    staging.replace(target)
    return target


def load_engine(workload_registry: Any, role: str, path: CpuPath, threads: int) -> Any:
    """sift's engine serving ``role`` on ``path`` with ``threads`` threads (loaded and warmed up)."""
    import torch

    from sift.contract import DEFAULT_LIMITS
    from workers.engine.engine import Engine
    from workers.engine.forward import warm_up
    from workers.engine.onnx_runtime import open_session
    from workers.engine.policy import load_policies

    torch.set_num_threads(threads)
    registry = _registry_for(workload_registry, role, path)
    engine = Engine.load(registry, [role], torch.device("cpu"), load_policies(), DEFAULT_LIMITS, "cpu-paths")
    if path.ort_int8:
        loaded = engine.models[role]
        if loaded.onnx is None:
            raise RuntimeError("ORT int8 needs the ONNX export of the fp32 model")
        session = open_session(ort_int8_file(loaded.onnx.path), threads)
        models = {role: dataclasses.replace(loaded, onnx=session)}
        engine = Engine(models, engine.registry, engine.policies, engine.limits, engine.worker)
        warm_up(engine.models[role])
    return engine


def scores_of(results: Sequence[Any], task: str, labels: Sequence[str]) -> np.ndarray:
    """Scores as sift returned them: ``(items, labels)`` for classification, ``(items,)`` for one-document rerank."""
    failed = [r.error for r in results if r.error is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} items failed, e.g. {failed[0]}")
    if task == "rerank":
        return np.array([r.ranking[0].score for r in results], dtype=np.float64)
    rows = [{s.label: s.score for s in r.scores} for r in results]
    return np.array([[row[label] for label in labels] for row in rows], dtype=np.float64)


def run_items(engine: Any, role: str, task: str, items: Sequence[dict[str, Any]]) -> tuple[float, float, np.ndarray]:
    """Wall seconds, CPU seconds and scores of ``engine.run`` over ``items`` in jobs of :data:`JOB_ITEMS`."""
    from sift.contract import Job, Lane

    labels = [engine.models[role].info.id2label[i] for i in sorted(engine.models[role].info.id2label)]
    results: list[Any] = []
    cpu = time.process_time()
    start = time.perf_counter()
    for offset in range(0, len(items), JOB_ITEMS):
        chunk = list(items[offset : offset + JOB_ITEMS])
        job = Job(
            job_id=f"cpu-{uuid.uuid4().hex[:10]}",
            task=task,
            model=role,
            items=chunk,
            lane=Lane.BULK,
            enqueued_at=time.time(),
        )
        results += engine.run(job)
    seconds = time.perf_counter() - start
    return seconds, time.process_time() - cpu, scores_of(results, task, labels)


def _child(connection: Connection) -> None:
    """A per-core process with one thread: loads and runs what the parent asks, answers each request in turn."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    engines: dict[str, tuple[Any, str, str]] = {}
    connection.send(("ok", None))
    while (message := connection.recv()) is not None:
        command, arguments = message
        try:
            if command == "load":
                name, registry, role, task, path = arguments
                engines[name] = (load_engine(registry, role, path, threads=1), role, task)
                answer: Any = None
            elif command == "run":
                name, items = arguments
                engine, role, task = engines[name]
                answer = run_items(engine, role, task, items)
            else:  # drop
                engines.clear()
                gc.collect()
                answer = None
        except Exception as err:  # noqa: BLE001 - reported to the parent, which decides
            connection.send(("error", f"{type(err).__name__}: {err}"))
            continue
        connection.send(("ok", answer))


class PerCore:
    """``processes`` single-thread child processes, started once; each serves part of every per-core run."""

    def __init__(self, processes: int) -> None:
        context = multiprocessing.get_context("spawn")  # a fork would inherit the parent's torch thread pools
        self.connections: list[Connection] = []
        self.processes: list[Any] = []
        for _ in range(processes):
            mine, theirs = context.Pipe()
            process = context.Process(target=_child, args=(theirs,), daemon=True)
            process.start()
            self.connections.append(mine)
            self.processes.append(process)

    def _ask(self, messages: Sequence[Any]) -> list[Any]:
        for connection, message in zip(self.connections, messages, strict=True):
            connection.send(message)
        answers = [connection.recv() for connection in self.connections]
        if errors := [detail for status, detail in answers if status == "error"]:
            raise RuntimeError(errors[0])
        return [detail for _, detail in answers]

    def ready(self) -> None:
        """Wait until every child has imported torch and transformers."""
        for connection in self.connections:
            connection.recv()

    def load(self, workload: Workload, path: CpuPath) -> None:
        """Load ``path`` for ``workload`` in every child."""
        message = ("load", (path.name, workload.registry, workload.role, workload.task, path))
        self._ask([message] * len(self.connections))

    def run(self, name: str, items: Sequence[dict[str, Any]]) -> tuple[float, float, np.ndarray]:
        """Split ``items`` in equal consecutive parts, run them in parallel; wall and summed CPU seconds, scores."""
        parts = np.array_split(np.arange(len(items)), len(self.connections))
        start = time.perf_counter()
        answers = self._ask([("run", (name, [items[i] for i in part])) for part in parts])
        seconds = time.perf_counter() - start
        return seconds, sum(a[1] for a in answers), np.concatenate([a[2] for a in answers])

    def drop(self) -> None:
        """Free every child's engines (the next workload loads its own)."""
        self._ask([("drop", None)] * len(self.connections))

    def close(self) -> None:
        """Stop the children."""
        for connection in self.connections:
            connection.send(None)
        for process in self.processes:
            process.join(timeout=30)


# --------------------------------------------------------------------------------------------------------------------
# The measurement.


def agreement_of(task: str, reference: np.ndarray, candidate: np.ndarray) -> Agreement:
    """Classification or rerank agreement, by task."""
    if task == "rerank":
        return rerank_agreement(reference, candidate)
    return classification_agreement(reference, candidate)


def measure(
    workload: Workload,
    paths: list[CpuPath],
    rounds: int,
    per_core: PerCore | None,
    log: Any,
    slow_fraction: float = SLOW_FRACTION,
) -> list[Row]:
    """Every path on ``workload``: interleaved timing rounds, then each path over the rest of the items.

    A path under ``slow_fraction`` of the reference's speed skips the rest: its agreement is on the timed items only.
    """
    from workers.engine.onnx_runtime import missing_packages

    cores = len(os.sched_getaffinity(0))
    rows = [Row(workload, path) for path in paths]
    engines: dict[str, Any] = {}
    missing = missing_packages()
    for row in rows:
        began = time.perf_counter()
        try:
            if row.path.spec["cpu_runtime"] == "onnx" and missing:
                row.skipped = f"needs {', '.join(missing)} (pip install 'sift[onnx]')"
            elif row.path.processes == 1:
                engines[row.path.name] = load_engine(workload.registry, workload.role, row.path, cores)
            elif per_core is not None:
                per_core.load(workload, row.path)
            else:
                row.skipped = "per-core paths not requested"
        except Exception as err:  # noqa: BLE001 - a path that cannot load here is reported, not fatal
            row.skipped = f"{type(err).__name__}: {err}"
        if row.skipped is None:
            log(f"loaded {row.path.name} in {time.perf_counter() - began:.1f} s")
    live = [row for row in rows if row.skipped is None]

    def run(row: Row, items: Sequence[dict[str, Any]]) -> tuple[float, float, np.ndarray]:
        if row.path.processes > 1:
            assert per_core is not None
            return per_core.run(row.path.name, items)
        import torch

        torch.set_num_threads(cores)
        return run_items(engines[row.path.name], workload.role, workload.task, items)

    try:
        for row in live:  # untimed: first-shape kernels, lazy initialisation
            run(row, workload.items[:WARM_UP_ITEMS])
        timed = workload.items[: workload.timed]
        for round_number in range(rounds):
            for row in live:
                seconds, cpu_s, scores = run(row, timed)
                row.seconds.append(seconds)
                row.cpu_seconds.append(cpu_s)
                if round_number == 0:
                    row.scores = scores
            log(f"round {round_number + 1}/{rounds} of {len(timed)} items done")
        reference_rate = rows[0].items_per_s
        rest = workload.items[workload.timed :]
        for row in live:
            assert row.scores is not None
            if rest and row.items_per_s >= slow_fraction * reference_rate:
                row.scores = np.concatenate([row.scores, run(row, rest)[2]])
            elif rest:
                row.note = "slow: agreement on the timed items"
        if rest:
            log(f"agreement pass over {len(rest)} more items done")
    finally:
        if per_core is not None:
            per_core.drop()
        engines.clear()
        gc.collect()
    reference = rows[0].scores
    for row in live:
        if reference is not None and row.scores is not None:
            row.agreement = agreement_of(workload.task, reference[: len(row.scores)], row.scores)
            if workload.task == "rerank":
                row.reference_gap = median_top_gap(reference[: len(row.scores)])
    return rows


# --------------------------------------------------------------------------------------------------------------------
# Decisions.


@dataclass(frozen=True)
class Decision:
    """What to run one role with on this CPU, from every workload of that role."""

    role: str
    path: str
    """The fastest faithful single-process path: a registry setting."""
    spec: dict[str, str]
    """The registry fields that select it."""
    reason: str
    per_core: str
    """Whether one process per core (one thread each) beats one process with every core, on that path."""


def _ratios(rows: Sequence[Row], name: str, baseline: str) -> tuple[list[float], str | None]:
    """Speed of path ``name`` over path ``baseline`` on each workload of ``rows``, or why it does not count."""
    by_workload: dict[int, dict[str, Row]] = {}
    for each in rows:
        by_workload.setdefault(id(each.workload), {})[each.path.name] = each
    ratios = []
    for paths in by_workload.values():
        row, base = paths.get(name), paths.get(baseline)
        workload = next(iter(paths.values())).workload
        where = f"{workload.model} / {workload.dataset}"
        if row is None or base is None or row.skipped or base.skipped or not row.seconds or not base.seconds:
            return [], f"not measured on {where}"
        if verdict(row.agreement, reference=row.path.is_reference) == NOT_FAITHFUL:
            agree = row.agreement.agree_pct if row.agreement else 0.0
            return [], f"not faithful on {where} ({agree:.1f}%)"
        ratios.append(row.items_per_s / base.items_per_s)
    return ratios, None


def decide(rows: Sequence[Row], role: str) -> Decision:
    """The fastest single-process path faithful on every workload of ``role`` and at least :data:`FASTER_MARGIN`
    times the reference's speed on each (else the reference); then whether its per-core variant beats it."""
    mine = [row for row in rows if row.workload.role == role]
    paths = {row.path.name: row.path for row in mine if row.path.processes == 1 and not row.path.is_reference}
    real = any(row.workload.weights == REAL for row in mine)
    chosen: dict[str, list[float]] = {}
    rejected = []
    for name, path in paths.items():
        ratios, why = _ratios(mine, name, REFERENCE)
        if why is None and path.ort_int8:
            why = "measured only: sift serves no ORT int8"
        if why is None and not path.exact and not real:
            # A random-weight classifier gives every input the same label: its agreement proves nothing.
            why = "lossy, and no real model of this role was measured"
        if why is None and min(ratios) < FASTER_MARGIN:
            why = f"only {min(ratios):.2f}x on one workload"
        if why is None:
            chosen[name] = ratios
        else:
            rejected.append(f"{name}: {why}")
    if chosen:
        best = max(chosen, key=lambda name: min(chosen[name]))
        speed = ", ".join(f"{r:.2f}x" for r in chosen[best])
        reason = f"faithful on every {role} workload and faster than {REFERENCE} on each ({speed})"
    else:
        best, reason = REFERENCE, "nothing faithful is faster"
    if rejected:
        reason += "; " + "; ".join(rejected)
    spec = next(row.path.spec for row in mine if row.path.name == best)
    per_core_name = next(
        (r.path.name for r in mine if r.path.processes > 1 and r.path.name.startswith(best + " x")), None
    )
    if per_core_name is None:
        per_core = "no per-core variant measured"
    else:
        ratios, why = _ratios(mine, per_core_name, best)
        if why is not None:
            per_core = f"{per_core_name}: {why}"
        else:
            speed = ", ".join(f"{r:.2f}x" for r in ratios)
            wins = min(ratios) >= FASTER_MARGIN
            per_core = f"{per_core_name} is {speed} of {best}: " + (
                "run one single-thread worker per core" if wins else "one worker with every core is as good"
            )
    return Decision(role, best, dict(spec), reason, per_core)


# --------------------------------------------------------------------------------------------------------------------
# Report.


def cpu_flags() -> dict[str, bool]:
    """The CPU features that decide which paths have hardware support."""
    from workers.engine import loading

    flags = loading.cpu_flags() or set()
    return {
        "avx2": "avx2" in flags,
        "avx512f": "avx512f" in flags,
        "bf16": bool(flags & {"avx512_bf16", "amx_bf16"}),
        "vnni": bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"}),
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render(rows: Sequence[Row], title: str) -> Any:
    """The measurements as a rich table."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for name, justify in [
        ("model", "left"), ("data", "left"), ("path", "left"), ("items/s", "right"), ("range", "right"),
        ("x fp32", "right"), ("cores", "right"), ("n", "right"), ("agree %", "right"), ("order %", "right"),
        ("sign %", "right"), ("max |Δscore|", "right"), ("verdict", "left"),
    ]:  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    reference: dict[int, float] = {id(r.workload): r.items_per_s for r in rows if r.path.is_reference}
    colours = {REFERENCE_VERDICT: "dim", FAITHFUL: "green", NOT_FAITHFUL: "bold red"}
    for row in rows:
        model = row.workload.model + (" †" if row.workload.weights == RANDOM else "")
        if row.skipped is not None:
            table.add_row(model, row.workload.dataset, row.path.name, *["-"] * 9, f"[dim]skipped: {row.skipped}[/]")
            continue
        low, high = row.range
        ratio = row.items_per_s / reference[id(row.workload)] if reference.get(id(row.workload)) else 0.0
        cores = row.cores_used
        agreement = row.agreement
        mark = verdict(agreement, reference=row.path.is_reference)
        table.add_row(
            model,
            row.workload.dataset,
            row.path.name,
            f"{row.items_per_s:,.1f}",
            f"{low:,.0f}-{high:,.0f}",
            f"{ratio:.2f}",
            "-" if cores is None else f"{cores:.1f}",
            "-" if agreement is None else str(agreement.n),
            "-" if agreement is None else _pct(agreement.agree_pct),
            "-" if agreement is None else _pct(agreement.order_pct),
            "-" if agreement is None else _pct(agreement.sign_pct),
            "-" if agreement is None else f"{agreement.max_abs_diff:.1e}",
            f"[{colours[mark]}]{mark}[/]" + (f" [dim]({row.note})[/]" if row.note else ""),
            end_section=row is not rows[-1] and rows[rows.index(row) + 1].workload is not row.workload,
        )
    return table


def row_json(row: Row) -> dict[str, Any]:
    """One row for the JSON report."""
    return {
        "model": row.workload.model,
        "weights": row.workload.weights,
        "dataset": row.workload.dataset,
        "role": row.workload.role,
        "task": row.workload.task,
        "path": row.path.name,
        "spec": row.path.spec,
        "processes": row.path.processes,
        "ort_int8": row.path.ort_int8,
        "timed_items": row.workload.timed,
        "round_seconds": row.seconds,
        "round_cpu_seconds": row.cpu_seconds,
        "items_per_s_median": row.items_per_s if row.seconds else None,
        "cores_used": row.cores_used,
        "agreement": None if row.agreement is None else dataclasses.asdict(row.agreement),
        "verdict": None if row.skipped else verdict(row.agreement, reference=row.path.is_reference),
        "skipped": row.skipped,
        "note": row.note,
        "reference_median_top_gap": row.reference_gap,
    }


# --------------------------------------------------------------------------------------------------------------------
# Command line.


@dataclass(frozen=True)
class Plan:
    """Per workload, (items for the agreement, items per timing round): the timed items are the first ones; (0, 0)
    leaves the workload out."""

    distilbert: tuple[int, int]
    tinybert: tuple[int, int]
    bert_tiny: tuple[int, int]
    real_generated: tuple[int, int]
    real_tweets: tuple[int, int]
    rounds: int


FULL = Plan(
    distilbert=(512, 128),
    tinybert=(2048, 512),
    bert_tiny=(4096, 1024),
    real_generated=(1024, 256),
    real_tweets=(2000, 256),
    rounds=3,
)
QUICK = Plan(
    distilbert=(12, 8), tinybert=(96, 64), bert_tiny=(384, 256), real_generated=(0, 0), real_tweets=(64, 32), rounds=2
)


MODELS = ("distilbert", "tinybert", "bert-tiny", "minilm")
"""``--models`` names: the two stand-ins and the real sentiment model."""


def real_sentiment_dir() -> Path:
    """Where ``sift build-sentiment-model`` keeps the real fine-tuned sentiment model."""
    from sift.settings import cache_dir

    return cache_dir() / "sentiment-minilm"


def workloads(plan: Plan, seed: int, log: Any) -> list[Workload]:
    """The stand-ins, and the real sentiment model when it has been built; (0, 0) in ``plan`` leaves one out."""
    from benchmarks import data
    from benchmarks.paths import classify_items, rerank_items
    from sift.settings import cache_dir
    from workers.engine.registry import load_registry
    from workers.offline_models import build_offline_models

    registry = load_registry(build_offline_models(cache_dir() / "offline-models"))
    count = max(plan.distilbert[0], plan.tinybert[0], plan.bert_tiny[0], plan.real_generated[0])
    generated = data.generate(count, data.bert_token_counter(), seed)
    texts = classify_items(generated.texts)
    pairs = rerank_items([(p.query, p.document) for p in generated.pairs])
    nli = [{"id": f"n{i}", "premise": p.document, "hypothesis": p.query} for i, p in enumerate(generated.pairs)]
    found = [
        Workload("DistilBERT 6x768", RANDOM, "generated", "sentiment", "classify", registry,
                 texts[: plan.distilbert[0]], plan.distilbert[1]),
        Workload("TinyBERT 4x312", RANDOM, "generated", "nli", "nli", registry,
                 nli[: plan.tinybert[0]], plan.tinybert[1]),
        Workload("bert-tiny 2x128", RANDOM, "generated", "rerank", "rerank", registry,
                 pairs[: plan.bert_tiny[0]], plan.bert_tiny[1]),
    ]  # fmt: skip
    real = real_sentiment_dir()
    if (real / "model" / "config.json").is_file():
        spec = registry.models["sentiment"].model_copy(update={"source": str((real / "model").resolve()), "note": None})
        real_registry = registry.model_copy(update={"models": {**registry.models, "sentiment": spec}})
        found.append(
            Workload("MiniLM-L6", REAL, "generated", "sentiment", "classify", real_registry,
                     texts[: plan.real_generated[0]], plan.real_generated[1])
        )  # fmt: skip
        held_out = real / "held_out.jsonl"
        lines = held_out.read_text(encoding="utf-8").splitlines() if held_out.is_file() else []
        tweets = [str(json.loads(line)["text"]) for line in lines if line.strip()][: plan.real_tweets[0]]
        found.append(
            Workload("MiniLM-L6", REAL, "tweets", "sentiment", "classify", real_registry,
                     classify_items(tweets, prefix="tw"), min(plan.real_tweets[1], len(tweets)))
        )  # fmt: skip
    else:
        log(f"no real sentiment model under {real} (`sift build-sentiment-model` builds it): stand-ins only")
    return [workload for workload in found if workload.items and workload.timed]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu_paths", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few items per model, 2 rounds (about a minute)")
    parser.add_argument("--out", type=Path, default=Path("out/cpu-paths"), help="where cpu_paths.json goes")
    parser.add_argument("--seed", type=int, default=20240601, help="seed of the generated inputs")
    parser.add_argument("--rounds", type=int, help="timing rounds per path (default 3, 2 with --quick)")
    parser.add_argument("--paths", help="comma list of paths to measure besides the reference (default: all)")
    parser.add_argument("--models", help=f"comma list of {', '.join(MODELS)} (default: all that are there)")
    return parser.parse_args(argv)


def notes(rows: Sequence[Row], flags: dict[str, bool]) -> list[str]:
    """What the table cannot say."""
    said = [
        f"x fp32: items/s over {REFERENCE}'s ({len(os.sched_getaffinity(0))} threads, one process), same workload; "
        f"range: slowest-fastest round; cores: CPU seconds per wall second (below the thread count: contended). "
        f"'{PER_CORE.format(n='N').strip()}': N processes with 1 thread each, 1/N of the items each, in parallel.",
        "† random-weight stand-in: its speed is the real model's (same shapes), its agreement is not: a random "
        "classifier gives every input the same label (agreement trivially 100%) and the random cross-encoder ranks on "
        "near-ties (agreement pessimistic). A lossy path (int8, bf16) is judged on the real fine-tuned model only.",
        f"rerank: agree % is the top document of each group of {RERANK_GROUP} consecutive pairs, order % the whole "
        "order of each group, sign % each pair on the same side of 0.5; faithful needs agree and sign >= "
        f"{FAITHFUL_AGREEMENT}%.",
    ]
    gaps = {r.workload.model: r.reference_gap for r in rows if r.reference_gap is not None}
    said += [
        f"{model}: the median gap between the two best reference scores of a group is {gap:.1e}."
        for model, gap in gaps.items()
    ]
    if not flags["bf16"]:
        said.append("bf16: this CPU has no avx512_bf16 / AMX: torch emulates bf16 matmuls.")
    if not flags["vnni"]:
        said.append("int8: no VNNI on this CPU; ORT int8 uses 7-bit weights (reduce_range) as ORT advises.")
    return said


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.cpu_paths``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    import torch
    import transformers
    from transformers.utils import logging as hf_logging

    from benchmarks.report import console as make_console

    args = parse_args(argv)
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    console = make_console()
    plan = QUICK if args.quick else FULL
    rounds = args.rounds or plan.rounds
    cores = len(os.sched_getaffinity(0))
    paths = cpu_paths(cores)
    if args.paths:
        wanted = {name.strip() for name in args.paths.split(",")}
        if unknown := wanted - {p.name for p in paths}:
            raise SystemExit(f"unknown path(s) {sorted(unknown)}; known: {[p.name for p in paths]}")
        paths = [p for p in paths if p.is_reference or p.name in wanted]
    models = [name.strip().lower() for name in args.models.split(",")] if args.models else list(MODELS)
    if unknown_models := set(models) - set(MODELS):
        raise SystemExit(f"unknown model(s) {sorted(unknown_models)}; known: {list(MODELS)}")
    started = time.perf_counter()
    load_before = loadavg()

    def log(message: str) -> None:
        console.log(f"{time.perf_counter() - started:6.1f}s  {message}  [dim](load {loadavg().split()[0]})[/]")

    # Started first: the children import torch while this process generates the inputs.
    per_core = PerCore(cores) if any(path.processes > 1 for path in paths) else None
    rows: list[Row] = []
    loads: dict[str, str] = {}
    try:
        found = [w for w in workloads(plan, args.seed, log) if w.model.lower().startswith(tuple(models))]
        if per_core is not None:
            per_core.ready()
        args.out.mkdir(parents=True, exist_ok=True)
        for workload in found:
            log(f"{workload.model} ({workload.weights}) / {workload.dataset}: {len(workload.items)} items")
            rows += measure(workload, paths, rounds, per_core, log)
            loads[f"{workload.model} / {workload.dataset}"] = loadavg()
            # Rows so far, so that a long run cut short (a shared machine) still leaves its measurements.
            partial = {"complete": False, "rows": [row_json(row) for row in rows], "load_average": loads}
            (args.out / "cpu_paths.partial.json").write_text(json.dumps(partial, indent=2) + "\n", encoding="utf-8")
    finally:
        if per_core is not None:
            per_core.close()
    decisions = [decide(rows, role) for role in dict.fromkeys(row.workload.role for row in rows)]
    flags = cpu_flags()
    facts = {
        "cpu": f"{cpu_model()}, {cores} cores, flags {flags}",
        "versions": f"python {platform.python_version()}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, onnxruntime {_version('onnxruntime')}",
        "load_average_before": load_before,
        "load_average_after": loadavg(),
        "load_average_per_workload": loads,
        "seconds": round(time.perf_counter() - started, 1),
    }
    title = (
        f"CPU paths through sift's engine: {cores} cores, median of {rounds} rounds; agreement vs {REFERENCE} "
        f"with {cores} threads; faithful >= {FAITHFUL_AGREEMENT}%"
    )
    console.print(render(rows, title))
    said = notes(rows, flags)
    for note in said:
        console.print(note, soft_wrap=True)
    for decision in decisions:
        console.print(f"[bold]{decision.role}[/]: {decision.path} - {decision.reason}", soft_wrap=True)
        console.print(f"  per core: {decision.per_core}", soft_wrap=True)
    console.print(f"{facts['cpu']}; {facts['versions']}", soft_wrap=True)
    console.print(f"load average before {load_before}; after {facts['load_average_after']}; {facts['seconds']} s")
    document = {
        "complete": True,
        "quick": args.quick,
        "seed": args.seed,
        "rounds": rounds,
        "plan": dataclasses.asdict(plan),
        "faithful_agreement": FAITHFUL_AGREEMENT,
        "faster_margin": FASTER_MARGIN,
        "facts": facts,
        "rows": [row_json(row) for row in rows],
        "decisions": [dataclasses.asdict(d) for d in decisions],
        "notes": said,
        "argv": sys.argv,
    }
    path = args.out / "cpu_paths.json"
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (args.out / "cpu_paths.partial.json").unlink(missing_ok=True)
    console.print(f"wrote {path}")
    return 0


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    sys.exit(main())
