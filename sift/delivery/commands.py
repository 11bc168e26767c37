"""``sift deliver`` and ``sift results tail``: the delivery subcommands of the ``sift`` CLI."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from types import FrameType

from rich.console import Console

from sift.settings import SettingsError, SiftSettings, redact_url


def add_delivery_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``deliver`` and ``results tail`` on the CLI's subcommands."""
    deliver = commands.add_parser("deliver", help="POST results to their jobs' callback URLs (webhook dispatcher)")
    deliver.add_argument("--consumer", help="this dispatcher's name in the 'webhooks' group (default: host-pid)")
    deliver.set_defaults(run=run_deliver)

    results = commands.add_parser("results", help="the global results stream")
    actions = results.add_subparsers(required=True, metavar="ACTION")
    tail = actions.add_parser("tail", help="print results as JSON lines, read with a consumer group")
    tail.add_argument("--group", required=True, help="consumer group (created on first use)")
    tail.add_argument("--consumer", required=True, help="this reader's name in the group")
    tail.add_argument(
        "--from",
        dest="start",
        choices=["earliest", "latest"],
        default="earliest",
        help="where a new group starts: every result the stream still holds, or only new ones",
    )
    tail.add_argument("--limit", type=int, help="exit after printing this many results")
    tail.add_argument("--idle-timeout", type=float, help="exit (code 3) after this many seconds without a result")
    tail.set_defaults(run=run_tail)


def run_deliver(args: argparse.Namespace) -> int:
    """Run the webhook dispatcher until SIGTERM or Ctrl-C; refuses to start without SIFT_WEBHOOK_SECRET."""
    from sift.delivery.settings import load_delivery_settings
    from sift.delivery.webhooks import GROUP, WebhookDispatcher, WebhookOptions

    options = WebhookOptions.from_settings(load_delivery_settings())
    settings = SiftSettings()
    client = settings.redis_client()
    client.ping()  # fail now, with the CLI's Redis error, rather than in the loop
    with WebhookDispatcher(client, options, prefix=settings.queue_prefix, consumer=args.consumer) as dispatcher:

        def stop(_signum: int, _frame: FrameType | None) -> None:
            dispatcher.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        Console(stderr=True).print(
            f"sift deliver: consumer {dispatcher.consumer.consumer!r} of group {GROUP!r} on "
            f"{dispatcher.consumer.stream} at {redact_url(settings.require_redis_url())}",
            soft_wrap=True,
        )
        if options.allowed_networks:  # an operator's exception to the SSRF guard: say so at every start
            allowed = ", ".join(str(network) for network in options.allowed_networks)
            Console(stderr=True).print(f"sift deliver: webhooks may reach these private networks: {allowed}")
        dispatcher.run()
    client.close()
    return 0


def run_tail(args: argparse.Namespace) -> int:
    """Print results from the stream as JSON lines, acknowledging each once printed."""
    from sift.delivery.stream import ResultStreamConsumer

    if args.limit is not None and args.limit < 1:
        raise SettingsError(f"--limit must be at least 1, got {args.limit}")
    if args.idle_timeout is not None and args.idle_timeout <= 0:
        raise SettingsError(f"--idle-timeout must be positive, got {args.idle_timeout}")
    settings = SiftSettings()
    client = settings.redis_client()
    consumer = ResultStreamConsumer(
        client, prefix=settings.queue_prefix, group=args.group, consumer=args.consumer, start=args.start
    )
    printed = 0
    last_result = time.monotonic()
    try:
        while args.limit is None or printed < args.limit:
            entries = consumer.read(block_s=1.0)
            if not entries:
                if args.idle_timeout is not None and time.monotonic() - last_result > args.idle_timeout:
                    raise TimeoutError(f"no new result for {args.idle_timeout:g} s")
                continue
            last_result = time.monotonic()
            # Past --limit, entries stay unconfirmed: this consumer reads them first next time.
            shown = entries if args.limit is None else entries[: args.limit - printed]
            for entry in shown:
                sys.stdout.write(entry.result.model_dump_json(exclude_none=True) + "\n")
            sys.stdout.flush()
            consumer.ack(entry.entry_id for entry in shown)
            printed += len(shown)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): the unprinted batch stays unconfirmed; keep exit quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        client.close()
    return 0
