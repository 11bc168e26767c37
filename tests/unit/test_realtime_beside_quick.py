"""The real-time-beside benchmark, run small on bert-tiny: it measures every condition and keeps the answers exact.

Nothing here times anything: ``python -m benchmarks.realtime_beside`` is the measurement.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

# benchmarks/ is not an installed package: make the repository root importable under a bare `pytest` too.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks import realtime_beside as rb  # noqa: E402
from workers.engine.onnx_runtime import missing_packages  # noqa: E402


@pytest.fixture
def isolated():
    """``main`` sets the roles' runtimes and CPU dtypes in the environment and torch's thread count: undone after the
    test, so that the tests after it in this process (and the workers they start) see neither."""
    import torch

    names = [f"SIFT_MODELS__{role.upper()}__{field}" for role in rb.TASKS for field in ("CPU_RUNTIME", "CPU_DTYPE")]
    before = {name: os.environ.get(name) for name in names}
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def test_a_small_run_measures_each_condition_beside_a_running_bulk_loop_with_unchanged_logits(
    offline_registry, tmp_path, isolated
) -> None:
    code = rb.main(["--models", "rerank", "--items", "96", "--samples", "3", "--rounds", "1", "--out", str(tmp_path)])
    assert code == 0  # 1 when a logit beside the bulk loop moved from its idle value
    written = json.loads((tmp_path / "realtime_beside.json").read_text())
    conditions = {row["condition"]: row for row in written["realtime"]}
    expected = (
        [rb.ALONE, rb.SHARED, rb.OWN, rb.LOWERED] if not missing_packages() else [rb.ALONE, rb.SHARED, rb.LOWERED]
    )
    assert list(conditions) == expected
    assert conditions[rb.ALONE]["n"] == 6  # before and after the bulk loop
    for name in expected[1:]:
        row = conditions[name]
        assert row["n"] == 3 and row["max_logit_diff"] <= rb.SAME_LOGITS and row["bulk_passes"] >= 1
        assert 0 < row["p50_ms"] <= row["p99_ms"]
    (throughput,) = written["throughput"]
    assert throughput["model"] == "rerank" and throughput["items"] == 96
    for key in ("engine_items_per_s", "forward_only_items_per_s", "tokenize_only_items_per_s"):
        assert len(throughput[key]) == 1 and throughput[key][0] > 0
    assert throughput["engine_over_forward"] > 0


def test_unknown_models_are_refused_with_the_choices() -> None:
    with pytest.raises(SystemExit, match="unknown zero_shot; choose from sentiment, rerank"):
        rb.main(["--models", "rerank,zero_shot"])
