"""Processes that need the offline models at the same time build them once and never see a half-written build."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from workers import offline_models

BUILDERS = 3


def _slow_writer(calls: Path) -> object:
    def write(out_dir: Path, seed: int) -> None:
        with calls.open("a") as log:
            log.write(f"{out_dir.name}\n")
        out_dir.mkdir(parents=True)
        time.sleep(0.5)  # long enough that every other builder arrives while this one writes
        (out_dir / "registry.yaml").write_text(f"models: {{}}  # seed {seed}\n")

    return write


def _build(out_dir: Path, start: multiprocessing.synchronize.Barrier, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    start.wait()
    registry = offline_models.build_offline_models(out_dir)
    results.put(registry.read_text())


def test_builders_starting_together_build_once_and_all_get_the_whole_build(tmp_path, monkeypatch) -> None:
    calls = tmp_path / "calls"
    monkeypatch.setattr(offline_models, "_write_models", _slow_writer(calls))
    out_dir = tmp_path / "cache" / "offline-models"
    context = multiprocessing.get_context("fork")  # the children inherit the slow writer
    start = context.Barrier(BUILDERS)
    results = context.Queue()
    builders = [context.Process(target=_build, args=(out_dir, start, results)) for _ in range(BUILDERS)]
    for builder in builders:
        builder.start()
    answers = [results.get(timeout=30) for _ in builders]
    for builder in builders:
        builder.join(timeout=30)
        assert builder.exitcode == 0
    assert len(calls.read_text().splitlines()) == 1
    assert answers == ["models: {}  # seed 0\n"] * BUILDERS
    assert (out_dir / "BUILT").read_text() == offline_models._build_stamp()
    assert sorted(path.name for path in out_dir.parent.iterdir()) == [".offline-models.lock", "offline-models"]


def test_a_failed_build_leaves_the_previous_one_in_place(tmp_path, monkeypatch) -> None:
    out_dir = tmp_path / "offline-models"
    monkeypatch.setattr(offline_models, "_write_models", _slow_writer(tmp_path / "calls"))
    offline_models.build_offline_models(out_dir)

    def broken(out_dir: Path, seed: int) -> None:
        out_dir.mkdir(parents=True)
        raise OSError("disk full")

    monkeypatch.setattr(offline_models, "_write_models", broken)
    with pytest.raises(OSError, match="disk full"):
        offline_models.build_offline_models(out_dir, force=True)
    assert (out_dir / "registry.yaml").read_text() == "models: {}  # seed 0\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == [".offline-models.lock", "calls", "offline-models"]
