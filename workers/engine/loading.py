"""Load a registry role's model and tokenizer onto one device, and warm it up."""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from sift.settings import cache_dir
from workers.engine.heads import ModelInfo
from workers.engine.onnx_runtime import OnnxSession, OnnxUnavailable, load_onnx, missing_packages, open_session
from workers.engine.registry import ModelSpec
from workers.priority import made_at_lower_priority

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    """A model ready for inference: weights on the device, tokenizer, and head facts."""

    info: ModelInfo
    spec: ModelSpec
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    dtype: torch.dtype
    max_length: int
    input_names: tuple[str, ...]
    """The tokenizer outputs the model's ``forward`` accepts (DistilBERT takes no token_type_ids)."""
    onnx: OnnxSession | None = None
    """The ONNX Runtime session that serves this model instead of ``model`` (``cpu_runtime``), if any. ``model``
    then keeps its structure and config but no weights (on the meta device): ORT holds its own copy."""
    realtime_onnx: OnnxSession | None = None
    """A second ORT session on the same graph for real-time passes (:func:`add_realtime_session`), or None."""
    pad_multiple: int = 1
    """Each forward pass pads its length up to a multiple of this. 8 where torch runs bf16 or fp16 on a CPU:
    oneDNN builds its kernels there for each new count of rows (batch x length) on first use, about 10 ms each on
    DistilBERT, so fewer lengths means fewer cold passes, and :func:`~workers.engine.forward.warm_up` builds the
    kernels of every single-sequence length at load. 1 elsewhere (CUDA, fp32, ONNX Runtime build none per shape)."""

    @property
    def runtime(self) -> str:
        """``onnx`` or ``torch``: what computes the logits."""
        return "torch" if self.onnx is None else "onnx"


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware: Intel AMX-BF16 tiles the OS lets torch use, or
    AVX512-BF16 instructions (Cooper Lake and later Xeons, AMD Zen 4 and later).

    Only there is bf16 on a CPU measured faster than float32 (``python -m benchmarks.cpu_paths``, DistilBERT:
    2.75x on a 2-core Xeon with AMX, 1.85x on a 2-core AMD EPYC with AVX512-BF16); without either, torch emulates
    bf16 matmuls (0.2x on a 2-core AMD EPYC with avx2 only).
    """
    flags = cpu_flags()
    if flags is not None and "avx512_bf16" in flags:
        return True
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # checks the CPU and the kernel's permission
    try:
        tiles = bool(probe()) if probe is not None else False
    except RuntimeError:
        return False
    # AMX tiles also come without bf16 (int8 only): the flag names the bf16 unit. Where no flags can be read (no
    # /proc), trust torch's tile probe alone.
    return tiles and (flags is None or "amx_bf16" in flags)


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags from ``/proc/cpuinfo`` (Linux), or None where they cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def resolve_dtype(spec: ModelSpec, device: torch.device, *, native_bf16: bool | None = None) -> torch.dtype:
    """The dtype ``spec`` runs in on ``device``: ``dtype`` unless it is ``auto``, which is bfloat16 on CUDA and
    ``cpu_dtype`` on a CPU (``auto`` there: bfloat16 where :func:`cpu_has_native_bf16`, which ``native_bf16``
    overrides)."""
    if spec.dtype != "auto":
        return _DTYPES[spec.dtype]
    if device.type == "cuda":
        return torch.bfloat16
    if spec.cpu_dtype == "auto":
        native = cpu_has_native_bf16() if native_bf16 is None else native_bf16
        return torch.bfloat16 if native else torch.float32
    return _DTYPES[spec.cpu_dtype]


def resolve_runtime(spec: ModelSpec, device: torch.device) -> str:
    """``onnx`` or ``torch`` for ``spec`` on ``device`` (see :attr:`ModelSpec.cpu_runtime`).

    Raises :class:`OnnxUnavailable` when ``cpu_runtime: onnx`` cannot run here (a missing package, or not fp32).
    """
    if device.type != "cpu" or spec.cpu_runtime == "torch":
        return "torch"
    fp32 = resolve_dtype(spec, device) is torch.float32 and spec.quantize == "none"
    missing = missing_packages()
    if spec.cpu_runtime == "onnx":
        if not fp32:
            raise OnnxUnavailable(f"cpu_runtime onnx serves float32 only, not {spec.dtype} / quantize {spec.quantize}")
        if missing:
            raise OnnxUnavailable(f"cpu_runtime onnx needs {', '.join(missing)}: pip install 'sift[onnx]'")
        return "onnx"
    return "onnx" if fp32 and not missing else "torch"


def load_model(role: str, spec: ModelSpec, device: torch.device) -> LoadedModel:
    """Load ``spec`` for ``role``: a hub id (downloaded once into the HF cache) or a local path."""
    dtype = resolve_dtype(spec, device)
    runtime = resolve_runtime(spec, device)
    tokenizer = AutoTokenizer.from_pretrained(spec.source, revision=spec.revision)
    model = AutoModelForSequenceClassification.from_pretrained(spec.source, revision=spec.revision, dtype=dtype)
    model.to(device).eval()
    if spec.quantize == "int8":
        model = quantize_int8(model, device)
    config = model.config
    max_length = min(spec.max_length, _position_limit(config), int(tokenizer.model_max_length))
    accepted = inspect.signature(model.forward).parameters
    input_names = tuple(n for n in ("input_ids", "attention_mask", "token_type_ids") if n in accepted)
    info = ModelInfo(
        role=role,
        source=spec.source,
        revision=_revision(spec, config),
        id2label={int(k): str(v) for k, v in config.id2label.items()},
        kind=spec.kind,
        problem_type=getattr(config, "problem_type", None),
        activation=_cross_encoder_activation(config),
        note=spec.note,
    )
    onnx = _onnx_session(role, spec, model, input_names) if runtime == "onnx" else None
    pad_multiple = 8 if device.type == "cpu" and onnx is None and dtype is not torch.float32 else 1
    log.info(
        "loaded %s from %s (rev %s) on %s as %s with %s, labels %s",
        role,
        spec.source,
        info.revision,
        device,
        dtype,
        "onnxruntime" if onnx is not None else "torch",
        list(info.id2label.values()),
    )
    return LoadedModel(
        info, spec, model, tokenizer, device, dtype, max_length, input_names, onnx, pad_multiple=pad_multiple
    )


def add_realtime_session(loaded: LoadedModel, bulk_niceness: int = 0) -> bool:
    """Give ``loaded`` a second ORT session, one for real-time passes and one for bulk passes; False where torch
    serves it (nothing to do). ``bulk_niceness``: the bulk session's thread pool runs at that much lower priority.

    A real-time pass that runs beside a bulk pass on the same session shares that session's intra-op threads and
    waits for them in every operator; on a session of its own the operating system shares the cores between the
    two, at the cost of a second copy of the weights (by parameter count, about 260 MB of fp32 for DistilBERT,
    17 MB for bert-tiny). With ``bulk_niceness`` the scheduler also prefers the real-time pass's threads while both
    run (:mod:`workers.priority`). Either way the session loaded first, at the worker's own priority, becomes the
    real-time one, and the bulk session is opened anew on a thread lowered by ``bulk_niceness`` (0: not lowered), so
    its pool starts lowered. ``python -m
    benchmarks.realtime_beside`` measures the three ways, one DistilBERT item beside a bulk loop on 2 cores, p50/p99:
    65/165 ms on a shared session, 57/157 ms on its own, 27/80 ms on its own beside a bulk loop lowered by 10
    (24/73 ms with no bulk pass). Torch needs no second copy: each calling thread gets its own OpenMP team.
    """
    if loaded.onnx is None:
        return False
    if loaded.realtime_onnx is None:
        path, threads = loaded.onnx.path, loaded.onnx.threads
        # The loaded session (warmed up at load) serves real time; the new one, bulk passes.
        loaded.realtime_onnx = loaded.onnx
        loaded.onnx = made_at_lower_priority(bulk_niceness, lambda: open_session(path, threads))
    return True


def _onnx_session(role: str, spec: ModelSpec, model: torch.nn.Module, names: tuple[str, ...]) -> OnnxSession | None:
    """The ORT session serving ``model``; with ``cpu_runtime: auto``, None (torch serves) when the export fails."""
    try:
        session = load_onnx(model, names, cache_dir() / "onnx", torch.get_num_threads())
    except Exception as err:
        if spec.cpu_runtime == "onnx":
            raise
        log.warning("%s: ONNX Runtime unavailable (%s: %s); serving it with torch", role, type(err).__name__, err)
        return None
    # The session holds its own copy of the weights: free torch's (the module keeps its config and structure).
    model.to(torch.device("meta"))
    return session


def quantize_int8(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Dynamic int8 quantization of every ``nn.Linear`` (weights int8, activations quantized per batch)."""
    if device.type != "cpu":
        raise ValueError(f"int8 dynamic quantization runs on the CPU only, not on {device}")
    with warnings.catch_warnings():
        # torch.ao's quantized tensors are deprecated in favour of torchao, but still the one CPU int8 path
        # that needs no extra package; the fidelity report decides whether it is used at all.
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        quantized: torch.nn.Module = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
            model, {torch.nn.Linear}, dtype=torch.qint8
        )
    return quantized


def _position_limit(config: Any) -> int:
    return int(getattr(config, "max_position_embeddings", 512))


def _revision(spec: ModelSpec, config: Any) -> str:
    commit = getattr(config, "_commit_hash", None)
    if commit:
        return str(commit)
    path = Path(spec.source)
    if path.is_dir():
        # Local weights have no commit: fingerprint the config and weight files instead.
        digest = hashlib.sha256()
        for file in sorted(path.glob("*.json")) + sorted(path.glob("*.safetensors")):
            digest.update(file.name.encode())
            digest.update(file.read_bytes() if file.suffix == ".json" else str(file.stat().st_size).encode())
        return "local-" + digest.hexdigest()[:12]
    return spec.revision or "unknown"


def _cross_encoder_activation(config: Any) -> str:
    # Same resolution as sentence-transformers' CrossEncoder.get_default_activation_fn.
    st_config = getattr(config, "sentence_transformers", None) or {}
    path = st_config.get("activation_fn") or getattr(config, "sbert_ce_default_activation_function", None)
    if path:
        return "identity" if path.endswith("Identity") else "sigmoid"
    return "sigmoid" if len(config.id2label) == 1 else "identity"
