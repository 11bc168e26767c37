"""The memory soak's arithmetic: RSS at a share of the items, the second-half slope, the FLAT/GROWING verdict.

The soak itself (Redis, a worker, a backfill) is ``python -m benchmarks.memory_soak``; nothing here times it.
"""

from __future__ import annotations

import sys
from itertools import islice
from pathlib import Path

import pytest

# benchmarks/ is not an installed package: make the repository root importable under a bare `pytest` too.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks import memory_soak as ms  # noqa: E402

MIB = 1024  # kB


def reading(stored: int, rss_mib: float, hwm_mib: float | None = None, t_s: float = 0.0) -> ms.Sample:
    rss = round(rss_mib * MIB)
    hwm = round((hwm_mib if hwm_mib is not None else rss_mib) * MIB)
    return ms.Sample(t_s, stored, stored, 0, rss, hwm, 0, 0)


def test_rss_at_fraction_is_the_first_sample_that_reached_the_share() -> None:
    samples = [reading(0, 300), reading(90, 310), reading(100, 320), reading(480, 330), reading(1000, 340)]
    assert ms.rss_at_fraction(samples, 1000, 0.1) == samples[2]  # 90 is short of 100; 100 counts
    assert ms.rss_at_fraction(samples, 1000, 0.5) == samples[4]  # nothing between 480 and 1000 was sampled
    assert ms.rss_at_fraction(samples, 1000, 1.0) == samples[4]
    assert ms.rss_at_fraction(samples, 1000, 0.0) == samples[0]
    assert ms.rss_at_fraction(samples[:3], 1000, 0.5) is None  # never got there
    with pytest.raises(ValueError, match="fraction"):
        ms.rss_at_fraction(samples, 1000, 1.5)
    with pytest.raises(ValueError, match="items"):
        ms.rss_at_fraction(samples, 0, 0.5)


def test_slope_uses_only_the_second_half_and_reads_per_100k_items() -> None:
    # A warm-up jump in the first half, then +2 MiB per 100k items.
    samples = [reading(0, 200), reading(100_000, 400)]
    samples += [reading(n, 400 + 2 * (n - 500_000) / 100_000) for n in range(500_000, 1_000_001, 100_000)]
    slope = ms.slope_mib_per_100k(samples, 1_000_000)
    assert slope == pytest.approx(2.0, abs=0.01)  # rounding to whole kB makes it approximate
    flat = [reading(n, 512) for n in range(0, 1_000_001, 50_000)]
    assert ms.slope_mib_per_100k(flat, 1_000_000) == pytest.approx(0.0)
    falling = [reading(n, 600 - n / 10_000) for n in range(500_000, 1_000_001, 250_000)]
    assert ms.slope_mib_per_100k(falling, 1_000_000) == pytest.approx(-10.0, abs=0.01)


def test_slope_needs_two_distinct_item_counts_in_the_second_half() -> None:
    assert ms.slope_mib_per_100k([], 1000) is None
    assert ms.slope_mib_per_100k([reading(10, 300), reading(1000, 310)], 1000) is None
    assert ms.slope_mib_per_100k([reading(1000, 300), reading(1000, 310)], 1000) is None  # a stall: same x


def test_verdict_allows_five_percent_or_fifty_mib_whichever_is_larger() -> None:
    big = ms.verdict(2000 * MIB, 2099 * MIB)  # 5% of 2000 MiB = 100 MiB
    assert big.flat and big.word == "FLAT" and big.tolerance_mib == pytest.approx(100.0)
    assert not ms.verdict(2000 * MIB, 2101 * MIB).flat
    small = ms.verdict(300 * MIB, 349 * MIB)  # 5% would be 15 MiB: the 50 MiB floor applies
    assert small.flat and small.tolerance_mib == pytest.approx(50.0)
    grown = ms.verdict(300 * MIB, 351 * MIB)
    assert not grown.flat and grown.word == "GROWING" and grown.growth_mib == pytest.approx(51.0)
    assert ms.verdict(500 * MIB, 400 * MIB).flat  # memory given back is not a leak
    assert "GROWING" in grown.describe() and "+51.0 MiB" in grown.describe() and "300.0 MiB" in grown.describe()


def test_summary_of_a_leaking_worker_is_growing_with_its_numbers() -> None:
    samples = [reading(n, 300 + n / 1000, hwm_mib=330 + n / 1000) for n in range(0, 100_001, 5_000)]
    summary = ms.summarize(samples, 100_000)
    assert summary.ready_mib == pytest.approx(300.0)
    assert summary.rss_mib_at == {0.1: pytest.approx(310.0), 0.5: pytest.approx(350.0), 1.0: pytest.approx(400.0)}
    assert summary.peak_mib == pytest.approx(430.0)
    assert summary.slope_mib_per_100k == pytest.approx(100.0, abs=0.1)
    assert summary.verdict is not None and not summary.verdict.flat
    assert summary.verdict.base_mib == pytest.approx(310.0) and summary.verdict.end_mib == pytest.approx(400.0)


def test_summary_without_ten_percent_stored_has_no_verdict_and_no_samples_is_an_error() -> None:
    summary = ms.summarize([reading(0, 300), reading(5, 301)], 1000)
    assert summary.verdict is None and summary.rss_mib_at[0.1] is None and summary.slope_mib_per_100k is None
    with pytest.raises(ValueError, match="no samples"):
        ms.summarize([], 1000)


def test_soak_items_are_all_different_short_and_lazy() -> None:
    items = list(ms.soak_items(50_000))
    assert len({item["text"] for item in items}) == 50_000
    assert len({item["id"] for item in items}) == 50_000
    assert max(len(item["text"].split()) for item in items) <= 16
    assert next(ms.soak_items(1, start=7))["id"] == "s7"
    assert len(list(islice(ms.soak_items(10**12), 3))) == 3  # a generator: nothing is built up front


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--items", "0"], "--items must be at least 1"),
        (["--interval", "0"], "--interval must be positive"),
        (["--max-queued", "-1"], "--max-queued must be at least 1"),
        (["--max-minutes", "-5"], "--max-minutes must be positive"),
        (["--items", "many"], "invalid int value"),
    ],
)
def test_bad_options_exit_with_a_clear_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        ms.parse_args(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_default_options_are_the_million_item_soak() -> None:
    args = ms.parse_args([])
    assert args.items == 1_000_000 and args.out == Path("out/soak") and args.max_queued == 200


def test_slope_text_says_what_the_slope_adds_up_to_over_the_second_half() -> None:
    assert ms.slope_text(2.0, 1_000_000) == "+2.00 MiB per 100k items (+10.0 MiB over the last 500,000 items)"
    assert ms.slope_text(-18.59, 20_000).endswith("(-1.9 MiB over the last 10,000 items)")
    assert ms.slope_text(None, 1000).startswith("—")
