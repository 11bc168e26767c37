"""Pure batch planning under a token budget. No torch: tested with plain lists.

Sequences are sorted by length so each batch pads to a length close to its members'
(TEI's ``max_batch_tokens``, infinity's ``pop_optimal_batches``). Longest first, so a
batch too big for the device fails on the first forward pass rather than the last.
A batch is also cut where the next sequence would fill less than ``min_fill`` of the
batch's padded length: on a CPU a padded token costs as much as a real one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class BatchLimits:
    """A batch costs ``len(batch) * longest`` padded tokens; every bound holds for every batch."""

    max_tokens: int
    max_items: int
    min_fill: float = 0.0
    """A sequence joins a batch only if its length is at least this share of the batch's longest."""
    pad_multiple: int = 1
    """Each pass pads its length up to a multiple of this (see ``LoadedModel.pad_multiple``); the budget counts it."""

    def __post_init__(self) -> None:
        if self.max_tokens < 1 or self.max_items < 1 or self.pad_multiple < 1:
            raise ValueError(f"batch limits must be positive, got {self}")
        if not 0.0 <= self.min_fill <= 1.0:
            raise ValueError(f"min_fill must be within 0..1, got {self.min_fill}")


def plan_batches(lengths: Sequence[int], limits: BatchLimits) -> list[list[int]]:
    """Group sequence indices into batches, longest sequences first.

    A sequence longer than ``max_tokens`` on its own still gets a batch of one:
    it was already truncated to the model's max length, so it cannot shrink further.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    current: list[int] = []
    padded_to = 0
    for index in order:
        if current and (
            (len(current) + 1) * padded_to > limits.max_tokens
            or len(current) >= limits.max_items
            or lengths[index] < limits.min_fill * padded_to
        ):
            batches.append(current)
            current = []
        if not current:
            padded_to = padded_length(lengths[index], limits.pad_multiple)
        current.append(index)
    if current:
        batches.append(current)
    return batches


def padded_length(length: int, multiple: int) -> int:
    """``length`` rounded up to a multiple of ``multiple``: what a pass of sequences this long pads to."""
    return -(-length // multiple) * multiple


def padded_tokens(lengths: Sequence[int], batch: Sequence[int]) -> int:
    """Tokens a forward pass over ``batch`` computes: its size times its longest sequence."""
    return len(batch) * max((lengths[i] for i in batch), default=0)
