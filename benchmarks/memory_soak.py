"""Worker memory across a long backfill: ``python -m benchmarks.memory_soak [--items 1000000] [--out out/soak]``.

Starts a private ``redis-server`` and ONE CPU worker (all cores, logit cache off so every item is really
inferred) serving ``classify`` on the offline bert-tiny stand-in, then backfills ``--items`` distinct short
texts with ``SiftClient.submit_many`` from a producer thread. The bulk queue is bounded
(``SIFT_MAX_QUEUED_BULK``, ``--max-queued`` messages, producers block at the bound), so the producer never
floods Redis and the worker always has work. Every ``--interval`` seconds it samples the worker's resident
memory (``VmRSS``) and peak (``VmHWM``), Redis ``used_memory``, the results stored and the queue depth.

Prints a table (RSS at 10 / 50 / 100% of the items, the peak, the RSS slope over the second half) and a
verdict: FLAT when the worker's RSS at the end is within 5% (or 50 MiB, whichever is larger) of its RSS at
10% of the items, GROWING otherwise. Writes ``soak.json`` (every sample), ``worker_memory.png``,
``worker.log`` and the ``fast-registry.yaml`` it served under ``--out``. Exit status 1 when the backfill
did not complete (time cap, crash, error results).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from benchmarks import report
from benchmarks.queued import process_memory_kb
from benchmarks.run import loadavg

KIB_PER_MIB = 1024
FLAT_SHARE = 0.05
"""RSS growth from 10% of the items to the end still called flat, as a share of the RSS at 10% ..."""
FLAT_MIB = 50.0
"""... or in MiB, whichever is larger (a small worker's 5% is within allocator noise)."""
FRACTIONS = (0.1, 0.5, 1.0)
"""Points of the backfill (shares of its items) where the table shows the worker's RSS."""

_ADJECTIVES = ("quick", "late", "broken", "fresh", "noisy", "clean", "cheap", "friendly", "cold", "huge", "odd")
_NOUNS = ("parcel", "room", "battery", "screen", "order", "driver", "meal", "ticket", "charger", "invoice", "seat")
_VERDICTS = ("was great", "never arrived", "works fine", "was awful", "is okay", "broke twice", "made my day")


@dataclass(frozen=True)
class Sample:
    """One reading of the running backfill."""

    t_s: float
    """Seconds since the first submit."""
    submitted: int
    """Items the producer has handed to ``submit_many`` so far."""
    stored: int
    """Results in the job's results hash (items the worker has finished)."""
    queue_depth: int
    """Bulk messages waiting in Redis (not counting those the worker has prefetched)."""
    rss_kb: int
    """Worker ``VmRSS``."""
    hwm_kb: int
    """Worker ``VmHWM``: the largest RSS so far."""
    redis_used_bytes: int
    """Redis ``INFO memory`` ``used_memory`` (results, streams, queue)."""
    redis_rss_kb: int
    """redis-server's own ``VmRSS``."""

    @property
    def rss_mib(self) -> float:
        """Worker RSS in MiB."""
        return self.rss_kb / KIB_PER_MIB


@dataclass(frozen=True)
class Verdict:
    """Whether the worker's RSS stayed flat from 10% of the items to the end."""

    base_mib: float
    end_mib: float
    tolerance_mib: float

    @property
    def growth_mib(self) -> float:
        """RSS at the end minus RSS at 10% (negative when memory was given back)."""
        return self.end_mib - self.base_mib

    @property
    def flat(self) -> bool:
        """Growth within the tolerance; a fall is not a leak, so it counts as flat."""
        return self.growth_mib <= self.tolerance_mib

    @property
    def word(self) -> str:
        """FLAT or GROWING."""
        return "FLAT" if self.flat else "GROWING"

    def describe(self) -> str:
        """The verdict with its numbers, for the console."""
        share = 100.0 * self.growth_mib / self.base_mib if self.base_mib > 0 else 0.0
        return (
            f"{self.word}: worker RSS {self.base_mib:,.1f} MiB at 10% of the items, {self.end_mib:,.1f} MiB at the end "
            f"({self.growth_mib:+,.1f} MiB, {share:+.1f}%; flat means at most +{self.tolerance_mib:,.1f} MiB)"
        )


@dataclass(frozen=True)
class Summary:
    """The figures the table and the verdict come from."""

    items: int
    """The item count the fractions refer to."""
    rss_mib_at: dict[float, float | None]
    """Worker RSS at the first sample with at least that share of ``items`` stored (None: never reached)."""
    ready_mib: float
    """Worker RSS at the first sample, before any item."""
    peak_mib: float
    """Largest ``VmHWM`` seen: the worker's peak resident memory."""
    slope_mib_per_100k: float | None
    """Least-squares RSS slope over the second half of the items (None: too few samples there)."""
    verdict: Verdict | None
    """None when 10% of the items never got stored."""


def soak_items(count: int, start: int = 0) -> Iterator[dict[str, str]]:
    """``count`` classify items with short, all-different texts (a counter in each), generated lazily."""
    for i in range(start, start + count):
        adjective = _ADJECTIVES[i % len(_ADJECTIVES)]
        noun = _NOUNS[(i // len(_ADJECTIVES)) % len(_NOUNS)]
        verdict = _VERDICTS[(i // 7) % len(_VERDICTS)]
        yield {"id": f"s{i}", "text": f"review {i}: the {adjective} {noun} {verdict}, order {i * 7919 % 100_003}"}


def rss_at_fraction(samples: Sequence[Sample], items: int, fraction: float) -> Sample | None:
    """The first sample with at least ``fraction`` of ``items`` stored, or None if none got there."""
    if items <= 0 or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"need items > 0 and 0 <= fraction <= 1, got items={items}, fraction={fraction}")
    needed = fraction * items
    return next((s for s in samples if s.stored >= needed), None)


def slope_mib_per_100k(samples: Sequence[Sample], items: int) -> float | None:
    """Least-squares slope of worker RSS (MiB) against items stored, per 100k items, over the second half.

    The second half only: the first includes warm-up (allocator arenas, tokenizer caches, prefetched
    messages) that grows once and then stays. None with fewer than two distinct item counts there.
    """
    half = [s for s in samples if s.stored >= items / 2]
    xs = [s.stored / 100_000 for s in half]
    if len(set(xs)) < 2:
        return None
    return statistics.linear_regression(xs, [s.rss_mib for s in half]).slope


def verdict(base_kb: int, end_kb: int, share: float = FLAT_SHARE, floor_mib: float = FLAT_MIB) -> Verdict:
    """FLAT when RSS grew from ``base_kb`` to ``end_kb`` by at most ``share`` of the base or ``floor_mib``."""
    base = base_kb / KIB_PER_MIB
    return Verdict(base, end_kb / KIB_PER_MIB, max(share * base, floor_mib))


def summarize(samples: Sequence[Sample], items: int) -> Summary:
    """RSS at 10 / 50 / 100% of ``items``, the peak, the second-half slope and the verdict."""
    if not samples:
        raise ValueError("no samples: the soak never took a reading")
    at = {f: rss_at_fraction(samples, items, f) for f in FRACTIONS}
    base, end = at[0.1], at[1.0]
    return Summary(
        items=items,
        rss_mib_at={f: None if s is None else s.rss_mib for f, s in at.items()},
        ready_mib=samples[0].rss_mib,
        peak_mib=max(s.hwm_kb for s in samples) / KIB_PER_MIB,
        slope_mib_per_100k=slope_mib_per_100k(samples, items),
        verdict=None if base is None or end is None else verdict(base.rss_kb, end.rss_kb),
    )


def slope_text(slope: float | None, items: int) -> str:
    """The slope per 100k items and what it adds up to over the second half (small runs: mostly noise)."""
    if slope is None:
        return "— (fewer than two samples in the second half)"
    half = items / 2
    return f"{slope:+,.2f} MiB per 100k items ({slope * half / 100_000:+,.1f} MiB over the last {half:,.0f} items)"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; exits with a message on a bad value."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000, help="items to backfill (default 1,000,000)")
    parser.add_argument("--out", type=Path, default=Path("out/soak"), help="where soak.json, the plot and the log go")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between samples (default 2)")
    parser.add_argument("--max-minutes", type=float, default=240.0, help="stop after this long (default 240)")
    parser.add_argument("--max-queued", type=int, default=200, help="SIFT_MAX_QUEUED_BULK in messages (default 200)")
    parser.add_argument("--device", default="cpu", help="the worker's device (default cpu)")
    args = parser.parse_args(argv)
    for name in ("items", "max_queued"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("interval", "max_minutes"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    return args


class Producer(threading.Thread):
    """``submit_many`` of the whole backfill, on its own connection; blocks at the queue bound."""

    def __init__(self, settings: Any, items: int, job_id: str) -> None:
        # Daemon: after a crash or the time cap, a producer blocked at the bound must not keep the process alive.
        super().__init__(name="soak-producer", daemon=True)
        self.settings, self.items, self.job_id = settings, items, job_id
        self.submitted = 0
        self.handle: Any = None
        self.error: BaseException | None = None

    def _counted(self) -> Iterator[dict[str, str]]:
        for item in soak_items(self.items):
            yield item
            self.submitted += 1  # read by the sampler; an int assignment is atomic under the GIL

    def run(self) -> None:
        """Submit everything; keep the handle, or the exception for the main thread to report."""
        from producers.client import SiftClient

        try:
            with SiftClient(self.settings) as client:
                self.handle = client.submit_many("classify", self._counted(), job_id=self.job_id)
        except Exception as err:  # noqa: BLE001 - any failure is reported by the main thread, which stops the soak
            self.error = err


class Soak:
    """One backfill against one worker, sampled until every result is stored (or it cannot be)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.console = report.console()
        self.samples: list[Sample] = []
        self.stop_reason = ""
        self.wall_s = 0.0
        self.load_before = loadavg()
        self.worker_end: dict[str, int] = {}

    def run(self) -> int:
        """Start Redis and the worker, backfill, sample, report; returns the exit status."""
        from benchmarks.soak_faults import fast_registry
        from sift.contract import Lane
        from sift.keys import errors_key, queue_name
        from sift.local import EmbeddedRedis, WorkerProcess
        from sift.results_store import ResultStore
        from sift.settings import SiftSettings

        args = self.args
        args.out.mkdir(parents=True, exist_ok=True)
        cores = len(os.sched_getaffinity(0))
        # classify on bert-tiny: per-item machinery, not FLOPs, dominates; the YAML stays with the results
        registry = fast_registry(args.out)
        log_path = args.out / "worker.log"
        log_path.unlink(missing_ok=True)
        job_id = f"soak-{uuid.uuid4().hex[:12]}"
        with EmbeddedRedis() as server:
            settings = SiftSettings(
                redis_url=server.url,
                registry=registry,
                queue_prefix=f"soak-{uuid.uuid4().hex[:8]}",
                cache_enabled=False,  # every text is new anyway; off so that no lookup or write is measured
                max_queued_bulk=args.max_queued,
                on_queue_full="block",
            )
            worker = WorkerProcess(settings, device=args.device, models="sentiment", threads=cores, log_path=log_path)
            started = time.perf_counter()
            worker.start(timeout_s=300)
            self.console.log(f"worker ready in {time.perf_counter() - started:.1f} s ({cores} torch threads)")
            assert worker.process is not None and server.process is not None
            worker_pid, redis_pid = worker.process.pid, server.process.pid
            bulk_queue = queue_name(settings.queue_prefix, Lane.BULK)
            producer = Producer(settings, args.items, job_id)
            redis = settings.redis_client()
            store = ResultStore(redis, prefix=settings.queue_prefix)

            def sample(t_s: float, stored: int) -> Sample:
                worker_kb = process_memory_kb(worker_pid)
                return Sample(
                    t_s=t_s,
                    submitted=producer.submitted,
                    stored=stored,
                    queue_depth=int(redis.llen(bulk_queue)),
                    rss_kb=worker_kb.get("VmRSS", 0),
                    hwm_kb=worker_kb.get("VmHWM", 0),
                    redis_used_bytes=int(redis.info("memory")["used_memory"]),
                    redis_rss_kb=process_memory_kb(redis_pid).get("VmRSS", 0),
                )

            try:
                self.samples.append(sample(0.0, 0))
                start = time.perf_counter()
                producer.start()
                self.wall_s = self._follow(producer, worker, lambda: store.count(job_id), start, sample)
                errors = int(redis.scard(errors_key(settings.queue_prefix, job_id)))
                self.worker_end = process_memory_kb(worker_pid) if worker.process.poll() is None else {}
            finally:
                redis.close()
                worker.stop()
        expected = producer.handle.expected if producer.handle is not None else args.items
        complete = not self.stop_reason and self.samples[-1].stored >= expected and errors == 0
        if errors:
            self.stop_reason = (self.stop_reason + f"; {errors} error results").lstrip("; ")
        self._report(settings, expected, errors, complete, cores)
        return 0 if complete else 1

    def _follow(
        self,
        producer: Producer,
        worker: Any,
        count_stored: Callable[[], int],
        start: float,
        sample: Callable[[float, int], Sample],
    ) -> float:
        """Sample every ``--interval`` s until all results are stored or the soak must stop; returns its wall time."""
        args = self.args
        next_sample = start + args.interval
        cap = start + args.max_minutes * 60.0
        while True:
            time.sleep(0.1)  # completion is checked often, so the wall time is accurate to ~0.1 s
            now = time.perf_counter()
            stored = count_stored()
            done = producer.handle is not None and stored >= producer.handle.expected
            if producer.error is not None:
                self.stop_reason = f"the producer failed: {producer.error!r}"
            elif worker.process.poll() is not None:
                self.stop_reason = f"the worker exited with code {worker.process.returncode}; see {worker.log_path}"
            elif now > cap and not done:
                self.stop_reason = f"stopped at the {args.max_minutes:g}-minute cap"
            if (done or self.stop_reason or now >= next_sample) and worker.process.poll() is None:
                self.samples.append(sample(now - start, stored))  # a dead worker has no /proc entry to read
                if len(self.samples) % 15 == 0:
                    last = self.samples[-1]
                    self.console.log(
                        f"{last.stored:,} stored, {last.submitted:,} submitted, queue {last.queue_depth} messages, "
                        f"worker RSS {last.rss_mib:,.1f} MiB"
                    )
            while next_sample <= now:
                next_sample += args.interval
            if done or self.stop_reason:
                return now - start

    def _report(self, settings: Any, expected: int, errors: int, complete: bool, cores: int) -> None:
        args, samples = self.args, self.samples
        stored = samples[-1].stored
        # An incomplete run is judged on the items it did store, so its curve still says something.
        summary = summarize(samples, expected if complete else max(stored, 1))
        rate = stored / self.wall_s if self.wall_s > 0 else 0.0
        last = samples[-1]

        def mib(value: float | None) -> str:
            return "—" if value is None else f"{value:,.1f} MiB"

        slope = summary.slope_mib_per_100k
        rows: list[tuple[str, str]] = [
            ("items", f"{stored:,} of {expected:,} stored" + ("" if complete else f" ({self.stop_reason})")),
            ("wall time", f"{self.wall_s:,.1f} s (first submit to last result stored)"),
            ("items/s", f"{rate:,.0f}"),
            ("worker RSS when ready", mib(summary.ready_mib)),
            *(
                (f"worker RSS at {int(100 * f)}% of {summary.items:,} items", mib(v))
                for f, v in summary.rss_mib_at.items()
            ),
            ("worker peak (VmHWM)", mib(summary.peak_mib)),
            ("RSS slope, second half", slope_text(slope, summary.items)),
            ("Redis used_memory at the end", mib(last.redis_used_bytes / 1024 / KIB_PER_MIB)),
            ("redis-server RSS at the end", mib(last.redis_rss_kb / KIB_PER_MIB)),
            ("error results", f"{errors:,}"),
            ("samples", f"{len(samples)} (every {args.interval:g} s)"),
            ("load average", f"before {self.load_before}; after {loadavg()}"),
            (
                "setup",
                f"1 {args.device} worker, {cores} torch threads, bert-tiny classify, logit cache off, "
                f"{settings.chunk_size} items per message, bulk queue bound {settings.max_queued_bulk} messages",
            ),
        ]
        table = Table(title="Worker memory across one backfill", title_justify="left", show_header=False)
        table.add_column("what", style="bold")
        table.add_column("value")
        for name, value in rows:
            table.add_row(name, value)
        self.console.print(table)
        if summary.verdict is None:
            line = "NO VERDICT: fewer than 10% of the items were stored"
            self.console.print(f"[bold yellow]{line}[/bold yellow]")
        else:
            line = summary.verdict.describe()
            style = "bold green" if summary.verdict.flat else "bold red"
            self.console.print(f"[{style}]{line}[/{style}]")
        if not complete:
            warning = f"INCOMPLETE: {self.stop_reason}; judged on the {stored:,} items stored, not on {expected:,}"
            self.console.print(f"[bold yellow]{warning}[/bold yellow]")

        document = {
            "argv": sys.argv,
            "items_requested": args.items,
            "items_expected": expected,
            "items_stored": stored,
            "complete": complete,
            "stop_reason": self.stop_reason,
            "error_results": errors,
            "wall_s": self.wall_s,
            "items_per_s": rate,
            "cores": cores,
            "load_average_before": self.load_before,
            "load_average_after": loadavg(),
            "settings": {
                "chunk_size": settings.chunk_size,
                "max_queued_bulk": settings.max_queued_bulk,
                "prefetch_multiplier": settings.prefetch_multiplier,
                "cache_enabled": settings.cache_enabled,
            },
            "summary": {
                "items": summary.items,
                "ready_mib": summary.ready_mib,
                "rss_mib_at": {str(f): v for f, v in summary.rss_mib_at.items()},
                "peak_mib": summary.peak_mib,
                "slope_mib_per_100k": slope,
                "verdict": None if summary.verdict is None else summary.verdict.word,
                "verdict_line": line,
            },
            "worker_memory_kb_at_end": self.worker_end,
            "samples": [asdict(s) for s in samples],
        }
        report.write_json(args.out / "soak.json", document)
        plot_memory(args.out / "worker_memory.png", samples, summary)
        self.console.print(f"wrote {args.out / 'soak.json'}, {args.out / 'worker_memory.png'} and worker.log")


def plot_memory(path: Path, samples: Sequence[Sample], summary: Summary) -> None:
    """Top: worker RSS and peak against items stored, with the flat band. Bottom: progress against time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), dpi=120)
    stored = [s.stored for s in samples]
    top.plot(stored, [s.rss_mib for s in samples], marker=".", label="worker RSS")
    top.plot(stored, [s.hwm_kb / KIB_PER_MIB for s in samples], linestyle=":", label="worker peak (VmHWM)")
    tenth = rss_at_fraction(samples, summary.items, 0.1)
    if tenth is not None:
        top.axvline(tenth.stored, color="grey", linestyle="--", linewidth=0.8, label="10% of the items")
    if summary.verdict is not None:
        base = summary.verdict.base_mib
        top.axhspan(base, base + summary.verdict.tolerance_mib, color="green", alpha=0.12, label="flat band")
        top.set_title(f"worker memory over the backfill: {summary.verdict.word}")
    else:
        top.set_title("worker memory over the backfill")
    top.set_xlabel("results stored")
    top.set_ylabel("MiB")
    top.set_ylim(bottom=0)
    top.grid(True, alpha=0.3)
    top.legend(loc="lower right")

    times = [s.t_s for s in samples]
    bottom.plot(times, stored, label="results stored")
    bottom.plot(times, [s.submitted for s in samples], linestyle="--", label="items submitted")
    bottom.set_xlabel("seconds since the first submit")
    bottom.set_ylabel("items")
    bottom.grid(True, alpha=0.3)
    redis_axis = bottom.twinx()
    redis_axis.plot(times, [s.redis_used_bytes / 1024 / 1024 for s in samples], color="grey", label="Redis used_memory")
    redis_axis.set_ylabel("Redis MiB")
    lines = bottom.get_legend_handles_labels()
    extra = redis_axis.get_legend_handles_labels()
    bottom.legend(lines[0] + extra[0], lines[1] + extra[1], loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.memory_soak``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # offline stand-in models only
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # explicit, as in benchmarks.run
    return Soak(parse_args(argv)).run()


if __name__ == "__main__":
    sys.exit(main())
