"""The cascade report's arithmetic: escalated count and agreement with the policy's model alone."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sift.contract import CategoryScore, ItemResult, Moderation

# benchmarks/ is not an installed package: make the repository root importable under a bare `pytest` too.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks.cascade import CascadeReport, compare  # noqa: E402


def answer(item: str, model: str, flags: dict[str, bool]) -> ItemResult:
    categories = [
        CategoryScore(category=c, score=0.9 if f else 0.1, threshold=0.5, flagged=f) for c, f in flags.items()
    ]
    flagged = [c for c, f in flags.items() if f]
    moderation = Moderation(
        policy="p", policy_version=1, categories=categories, flagged=flagged, verdict="flag" if flagged else "allow"
    )
    return ItemResult(job_id="j", id=item, task="moderate", model=model, moderation=moderation)


def test_compare_counts_escalations_and_agreement_per_verdict_and_per_category() -> None:
    cascaded = [
        answer("a", "small", {"spam": False, "hate": False}),  # kept, agrees
        answer("b", "large", {"spam": True, "hate": False}),  # escalated, agrees
        answer("c", "small", {"spam": True, "hate": False}),  # kept, verdict agrees, one flag differs
        answer("d", "small", {"spam": False, "hate": False}),  # kept, verdict and one flag differ
    ]
    alone = [
        answer("a", "large", {"spam": False, "hate": False}),
        answer("b", "large", {"spam": True, "hate": False}),
        answer("c", "large", {"spam": True, "hate": True}),
        answer("d", "large", {"spam": False, "hate": True}),
    ]
    escalated, verdicts, flags = compare(cascaded, alone, "large")
    assert escalated == 1
    assert verdicts == pytest.approx(3 / 4)
    assert flags == pytest.approx(6 / 8)


def test_compare_refuses_runs_that_do_not_match() -> None:
    one = [answer("a", "small", {"spam": False})]
    with pytest.raises(ValueError, match="same"):
        compare(one, [], "large")
    with pytest.raises(ValueError, match="no moderation"):
        compare(one, [ItemResult(job_id="j", id="a", task="moderate", model="large")], "large")


def test_report_shares_and_speedup() -> None:
    report = CascadeReport("fast", "nli", "zero_shot", 0.3, 200, 50, 0.99, 0.995, 300.0, 100.0)
    assert report.escalated_share == 0.25 and report.speedup == 3.0
