"""A worker gives real-time passes a thread of their own only where a bulk pass could make them wait."""

from __future__ import annotations

import pytest

from sift.settings import SiftSettings
from workers.worker import realtime_thread_wanted, resolve_queues


@pytest.mark.parametrize(
    ("queues", "overrides", "wanted"),
    [
        (("realtime", "bulk"), {}, True),
        (("bulk", "realtime"), {}, True),
        (("realtime",), {}, False),  # a dedicated real-time worker has no bulk pass to wait for
        (("bulk",), {}, False),
        (("realtime", "bulk"), {"realtime_thread": False}, False),
        (("realtime", "bulk"), {"forward_thread": False}, False),  # passes on the event loop: one at a time
    ],
)
def test_the_real_time_thread_serves_workers_of_both_lanes_only(
    queues: tuple[str, ...], overrides: dict[str, bool], wanted: bool
) -> None:
    settings = SiftSettings(queue_prefix="lanes", **overrides)
    assert realtime_thread_wanted(settings, resolve_queues(settings.queue_prefix, queues)) is wanted


def test_the_real_time_thread_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIFT_REALTIME_THREAD", "false")
    assert SiftSettings().realtime_thread is False
    monkeypatch.setenv("SIFT_REALTIME_THREAD", "maybe")
    with pytest.raises(ValueError, match="realtime_thread"):
        SiftSettings()


def test_the_bulk_niceness_is_read_from_the_environment_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SiftSettings().bulk_niceness == 10
    monkeypatch.setenv("SIFT_BULK_NICENESS", "0")
    assert SiftSettings().bulk_niceness == 0
    for wrong in ("20", "-1", "low"):
        monkeypatch.setenv("SIFT_BULK_NICENESS", wrong)
        with pytest.raises(ValueError, match="bulk_niceness"):
            SiftSettings()
