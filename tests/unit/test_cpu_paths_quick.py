"""The CPU-paths benchmark's arithmetic: agreement, verdicts, the choice per role, and one small real measurement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks import cpu_paths as cp
from workers.engine.onnx_runtime import missing_packages


def test_classification_agreement_counts_top_label_changes_and_the_largest_difference() -> None:
    reference = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3]])
    assert cp.classification_agreement(reference, reference) == cp.Agreement(4, 100.0, 0.0)
    nudged = reference + np.array([[-0.01, 0.01], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    close = cp.classification_agreement(reference, nudged)
    assert close.agree_pct == 100.0 and close.max_abs_diff == pytest.approx(0.01)
    flipped = reference.copy()
    flipped[1] = [0.55, 0.45]  # the second item changes label
    result = cp.classification_agreement(reference, flipped)
    assert result.agree_pct == 75.0 and result.max_abs_diff == pytest.approx(0.15)
    failed = reference.copy()
    failed[0] = np.nan
    assert cp.classification_agreement(reference, failed).max_abs_diff == float("inf")
    with pytest.raises(ValueError, match="shape"):
        cp.classification_agreement(reference, reference[:3])


def test_rerank_agreement_ranks_groups_of_consecutive_pairs() -> None:
    reference = np.concatenate(
        [
            [0.9, 0.8, 0.1, 0.2, 0.3, 0.35, 0.25, 0.15],  # group 1
            [0.7, 0.6, 0.4, 0.45, 0.05, 0.02, 0.3, 0.2],  # group 2
            [0.3, 0.2, 0.1, 0.4],  # group 3, shorter
        ]
    )
    same = cp.rerank_agreement(reference, reference)
    assert (same.n, same.agree_pct, same.order_pct, same.sign_pct, same.max_abs_diff) == (20, 100.0, 100.0, 100.0, 0.0)
    top_swapped = reference.copy()
    top_swapped[[0, 1]] = [0.8, 0.9]  # group 1's top two trade places, both still above 0.5
    result = cp.rerank_agreement(reference, top_swapped)
    assert result.agree_pct == pytest.approx(200 / 3) and result.order_pct == pytest.approx(200 / 3)
    assert result.sign_pct == 100.0 and result.max_abs_diff == pytest.approx(0.1)
    bottom_swapped = reference.copy()
    bottom_swapped[[12, 13]] = [0.02, 0.05]  # group 2's bottom two: its top document stays
    kept = cp.rerank_agreement(reference, bottom_swapped)
    assert kept.agree_pct == 100.0 and kept.order_pct == pytest.approx(200 / 3)
    crossing = reference.copy()
    crossing[19] = 0.55  # group 3's best crosses the threshold too
    moved = cp.rerank_agreement(reference, crossing)
    assert moved.sign_pct == 95.0 and moved.agree_pct == 100.0
    with pytest.raises(ValueError, match="at least 2 pairs"):
        cp.rerank_agreement(np.array([0.3]), np.array([0.3]))
    with pytest.raises(ValueError, match="shape"):
        cp.rerank_agreement(reference, reference[:-1])


def test_verdict_needs_995_percent_of_labels_and_of_decisions() -> None:
    assert cp.verdict(cp.Agreement(1000, 99.5, 0.2)) == cp.FAITHFUL
    assert cp.verdict(cp.Agreement(1000, 99.4, 0.0)) == cp.NOT_FAITHFUL
    assert cp.verdict(cp.Agreement(1000, 100.0, 0.01, order_pct=90.0, sign_pct=99.0)) == cp.NOT_FAITHFUL
    assert cp.verdict(cp.Agreement(1000, 100.0, 0.01, order_pct=90.0, sign_pct=99.9)) == cp.FAITHFUL
    assert cp.verdict(None) == cp.NOT_FAITHFUL
    assert cp.verdict(None, reference=True) == cp.REFERENCE_VERDICT


def test_median_top_gap_measures_how_close_to_a_tie_the_rankings_are() -> None:
    scores = np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.50, 0.50, 0.1, 0.2, 0.3, 0.4, 0.45, 0.2])
    assert cp.median_top_gap(scores) == pytest.approx(np.median([0.2, 0.0]))


def _rows(role: str, speeds: dict[str, list[float]], agree: dict[str, float], weights: str = cp.REAL) -> list[cp.Row]:
    """Rows of one path list over len(speeds[...]) workloads: per path, items/s and agreement on each."""
    paths = {p.name: p for p in cp.cpu_paths(2)}
    workloads = [
        cp.Workload(f"model{i}", weights, "data", role, "classify", None, [{}] * 100, 100)
        for i in range(len(next(iter(speeds.values()))))
    ]
    rows = []
    for name, rates in speeds.items():
        for workload, rate in zip(workloads, rates, strict=True):
            rows.append(
                cp.Row(workload, paths[name], seconds=[100 / rate] * 3, agreement=cp.Agreement(100, agree[name], 0.0))
            )
    return rows


def test_decide_picks_the_fastest_path_that_is_faithful_and_faster_on_every_workload() -> None:
    names = ["torch fp32", "torch fp32 x2 procs", "torch int8", "ort fp32", "ort fp32 x2 procs"]
    speeds = dict(zip(names, [[10, 50], [12, 70], [30, 150], [20, 60], [26, 80]], strict=True))
    agree = dict(zip(names, [100.0, 100.0, 98.6, 100.0, 100.0], strict=True))
    decision = cp.decide(_rows("sentiment", speeds, agree), "sentiment")
    assert decision.path == "ort fp32" and decision.spec["cpu_runtime"] == "onnx"
    assert "torch int8: not faithful" in decision.reason  # the fastest, but it changes labels
    assert "ort fp32 x2 procs is 1.30x, 1.33x" in decision.per_core and "one single-thread worker per core" in (
        decision.per_core
    )
    slow = {**speeds, "ort fp32": [20, 52]}  # within the noise margin on the second model: not worth a change
    assert cp.decide(_rows("sentiment", slow, agree), "sentiment").path == cp.REFERENCE
    alone = {"torch fp32": [10], "torch fp32 x2 procs": [10.5]}
    decision = cp.decide(_rows("rerank", alone, {"torch fp32": 100.0, "torch fp32 x2 procs": 100.0}), "rerank")
    assert decision.path == cp.REFERENCE and "as good" in decision.per_core


def test_decide_takes_a_lossy_path_only_on_a_real_models_word() -> None:
    names = ["torch fp32", "torch int8", "ort fp32", "ort int8"]
    speeds = dict(zip(names, [[10], [20], [12], [25]], strict=True))
    agree = dict.fromkeys(names, 100.0)  # a random-weight classifier: every input gets the same label
    decision = cp.decide(_rows("nli", speeds, agree, weights=cp.RANDOM), "nli")
    assert decision.path == "ort fp32"  # exact arithmetic: its stand-in's speed is evidence enough
    assert "torch int8: lossy, and no real model" in decision.reason
    assert "ort int8: measured only" in decision.reason
    assert cp.decide(_rows("nli", speeds, agree, weights=cp.REAL), "nli").path == "torch int8"


def test_measure_compares_real_paths_on_bert_tiny(offline_registry: Path) -> None:
    """A tiny real run: the reference against itself in another form (ORT fp32) and against torch int8."""
    from workers.engine.registry import load_registry

    registry = load_registry(offline_registry)
    rng = np.random.default_rng(1)
    words = ["good", "bad", "food", "service", "slow", "fast", "phone", "battery", "the", "was"]
    items = [
        {"id": str(i), "query": " ".join(rng.choice(words, 4)), "documents": [" ".join(rng.choice(words, 12))]}
        for i in range(40)
    ]
    workload = cp.Workload("bert-tiny", cp.RANDOM, "words", "rerank", "rerank", registry, items, 24)
    wanted = {"torch fp32", "torch int8"} | (set() if missing_packages() else {"ort fp32"})
    paths = [p for p in cp.cpu_paths(2) if p.name in wanted]
    # slow_fraction 0: every path's agreement is on all 40 items, however slow this machine makes it (under
    # parallel tests int8 can fall under half the reference's speed, and would be judged on the 24 timed only).
    rows = cp.measure(workload, paths, rounds=2, per_core=None, log=lambda _message: None, slow_fraction=0.0)
    by_name = {row.path.name: row for row in rows}
    assert set(by_name) == wanted
    for row in rows:
        assert row.skipped is None and len(row.seconds) == 2 and row.items_per_s > 0
        assert row.agreement is not None and row.agreement.n == 40 and row.reference_gap is not None
    assert by_name["torch fp32"].agreement.max_abs_diff == 0.0
    assert by_name["torch int8"].agreement.max_abs_diff > 1e-6  # another arithmetic, measured as such
    if "ort fp32" in by_name:
        assert by_name["ort fp32"].agreement.max_abs_diff < 1e-4
        assert cp.verdict(by_name["ort fp32"].agreement) == cp.FAITHFUL
    document = [cp.row_json(row) for row in rows]
    assert {d["path"] for d in document} == wanted and all(len(d["round_seconds"]) == 2 for d in document)
