"""`sift workers`: one pinned child per GPU, or CPU children splitting the cores."""

from __future__ import annotations

import os

import pytest

from sift.settings import SettingsError
from workers.cpus import allowed_cpus, format_cpu_list, parse_cpu_list, pin_to
from workers.launcher import Child, plan_children, visible_gpus


def test_one_child_per_visible_gpu_each_sees_only_its_own() -> None:
    children = plan_children(["--queues", "realtime"], ["0", "3"], cpu_workers=1, cpus=range(16), threads=None)
    assert [c.env["CUDA_VISIBLE_DEVICES"] for c in children] == ["0", "3"]
    for child, gpu in zip(children, ["0", "3"], strict=True):
        assert child.argv[child.argv.index("--device") + 1] == "cuda:0"
        assert child.argv[child.argv.index("--hostname") + 1] == f"sift-gpu{gpu}@%h"
        assert "--queues" in child.argv


def flag(child: Child, name: str) -> str | None:
    return child.argv[child.argv.index(name) + 1] if name in child.argv else None


def test_cpu_children_split_the_cores() -> None:
    children = plan_children([], [], cpu_workers=2, cpus=range(8), threads=None)
    assert len(children) == 2
    assert [flag(c, "--cpus") for c in children] == ["0-3", "4-7"], "each child pinned to its own slice"
    assert all(flag(c, "--threads") == "4" for c in children)
    assert all(c.env["CUDA_VISIBLE_DEVICES"] == "" for c in children)
    assert len({flag(c, "--hostname") for c in children}) == 2


def test_cpu_slices_come_from_the_launchers_own_cpus_and_threads_can_differ() -> None:
    # A launcher confined to CPUs 2, 3, 6, 7 and 9 (taskset, a container): two slices of two, CPU 9 left over.
    children = plan_children([], [], cpu_workers=2, cpus=[9, 2, 3, 6, 7], threads=1)
    assert [flag(c, "--cpus") for c in children] == ["2-3", "6-7"]
    assert [flag(c, "--threads") for c in children] == ["1", "1"]


def test_more_cpu_workers_than_cpus_run_unpinned_with_one_thread_each() -> None:
    children = plan_children([], [], cpu_workers=3, cpus=[0, 1], threads=None)
    assert [flag(c, "--cpus") for c in children] == [None, None, None]
    assert [flag(c, "--threads") for c in children] == ["1", "1", "1"]


def test_no_cpu_workers_is_refused() -> None:
    with pytest.raises(SettingsError, match="at least 1"):
        plan_children([], [], cpu_workers=0, cpus=range(4), threads=None)


@pytest.mark.parametrize(
    ("text", "cpus"), [("0", [0]), ("0-3", [0, 1, 2, 3]), ("3,1-2, 8", [1, 2, 3, 8]), ("1-1,1", [1])]
)
def test_cpu_lists_parse_and_format_back(text: str, cpus: list[int]) -> None:
    assert parse_cpu_list(text) == cpus
    assert parse_cpu_list(format_cpu_list(cpus)) == cpus
    assert format_cpu_list([0, 1, 2, 3, 8, 10, 11]) == "0-3,8,10-11"


@pytest.mark.parametrize("text", ["", "a", "1-", "-1", "3-1", "1,,2", "0x1", "1.5"])
def test_bad_cpu_lists_are_refused_with_the_syntax(text: str) -> None:
    with pytest.raises(SettingsError, match="--cpus"):
        parse_cpu_list(text)


def test_pinning_to_a_cpu_this_process_may_not_use_is_refused() -> None:
    beyond = max(allowed_cpus()) + 1
    with pytest.raises(SettingsError, match=f"CPU\\(s\\) {beyond} are not available"):
        pin_to([beyond])
    assert allowed_cpus() == sorted(os.sched_getaffinity(0)), "a refused pin changes nothing"


def test_visible_gpus_honours_cuda_visible_devices() -> None:
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1,2"}) == ["1", "2"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
