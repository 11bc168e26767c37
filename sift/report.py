"""Printing backfill summaries as tables."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from producers.backfill import BackfillSummary


def print_summary(console: Console, summary: BackfillSummary, out_path: Path | str) -> None:
    """Labels and errors with counts and shares, then throughput; ``out_path`` is a file or a redacted URL."""
    total = summary.results or 1
    table = Table(title=f"{summary.task}: {summary.results} results")
    table.add_column("label / error")
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    for label, count in summary.labels.most_common():
        table.add_row(label, str(count), f"{100 * count / total:.1f}%")
    for code, count in summary.errors.most_common():
        table.add_row(f"[red]error: {code}[/]", str(count), f"{100 * count / total:.1f}%")
    console.print(table)
    resumed = f", {summary.already_done} already done before this run" if summary.already_done else ""
    console.print(f"results: {out_path}", soft_wrap=True)
    console.print(
        f"{summary.lines} lines, {summary.submitted} submitted{resumed}; "
        f"{summary.seconds:.2f} s, [bold]{summary.items_per_s:.1f} items/s[/] (job {summary.job_id})"
    )
    for model, count in summary.models.most_common():
        console.print(f"  served by {model}: {count}")
