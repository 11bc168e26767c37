"""The benchmark suite's pure helpers: inputs, FLOP formula, percentiles, target verdicts.

Timing is never asserted here: speed targets are checked (PASS/MISS) by ``python -m benchmarks.run``.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

# benchmarks/ is not an installed package: make the repository root importable under a bare `pytest` too.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks import data, flops  # noqa: E402
from benchmarks.report import latency_target, ratio_target  # noqa: E402
from benchmarks.stats import percentile, summarize_lengths  # noqa: E402
from workers.batcher import BatchLimits  # noqa: E402


@pytest.fixture(scope="module")
def count_tokens() -> data.TokenCounter:
    try:
        return data.bert_token_counter()
    except RuntimeError as err:  # the offline extra is not installed
        pytest.skip(str(err))


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([4, 1, 3, 2], 50) == 2.5
    assert percentile([1, 2, 3, 4], 0) == 1
    assert percentile([1, 2, 3, 4], 100) == 4
    assert percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_flop_formula_on_the_reference_shapes() -> None:
    distilbert = SimpleNamespace(
        model_type="distilbert", n_layers=6, dim=768, hidden_dim=3072, id2label={0: "NEGATIVE", 1: "POSITIVE"}
    )
    shape = flops.shape_from_config(distilbert)
    assert shape == flops.ModelShape("distilbert", 6, 768, 3072, 2)
    # 6 layers x (4 x 768^2 attention projections + 2 x 768 x 3072 feed-forward)
    assert shape.non_embedding_params == 42_467_328
    expected = 2 * 42_467_328 * 40 + 6 * 4 * 40 * 40 * 768 + 2 * (768 * 768 + 768 * 2)
    assert flops.sequence_flops(shape, 40) == expected

    bert_tiny = SimpleNamespace(
        model_type="bert", num_hidden_layers=2, hidden_size=128, intermediate_size=512, id2label={0: "LABEL_0"}
    )
    tiny = flops.shape_from_config(bert_tiny)
    assert tiny.non_embedding_params == 2 * (4 * 128 * 128 + 2 * 128 * 512) == 393_216
    assert flops.total_flops(tiny, [10, 20]) == flops.sequence_flops(tiny, 10) + flops.sequence_flops(tiny, 20)


def test_padded_lengths_follow_the_engine_batcher() -> None:
    lengths = [10, 30, 20, 5]
    roomy = BatchLimits(max_tokens=10_000, max_items=256)
    assert flops.padded_lengths(lengths, job_size=256, limits=roomy) == [30, 30, 30, 30]
    # jobs of 2 items are batched separately: (10, 30) and (20, 5)
    assert flops.padded_lengths(lengths, job_size=2, limits=roomy) == [30, 30, 20, 20]
    assert flops.padded_lengths(lengths, job_size=256, limits=BatchLimits(max_tokens=10_000, max_items=1)) == lengths


def test_lengths_are_a_realistic_mix_of_8_to_128_tokens(count_tokens: data.TokenCounter) -> None:
    dataset = data.generate(600, count_tokens, seed=7)
    for lengths in (dataset.text_tokens, dataset.pair_tokens):
        assert min(lengths) >= data.MIN_TOKENS and max(lengths) <= data.MAX_TOKENS
        assert 35 <= statistics.median(lengths) <= 45
        summary = summarize_lengths(lengths)
        assert summary.p10 < 30 and summary.p90 > 60  # a spread, not one length
    # The intended lengths are the real tokenizer's counts, special tokens included.
    measured = [n + data.SINGLE_SPECIALS for n in count_tokens(dataset.texts)]
    assert measured == dataset.text_tokens
    query_tokens = count_tokens([p.query for p in dataset.pairs])
    document_tokens = count_tokens([p.document for p in dataset.pairs])
    pair_measured = [q + d + data.PAIR_SPECIALS for q, d in zip(query_tokens, document_tokens, strict=True)]
    assert pair_measured == dataset.pair_tokens
    assert all(p.query.endswith("?") and p.document for p in dataset.pairs)


def test_inputs_are_deterministic(count_tokens: data.TokenCounter) -> None:
    first = data.generate(50, count_tokens, seed=3)
    assert data.generate(50, count_tokens, seed=3) == first
    assert data.generate(50, count_tokens, seed=4).texts != first.texts


def test_target_verdicts() -> None:
    assert ratio_target("x", 61.0, 60, "%").verdict == "PASS"
    assert ratio_target("x", 59.9, 60, "%").verdict == "MISS"
    assert ratio_target("x", None, 2).verdict == "n/a"
    assert latency_target("x", 14.0, 10.0, 5).verdict == "PASS"
    assert latency_target("x", 15.1, 10.0, 5).verdict == "MISS"
