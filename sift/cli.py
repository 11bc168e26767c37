"""The ``sift`` command. Worker-side commands import torch lazily, so producers stay light."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from kombu.exceptions import OperationalError
from pydantic import ValidationError
from redis.exceptions import RedisError
from rich.console import Console

from sift.contract import ItemRejected, Lane
from sift.delivery.commands import add_delivery_commands
from sift.settings import SettingsError, SiftSettings, cache_dir, redact_url, settings_error_message

DEFAULT_MODELS_DIR = cache_dir() / "offline-models"


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse arguments, run the subcommand, map known errors to exit code 2."""
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if args.run is _run_fidelity:
        args.rest = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    # A worker says at start what it serves and how (device, dtype, runtime, warm-up); other commands stay quiet.
    args.loglevel = args.loglevel or ("INFO" if args.run is _run_worker else "WARNING")
    logging.basicConfig(
        level=getattr(logging, args.loglevel.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.run(args))
    except (SettingsError, ItemRejected, FileNotFoundError) as err:
        Console(stderr=True).print(f"[bold red]error:[/] {err}")
        return 2
    except ValidationError as err:
        if err.title != SiftSettings.__name__:
            raise
        # A malformed SIFT_* variable: name the variable, not the pydantic field.
        Console(stderr=True).print(f"[bold red]error:[/] {settings_error_message(err)}")
        return 2
    except TimeoutError as err:
        Console(stderr=True).print(f"[bold red]timed out:[/] {err}")
        return 3
    except (RedisError, OperationalError) as err:
        where = redact_url(SiftSettings().redis_url or "")
        Console(stderr=True).print(f"[bold red]cannot use Redis at {where}:[/] {err}")
        return 4


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sift", description="Queue-based text classification and moderation.")
    parser.add_argument(
        "--loglevel",
        default=os.environ.get("SIFT_LOGLEVEL"),
        help="log level (default: INFO for `sift worker`, WARNING for the rest)",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    worker = commands.add_parser("worker", help="run one Celery worker pinned to one device")
    _worker_args(worker)
    worker.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    worker.add_argument("--hostname", help="Celery node name (default: sift-<device>-<pid>@<host>)")
    worker.add_argument("--threads", type=int, help="torch intra-op threads (default: the --cpus slice, or all)")
    worker.add_argument("--cpus", help="pin the worker to these CPUs, e.g. 0-3 or 0,2 (Linux CPU-list syntax)")
    worker.set_defaults(run=_run_worker)

    workers = commands.add_parser("workers", help="one pinned worker per visible GPU, or N CPU workers")
    _worker_args(workers)
    workers.add_argument("--cpu-workers", type=int, default=1, help="CPU workers when no GPU is visible")
    workers.add_argument("--threads", type=int, help="threads per CPU worker (default: its slice of the cores)")
    workers.set_defaults(run=_run_workers)

    submit = commands.add_parser("submit", help="submit one item and print its result as JSON")
    submit.add_argument("--task", required=True)
    submit.add_argument("--model", help="registry role (default: the task's)")
    submit.add_argument("--item", help="the item as JSON (e.g. '{\"text\": \"hi\"}'); '-' reads stdin")
    submit.add_argument("--text", help="shortcut for --item '{\"text\": TEXT}'")
    submit.add_argument("--lane", choices=[lane.value for lane in Lane], default=Lane.REALTIME.value)
    submit.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the result")
    submit.add_argument("--deadline", type=float, help="seconds after which a still-queued item is answered 'expired'")
    submit.set_defaults(run=_run_submit)

    backfill = commands.add_parser("backfill", help="run a JSONL file through sift, one result per input line")
    backfill.add_argument("input", type=Path)
    backfill.add_argument("--task", required=True)
    backfill.add_argument(
        "--out",
        required=True,
        help="FILE.jsonl, FILE.parquet, '-' (JSON lines on stdout) or postgresql://user:password@host/db[?table=name]",
    )
    backfill.add_argument("--model", help="registry role (default: the task's)")
    backfill.add_argument("--job-id", help="default: derived from the file, so a re-run resumes")
    backfill.add_argument("--idle-timeout", type=float, default=300.0, help="give up after this long without a result")
    backfill.add_argument("--no-progress", action="store_true")
    backfill.set_defaults(run=_run_backfill)

    evaluation = commands.add_parser("eval", help="score a model on a labeled JSONL file, through the queue")
    evaluation.add_argument("input", type=Path)
    evaluation.add_argument("--task", required=True, choices=["classify", "nli", "zero_shot", "rerank"])
    evaluation.add_argument("--model", help="registry role (default: the task's)")
    evaluation.add_argument("--label-field", default="label", help="field holding the gold label")
    evaluation.add_argument("--label-map", help='gold label -> model label as JSON, e.g. \'{"0": "NEGATIVE"}\'')
    evaluation.add_argument("--json", type=Path, dest="json_out", help="also write the report as JSON to this file")
    evaluation.add_argument("--idle-timeout", type=float, default=300.0, help="give up after this long idle")
    evaluation.set_defaults(run=_run_eval)

    demo = commands.add_parser("demo", help="private Redis + one worker + backfill of the examples, then clean up")
    demo.add_argument("--examples", type=Path, default=Path("examples"))
    demo.add_argument("--out", type=Path, default=Path("out/demo"))
    demo.add_argument(
        "--models",
        choices=["auto", "reference", "offline", "random"],
        default="auto",
        help="auto: reference hub models if reachable, else offline: a real sentiment model fine-tuned here "
        "(once, minutes) + random-weight stand-ins; random: stand-ins only (seconds)",
    )
    demo.set_defaults(run=_run_demo)

    fidelity = commands.add_parser(
        "fidelity",
        help="agreement of every inference path (fp32, bf16, int8) with plain transformers fp32",
        add_help=False,  # its own parser (workers.fidelity) answers --help
    )
    fidelity.set_defaults(run=_run_fidelity)

    dead = commands.add_parser("dead", help="items that failed alone after their retries")
    dead.add_argument("action", choices=["list", "requeue", "purge"])
    dead.add_argument("--limit", type=int, default=100, help="letters to list or requeue")
    dead.set_defaults(run=_run_dead)

    add_delivery_commands(commands)

    health = commands.add_parser("health", help="Redis, queue depths vs bounds, dead letters, live workers")
    health.add_argument("--json", action="store_true", dest="as_json", help="print the report as JSON")
    health.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for Redis and worker replies")
    health.set_defaults(run=_run_health)

    ingress = commands.add_parser("ingress", help="serve the HTTP API (FastAPI on uvicorn): submit jobs, read results")
    ingress.add_argument("--host", help="interface to listen on (default: SIFT_INGRESS_HOST or 127.0.0.1)")
    ingress.add_argument("--port", type=int, help="TCP port (default: SIFT_INGRESS_PORT or 8000)")
    ingress.set_defaults(run=_run_ingress)

    build = commands.add_parser("build-test-models", help="build the offline random-weight test models")
    build.add_argument("--out", type=Path, default=DEFAULT_MODELS_DIR)
    build.add_argument("--force", action="store_true")
    build.set_defaults(run=_run_build)

    sentiment = commands.add_parser(
        "build-sentiment-model",
        help="fine-tune the packaged all-MiniLM-L6-v2 on labeled tweets into a real sentiment model (once, cached)",
    )
    sentiment.add_argument("--out", type=Path, default=DEFAULT_MODELS_DIR.parent / "sentiment-minilm")
    sentiment.add_argument("--force", action="store_true", help="rebuild even if a build is cached")
    sentiment.set_defaults(run=_run_build_sentiment)
    return parser


def _worker_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queues", default="realtime,bulk", help="lanes or queue names, comma-separated")
    parser.add_argument("--models", default="", help="registry roles to preload, comma-separated (default: all)")


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _run_worker(args: argparse.Namespace) -> int:
    from workers.cpus import parse_cpu_list
    from workers.worker import WorkerOptions, run_worker

    options = WorkerOptions(
        device=args.device,
        queues=_split(args.queues),
        models=_split(args.models),
        hostname=args.hostname,
        threads=args.threads,
        cpus=tuple(parse_cpu_list(args.cpus)) if args.cpus else (),
        loglevel=_celery_level(args.loglevel),
    )
    return run_worker(SiftSettings(), options)


def _celery_level(level: str) -> str:
    return "INFO" if level.upper() == "WARNING" else level.upper()


def _run_workers(args: argparse.Namespace) -> int:
    from workers.cpus import allowed_cpus
    from workers.launcher import plan_children, run_children, visible_gpus

    worker_args = ["--queues", args.queues] + (["--models", args.models] if args.models else [])
    children = plan_children(
        worker_args, visible_gpus(dict(os.environ)), args.cpu_workers, allowed_cpus(), args.threads
    )
    return run_children(children)


def _run_submit(args: argparse.Namespace) -> int:
    from producers.client import SiftClient

    if args.item is not None:
        text = sys.stdin.read() if args.item == "-" else args.item
        try:
            item = json.loads(text)
        except json.JSONDecodeError as err:
            raise SettingsError(f"--item is not valid JSON: {err}") from err
        if not isinstance(item, dict):
            raise SettingsError("--item must be a JSON object")
    elif args.text is not None:
        item = {"text": args.text}
    else:
        raise SettingsError("give the item with --item JSON or --text TEXT")
    with SiftClient(SiftSettings()) as client:
        ref = client.submit(args.task, item, model=args.model, lane=Lane(args.lane), deadline_s=args.deadline)
        result = client.result(ref, timeout_s=args.timeout)
    print(result.model_dump_json(exclude_none=True, indent=2))
    return 0 if result.ok else 1


def _run_backfill(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from producers.backfill import run_backfill
    from producers.client import SiftClient
    from producers.sinks import SinkError, open_sink
    from sift.report import print_summary

    if not args.input.is_file():
        raise FileNotFoundError(f"input file {args.input} does not exist")
    # With results on stdout, the progress bars and the summary go to stderr.
    console = Console(stderr=args.out.strip() == "-")
    try:
        # The client checks the settings without connecting; the sink is opened (a file created, the
        # database reached) before anything is submitted, so a bad target costs no work.
        with SiftClient(SiftSettings()) as client, open_sink(args.out) as sink:
            summary = run_backfill(
                client,
                args.input,
                sink,
                args.task,
                model=args.model,
                job_id=args.job_id,
                idle_timeout_s=args.idle_timeout,
                show_progress=not args.no_progress,
                console=console,
            )
    except SinkError as err:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(err))}")
        return 2
    except KeyboardInterrupt:
        Console(stderr=True).print("[bold red]interrupted:[/] run the same command again to resume")
        return 130
    # print_summary only prints where the results went; a database URL is no path, so say it as text.
    print_summary(console, summary, sink.description)
    return 0


def _run_fidelity(args: argparse.Namespace) -> int:
    from workers.fidelity import main as fidelity_main

    return fidelity_main(args.rest)


def _run_dead(args: argparse.Namespace) -> int:
    from producers.client import SiftClient

    console = Console()
    with SiftClient(SiftSettings()) as client:
        if args.action == "requeue":
            console.print(f"requeued {client.requeue_dead_letters(args.limit)} dead letter(s)")
        elif args.action == "purge":
            console.print(f"purged {client.dead_letters.purge()} dead letter(s)")
        else:
            letters = client.dead_letters.peek(args.limit)
            for letter in letters:
                item_id = letter.item.get("id") if isinstance(letter.item, dict) else None
                console.print(
                    f"{letter.job_id} {item_id} {letter.task} [red]{letter.error.code}[/] {letter.error.message}",
                    soft_wrap=True,
                )
            console.print(f"{len(letters)} of {client.dead_letters.count()} dead letter(s) shown")
    return 0


def _run_health(args: argparse.Namespace) -> int:
    from sift.health import check_health, print_health

    if not args.timeout > 0:
        raise SettingsError(f"--timeout must be a positive number of seconds, not {args.timeout}")
    report = check_health(SiftSettings(), timeout_s=args.timeout)
    if args.as_json:
        print(report.model_dump_json(indent=2))
    else:
        print_health(Console(), report)
    return 0 if report.healthy else 1


def _run_ingress(args: argparse.Namespace) -> int:
    try:
        from producers.ingress.server import serve
    except ImportError as err:
        raise SettingsError(f"the ingress needs FastAPI and uvicorn ({err}): pip install 'sift[ingress]'") from err

    return serve(SiftSettings(), host=args.host, port=args.port)


def _run_eval(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from producers.client import SiftClient
    from producers.evaluate import EvalDataError, evaluate, print_eval

    if not args.input.is_file():
        raise FileNotFoundError(f"input file {args.input} does not exist")
    try:
        label_map = json.loads(args.label_map) if args.label_map else {}
    except json.JSONDecodeError as err:
        raise SettingsError(f"--label-map is not valid JSON: {err}") from err
    if not isinstance(label_map, dict) or not all(isinstance(v, str) for v in label_map.values()):
        raise SettingsError('--label-map must be a JSON object of labels, e.g. \'{"0": "NEGATIVE"}\'')
    try:
        with SiftClient(SiftSettings()) as client:
            report = evaluate(
                client,
                args.input,
                args.task,
                model=args.model,
                label_field=args.label_field,
                label_map=label_map,
                idle_timeout_s=args.idle_timeout,
            )
    except EvalDataError as err:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(err))}")
        return 2
    print_eval(Console(), report)
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return 0 if report.n_scored > 0 else 1


def _run_demo(args: argparse.Namespace) -> int:
    from sift.demo import run_demo

    return run_demo(SiftSettings(), examples=args.examples, out_dir=args.out, models=args.models)


def _run_build(args: argparse.Namespace) -> int:
    from workers.offline_models import build_offline_models

    path = build_offline_models(args.out, force=args.force)
    print(path)
    return 0


def _run_build_sentiment(args: argparse.Namespace) -> int:
    from workers.sentiment_builder import build_sentiment_model

    build = build_sentiment_model(args.out, force=args.force)
    print(f"model: {build.model_dir}")
    print(f"held-out accuracy: {build.accuracy:.4f} on {build.n_test} tweets ({build.held_out})")
    print(f"trained on {build.n_train} tweets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
