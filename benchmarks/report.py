"""Targets, the printed tables, the JSON file and the batch-budget plot."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.paths import PathResult
from benchmarks.queued import RealtimeResult


@dataclass(frozen=True)
class Target:
    """A goal from the issue, checked against figures of this one run."""

    name: str
    measured: str
    goal: str
    passed: bool | None
    """None when a figure it needs was not measured."""

    @property
    def verdict(self) -> str:
        """PASS, MISS or n/a."""
        return "n/a" if self.passed is None else ("PASS" if self.passed else "MISS")

    def as_json(self) -> dict[str, Any]:
        """The target as a JSON object."""
        return {"name": self.name, "measured": self.measured, "goal": self.goal, "verdict": self.verdict}


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


def _rate(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def paths_table(
    results: Sequence[PathResult], peak_flops: Mapping[str, float], names: dict[str, str] | None = None
) -> Table:
    """One row per measured path: throughput, latency, achieved GFLOP/s and share of the FLOP bound (``peak_flops``:
    per model, the matmul peak in the dtype it is served in)."""
    table = Table(title="Throughput and latency (same inputs, one run)", title_justify="left")
    for name, justify in [
        ("model", "left"),
        ("path", "left"),
        ("n", "right"),
        ("items/s", "right"),
        ("tokens/s", "right"),
        ("latency of", "left"),
        ("p50 ms", "right"),
        ("p99 ms", "right"),
        ("GFLOP/s", "right"),
        ("% bound", "right"),
        ("cores used", "right"),
    ]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for result in results:
        gflops = result.gflops()
        table.add_row(
            (names or {}).get(result.model, result.model),
            result.path,
            str(result.items),
            _rate(result.items_per_s),
            _rate(result.tokens_per_s),
            result.latency_of,
            _ms(result.p50_ms),
            _ms(result.p99_ms),
            "—" if gflops is None else f"{gflops:,.1f}",
            "—" if gflops is None else f"{100.0 * gflops * 1e9 / peak_flops[result.model]:.1f}%",
            "—" if result.cores_used is None else f"{result.cores_used:.2f}",
        )
    return table


def realtime_table(
    rows: Sequence[RealtimeResult], engine_single: dict[str, PathResult], names: dict[str, str] | None = None
) -> Table:
    """Real-time submit-to-result latency next to the engine's own single-item latency."""
    table = Table(title="Real-time lane: one item at a time, submit → result", title_justify="left")
    for name in ("model", "condition", "n", "p50 ms", "p99 ms", "engine 1-item p50 / p99 ms", "note"):
        table.add_column(name, justify="right" if name in ("n", "p50 ms", "p99 ms") else "left")
    for row in rows:
        single = engine_single.get(row.model)
        reference = f"{_ms(single.p50_ms)} / {_ms(single.p99_ms)}" if single else "—"
        table.add_row(
            (names or {}).get(row.model, row.model),
            row.condition,
            str(len(row.latencies_ms)),
            _ms(row.p50_ms),
            _ms(row.p99_ms),
            reference,
            row.note,
        )
    return table


def ratios_table(rows: Sequence[dict[str, Any]]) -> Table:
    """The ratios between the paths of each model (the engine against the others and the bound)."""
    table = Table(title="Ratios (items/s of the engine alone against each other path)", title_justify="left")
    columns = [
        ("engine / naive pipeline", "x"),
        ("engine / CrossEncoder 1 pair/call", "x"),
        ("engine / CrossEncoder batch_size=32", "x"),
        ("engine % of FLOP bound (unpadded)", "%"),
        ("engine % of FLOP bound (padded work)", "%"),
        ("end to end / engine", "%"),
    ]
    table.add_column("model")
    for name, _ in columns:
        table.add_column(name.replace("engine % of FLOP bound", "% of bound"), justify="right")
    for row in rows:
        cells = [str(row["model"])]
        for name, unit in columns:
            value = row.get(name)
            if value is None:
                cells.append("—")
            elif unit == "x":
                cells.append(f"{value:.2f}x")
            else:
                cells.append(f"{value * (100.0 if name == 'end to end / engine' else 1.0):.1f}%")
        table.add_row(*cells)
    return table


def targets_table(targets: Sequence[Target]) -> Table:
    """Each target with this run's figure and PASS / MISS."""
    table = Table(title="Targets (ratios from this run)", title_justify="left")
    table.add_column("target")
    table.add_column("measured", justify="right")
    table.add_column("goal", justify="right")
    table.add_column("result")
    for target in targets:
        style = {"PASS": "green", "MISS": "bold red"}.get(target.verdict, "yellow")
        table.add_row(target.name, target.measured, target.goal, f"[{style}]{target.verdict}[/{style}]")
    return table


def facts_table(facts: Sequence[tuple[str, str]]) -> Table:
    """Two columns of labelled facts: machine, inputs, bound, memory, enqueue, load."""
    table = Table(title="Machine, inputs and other figures", title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for name, value in facts:
        table.add_row(name, value)
    return table


def ratio_target(name: str, value: float | None, goal: float, unit: str = "x") -> Target:
    """A ``value >= goal`` target; ``unit`` is ``x`` for ratios or ``%`` for shares."""
    if value is None:
        return Target(name, "—", f"≥ {goal:g}{unit}", None)
    shown = f"{value:.2f}x" if unit == "x" else f"{value:.1f}{unit}"
    return Target(name, shown, f"≥ {goal:g}{unit}", value >= goal)


def latency_target(name: str, measured: float | None, reference: float | None, slack_ms: float) -> Target:
    """``measured <= reference + slack_ms`` (milliseconds)."""
    if measured is None or reference is None:
        return Target(name, "—", f"≤ engine + {slack_ms:g} ms", None)
    goal = reference + slack_ms
    return Target(name, f"{measured:,.1f} ms", f"≤ {goal:,.1f} ms ({reference:,.1f} + {slack_ms:g})", measured <= goal)


def write_json(path: Path, report: dict[str, Any]) -> None:
    """Every figure of the run as one JSON document."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")


def plot_sweep(path: Path, sweep: Sequence[dict[str, Any]], model: str, device: str) -> None:
    """Engine items/s (and % of the FLOP bound) against the batch token budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    budgets = sorted({row["batch_tokens"] for row in sweep})
    for min_fill in sorted({row.get("min_fill", 0.0) for row in sweep}, reverse=True):
        rows = sorted((row for row in sweep if row.get("min_fill", 0.0) == min_fill), key=lambda r: r["batch_tokens"])
        label = f"sift engine, min_fill {min_fill:g}" + (" (no padding-aware cut)" if min_fill == 0 else "")
        xs = [row["batch_tokens"] for row in rows]
        ys = [row["items_per_s"] for row in rows]
        ax.plot(xs, ys, marker="o", label=label)
        for x, y, row in zip(xs, ys, rows, strict=True):
            share = f"{row['percent_of_bound']:.0f}%"
            ax.annotate(share, (x, y), textcoords="offset points", xytext=(0, 8), ha="center")
    bound = {row["batch_tokens"]: row["bound_items_per_s"] for row in sweep}
    ax.plot(budgets, [bound[b] for b in budgets], linestyle="--", color="grey", label="FLOP bound (items/s)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets)
    ax.set_xticklabels([str(b) for b in budgets])
    ax.set_xlabel("batch_tokens (padded tokens per forward pass)")
    ax.set_ylabel("items / s")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{model}: engine throughput against batch token budget ({device})")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def console() -> Console:
    """A console wide enough for the tables when the output is a file or a pipe."""
    default = Console()
    return default if default.is_terminal else Console(width=180)
