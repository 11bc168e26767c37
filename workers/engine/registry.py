"""The model registry: which model serves each role, read from YAML with env overrides."""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sift.contract.items import TaskName
from sift.settings import SettingsError

ENV_PREFIX = "SIFT_MODELS__"


class ModelSpec(BaseModel):
    """Where one role's model comes from and how it is batched."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = Field(min_length=1)
    """Hugging Face hub id, or a local directory in Hugging Face format."""
    revision: str | None = None
    kind: Literal["sequence_classification", "cross_encoder"] = "sequence_classification"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """``auto``: bfloat16 on CUDA, ``cpu_dtype`` on a CPU. Any other value holds on every device."""
    cpu_dtype: Literal["float32", "bfloat16", "auto"] = "float32"
    """What ``dtype: auto`` means on a CPU: ``float32``; ``bfloat16``; ``auto``: bfloat16 where the CPU multiplies
    bf16 matrices in hardware (Intel AMX-BF16, or AVX512-BF16), float32 elsewhere. Set ``auto`` only for a model
    whose bf16 labels the fidelity report (``sift fidelity --paths fp32,bf16``) shows agree with fp32 on your data."""
    quantize: Literal["none", "int8"] = "none"
    """``int8``: dynamic int8 quantization of the linear layers (CPU only). Use only where the
    fidelity report shows it agrees with fp32 on your data."""
    cpu_runtime: Literal["torch", "onnx", "auto"] = "torch"
    """What runs the model on a CPU: ``torch``; ``onnx``: ONNX Runtime fp32 (the ``onnx`` extra; exported once and
    cached, checked against torch at load); ``auto``: onnx where that extra is installed and the path is fp32, torch
    otherwise. On a GPU sift always runs torch (``dtype: auto`` serves bf16 there)."""
    max_length: int = Field(default=512, ge=8)
    batch_tokens: int = Field(default=16_384, ge=64)
    """Padded tokens per forward pass on a GPU."""
    cpu_batch_tokens: int = Field(default=2048, ge=64)
    """Padded tokens per forward pass on a CPU, where big batches only add padding and cache misses."""
    max_batch_items: int = Field(default=256, ge=1)
    min_fill: float = Field(default=0.75, ge=0.0, le=1.0)
    """Cut a batch where the next (shorter) sequence would fill less than this share of its padded length."""
    max_wait_ms: float = Field(default=0.0, ge=0.0, le=10_000.0)
    """How long a worker holds a part-full batch for items from more messages before it runs it anyway. 0: a pass
    starts as soon as the device is free, and what arrives during a pass forms the next (continuous batching)."""
    note: str | None = None
    """Free text shown in logs and the demo (e.g. "random weights: labels are meaningless")."""

    @model_validator(mode="after")
    def _onnx_serves_fp32(self) -> ModelSpec:
        if self.cpu_runtime == "onnx" and (self.dtype in ("bfloat16", "float16") or self.quantize != "none"):
            raise ValueError(
                f"cpu_runtime onnx serves float32 only, not dtype {self.dtype} / quantize {self.quantize}: "
                "use dtype auto or float32 with quantize none, or cpu_runtime torch or auto"
            )
        if self.cpu_runtime == "onnx" and self.dtype == "auto" and self.cpu_dtype != "float32":
            # Refused on every machine, not only where the CPU would pick bf16: a registry valid here stays valid.
            raise ValueError(
                f"cpu_runtime onnx serves float32 only, not cpu_dtype {self.cpu_dtype}: use cpu_dtype float32, or "
                "cpu_runtime auto (ONNX Runtime where the CPU runs float32, torch where it runs bf16) or torch"
            )
        return self

    def tokens_per_batch(self, device_type: str) -> int:
        """The padded-token budget of one forward pass on a device of this type (``cpu`` or ``cuda``)."""
        return self.cpu_batch_tokens if device_type == "cpu" else self.batch_tokens


class Registry(BaseModel):
    """Roles → model specs, and the default role of each task."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: dict[str, ModelSpec]
    tasks: dict[TaskName, str]

    @model_validator(mode="after")
    def _defaults_exist(self) -> Registry:
        for task, role in self.tasks.items():
            if role not in self.models:
                raise ValueError(f"task {task.value!r} defaults to role {role!r}, which is not in models")
        return self

    def default_role(self, task: TaskName) -> str | None:
        """The role serving ``task`` when a job names none."""
        return self.tasks.get(task)


def load_registry(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Registry:
    """Read the registry YAML (the shipped reference models when ``path`` is None), then env overrides."""
    if path is None:
        text = resources.files("workers.config").joinpath("models.yaml").read_text()
        base_dir = None
    else:
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise SettingsError(f"cannot read model registry {path}: {err}") from err
        base_dir = Path(path).resolve().parent
    raw = yaml.safe_load(text) or {}
    _apply_env_overrides(raw, os.environ if environ is None else environ)
    try:
        registry = Registry.model_validate(raw)
    except ValidationError as err:
        raise SettingsError(f"invalid model registry {path or '(built-in)'}: {err}") from err
    return _resolve_local_paths(registry, base_dir)


def _apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if len(parts) != 2:
            raise SettingsError(f"{name}: expected {ENV_PREFIX}<ROLE>__<FIELD>")
        role, field = parts
        raw.setdefault("models", {}).setdefault(role, {})[field] = value


def _resolve_local_paths(registry: Registry, base_dir: Path | None) -> Registry:
    if base_dir is None:
        return registry
    models = {}
    for role, spec in registry.models.items():
        candidate = base_dir / spec.source
        is_local = spec.source.startswith((".", "/")) or candidate.is_dir()
        models[role] = spec.model_copy(update={"source": str(candidate.resolve())}) if is_local else spec
    return registry.model_copy(update={"models": models})
