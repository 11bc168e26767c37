"""Helpers of the sink tests: a pg_ctl for the private PostgreSQL they start (pytest-postgresql), Ctrl-C on cue."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
from collections.abc import Sequence
from pathlib import Path

from producers.sinks import ResultSink
from sift.contract import ItemResult

UNPRIVILEGED_WRAPPER = Path(__file__).resolve().parent / "pg_ctl_unprivileged.sh"
PG_USER = "postgres"


def _major_version(pg_ctl: str) -> float:
    """15 for /usr/lib/postgresql/15/bin/pg_ctl."""
    try:
        return float(Path(pg_ctl).parent.parent.name)
    except ValueError:
        return 0.0


def find_pg_ctl() -> tuple[str | None, str]:
    """The pg_ctl to start the tests' server with, or None and why there is none.

    Newest of /usr/lib/postgresql/*/bin/pg_ctl (Debian, Ubuntu), else pg_ctl on PATH. As root,
    a wrapper that runs it as the ``postgres`` user, since PostgreSQL refuses to run as root.
    """
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_major_version)
    pg_ctl = found[-1] if found else shutil.which("pg_ctl")
    if pg_ctl is None:
        return None, "no pg_ctl: install the PostgreSQL server (Debian: apt-get install postgresql)"
    if os.geteuid() != 0:
        return pg_ctl, ""
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        return None, f"running as root, and there is no {PG_USER!r} user to run PostgreSQL as"
    if shutil.which("setpriv") is None:
        return None, "running as root, and setpriv (util-linux) is missing to run PostgreSQL unprivileged"
    os.environ["SINK_TESTS_PG_CTL"] = pg_ctl
    return str(UNPRIVILEGED_WRAPPER), ""


class Interrupted(KeyboardInterrupt):
    """What :class:`InterruptingSink` raises: Ctrl-C, as the backfill sees it, at a known point."""


class InterruptingSink(ResultSink):
    """A real sink that the user interrupts (Ctrl-C) when the backfill hands it batch number ``at``.

    The batches before it reach the real sink; the interruption arrives instead of batch ``at``.
    """

    def __init__(self, sink: ResultSink, at: int) -> None:
        self.sink, self.at, self.batches = sink, at, 0
        self.written: list[ItemResult] = []
        """What reached the real sink."""
        self.description = sink.description

    def write(self, results: Sequence[ItemResult]) -> None:
        self.batches += 1
        if self.batches == self.at:
            raise Interrupted
        self.sink.write(results)
        self.written += results

    def close(self) -> None:
        self.sink.close()

    def abort(self) -> None:
        self.sink.abort()
