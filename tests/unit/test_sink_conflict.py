"""The rule the sinks share with the Redis store: keep the first result, unless an error meets a success."""

from __future__ import annotations

from producers.sinks.conflict import collapse, replaces
from sift.contract import ErrorCode, ErrorInfo, ItemResult


def ok(item_id: str, label: str = "POSITIVE", job_id: str = "j") -> ItemResult:
    return ItemResult(job_id=job_id, id=item_id, task="classify", label=label)


def failed(item_id: str, code: ErrorCode = ErrorCode.INFERENCE_FAILED, job_id: str = "j") -> ItemResult:
    return ItemResult(job_id=job_id, id=item_id, task="classify", error=ErrorInfo(code=code, message=code.value))


def test_only_a_success_replaces_and_only_an_error() -> None:
    assert replaces(failed("1"), ok("1"))
    assert not replaces(ok("1"), failed("1"))
    assert not replaces(ok("1", "POSITIVE"), ok("1", "NEGATIVE"))
    assert not replaces(failed("1", ErrorCode.EXPIRED), failed("1", ErrorCode.INFERENCE_FAILED))


def test_collapse_keeps_one_result_per_item_as_if_written_one_by_one() -> None:
    batch = [
        failed("a"),
        ok("b", "NEGATIVE"),
        ok("a", "POSITIVE"),
        failed("b"),
        failed("c", ErrorCode.EXPIRED),
        failed("c", ErrorCode.DUPLICATE_ID),
        ok("b", "POSITIVE"),
        ok("a", "NEGATIVE"),
    ]

    kept = collapse(batch)

    assert [(r.id, r.label, r.error and r.error.code) for r in kept] == [
        ("a", "POSITIVE", None),
        ("b", "NEGATIVE", None),
        ("c", None, ErrorCode.EXPIRED),
    ]


def test_the_same_item_id_in_two_jobs_is_two_items() -> None:
    kept = collapse([ok("1", job_id="j1"), failed("1", job_id="j2")])

    assert [(r.job_id, r.ok) for r in kept] == [("j1", True), ("j2", False)]
