"""Real time beside a bulk pass, and the forward pass alone: ``python -m benchmarks.realtime_beside [--quick]``.

Two measurements of sift's engine in one process (no queue), on the inputs of ``benchmarks.run`` (the realistic
length mix), for the two model shapes it measures (DistilBERT 6x768 as ``sentiment``, bert-tiny 2x128 as
``rerank``), each served as the shipped registry serves it (ONNX Runtime on a CPU with the ``onnx`` extra):

1. **One real-time item while a bulk pass runs.** A thread runs bulk passes back to back (the inputs, tokenized
   and planned into the engine's batches) on the model's main session, as a worker's forward thread does during a
   backfill. Meanwhile this thread scores one item at a time (tokenize and forward, as a real-time pass does),
   alternately on that same session and on a second one (``add_realtime_session``, what a worker's real-time
   thread uses), after a random pause so that items land anywhere in a bulk pass. And beside a bulk loop at lower
   CPU priority (``SIFT_BULK_NICENESS``, :mod:`workers.priority`: the loop's thread and its own session's pool
   lowered by 10), as a worker with the real-time thread runs it; one loop runs at a time, so the two loops take
   turns block by block. The same items are also scored with no bulk pass running, before and after. Every
   answer beside a bulk pass is compared with the idle answer of its item: two threads on one model must not change
   a logit.
2. **The forward pass alone against the engine.** The same items in jobs of 256 (``SIFT_CHUNK_SIZE``), through
   ``Engine.run`` (what a worker runs per message), through the forward passes only (tokenized beforehand, the
   engine's batch plan, no heads, no results) and through the tokenizer only; the three interleaved in each round.
   The forward pass alone is a ceiling of the engine on this machine; the gap is what the rest of the engine costs.

Prints two tables and writes ``realtime_beside.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import data, report
from benchmarks.paths import classify_items, engine_job, rerank_items
from benchmarks.run import RERANK, SENTIMENT, SHAPE_NAMES, cpu_model, loadavg, serve_as_shipped
from benchmarks.stats import percentile

TASKS = {SENTIMENT: "classify", RERANK: "rerank"}
ALONE = "alone"
SHARED = "beside a bulk pass, same session"
OWN = "beside a bulk pass, own session"
LOWERED = "beside a bulk pass at lower priority"
"""On the real-time session where ONNX Runtime serves the model; on torch, the same model from this thread."""
JOB_ITEMS = 256
"""Items per job, as ``SIFT_CHUNK_SIZE`` sends them to a worker."""
SAME_LOGITS = 1e-4
"""Largest logit difference from the idle answer still counted as the same answer."""


@dataclass(frozen=True)
class Plan:
    """How much to measure."""

    items: dict[str, int]
    """Items per model for the throughput rounds (the bulk loop cycles over the same items)."""
    samples: int
    """Real-time items per condition."""
    rounds: int
    pause_ms: float = 20.0
    """Upper bound of the random pause before each real-time item."""
    niceness: int = 10
    """How much the lowered bulk loop's nice value is raised."""
    blocks: int = 3
    """Blocks of probes: in each, one bulk loop at the worker's priority and one lowered, in alternating order."""


FULL = Plan(items={SENTIMENT: 1024, RERANK: 4096}, samples=60, rounds=3)
QUICK = Plan(items={SENTIMENT: 256, RERANK: 1024}, samples=20, rounds=2, blocks=2)


@dataclass
class Latencies:
    """Real-time latencies of one model under one condition."""

    model: str
    condition: str
    ms: list[float]
    max_diff: float
    """Largest logit difference from the idle answers of the same items (0 for the idle run itself)."""
    bulk_passes: int = 0
    """Bulk passes finished while this condition was measured."""

    def as_json(self) -> dict[str, Any]:
        """The series as a JSON object."""
        return {
            "model": self.model,
            "condition": self.condition,
            "p50_ms": percentile(self.ms, 50),
            "p99_ms": percentile(self.ms, 99),
            "n": len(self.ms),
            "max_logit_diff": self.max_diff,
            "bulk_passes": self.bulk_passes,
            "latencies_ms": [round(x, 3) for x in self.ms],
        }


@dataclass
class Throughput:
    """Items/s of one model through the engine, the forward passes alone and the tokenizer alone."""

    model: str
    items: int
    engine: list[float]
    forward: list[float]
    tokenize: list[float]
    """Items/s of each round."""

    @property
    def engine_share(self) -> float:
        """Median engine items/s over median forward-only items/s."""
        return statistics.median(self.engine) / statistics.median(self.forward)

    def as_json(self) -> dict[str, Any]:
        """The rates as a JSON object."""
        return {
            "model": self.model,
            "items": self.items,
            "engine_items_per_s": self.engine,
            "forward_only_items_per_s": self.forward,
            "tokenize_only_items_per_s": self.tokenize,
            "engine_over_forward": self.engine_share,
        }


class BulkLoop(threading.Thread):
    """Bulk passes back to back on the model's main session until :meth:`stop`; ``niceness``: at lower priority."""

    def __init__(self, loaded: Any, encoded: Any, batches: list[list[int]], niceness: int = 0) -> None:
        super().__init__(name="bulk-loop", daemon=True)
        self.loaded, self.encoded, self.batches, self.niceness = loaded, encoded, batches, niceness
        self.passes = 0
        self.error: BaseException | None = None
        self._stop_event = threading.Event()
        self._running = threading.Event()

    def run(self) -> None:
        """Loop over the batches; keep the first error for :meth:`stop` to raise."""
        from workers.engine.forward import forward_batch
        from workers.priority import lower_this_thread

        try:
            lower_this_thread(self.niceness)
            while not self._stop_event.is_set():
                for batch in self.batches:
                    self._running.set()
                    forward_batch(self.loaded, self.encoded, batch)
                    self.passes += 1
                    if self._stop_event.is_set():
                        return
        except BaseException as err:  # noqa: BLE001 - raised again by stop(), in the measuring thread
            self.error = err

    def wait_running(self) -> None:
        """Return once the first bulk pass has started."""
        self._running.wait(timeout=60)

    def stop(self) -> None:
        """End the loop after the pass in flight; raise what the loop raised."""
        self._stop_event.set()
        self.join(timeout=120)
        if self.error is not None:
            raise RuntimeError("the bulk loop failed") from self.error


def sequences_of(role: str, dataset: data.Dataset, count: int) -> tuple[list[dict[str, Any]], list[Any]]:
    """``count`` items of ``role``'s task and the sequences the engine tokenizes for them, in the same order."""
    if role == RERANK:
        pairs = [(p.query, p.document) for p in dataset.pairs[:count]]
        return rerank_items(pairs), pairs
    texts = dataset.texts[:count]
    return classify_items(texts), [(text, None) for text in texts]


def realtime_ms(loaded: Any, sequence: Any, *, realtime: bool) -> tuple[float, np.ndarray]:
    """Milliseconds to tokenize and score one sequence, and its logits."""
    from workers.engine.forward import encode, score

    began = time.perf_counter()
    scored = score(loaded, encode(loaded, [sequence]), realtime=realtime)
    elapsed = (time.perf_counter() - began) * 1000.0
    if scored.failures:
        raise RuntimeError(f"a real-time item failed: {scored.failures}")
    return elapsed, scored.logits[0]


def measure_realtime(model: str, loaded: Any, sequences: list[Any], plan: Plan, seed: int) -> list[Latencies]:
    """Real-time latencies alone; beside a bulk loop on the same session and on a session of its own (interleaved
    item by item); and beside a bulk loop at lower CPU priority, on a session of its own (interleaved with the
    others block by block: one bulk loop runs at a time)."""
    from workers.batcher import plan_batches
    from workers.engine.forward import batch_limits, encode, warm_up
    from workers.engine.loading import add_realtime_session

    rng = random.Random(seed)
    probes = [sequences[rng.randrange(len(sequences))] for _ in range(plan.samples)]
    # The same weights served two ways, each as add_realtime_session sets a worker up: `loaded` with a new bulk
    # session at the worker's priority, `lowered` with a new bulk session lowered by plan.niceness; each serves real
    # time on the session it had before (on torch there is no session: the lowered loop thread's own OpenMP team
    # starts lowered).
    own_session = add_realtime_session(loaded)
    lowered = dataclasses.replace(loaded, realtime_onnx=None)
    add_realtime_session(lowered, plan.niceness)
    for model_served in (loaded, lowered):
        warm_up(model_served)  # each bulk session is new (add_realtime_session keeps the warm one for real time)
    idle: list[np.ndarray] = []
    alone: list[float] = []
    for sequence in probes:
        ms, logits = realtime_ms(loaded, sequence, realtime=False)
        alone.append(ms)
        idle.append(logits)
    encoded = encode(loaded, sequences)
    batches = plan_batches(encoded.lengths, batch_limits(loaded))
    even_conditions = [(SHARED, False), (OWN, True)] if own_session else [(SHARED, False)]
    series = {name: Latencies(model, name, [], 0.0) for name, _ in [*even_conditions, (LOWERED, own_session)]}
    blocks = max(1, min(plan.blocks, len(probes)))
    for block in range(blocks):
        picked = list(range(block, len(probes), blocks))
        runs = [
            (BulkLoop(loaded, encoded, batches), even_conditions),
            (BulkLoop(lowered, encoded, batches, niceness=plan.niceness), [(LOWERED, own_session)]),
        ]
        for bulk, conditions in runs if block % 2 == 0 else runs[::-1]:
            _beside(bulk, conditions, [(i, probes[i]) for i in picked], idle, plan, rng, series)
    after = [realtime_ms(loaded, sequence, realtime=False)[0] for sequence in probes]
    return [Latencies(model, ALONE, alone + after, 0.0), *series.values()]


def _beside(
    bulk: BulkLoop,
    conditions: list[tuple[str, bool]],
    probes: list[tuple[int, Any]],
    idle: list[np.ndarray],
    plan: Plan,
    rng: random.Random,
    series: dict[str, Latencies],
) -> None:
    """Each probe once per condition (``(name, on the real-time session)``) while ``bulk`` runs, into ``series``."""
    bulk.start()
    bulk.wait_running()
    try:
        for turn, (index, sequence) in enumerate(probes):
            # Alternate which condition goes first, so that neither always follows the other's pause.
            for name, realtime in conditions if turn % 2 == 0 else conditions[::-1]:
                time.sleep(rng.uniform(0, plan.pause_ms / 1000.0))
                ms, logits = realtime_ms(bulk.loaded, sequence, realtime=realtime)
                measured = series[name]
                measured.ms.append(ms)
                measured.max_diff = max(measured.max_diff, float(np.max(np.abs(logits - idle[index]))))
    finally:
        bulk.stop()
    for name, _ in conditions:
        series[name].bulk_passes += bulk.passes


def measure_throughput(
    model: str, engine: Any, items: list[dict[str, Any]], sequences: list[Any], rounds: int
) -> Throughput:
    """Items/s of ``Engine.run``, of the forward passes alone and of the tokenizer alone, interleaved per round."""
    from workers.batcher import plan_batches
    from workers.engine.forward import batch_limits, encode, forward_batch

    loaded = engine.models[model]
    task = TASKS[model]
    chunks = [(offset, min(offset + JOB_ITEMS, len(items))) for offset in range(0, len(items), JOB_ITEMS)]
    encoded = [encode(loaded, sequences[start:end]) for start, end in chunks]
    plans = [plan_batches(e.lengths, batch_limits(loaded)) for e in encoded]
    result = Throughput(model, len(items), [], [], [])
    engine.run(engine_job(task, model, items[:4]))  # warm up
    for _ in range(rounds):
        began = time.perf_counter()
        for start, end in chunks:
            answers = engine.run(engine_job(task, model, items[start:end]))
            if any(answer.error for answer in answers):
                raise RuntimeError(f"an item failed in the engine: {next(a.error for a in answers if a.error)}")
        result.engine.append(len(items) / (time.perf_counter() - began))
        began = time.perf_counter()
        for job, batches in zip(encoded, plans, strict=True):
            for batch in batches:
                forward_batch(loaded, job, batch)
        result.forward.append(len(items) / (time.perf_counter() - began))
        began = time.perf_counter()
        for start, end in chunks:
            encode(loaded, sequences[start:end])
        result.tokenize.append(len(items) / (time.perf_counter() - began))
    return result


def latency_table(series: Sequence[Latencies]) -> Any:
    """One row per model and condition."""
    from rich.table import Table

    table = Table(title="One real-time item (tokenize + forward), engine alone", title_justify="left")
    for name in ("model", "condition", "n", "p50 ms", "p99 ms", "max |Δlogit| vs alone", "bulk passes meanwhile"):
        table.add_column(name, justify="left" if name in ("model", "condition") else "right")
    for s in series:
        table.add_row(
            SHAPE_NAMES[s.model],
            s.condition,
            str(len(s.ms)),
            f"{percentile(s.ms, 50):,.1f}",
            f"{percentile(s.ms, 99):,.1f}",
            "—" if s.condition == ALONE else f"{s.max_diff:.1e}",
            "—" if s.condition == ALONE else str(s.bulk_passes),
        )
    return table


def throughput_table(rows: Sequence[Throughput]) -> Any:
    """One row per model: the three rates (median of the rounds) and the engine's share of the forward-only rate."""
    from rich.table import Table

    table = Table(title="Engine against its forward passes alone (items/s, median round)", title_justify="left")
    for name in ("model", "items", "engine", "forward passes only", "tokenizer only", "engine / forward only"):
        table.add_column(name, justify="left" if name == "model" else "right")
    for row in rows:
        table.add_row(
            SHAPE_NAMES[row.model],
            str(row.items),
            f"{statistics.median(row.engine):,.1f}",
            f"{statistics.median(row.forward):,.1f}",
            f"{statistics.median(row.tokenize):,.0f}",
            f"{100.0 * row.engine_share:.1f}%",
        )
    return table


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.realtime_beside", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer items and samples (under a minute)")
    parser.add_argument("--out", type=Path, default=Path("out/realtime-beside"), help="where the JSON file goes")
    parser.add_argument("--models", default=f"{SENTIMENT},{RERANK}", help="comma list of sentiment, rerank")
    parser.add_argument("--items", type=int, help="items per model (default: by --quick)")
    parser.add_argument("--samples", type=int, help="real-time items per condition (default: by --quick)")
    parser.add_argument("--rounds", type=int, help="throughput rounds (default: by --quick)")
    parser.add_argument("--seed", type=int, default=20240601, help="seed of the generated inputs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.realtime_beside``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # as in benchmarks.run
    args = parse_args(argv)
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = sorted(set(models) - set(TASKS))
    if unknown or not models:
        raise SystemExit(f"--models: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(TASKS)}")
    base = QUICK if args.quick else FULL
    plan = Plan(
        items={m: args.items or base.items[m] for m in models},
        samples=args.samples or base.samples,
        rounds=args.rounds or base.rounds,
        blocks=base.blocks,
    )
    import torch

    from sift.contract import DEFAULT_LIMITS
    from sift.settings import cache_dir
    from workers.engine.engine import Engine
    from workers.engine.policy import load_policies
    from workers.engine.registry import load_registry
    from workers.offline_models import build_offline_models

    console = report.console()
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)
    serve_as_shipped(models)  # as benchmarks.run: the offline stand-ins served the way the shipped registry serves them
    registry = load_registry(build_offline_models(cache_dir() / "offline-models"))
    dataset = data.generate(max(plan.items.values()), data.bert_token_counter(), args.seed)
    engine = Engine.load(registry, models, torch.device("cpu"), load_policies(), DEFAULT_LIMITS, "realtime-beside")
    load_before = loadavg()
    latencies: list[Latencies] = []
    throughput: list[Throughput] = []
    for model in models:
        items, sequences = sequences_of(model, dataset, plan.items[model])
        console.log(f"{SHAPE_NAMES[model]}: real time beside a bulk pass ({plan.samples} items per condition)")
        latencies += measure_realtime(model, engine.models[model], sequences, plan, args.seed)
        console.log(f"{SHAPE_NAMES[model]}: engine against forward passes alone ({len(items)} items x {plan.rounds})")
        throughput.append(measure_throughput(model, engine, items, sequences, plan.rounds))
    console.print(latency_table(latencies))
    console.print(throughput_table(throughput))
    runtimes = {model: "onnxruntime" if engine.models[model].onnx is not None else "torch" for model in models}
    console.print(
        f"{cpu_model()}, {cores} threads; runtimes: {runtimes}; load average before {load_before}, after {loadavg()}"
    )
    changed = [s for s in latencies if s.max_diff > SAME_LOGITS]
    for series in changed:
        console.print(f"[red]{SHAPE_NAMES[series.model]}, {series.condition}: logits moved by {series.max_diff:.1e}")
    args.out.mkdir(parents=True, exist_ok=True)
    report.write_json(
        args.out / "realtime_beside.json",
        {
            "plan": {"items": plan.items, "samples": plan.samples, "rounds": plan.rounds, "pause_ms": plan.pause_ms},
            "machine": {"cpu": cpu_model(), "threads": cores, "load_before": load_before, "load_after": loadavg()},
            "runtimes": runtimes,
            "realtime": [s.as_json() for s in latencies],
            "throughput": [t.as_json() for t in throughput],
        },
    )
    console.print(f"wrote {args.out / 'realtime_beside.json'}")
    return 1 if changed else 0


if __name__ == "__main__":
    raise SystemExit(main())
