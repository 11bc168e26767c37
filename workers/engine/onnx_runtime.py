"""ONNX Runtime on the CPU: export a loaded classifier to ONNX once, then serve its logits from an ORT session.

The export is torch's own (``torch.onnx.export(..., dynamo=True)``; the TorchScript exporter bakes the traced
shapes into transformers' attention masks and gives wrong logits on other shapes). Batch and sequence axes are
dynamic, so one file serves every padded batch the batcher plans. Files are cached under
``<cache>/onnx/<key>/`` where the key hashes the weights themselves (plus the model class, config, inputs and the
torch and transformers versions): a worker exports once, and a retrained model with the same file sizes is never
served from a stale export. Each session is checked against torch on a padded probe batch of text pairs (segment
ids 0 and 1, as the NLI and rerank roles send) before it is used, and a graph that does not take an input the model
reads (``token_type_ids``) is refused: served, it would silently score every pair as if it were one segment.

``onnxruntime``, ``onnx`` and ``onnxscript`` are optional (the ``onnx`` extra) and imported only here, lazily.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock

log = logging.getLogger(__name__)

EXPORT_VERSION = 2
"""Bump when the export changes: files cached by another version are exported again. (2: probe with segment ids,
key on the exporter's package versions; version-1 files may be token-type blind.)"""
REQUIRED = ("onnxruntime", "onnx", "onnxscript")
"""Packages of the ``onnx`` extra: ORT runs the graph; onnx and onnxscript are what torch's exporter needs."""
INSTALL_HINT = "pip install 'sift[onnx]' (onnxruntime, onnx, onnxscript)"
MODEL_FILE = "model.onnx"
PROBE_TOLERANCE = 1e-3
"""Largest logit difference between ORT and torch on the probe batch; an export further off is refused.
fp32 ORT differs from torch by ~1e-6 (other kernels, other summation order); a broken export by far more."""


class OnnxUnavailable(RuntimeError):
    """The ONNX path was asked for but cannot run here (missing packages, or a model or dtype it does not serve)."""


def missing_packages() -> list[str]:
    """The packages of the ``onnx`` extra that are not installed (empty when the ONNX path can run)."""
    return [name for name in REQUIRED if importlib.util.find_spec(name) is None]


def _onnxruntime() -> Any:
    missing = missing_packages()
    if missing:
        raise OnnxUnavailable(f"the ONNX runtime path needs {', '.join(missing)}: {INSTALL_HINT}")
    return importlib.import_module("onnxruntime")


@dataclass
class OnnxSession:
    """An ONNX Runtime session over one exported classifier: integer arrays in, float32 logits out."""

    session: Any
    """The ``onnxruntime.InferenceSession``."""
    path: Path
    input_names: tuple[str, ...]
    """The inputs the graph takes (the exporter drops inputs the model never reads)."""
    threads: int

    def run(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """Logits of one padded batch; ``arrays`` holds int64 ``(batch, sequence)`` arrays by input name."""
        feed = {name: np.ascontiguousarray(arrays[name], dtype=np.int64) for name in self.input_names}
        (logits,) = self.session.run(["logits"], feed)
        result: np.ndarray = np.asarray(logits, dtype=np.float32)
        return result


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer (names, dtypes, shapes and bytes), in state-dict order."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        value = tensor.detach().contiguous().cpu()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        # Viewed as raw bytes so every dtype (bfloat16 included) hashes without a numpy conversion.
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def export_key(model: torch.nn.Module, input_names: tuple[str, ...]) -> str:
    """What the exported graph depends on, hashed: the weights, the architecture and the exporter's versions."""
    import transformers

    config = getattr(model, "config", None)
    facts = {
        "export_version": EXPORT_VERSION,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        # torch's exporter writes the graph with onnxscript (and onnx); another version is another graph.
        "exporter": {name: _version(name) for name in ("onnxscript", "onnx")},
        "class": type(model).__name__,
        "config": config.to_json_string(use_diff=False) if config is not None else None,
        "inputs": list(input_names),
        "weights": weights_digest(model),
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:32]


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _example_inputs(input_names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    # Batch 2 and length 7: neither 0 nor 1, which torch.export would specialise into constants. The first row is a
    # text pair (segment ids 0 then 1), so the token-type embedding is visibly part of the traced computation.
    ids = torch.tensor([[101, 7592, 102, 2088, 2003, 1037, 102], [101, 7592, 102, 0, 0, 0, 0]])
    types = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0]])
    arrays = {"input_ids": ids, "attention_mask": (ids != 0).long(), "token_type_ids": types}
    return {name: arrays[name] for name in input_names}


def probe_inputs() -> dict[str, torch.Tensor]:
    """The probe batch :func:`check_against_torch` compares on: batch 3, length 11, padding, and text pairs.

    Other shapes than the export's example, so that a graph that baked a shape in is caught; segment ids 1 on the
    second text of each pair, so that a graph that ignores ``token_type_ids`` (an export that dropped the input, or
    one made without it) is caught too: on single texts (all segment ids 0) it gives torch's logits exactly.
    """
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (3, 11), generator=generator)
    types = torch.zeros_like(ids)
    ids[:, 0] = 101
    ids[0, 4], ids[0, -1], types[0, 5:] = 102, 102, 1  # pair: 3 + 5 tokens, no padding
    ids[1, 3], ids[1, 5], ids[1, 6:], types[1, 4:6] = 102, 102, 0, 1  # pair: 2 + 1 tokens, then padding
    ids[2, 2], ids[2, 3:] = 102, 0  # one text, then padding
    return {"input_ids": ids, "attention_mask": (ids != 0).long(), "token_type_ids": types}


EXPORTER_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx")
"""Loggers that report every graph rewrite of an export at INFO (and missing torchvision ops at WARNING)."""


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    # The exporter warns about every transformers construct it rewrites and logs each optimisation pass: hundreds
    # of lines per export, none actionable for a worker's operator. Errors still get through.
    loggers = [logging.getLogger(name) for name in EXPORTER_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def export_onnx(model: torch.nn.Module, input_names: tuple[str, ...], path: Path) -> None:
    """Export ``model``'s logits to ``path`` with dynamic batch and sequence axes (weights in ``path``.data)."""
    _onnxruntime()  # fail early with the install hint, not deep inside the exporter
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with _quiet_exporter(), torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            model,
            (),
            str(path),
            kwargs=_example_inputs(input_names),
            input_names=list(input_names),
            output_names=["logits"],
            dynamic_shapes={name: {0: batch, 1: sequence} for name in input_names},
            dynamo=True,
            external_data=True,
            optimize=True,
            verbose=False,
        )


def cached_export(model: torch.nn.Module, input_names: tuple[str, ...], cache_root: Path) -> Path:
    """The ONNX file of ``model`` under ``cache_root``, exported first when no worker has done so yet.

    Workers that start together on a cold cache take turns on a lock per key: the first exports, the others wait
    and use its file, so a machine pays each export once, not once per worker. The export is written to a staging
    directory and renamed into place, so no worker ever reads a half-written file (and where the lock does not
    hold, e.g. across machines sharing a network cache, the first rename wins and the others drop their copy).
    """
    key = export_key(model, input_names)
    final = cache_root / key
    if (final / MODEL_FILE).is_file():
        return final / MODEL_FILE
    cache_root.mkdir(parents=True, exist_ok=True)
    with FileLock(cache_root / f".{key}.lock"):
        if (final / MODEL_FILE).is_file():
            log.info("another worker exported %s while this one waited; using its file", key)
            return final / MODEL_FILE
        staging = cache_root / f".{key}.building-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            started = time.perf_counter()
            log.info("exporting %s to ONNX under %s (once per model and version)", type(model).__name__, final)
            export_onnx(model, input_names, staging / MODEL_FILE)
            try:
                staging.rename(final)
            except OSError:
                if not (final / MODEL_FILE).is_file():
                    raise
                log.info("another worker exported %s first; using its file", key)
            log.info("exported %s in %.1f s", key, time.perf_counter() - started)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return final / MODEL_FILE


def open_session(path: Path, threads: int) -> OnnxSession:
    """An ORT CPU session over ``path`` with ``threads`` intra-op threads (torch's count, as a worker sets it)."""
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    # One operator at a time: the batches are small graphs of dependent matmuls, and the worker's threads are
    # all given to each operator, as torch does.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # No spin-waiting between operators: a spinning pool keeps every core busy after each pass, and the worker shares
    # its cores with its own event loop (tokenizing, writing results) and often with Redis and producers. Measured on
    # 2 cores: a real-time bert-tiny item 1.6-2.7 ms sooner (p50), throughput the same within the run-to-run noise.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_names = tuple(str(i.name) for i in session.get_inputs())
    return OnnxSession(session, path, input_names, max(1, threads))


def check_against_torch(onnx: OnnxSession, model: torch.nn.Module, input_names: tuple[str, ...]) -> float:
    """Largest logit difference between ``onnx`` and ``model`` on a padded probe batch; raises past the tolerance.

    The probe (:func:`probe_inputs`) has other shapes than the export's example and holds text pairs, so an export
    that baked a shape in or ignores the segment ids is caught here rather than in production. A graph that takes an
    input ``model`` is not given, or lacks one that changes ``model``'s logits, is refused too.
    """
    if unknown := [name for name in onnx.input_names if name not in input_names]:
        raise OnnxUnavailable(f"the ONNX export {onnx.path} takes {unknown}, which {type(model).__name__} is not given")
    arrays = probe_inputs()
    with torch.inference_mode():
        want = model(**{name: arrays[name] for name in input_names}).logits.float().numpy()
    got = onnx.run({name: tensor.numpy() for name, tensor in arrays.items()})
    difference = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("inf")
    if not difference <= PROBE_TOLERANCE:
        raise OnnxUnavailable(
            f"the ONNX export of {type(model).__name__} ({onnx.path}) differs from torch by {difference:.3g} "
            f"on a probe batch (allowed {PROBE_TOLERANCE}); serve this model with cpu_runtime: torch"
        )
    return difference


def load_onnx(model: torch.nn.Module, input_names: tuple[str, ...], cache_root: Path, threads: int) -> OnnxSession:
    """Export ``model`` (cached), open an ORT session on it and check it against torch: ready to serve."""
    path = cached_export(model, input_names, cache_root)
    session = open_session(path, threads)
    difference = check_against_torch(session, model, input_names)
    if dropped := [name for name in input_names if name not in session.input_names]:
        # The probe gave torch's logits without them, so the model does not read them (e.g. one segment type).
        log.info("the ONNX graph of %s does not take %s: the model does not read them", path, dropped)
    log.info("ONNX Runtime session on %s (%d threads): probe logits within %.1e of torch", path, threads, difference)
    return session
