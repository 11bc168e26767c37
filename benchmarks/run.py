"""sift's benchmark: ``python -m benchmarks.run [--quick] [--device cpu|cuda] [--out out/bench]``.

In one process, on the same deterministic inputs, for a DistilBERT-shape classifier (``sentiment``,
compute-bound) and a bert-tiny cross-encoder (``rerank``, per-item overhead bound):

1. the naive baselines a user would write (transformers ``pipeline`` one item per call, and
   sentence-transformers ``CrossEncoder.predict`` one pair per call and ``batch_size=32``);
2. sift's engine alone (``Engine.load`` + ``engine.run(Job)`` per 256-item job, what a worker runs);
3. sift end to end (private redis-server + one ``sift worker`` + ``SiftClient.submit_many``);
4. the FLOP bound (``benchmarks.flops``) against the measured matmul throughput.

Plus bulk enqueue rate, real-time latency alone and during a backfill, worker peak memory, and
an engine sweep over ``batch_tokens``. Prints tables with PASS/MISS targets, writes
``benchmark.json`` and ``engine_vs_batch_tokens.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from benchmarks import data, flops, paths, queued, report
from benchmarks.stats import summarize_lengths

T = TypeVar("T")

SENTIMENT = "sentiment"
RERANK = "rerank"
SHAPE_NAMES = {SENTIMENT: "DistilBERT 6x768", RERANK: "bert-tiny 2x128"}
SWEEP_FULL = (512, 1024, 2048, 4096, 8192, 16384, 32768)
SWEEP_QUICK = (512, 2048, 8192, 32768)


@dataclass(frozen=True)
class Plan:
    """How many items each measurement takes (always the first items of the same generated inputs)."""

    dataset: int
    """Texts and pairs generated (each)."""
    sentiment_items: int
    """DistilBERT engine alone and end to end."""
    sentiment_naive: int
    """DistilBERT pipeline, one item per call (the slowest path, so a prefix of the inputs)."""
    sweep_items: int
    sweep_budgets: tuple[int, ...]
    rerank_items: int
    """bert-tiny engine, end to end and CrossEncoder(batch_size=32)."""
    rerank_naive: int
    """bert-tiny pipeline and CrossEncoder, one pair per call."""
    enqueue_items: int
    realtime_items: int
    backfill_cap_s: float
    """Longest real-time measurement during a backfill (a DistilBERT message of 256 items takes seconds)."""


FULL = Plan(4096, 1536, 256, 256, SWEEP_FULL, 4096, 1024, 100_000, 50, 40.0)
QUICK = Plan(384, 256, 32, 48, SWEEP_QUICK, 384, 128, 20_000, 20, 10.0)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few hundred items (about 2.5 minutes on 2 cores)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (bf16 on CUDA via dtype auto)")
    parser.add_argument("--out", type=Path, default=Path("out/bench"), help="where the JSON and the plot go")
    parser.add_argument("--seed", type=int, default=20240601, help="seed of the generated inputs")
    parser.add_argument("--matmul-size", type=int, default=None, help="square matmul size (2048 CPU, 8192 CUDA)")
    return parser.parse_args(argv)


def loadavg() -> str:
    """``/proc/loadavg`` (1, 5 and 15 minute load averages, running/total tasks)."""
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "unavailable"


def serve_as_shipped(roles: Sequence[str]) -> None:
    """Set ``SIFT_MODELS__<ROLE>__CPU_RUNTIME`` and ``__CPU_DTYPE`` from the shipped registry, unless already set:
    the offline stand-ins (built for torch fp32) are then served on a CPU the way the shipped registry serves each
    role, in this process and in the workers it starts."""
    from workers.engine.registry import load_registry

    shipped = load_registry()
    for role in roles:
        spec = shipped.models[role]
        os.environ.setdefault(f"SIFT_MODELS__{role.upper()}__CPU_RUNTIME", spec.cpu_runtime)
        os.environ.setdefault(f"SIFT_MODELS__{role.upper()}__CPU_DTYPE", spec.cpu_dtype)


def _name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class Runner:
    """Runs every measurement in order and keeps the figures."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.plan = QUICK if args.quick else FULL
        self.console = report.console()
        self.phases: dict[str, float] = {}
        self.results: list[paths.PathResult] = []
        self.realtime: list[queued.RealtimeResult] = []
        self.single: dict[str, paths.PathResult] = {}
        self.engine_runs: dict[str, paths.PathResult] = {}
        self.e2e_runs: dict[str, paths.PathResult] = {}
        self.naive_runs: dict[str, paths.PathResult] = {}
        self.sweep: list[dict[str, Any]] = []
        self.facts: dict[str, Any] = {}

    def phase(self, name: str, action: Callable[[], T]) -> T:
        """Run one measurement, log it, and keep its wall time."""
        self.console.log(f"[bold]{name}[/bold] …")
        start = time.perf_counter()
        value = action()
        self.phases[name] = time.perf_counter() - start
        self.console.log(f"{name}: {self.phases[name]:.1f} s")
        return value

    def run(self) -> int:
        """Everything, in an order that keeps each comparison's two sides close in time; returns the exit code."""
        import torch

        from producers.client import SiftClient
        from sift.local import EmbeddedRedis
        from sift.settings import SiftSettings, cache_dir
        from workers.engine.engine import Engine
        from workers.engine.loading import resolve_dtype, resolve_runtime
        from workers.engine.policy import load_policies
        from workers.engine.registry import load_registry
        from workers.offline_models import build_offline_models
        from workers.worker import freeze_startup_heap, parse_device

        started = time.perf_counter()
        load_before = loadavg()
        args, plan = self.args, self.plan
        device = parse_device(args.device)
        cores = len(os.sched_getaffinity(0))
        torch.set_num_threads(cores)
        settings = SiftSettings()
        self.chunk = settings.chunk_size
        cache = cache_dir()
        registry_path = self.phase("offline models", lambda: build_offline_models(cache / "offline-models"))
        # The stand-ins are built for torch fp32; serve them the way the shipped registry serves their roles
        # (`cpu_runtime: auto`: ONNX Runtime on a CPU with the onnx extra; `cpu_dtype: auto`: bf16 on a CPU with
        # AMX-BF16). Set in the environment, so the queued worker serves the same. An explicit
        # SIFT_MODELS__<ROLE>__CPU_RUNTIME / __CPU_DTYPE wins.
        serve_as_shipped((SENTIMENT, RERANK))
        registry = load_registry(registry_path)
        self.runtimes = {role: resolve_runtime(registry.models[role], device) for role in (SENTIMENT, RERANK)}
        self.dtypes = {role: resolve_dtype(registry.models[role], device) for role in (SENTIMENT, RERANK)}
        dataset = self.phase("inputs", lambda: data.generate(plan.dataset, data.bert_token_counter(), args.seed))
        size = args.matmul_size or (8192 if device.type == "cuda" else 2048)
        # The bound of each model is the matmul in the dtype it is served in (bf16 on an AMX CPU runs ~6x fp32).
        dtypes = sorted(set(self.dtypes.values()), key=str)
        self.matmul: dict[str, list[flops.MatmulSpeed]] = {}
        for dtype in dtypes:
            first = self.phase(f"matmul ({_name(dtype)})", lambda d=dtype: flops.measure_matmul(device, d, size))
            self.matmul[_name(dtype)] = [first]
        engine = self.phase(
            "engine load",
            lambda: Engine.load(
                registry, [SENTIMENT, RERANK], device, load_policies(settings.policy), settings.limits(), "bench"
            ),
        )
        freeze_startup_heap()  # as a worker does once its models are loaded
        self.shapes = {role: flops.shape_from_config(engine.models[role].model.config) for role in (SENTIMENT, RERANK)}
        from workers.engine.forward import batch_limits

        self.engine_limits = {role: batch_limits(engine.models[role]) for role in (SENTIMENT, RERANK)}
        texts = dataset.texts[: max(plan.sentiment_items, plan.realtime_items)]
        pairs = [(p.query, p.document) for p in dataset.pairs[: max(plan.rerank_items, plan.realtime_items)]]
        self.text_lengths = self._measured_lengths(engine, SENTIMENT, [(t, None) for t in texts])
        self.pair_lengths = self._measured_lengths(engine, RERANK, list(pairs))
        mismatches = sum(a != b for a, b in zip(self.text_lengths, dataset.text_tokens, strict=False)) + sum(
            a != b for a, b in zip(self.pair_lengths, dataset.pair_tokens, strict=False)
        )
        sources = {role: registry.models[role].source for role in (SENTIMENT, RERANK)}
        workloads = {
            SENTIMENT: ("classify", paths.classify_items(texts[: plan.sentiment_items]), self.text_lengths),
            RERANK: ("rerank", paths.rerank_items(pairs[: plan.rerank_items]), self.pair_lengths),
        }

        args.out.mkdir(parents=True, exist_ok=True)
        with EmbeddedRedis() as server:
            self.enqueue = self.phase("bulk enqueue", lambda: queued.measure_enqueue(server.url, plan.enqueue_items))
            worker, bench_settings = self._start_worker(settings, server.url, registry_path, cores)
            try:
                with SiftClient(bench_settings) as client:
                    for role, (task, items, _) in workloads.items():
                        queued.warm_up(client, task, role, paths.with_prefix(items[: paths.WARM_UP_ITEMS], "w"))
                    # Each model: naive baselines, engine alone, then end to end, back to back.
                    self._naive_sentiment(sources[SENTIMENT], device, self.dtypes[SENTIMENT], texts)
                    self._engine_then_e2e(engine, client, SENTIMENT, *workloads[SENTIMENT])
                    self._naive_rerank(sources[RERANK], device, self.dtypes[RERANK], pairs)
                    self._engine_then_e2e(engine, client, RERANK, *workloads[RERANK])
                    for role, (task, items, lengths) in workloads.items():
                        self._single_then_realtime(engine, client, role, task, items[: plan.realtime_items], lengths)
                    # bert-tiny first: DistilBERT's backfill is left for the worker's shutdown to cut short.
                    for role in (RERANK, SENTIMENT):
                        task, items, _ = workloads[role]
                        self._realtime_during_backfill(client, role, task, items, drain=role != SENTIMENT)
                assert worker.process is not None
                self.worker_memory["end"] = queued.process_memory_kb(worker.process.pid)
            finally:
                worker.stop()
            if device.type == "cpu" and cores >= 2:
                self._dedicated_realtime(bench_settings, workloads)
        self.phase("DistilBERT batch_tokens sweep", lambda: self._sweep(engine, workloads[SENTIMENT][1]))
        for dtype in dtypes:
            again = self.phase(f"matmul again ({_name(dtype)})", lambda d=dtype: flops.measure_matmul(device, d, size))
            self.matmul[_name(dtype)].append(again)

        self.facts = {
            "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
            "cpu": f"{cpu_model()}, {cores} cores, torch threads {torch.get_num_threads()}",
            "versions": f"python {platform.python_version()}, torch {torch.__version__}",
            "runtime": ", ".join(f"{SHAPE_NAMES[role]} {name}" for role, name in self.runtimes.items()),
            "dtypes": {role: _name(dtype) for role, dtype in self.dtypes.items()},
            "matmul": {name: [asdict(m) for m in speeds] for name, speeds in self.matmul.items()},
            "texts": asdict(summarize_lengths(self.text_lengths[: plan.sentiment_items])),
            "pairs": asdict(summarize_lengths(self.pair_lengths[: plan.rerank_items])),
            "length_mismatches_vs_generator": mismatches,
            "load_average_before": load_before,
            "load_average_after": loadavg(),
            "total_seconds": time.perf_counter() - started,
        }
        self._report(dataset.seed)
        return 0

    def peak(self, role: str) -> float:
        """The bound's denominator for ``role``: the run's best matmul round in the dtype it is served in (FLOP/s)."""
        return max(m.flops_per_s for m in self.matmul[_name(self.dtypes[role])])

    def _measured_lengths(self, engine: Any, role: str, sequences: list[tuple[str, str | None]]) -> list[int]:
        """Token counts from the model's own tokenizer, as the engine encodes them."""
        from workers.engine.forward import encode

        lengths: list[int] = encode(engine.models[role], sequences).lengths
        return lengths

    def _with_flops(self, result: paths.PathResult, role: str, lengths: Sequence[int], padded: bool) -> None:
        """Attach useful FLOPs (and padded FLOPs as the engine's batcher pads, when ``padded``); keep the row."""
        shape = self.shapes[role]
        result.useful_flops = flops.total_flops(shape, lengths)
        if padded:
            limits = self.engine_limits[role]
            result.padded_flops = flops.total_flops(shape, flops.padded_lengths(lengths, self.chunk, limits))
        self.results.append(result)

    def _start_worker(self, settings: Any, redis_url: str, registry_path: Path, cores: int) -> tuple[Any, Any]:
        """One ``sift worker`` (both models, all cores) on a fresh queue prefix; records its memory when ready."""
        import uuid

        from sift.local import WorkerProcess

        bench_settings = settings.model_copy(
            update={
                "redis_url": redis_url,
                "queue_prefix": f"bench-{uuid.uuid4().hex[:8]}",
                "registry": registry_path,
                # Every path scores the same texts: with the content-hash cache on, the queued paths would
                # measure cache hits, not inference.
                "cache_enabled": False,
            }
        )
        log_path = self.args.out / "worker.log"
        log_path.unlink(missing_ok=True)
        worker = WorkerProcess(
            bench_settings, device=self.args.device, models=f"{SENTIMENT},{RERANK}", threads=cores, log_path=log_path
        )
        self.phase("worker start", lambda: worker.start(timeout_s=300))
        assert worker.process is not None
        pid = worker.process.pid
        self.worker_pid = pid
        self.worker_memory: dict[str, Any] = {"pid": pid, "ready": queued.process_memory_kb(pid)}
        return worker, bench_settings

    def _naive_sentiment(self, source: str, device: Any, dtype: Any, texts: list[str]) -> None:
        few = texts[: self.plan.sentiment_naive]
        lengths = self.text_lengths[: len(few)]
        naive = self.phase(
            "DistilBERT naive pipeline",
            lambda: paths.naive_pipeline(SENTIMENT, source, device, dtype, few, sum(lengths)),
        )
        self._with_flops(naive, SENTIMENT, lengths, padded=False)
        self.naive_runs[SENTIMENT] = naive

    def _naive_rerank(self, source: str, device: Any, dtype: Any, pairs: list[tuple[str, str]]) -> None:
        plan = self.plan
        few = pairs[: plan.rerank_naive]
        lengths = self.pair_lengths
        naive = self.phase(
            "bert-tiny naive pipeline",
            lambda: paths.naive_pipeline(
                RERANK, source, device, dtype, [{"text": q, "text_pair": d} for q, d in few], sum(lengths[: len(few)])
            ),
        )
        self._with_flops(naive, RERANK, lengths[: len(few)], padded=False)
        self.naive_runs[RERANK] = naive
        everything = pairs[: plan.rerank_items]
        one, batched = self.phase(
            "bert-tiny CrossEncoder",
            lambda: paths.cross_encoder_paths(
                RERANK, source, device, dtype, everything, lengths[: len(everything)], plan.rerank_naive
            ),
        )
        self._with_flops(one, RERANK, lengths[: one.items], padded=False)
        self._with_flops(batched, RERANK, lengths[: batched.items], padded=False)
        self.cross_encoder = {"one": one, "batched": batched}

    def _engine_then_e2e(
        self, engine: Any, client: Any, role: str, task: str, items: list[dict[str, Any]], lengths: list[int]
    ) -> None:
        n = len(items)
        run = self.phase(
            f"{SHAPE_NAMES[role]} engine",
            lambda: paths.run_engine(engine, role, task, items, sum(lengths[:n]), self.chunk, "sift engine alone"),
        )
        self._with_flops(run, role, lengths[:n], padded=True)
        self.engine_runs[role] = run
        e2e = self.phase(
            f"{SHAPE_NAMES[role]} end to end",
            lambda: queued.end_to_end(
                client, role, task, paths.with_prefix(items, "e"), sum(lengths[:n]), self.chunk, self.worker_pid
            ),
        )
        self._with_flops(e2e, role, lengths[:n], padded=True)
        self.e2e_runs[role] = e2e

    def _single_then_realtime(
        self, engine: Any, client: Any, role: str, task: str, items: list[dict[str, Any]], lengths: list[int]
    ) -> None:
        """The engine on one item per job, and a real-time item through the queue to an idle worker, in turn item by
        item: this machine's speed drifts over seconds (other tenants), and alternating puts both sides of the
        latency target under the same drift."""
        n = len(items)
        singles: list[float] = []
        alone = queued.RealtimeResult(role, "alone (idle worker)")
        paths.engine_latency_ms(engine, role, task, items[0])  # untimed warm-ups, as every other path gets
        queued.realtime(client, role, task, items[:1], "warm-up, untimed")

        def alternate() -> None:
            for item in items:
                singles.append(paths.engine_latency_ms(engine, role, task, item))
                alone.latencies_ms += queued.realtime(client, role, task, [item], alone.condition).latencies_ms

        self.phase(f"{SHAPE_NAMES[role]} engine 1 item/job, and real-time alone, in turn", alternate)
        run = paths.PathResult(
            role, "sift engine, 1 item/job", n, sum(lengths[:n]), sum(singles) / 1000, "item", singles
        )
        self._with_flops(run, role, lengths[:n], padded=False)
        self.single[role] = run
        self.realtime.append(alone)

    def _realtime_during_backfill(
        self,
        client: Any,
        role: str,
        task: str,
        items: list[dict[str, Any]],
        drain: bool,
        condition: str = "during a bulk backfill",
    ) -> None:
        plan = self.plan
        # Enough bulk work to outlast the time cap at the measured end-to-end rate (the rest is dropped after).
        chunks = max(2, math.ceil(self.e2e_runs[role].items_per_s * plan.backfill_cap_s * 3 / self.chunk))
        bulk = [{**items[i % len(items)], "id": f"b{i}"} for i in range(min(chunks, 400) * self.chunk)]
        rt_items = items[: plan.realtime_items]
        self.realtime.append(
            self.phase(
                f"{SHAPE_NAMES[role]} real-time {condition}",
                lambda: queued.realtime_during_backfill(
                    client, role, task, rt_items, bulk, plan.backfill_cap_s, self.chunk, drain, condition
                ),
            )
        )

    def _dedicated_realtime(self, settings: Any, workloads: dict[str, Any]) -> None:
        """Real-time during a backfill again, with the lanes on two workers pinned to halves of the cores: the
        deployment the README recommends when real-time latency matters (``sift worker --queues realtime --cpus``)."""
        from producers.client import SiftClient
        from sift.contract import Lane
        from sift.keys import queue_name
        from sift.local import WorkerProcess
        from workers.cpus import allowed_cpus, format_cpu_list

        cpus = allowed_cpus()
        half = len(cpus) // 2
        lanes = {"bulk": format_cpu_list(cpus[:half]), "realtime": format_cpu_list(cpus[half:])}
        workers = [
            WorkerProcess(
                settings,
                device="cpu",
                queues=lane,
                models=f"{SENTIMENT},{RERANK}",
                cpus=slice_,
                log_path=self.args.out / f"worker-{lane}.log",
            )
            for lane, slice_ in lanes.items()
        ]
        condition = f"during a bulk backfill, dedicated worker (CPUs {lanes['realtime']}; bulk on {lanes['bulk']})"
        # The shared worker's shutdown gave the backfill messages it held back to the queue: drop them first.
        queued.purge_queue(settings.redis_client(), queue_name(settings.queue_prefix, Lane.BULK), self.chunk)
        try:
            for lane, worker in zip(lanes, workers, strict=True):
                self.phase(f"{lane} worker start", worker.start)
            with SiftClient(settings) as client:
                for role in (RERANK, SENTIMENT):
                    task, items, _ = workloads[role]
                    queued.realtime(client, role, task, items[:1], "warm-up, untimed")
                    self._realtime_during_backfill(client, role, task, items, role != SENTIMENT, condition)
        finally:
            for worker in workers:
                worker.stop()

    def _sweep(self, engine: Any, all_items: list[dict[str, Any]]) -> None:
        items = all_items[: self.plan.sweep_items]
        lengths = self.text_lengths[: len(items)]
        useful = flops.total_flops(self.shapes[SENTIMENT], lengths)
        default_fill = engine.models[SENTIMENT].spec.min_fill
        # With the padding-aware cut (the default) and without it: what the cut is worth at each budget.
        for min_fill in (default_fill, 0.0):
            for budget in self.plan.sweep_budgets:
                self._sweep_point(engine, items, lengths, useful, budget, min_fill)

    def _sweep_point(
        self, engine: Any, items: list[dict[str, Any]], lengths: list[int], useful: float, budget: int, min_fill: float
    ) -> None:
        from workers.engine.forward import batch_limits

        variant = paths.engine_with_budget(engine, SENTIMENT, budget, min_fill)
        run = paths.run_engine(variant, SENTIMENT, "classify", items, sum(lengths), self.chunk, "sweep")
        limits = batch_limits(variant.models[SENTIMENT])
        padded = flops.padded_lengths(lengths, self.chunk, limits)
        self.sweep.append(
            {
                "batch_tokens": budget,
                "min_fill": min_fill,
                "max_batch_items": limits.max_items,
                "items": len(items),
                "seconds": run.seconds,
                "items_per_s": run.items_per_s,
                "tokens_per_s": run.tokens_per_s,
                "job_p50_ms": run.p50_ms,
                "padding_efficiency": sum(lengths) / sum(padded),
                "useful_flops": useful,
                "useful_gflops_per_s": useful / run.seconds / 1e9,
            }
        )
        self.console.log(f"  batch_tokens {budget}, min_fill {min_fill}: {run.items_per_s:.1f} items/s")

    def _targets(self) -> list[report.Target]:
        def ratio(a: paths.PathResult | None, b: paths.PathResult | None) -> float | None:
            return a.items_per_s / b.items_per_s if a and b and b.items_per_s > 0 else None

        def share(run: paths.PathResult | None) -> float | None:
            gflops = run.gflops() if run else None
            return None if gflops is None or run is None else 100.0 * gflops * 1e9 / self.peak(run.model)

        targets = [
            report.ratio_target("DistilBERT engine, % of FLOP bound", share(self.engine_runs.get(SENTIMENT)), 60, "%"),
            report.ratio_target(
                "bert-tiny engine / naive pipeline (1 item/call)",
                ratio(self.engine_runs.get(RERANK), self.naive_runs.get(RERANK)),
                10,
            ),
            report.ratio_target(
                "bert-tiny engine / CrossEncoder.predict(batch_size=32)",
                ratio(self.engine_runs.get(RERANK), self.cross_encoder["batched"]),
                2,
            ),
        ]
        for role in (SENTIMENT, RERANK):
            e2e = ratio(self.e2e_runs.get(role), self.engine_runs.get(role))
            targets.append(
                report.ratio_target(
                    f"{SHAPE_NAMES[role]} end to end / engine alone", None if e2e is None else 100 * e2e, 90, "%"
                )
            )
        for row in self.realtime:
            single = self.single.get(row.model)
            name = f"{SHAPE_NAMES[row.model]} real-time {row.condition.split(' (')[0]}"
            targets.append(report.latency_target(f"{name}, p50", row.p50_ms, single.p50_ms if single else None, 5))
            targets.append(report.latency_target(f"{name}, p99", row.p99_ms, single.p99_ms if single else None, 25))
        targets.append(
            report.ratio_target("bulk enqueue, one producer (k items/s)", self.enqueue.items_per_s / 1e3, 50, "k/s")
        )
        return targets

    def _ratios(self) -> list[dict[str, Any]]:
        rows = []
        for role in (SENTIMENT, RERANK):
            engine = self.engine_runs[role]
            naive = self.naive_runs[role]
            e2e = self.e2e_runs.get(role)
            gflops = engine.gflops() or 0.0
            padded = engine.gflops(padded=True) or 0.0
            row = {
                "model": SHAPE_NAMES[role],
                "engine / naive pipeline": engine.items_per_s / naive.items_per_s,
                "dtype": _name(self.dtypes[role]),
                "engine % of FLOP bound (unpadded)": 100.0 * gflops * 1e9 / self.peak(role),
                "engine % of FLOP bound (padded work)": 100.0 * padded * 1e9 / self.peak(role),
                "end to end / engine": None if e2e is None else e2e.items_per_s / engine.items_per_s,
                "bound items/s": engine.items / (engine.useful_flops or math.inf) * self.peak(role),
                "useful MFLOP per item": (engine.useful_flops or 0.0) / engine.items / 1e6,
                "padding efficiency (FLOPs)": (engine.useful_flops or 0.0) / (engine.padded_flops or math.inf),
            }
            if role == RERANK:
                row["engine / CrossEncoder 1 pair/call"] = engine.items_per_s / self.cross_encoder["one"].items_per_s
                row["engine / CrossEncoder batch_size=32"] = (
                    engine.items_per_s / self.cross_encoder["batched"].items_per_s
                )
            rows.append(row)
        return rows

    def _report(self, seed: int) -> None:
        out = self.args.out
        for row in self.sweep:  # against the run's best matmul, known only now
            row["percent_of_bound"] = 100.0 * row["useful_flops"] / row["seconds"] / self.peak(SENTIMENT)
            row["bound_items_per_s"] = row["items"] / (row["useful_flops"] / self.peak(SENTIMENT))
        targets = self._targets()
        ratios = self._ratios()
        facts: list[tuple[str, str]] = [
            (
                "device",
                f"{self.facts['device']}, "
                + ", ".join(f"{SHAPE_NAMES[role]} {name}" for role, name in self.facts["dtypes"].items()),
            ),
            ("cpu", self.facts["cpu"]),
            ("versions", self.facts["versions"]),
            ("runtime", self.facts["runtime"]),
        ]
        for name, speeds in self.matmul.items():
            first = speeds[0]
            facts.append(
                (
                    f"matmul {name}",
                    f"{first.size}x{first.size} {first.dtype}, {first.threads} threads: "
                    + ", then ".join(f"best {m.best_gflops:,.1f} / median {m.median_gflops:,.1f}" for m in speeds)
                    + f" GFLOP/s (start, end); the bound uses {max(m.flops_per_s for m in speeds) / 1e9:,.1f}",
                )
            )
        facts += [
            ("texts (classify)", summarize_lengths(self.text_lengths[: self.plan.sentiment_items]).describe()),
            ("pairs (rerank)", summarize_lengths(self.pair_lengths[: self.plan.rerank_items]).describe()),
            ("models", "; ".join(f"{SHAPE_NAMES[r]}: {s.describe()}" for r, s in self.shapes.items())),
        ]
        for row in ratios:
            facts.append(
                (
                    f"bound {row['model']}",
                    f"{row['useful MFLOP per item']:,.1f} MFLOP per item (unpadded) → "
                    f"{row['bound items/s']:,.0f} items/s at the {row['dtype']} matmul peak; the engine's batches "
                    f"waste {100 * (1 - row['padding efficiency (FLOPs)']):.1f}% of their FLOPs on padding",
                )
            )
        memory = self.worker_memory
        facts.append(
            (
                "worker memory",
                f"pid {memory['pid']}: RSS {memory['ready'].get('VmRSS', 0) / 1024:,.0f} MiB when ready, "
                f"peak (VmHWM) {memory.get('end', memory['ready']).get('VmHWM', 0) / 1024:,.0f} MiB "
                f"({SHAPE_NAMES[SENTIMENT]} + {SHAPE_NAMES[RERANK]} loaded)",
            )
        )
        enqueue = self.enqueue
        facts.append(
            (
                "bulk enqueue",
                f"{enqueue.items:,} tiny items in {enqueue.messages} messages: {enqueue.items_per_s:,.0f} items/s",
            )
        )
        facts.append(
            ("load average", f"before {self.facts['load_average_before']}; after {self.facts['load_average_after']}")
        )
        facts.append(("wall time", f"{self.facts['total_seconds']:.0f} s ({'--quick' if self.args.quick else 'full'})"))

        order = [SENTIMENT, RERANK]
        rows = sorted(self.results, key=lambda r: order.index(r.model) if r.model in order else len(order))
        peaks = {role: self.peak(role) for role in self.dtypes}
        self.console.print(report.paths_table(rows, peaks, SHAPE_NAMES))
        self.console.print(report.realtime_table(self.realtime, self.single, SHAPE_NAMES))
        self.console.print(report.ratios_table(ratios))
        self.console.print(report.facts_table(facts))
        self.console.print(report.targets_table(targets))
        busy = _busy_warning(self.facts["load_average_before"], len(os.sched_getaffinity(0)))
        if busy:
            self.console.print(f"[bold yellow]{busy}[/bold yellow]")
            self.facts["warning"] = busy

        document = {
            "quick": self.args.quick,
            "seed": seed,
            "plan": asdict(self.plan),
            "argv": sys.argv,
            "facts": self.facts,
            "flop_formula": flops.__doc__,
            "shapes": {r: asdict(s) | {"non_embedding_params": s.non_embedding_params} for r, s in self.shapes.items()},
            "paths": [r.as_json() for r in self.results],
            "ratios": ratios,
            "sweep": self.sweep,
            "realtime": [r.as_json() for r in self.realtime],
            "engine_single_item": {r: s.as_json() for r, s in self.single.items()},
            "bulk_enqueue": asdict(enqueue) | {"items_per_s": enqueue.items_per_s},
            "worker_memory_kb": memory,
            "targets": [t.as_json() for t in targets],
            "phase_seconds": self.phases,
        }
        report.write_json(out / "benchmark.json", document)
        report.plot_sweep(out / "engine_vs_batch_tokens.png", self.sweep, SHAPE_NAMES[SENTIMENT], self.facts["device"])
        self.console.print(f"wrote {out / 'benchmark.json'} and {out / 'engine_vs_batch_tokens.png'}")


def _busy_warning(load_before: str, cores: int) -> str | None:
    """A warning when something else was using the machine as the run started (1-minute load average)."""
    try:
        load = float(load_before.split()[0])
    except (ValueError, IndexError):
        return None
    if load < 0.5:
        return None
    return (
        f"the machine was busy before this run (load average {load:.2f} on {cores} cores): timings and ratios "
        "are noisy; see 'cores used' and the matmul at the start and the end"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.run``."""
    # Models are built offline; the hub is never needed.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Explicit, so the redis-server and worker forks neither warn nor turn the tokenizer's threads off here;
    # the worker inherits it and tokenizes in parallel as it does by default.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    return Runner(parse_args(argv)).run()


if __name__ == "__main__":
    sys.exit(main())
