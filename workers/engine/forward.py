"""Tokenize sequences, run them through a model in token-budget batches, return logits."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from workers.batcher import BatchLimits, padded_length, plan_batches
from workers.engine.heads import Pair
from workers.engine.loading import LoadedModel

log = logging.getLogger(__name__)


@dataclass
class Encoded:
    """Token ids of many sequences, unpadded; ``truncated[i]`` when sequence i was cut."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    truncated: list[bool]

    @property
    def lengths(self) -> list[int]:
        """Token count of each sequence, special tokens included."""
        return [len(ids) for ids in self.input_ids]


@dataclass
class Scored:
    """Logits per sequence (rows in input order); NaN rows are sequences whose batch failed alone."""

    logits: np.ndarray
    failures: dict[int, str]
    """Sequence index → error message, for sequences that raised even in a batch of one."""


def encode(loaded: LoadedModel, sequences: list[Pair]) -> Encoded:
    """Tokenize every sequence at once (fast tokenizers parallelise the batch)."""
    texts = [text for text, _ in sequences]
    pairs = [pair for _, pair in sequences]
    has_pairs = any(pair is not None for pair in pairs)
    if has_pairs and not all(pair is not None for pair in pairs):
        raise ValueError("a tokenizer call takes all single texts or all pairs")
    batch = loaded.tokenizer(
        texts,
        text_pair=pairs if has_pairs else None,
        truncation=True,
        max_length=loaded.max_length,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids="token_type_ids" in loaded.input_names,
    )
    truncated = [bool(encoding.overflowing) for encoding in batch.encodings or []]
    token_types = batch.get("token_type_ids")
    return Encoded(batch["input_ids"], token_types, truncated)


@dataclass(frozen=True)
class RetryPolicy:
    """How a sequence that fails alone is tried again before it is given up on."""

    attempts: int = 2
    """Tries after the first failure in a batch of one."""
    backoff_s: float = 0.05
    """Wait before the first retry; doubled before each next one."""

    def delays(self) -> list[float]:
        """Seconds to wait before each retry."""
        return [self.backoff_s * 2**k for k in range(self.attempts)]


NO_RETRY = RetryPolicy(attempts=0)


def batch_limits(loaded: LoadedModel) -> BatchLimits:
    """The batch bounds of ``loaded`` on its device."""
    spec = loaded.spec
    budget = spec.tokens_per_batch(loaded.device.type)
    return BatchLimits(budget, spec.max_batch_items, spec.min_fill, loaded.pad_multiple)


def score(loaded: LoadedModel, encoded: Encoded, retry: RetryPolicy = NO_RETRY, *, realtime: bool = False) -> Scored:
    """Logits of every encoded sequence (``realtime``: on the model's real-time session, where it has one).

    A batch that raises is split in halves until the culprit is alone (a CUDA out-of-memory
    error halves the batch the same way); a culprit alone is retried per ``retry``, then
    reported in ``failures`` while everything else is scored.
    """
    num_labels = loaded.info.num_labels
    logits = np.full((len(encoded.input_ids), num_labels), np.nan, dtype=np.float32)
    failures: dict[int, str] = {}
    limits = batch_limits(loaded)
    lengths = encoded.lengths
    failures.update({i: "the tokenizer could not encode this input" for i, n in enumerate(lengths) if n == 0})
    scorable = [i for i, n in enumerate(lengths) if n > 0]
    for batch in plan_batches([lengths[i] for i in scorable], limits):
        _score_isolating(loaded, encoded, [scorable[j] for j in batch], logits, failures, retry, realtime)
    return Scored(logits, failures)


def _score_isolating(
    loaded: LoadedModel,
    encoded: Encoded,
    batch: list[int],
    out: np.ndarray,
    failures: dict[int, str],
    retry: RetryPolicy,
    realtime: bool,
) -> None:
    try:
        out[batch] = forward_batch(loaded, encoded, batch, realtime=realtime)
        return
    except Exception as err:  # noqa: BLE001 - any model error is isolated to the items that cause it
        _release_device_memory(err)
        if len(batch) == 1:
            _retry_alone(loaded, encoded, batch[0], out, failures, retry, err, realtime)
            return
    middle = len(batch) // 2
    _score_isolating(loaded, encoded, batch[:middle], out, failures, retry, realtime)
    _score_isolating(loaded, encoded, batch[middle:], out, failures, retry, realtime)


def _retry_alone(
    loaded: LoadedModel,
    encoded: Encoded,
    index: int,
    out: np.ndarray,
    failures: dict[int, str],
    retry: RetryPolicy,
    first_error: Exception,
    realtime: bool,
) -> None:
    error = first_error
    for delay in retry.delays():
        time.sleep(delay)
        try:
            out[[index]] = forward_batch(loaded, encoded, [index], realtime=realtime)
            log.info("sequence in %s succeeded on retry after %r", loaded.info.role, first_error)
            return
        except Exception as err:  # noqa: BLE001
            _release_device_memory(err)
            error = err
    log.warning("sequence failed alone in %s after %d retries: %r", loaded.info.role, retry.attempts, error)
    failures[index] = f"{type(error).__name__}: {error}"


def _release_device_memory(err: Exception) -> None:
    # After a CUDA OOM the allocator keeps the failed batch's blocks cached; give them back
    # before the halves are tried.
    if isinstance(err, torch.OutOfMemoryError):
        torch.cuda.empty_cache()


def forward_batch(loaded: LoadedModel, encoded: Encoded, batch: list[int], *, realtime: bool = False) -> np.ndarray:
    """Pad ``batch`` to its longest sequence (rounded up to ``loaded.pad_multiple``, within the model's max length),
    run one forward pass (torch or ORT), return float32 logits.

    ``realtime``: on the model's real-time ORT session where it has one (:func:`~workers.engine.loading.
    add_realtime_session`), so that it runs beside a bulk pass on the main session without sharing its threads.
    """
    longest = max(len(encoded.input_ids[i]) for i in batch)
    longest = max(min(padded_length(longest, loaded.pad_multiple), loaded.max_length), longest)
    pad_id = loaded.tokenizer.pad_token_id or 0
    ids = np.full((len(batch), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), longest), dtype=np.int64)
    types = np.zeros((len(batch), longest), dtype=np.int64)
    for row, index in enumerate(batch):
        sequence = encoded.input_ids[index]
        ids[row, : len(sequence)] = sequence
        mask[row, : len(sequence)] = 1
        if encoded.token_type_ids is not None:
            types[row, : len(sequence)] = encoded.token_type_ids[index]
    arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    onnx = loaded.realtime_onnx if realtime and loaded.realtime_onnx is not None else loaded.onnx
    if onnx is not None:
        return onnx.run(arrays)
    inputs = {name: torch.from_numpy(arrays[name]).to(loaded.device) for name in loaded.input_names}
    with torch.inference_mode():
        logits = loaded.model(**inputs).logits
    result: np.ndarray = logits.float().cpu().numpy()
    return result


def warm_up(loaded: LoadedModel, *, realtime: bool = False) -> None:
    """One small forward pass, so the first real message does not pay for lazy initialisation; where the model
    pads to a multiple (bf16 on a CPU, :attr:`LoadedModel.pad_multiple`), one pass of a single sequence at each
    padded length up to the model's max length, so a real-time item never waits for oneDNN to build a kernel."""
    pair = "token_type_ids" in loaded.input_names or loaded.info.num_labels != 2
    sequences: list[Pair] = [("warm up", "warm up")] if pair else [("warm up", None)]
    encoded = encode(loaded, sequences)
    forward_batch(loaded, encoded, [0], realtime=realtime)
    if loaded.pad_multiple == 1:
        return
    started = time.perf_counter()
    token = encoded.input_ids[0][0]
    lengths = range(loaded.pad_multiple, loaded.max_length + loaded.pad_multiple, loaded.pad_multiple)
    for length in lengths:
        length = min(length, loaded.max_length)
        shaped = Encoded([[token] * length], [[0] * length] if encoded.token_type_ids is not None else None, [False])
        forward_batch(loaded, shaped, [0], realtime=realtime)
    log.info(
        "warmed up %s at %d lengths (up to %d tokens) in %.1f s",
        loaded.info.role,
        len(lengths),
        loaded.max_length,
        time.perf_counter() - started,
    )
