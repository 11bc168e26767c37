"""submit_many of a thousand items, several messages, invalid items mixed into the stream."""

from __future__ import annotations

import math

import pytest
from sift_it_helpers import new_job_id

from producers.client import SiftClient
from sift.contract import ErrorCode, ItemResult
from sift.local import WorkerProcess

pytestmark = pytest.mark.integration

N_VALID = 1_000
CHUNK = 64


@pytest.mark.timeout(180)
def test_submit_many_thousand_items_with_invalid_ones_mixed_in(
    client: SiftClient, worker: WorkerProcess, id2label
) -> None:
    valid = [{"id": f"v-{i:04d}", "text": f"short review number {i}"} for i in range(N_VALID)]
    # Invalid items at known places in the stream, with the code each must get.
    bad: list[tuple[int, object, str, ErrorCode]] = [
        (0, {"id": "bad-empty", "text": ""}, "bad-empty", ErrorCode.INVALID_INPUT),
        (100, {"id": "bad-blank", "text": "  \t "}, "bad-blank", ErrorCode.INVALID_INPUT),
        (250, {"id": "bad-type", "text": 42}, "bad-type", ErrorCode.INVALID_INPUT),
        (400, {"id": "bad-missing"}, "bad-missing", ErrorCode.INVALID_INPUT),
        (555, {"id": "bad-extra", "text": "fine", "label": "positive"}, "bad-extra", ErrorCode.INVALID_INPUT),
        (700, {"id": "v-0003", "text": "same id as an earlier item"}, "v-0003", ErrorCode.DUPLICATE_ID),
        (800, {"id": "bad-huge", "text": "x" * 20_000}, "bad-huge", ErrorCode.TOO_LARGE),
        (999, "not a mapping", None, ErrorCode.INVALID_INPUT),
    ]
    stream: list[object] = list(valid)
    for offset, (position, item, _, _) in enumerate(bad):
        stream.insert(position + offset, item)

    handle = client.submit_many("classify", iter(stream), job_id=new_job_id("bulk"), chunk_size=CHUNK)

    assert handle.submitted == N_VALID
    assert handle.messages == math.ceil(N_VALID / CHUNK) > 1
    rejected = {r.id: r for r in handle.rejected}
    assert len(handle.rejected) == len(bad)
    for _, item, item_id, code in bad:
        if item_id is None:  # not a mapping: keyed by its position in the stream
            [not_mapping] = [r for r in handle.rejected if r.id.startswith("#")]
            assert stream[int(not_mapping.id[1:])] == item
            item_id = not_mapping.id
        assert rejected[item_id].error is not None
        assert rejected[item_id].error.code == code, (item_id, rejected[item_id].error)
        assert rejected[item_id].error.message
    # Duplicates are not stored (the first item of that id is); every other rejection is.
    assert handle.expected == N_VALID + len(bad) - 1

    results: list[ItemResult] = list(
        client.iter_results(handle.job_id, expected=handle.expected, timeout_s=150, idle_timeout_s=60)
    )
    ids = [r.id for r in results]
    assert len(ids) == len(set(ids)) == handle.expected
    ok = {r.id: r for r in results if r.ok}
    assert set(ok) == {item["id"] for item in valid}
    labels = set(id2label("sentiment"))
    assert all(r.label in labels and r.model == "sentiment" and r.worker == worker.hostname for r in ok.values())
    errors = {r.id: r.error.code for r in results if r.error is not None}
    assert errors == {r.id: r.error.code for r in handle.rejected if r.error.code != ErrorCode.DUPLICATE_ID}
    # The duplicate did not replace the first item of its id.
    assert ok["v-0003"].error is None
    assert client.store.count(handle.job_id) == handle.expected
