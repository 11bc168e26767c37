"""The physical bound: FLOPs an encoder classifier must spend per item, and the machine's matmul speed.

FLOPs of one sequence of ``n`` tokens through an encoder of ``L`` layers, hidden size ``h``,
feed-forward size ``i`` and ``c`` labels (multiply-add = 2 FLOPs)::

    2 * L * (4*h*h + 2*h*i) * n      # every token goes through Q, K, V, O and the two FFN matrices
  + L * 2 * 2 * n*n * h              # attention: Q @ K^T and softmax(.) @ V, n*n*h multiply-adds each
  + 2 * (h*h + h*c)                  # the head on one token: pooler / pre-classifier, then classifier

Embedding lookups, layer norms, softmax, GELU and biases are left out: they are not matrix
products and cost well under 1% at these sizes. "Unpadded" counts each sequence at its own
length (the useful work); "padded" counts it at the length of the longest sequence in its
batch, as the engine's batcher plans it (the work the hardware actually did).

The bound is the unpadded FLOPs divided by the throughput of one large ``torch.matmul`` on
the same device, dtype and thread count: no encoder can go faster than its matrix products.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from workers.batcher import BatchLimits, padded_length, plan_batches


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP formula needs from a BERT-family config."""

    model_type: str
    layers: int
    hidden: int
    intermediate: int
    num_labels: int

    @property
    def matmul_params_per_layer(self) -> int:
        """Weights of one layer's matrices a token goes through: Q, K, V, O and the feed-forward pair."""
        return 4 * self.hidden * self.hidden + 2 * self.hidden * self.intermediate

    @property
    def non_embedding_params(self) -> int:
        """Matrix weights every token touches (all layers), embeddings and head excluded."""
        return self.layers * self.matmul_params_per_layer

    def describe(self) -> str:
        """E.g. ``distilbert 6x768 (ffn 3072), 42.5M matmul params``."""
        return (
            f"{self.model_type} {self.layers}x{self.hidden} (ffn {self.intermediate}), "
            f"{self.non_embedding_params / 1e6:.1f}M non-embedding matmul params"
        )


def shape_from_config(config: Any) -> ModelShape:
    """Read layers / hidden / intermediate / labels from a DistilBERT or BERT-style config."""
    model_type = str(getattr(config, "model_type", "bert"))
    if model_type == "distilbert":
        layers, hidden, intermediate = config.n_layers, config.dim, config.hidden_dim
    else:
        layers, hidden, intermediate = config.num_hidden_layers, config.hidden_size, config.intermediate_size
    id2label = getattr(config, "id2label", None) or {}
    num_labels = len(id2label) or int(getattr(config, "num_labels", 2))
    return ModelShape(model_type, int(layers), int(hidden), int(intermediate), num_labels)


def sequence_flops(shape: ModelShape, tokens: int) -> float:
    """FLOPs of one forward pass over a sequence of ``tokens`` tokens (see the module docstring)."""
    n = tokens
    dense = 2.0 * shape.non_embedding_params * n
    attention = shape.layers * 2.0 * 2.0 * n * n * shape.hidden
    head = 2.0 * (shape.hidden * shape.hidden + shape.hidden * shape.num_labels)
    return dense + attention + head


def total_flops(shape: ModelShape, lengths: Sequence[int]) -> float:
    """Sum of :func:`sequence_flops` over ``lengths``."""
    return sum(sequence_flops(shape, n) for n in lengths)


def padded_lengths(lengths: Sequence[int], job_size: int, limits: BatchLimits) -> list[int]:
    """Each sequence's length once padded in its batch, as the engine batches jobs of ``job_size`` items.

    One sequence per item (classify, and rerank with one document), in item order.
    """
    padded = list(lengths)
    for start in range(0, len(lengths), job_size):
        job = lengths[start : start + job_size]
        for batch in plan_batches(job, limits):
            longest = padded_length(max(job[j] for j in batch), limits.pad_multiple)
            for j in batch:
                padded[start + j] = longest
    return padded


@dataclass(frozen=True)
class MatmulSpeed:
    """Measured throughput of square matrix products."""

    size: int
    dtype: str
    threads: int
    best_gflops: float
    median_gflops: float
    rounds: int

    @property
    def flops_per_s(self) -> float:
        """The bound's denominator: the best round (the machine's peak, not its average)."""
        return self.best_gflops * 1e9


def measure_matmul(device: Any, dtype: Any, size: int, rounds: int = 5, min_round_s: float = 0.3) -> MatmulSpeed:
    """Time ``torch.matmul`` of two ``size`` x ``size`` matrices on ``device`` in ``dtype``, best of ``rounds``."""
    import torch

    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)

    def sync() -> None:
        if a.device.type == "cuda":
            torch.cuda.synchronize(a.device)

    for _ in range(3):
        torch.matmul(a, b)
    sync()
    speeds: list[float] = []
    for _ in range(rounds):
        repeats = 0
        start = time.perf_counter()
        while True:
            torch.matmul(a, b)
            repeats += 1
            if repeats % 4 == 0 or a.device.type != "cuda":
                sync()
                if time.perf_counter() - start >= min_round_s:
                    break
        elapsed = time.perf_counter() - start
        speeds.append(2.0 * size**3 * repeats / elapsed / 1e9)
    speeds.sort()
    return MatmulSpeed(
        size=size,
        dtype=str(dtype).removeprefix("torch."),
        threads=torch.get_num_threads(),
        best_gflops=speeds[-1],
        median_gflops=speeds[len(speeds) // 2],
        rounds=rounds,
    )
