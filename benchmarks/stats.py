"""Small statistics helpers (pure Python, no numpy needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between ranks (numpy's default).

    Raises ``ValueError`` for an empty sequence or ``q`` outside 0..100.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


@dataclass(frozen=True)
class LengthSummary:
    """Distribution of token lengths."""

    count: int
    mean: float
    minimum: int
    p10: float
    p50: float
    p90: float
    maximum: int

    def describe(self) -> str:
        """One line for the report."""
        return (
            f"{self.count} items, tokens min {self.minimum} / p10 {self.p10:.0f} / median {self.p50:.0f} / "
            f"p90 {self.p90:.0f} / max {self.maximum}, mean {self.mean:.1f}"
        )


def summarize_lengths(lengths: Sequence[int]) -> LengthSummary:
    """Count, mean, extremes and deciles of ``lengths``."""
    if not lengths:
        raise ValueError("no lengths to summarize")
    return LengthSummary(
        count=len(lengths),
        mean=sum(lengths) / len(lengths),
        minimum=min(lengths),
        p10=percentile(lengths, 10),
        p50=percentile(lengths, 50),
        p90=percentile(lengths, 90),
        maximum=max(lengths),
    )
