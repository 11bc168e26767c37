"""`sift workers`: one pinned child per GPU, or CPU children splitting the cores."""

from __future__ import annotations

from workers.launcher import plan_children, visible_gpus


def test_one_child_per_visible_gpu_each_sees_only_its_own() -> None:
    children = plan_children(["--queues", "realtime"], ["0", "3"], cpu_workers=1, cores=16, threads=None)
    assert [c.env["CUDA_VISIBLE_DEVICES"] for c in children] == ["0", "3"]
    for child, gpu in zip(children, ["0", "3"], strict=True):
        assert child.argv[child.argv.index("--device") + 1] == "cuda:0"
        assert child.argv[child.argv.index("--hostname") + 1] == f"sift-gpu{gpu}@%h"
        assert "--queues" in child.argv


def test_cpu_children_split_the_cores() -> None:
    children = plan_children([], [], cpu_workers=2, cores=8, threads=None)
    assert len(children) == 2
    assert all(c.argv[c.argv.index("--threads") + 1] == "4" for c in children)
    assert all(c.env["CUDA_VISIBLE_DEVICES"] == "" for c in children)
    assert len({c.argv[c.argv.index("--hostname") + 1] for c in children}) == 2


def test_visible_gpus_honours_cuda_visible_devices() -> None:
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1,2"}) == ["1", "2"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
