"""`sift workers` gives each child a metrics port of its own."""

from __future__ import annotations

import pytest

from sift.settings import SettingsError, SiftSettings
from workers.launcher import Child, plan_children


def ports(children: list[Child]) -> list[str | None]:
    return [child.env.get("SIFT_METRICS_PORT") for child in children]


def test_cpu_children_get_consecutive_ports_from_the_base() -> None:
    children = plan_children(
        [], [], cpu_workers=3, cpus=range(6), threads=None, settings=SiftSettings(metrics_port=9400)
    )
    assert ports(children) == ["9400", "9401", "9402"]


def test_gpu_children_get_consecutive_ports_and_keep_their_gpu() -> None:
    children = plan_children(
        [], ["0", "3"], cpu_workers=1, cpus=range(6), threads=None, settings=SiftSettings(metrics_port=9400)
    )
    assert ports(children) == ["9400", "9401"]
    assert [c.env["CUDA_VISIBLE_DEVICES"] for c in children] == ["0", "3"]


def test_without_a_metrics_port_no_child_serves_metrics() -> None:
    children = plan_children([], [], cpu_workers=2, cpus=range(4), threads=None, settings=SiftSettings())
    assert ports(children) == [None, None]


def test_port_zero_lets_every_child_pick_a_free_port() -> None:
    children = plan_children([], [], cpu_workers=2, cpus=range(4), threads=None, settings=SiftSettings(metrics_port=0))
    assert ports(children) == ["0", "0"]


def test_the_environment_is_read_when_no_settings_are_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIFT_METRICS_PORT", "9500")
    assert ports(plan_children([], [], cpu_workers=2, cpus=range(4), threads=None)) == ["9500", "9501"]


def test_ports_past_65535_are_refused_before_any_child_starts() -> None:
    with pytest.raises(SettingsError, match="SIFT_METRICS_PORT=65535"):
        plan_children([], [], cpu_workers=2, cpus=range(4), threads=None, settings=SiftSettings(metrics_port=65535))
