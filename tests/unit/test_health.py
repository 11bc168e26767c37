"""The verdict of ``sift health`` on what it read (the reading itself is tested against real servers)."""

from __future__ import annotations

from rich.console import Console

from sift.contract import Lane
from sift.health import HealthReport, judge, print_health
from sift.settings import SiftSettings

SETTINGS = SiftSettings(
    redis_url="redis://localhost:1/0", queue_prefix="prod", max_queued_realtime=10, max_queued_bulk=5
)
URL = "redis://localhost:1/0"
BOTH = ["prod.bulk", "prod.realtime"]


def verdict(realtime: int = 0, bulk: int = 0, dead: int = 0, **workers: list[str]) -> HealthReport:
    return judge(SETTINGS, URL, {Lane.REALTIME: realtime, Lane.BULK: bulk}, dead, workers)


def render(report: HealthReport) -> str:
    console = Console(width=200, record=True)
    print_health(console, report)
    # Drop the table's borders: the tests read cells as words.
    return " ".join(console.export_text().translate(str.maketrans("", "", "│┃")).split())


def test_a_worker_on_both_queues_with_room_to_spare_is_healthy() -> None:
    report = verdict(realtime=3, bulk=1, gpu0=BOTH)
    assert report.healthy and report.problems == [] and report.warnings == []
    assert [w.name for w in report.workers] == ["gpu0"]
    assert [lane.consumers for lane in report.lanes] == [["gpu0"], ["gpu0"]]
    assert render(report).endswith("healthy")


def test_no_worker_at_all_is_unhealthy() -> None:
    report = verdict()
    assert not report.healthy
    assert report.problems == ["no live worker consumes prod.realtime or prod.bulk"]
    assert "unhealthy: no live worker consumes prod.realtime or prod.bulk" in render(report)


def test_workers_of_another_deployment_do_not_count() -> None:
    report = verdict(staging0=["staging.realtime", "staging.bulk"])
    assert not report.healthy
    assert report.other_workers == ["staging0"] and report.workers == []
    assert "1 other worker(s) answered, consuming other queues" in report.problems[0]


def test_a_full_queue_is_unhealthy_even_with_workers() -> None:
    report = verdict(bulk=5, gpu0=BOTH)
    assert report.problems == ["queue prod.bulk is full (5/5 messages): producers block or fail"]


def test_a_nearly_full_queue_is_a_warning() -> None:
    report = verdict(realtime=8, gpu0=BOTH)
    assert report.healthy
    assert report.warnings == ["queue prod.realtime is 80% full (8/10 messages)"]


def test_real_time_messages_no_worker_consumes_are_unhealthy() -> None:
    report = verdict(realtime=2, bulk0=["prod.bulk"])
    assert report.problems == ["2 message(s) wait in prod.realtime and no live worker consumes it"]


def test_bulk_messages_without_a_consumer_are_a_warning_as_workers_pause_bulk_intake() -> None:
    # While a worker holds enough bulk work it stops consuming the bulk queue; that is flow control, not an outage.
    report = verdict(bulk=2, gpu0=["prod.realtime"])
    assert report.healthy
    assert report.warnings[0].startswith("2 message(s) wait in prod.bulk and no live worker consumes it right now")


def test_an_idle_lane_without_workers_is_only_a_warning() -> None:
    report = verdict(rt0=["prod.realtime"])
    assert report.healthy
    assert report.warnings == ["no live worker consumes prod.bulk"]


def test_dead_letters_are_a_warning_not_a_failure() -> None:
    report = verdict(dead=4, gpu0=BOTH)
    assert report.healthy
    assert report.warnings == ["4 dead letter(s): see `sift dead list`"]
    assert "dead letters 4 see `sift dead list`" in render(report)


def test_the_json_report_carries_the_verdict() -> None:
    report = HealthReport.model_validate_json(verdict(gpu0=BOTH).model_dump_json())
    assert report.healthy
    assert '"healthy":false' in verdict().model_dump_json()
