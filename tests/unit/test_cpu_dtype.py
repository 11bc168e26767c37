"""``cpu_dtype``: what ``dtype: auto`` means on a CPU, bf16 only where the CPU has AMX-BF16 or AVX512-BF16 (or where
asked)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from sift.contract import DEFAULT_LIMITS, Job
from sift.settings import SettingsError
from workers.engine import forward, loading
from workers.engine.engine import Engine
from workers.engine.loading import cpu_has_native_bf16, load_model, resolve_dtype, resolve_runtime
from workers.engine.onnx_runtime import missing_packages
from workers.engine.policy import load_policies
from workers.engine.registry import ModelSpec, load_registry

CPU = torch.device("cpu")
CUDA = torch.device("cuda")
ONNX_HERE = not missing_packages()


def spec(**fields: str) -> ModelSpec:
    return ModelSpec(source="x", **fields)  # type: ignore[arg-type]


def test_dtype_auto_on_a_cpu_follows_cpu_dtype_and_auto_follows_the_hardware() -> None:
    assert resolve_dtype(spec(), CPU) is torch.float32  # the default: fp32 on every CPU
    assert resolve_dtype(spec(cpu_dtype="bfloat16"), CPU) is torch.bfloat16
    assert resolve_dtype(spec(cpu_dtype="auto"), CPU, native_bf16=True) is torch.bfloat16
    assert resolve_dtype(spec(cpu_dtype="auto"), CPU, native_bf16=False) is torch.float32
    # A GPU keeps serving bf16 under dtype auto, whatever cpu_dtype says.
    assert resolve_dtype(spec(cpu_dtype="float32"), CUDA) is torch.bfloat16


def test_an_explicit_dtype_holds_on_every_device_and_cpu_dtype_does_not_override_it() -> None:
    assert resolve_dtype(spec(dtype="float32", cpu_dtype="auto"), CPU, native_bf16=True) is torch.float32
    assert resolve_dtype(spec(dtype="float32", cpu_dtype="bfloat16"), CUDA) is torch.float32
    assert resolve_dtype(spec(dtype="bfloat16"), CPU, native_bf16=False) is torch.bfloat16


def test_auto_asks_the_hardware_when_not_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: True)
    assert resolve_dtype(spec(cpu_dtype="auto"), CPU) is torch.bfloat16
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: False)
    assert resolve_dtype(spec(cpu_dtype="auto"), CPU) is torch.float32


def test_a_bf16_cpu_is_served_by_torch_even_where_onnx_runtime_would_serve_fp32(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: True)
    assert resolve_runtime(spec(cpu_dtype="auto", cpu_runtime="auto"), CPU) == "torch"
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: False)
    assert resolve_runtime(spec(cpu_dtype="auto", cpu_runtime="auto"), CPU) == ("onnx" if ONNX_HERE else "torch")


@pytest.mark.parametrize("cpu_dtype", ["auto", "bfloat16"])
def test_onnx_with_a_cpu_dtype_that_may_be_bf16_is_refused_on_every_machine(cpu_dtype: str) -> None:
    with pytest.raises(ValueError, match=f"not cpu_dtype {cpu_dtype}"):
        spec(cpu_runtime="onnx", cpu_dtype=cpu_dtype)
    # With an explicit float32 the GPU-only meaning of auto is gone, and ORT serves it.
    assert spec(cpu_runtime="onnx", cpu_dtype=cpu_dtype, dtype="float32").cpu_runtime == "onnx"


def test_cpu_dtype_from_the_environment_and_a_wrong_value_is_a_clear_error() -> None:
    registry = load_registry(environ={"SIFT_MODELS__RERANK__CPU_DTYPE": "auto"})
    assert registry.models["rerank"].cpu_dtype == "auto"
    with pytest.raises(SettingsError, match="cpu_dtype"):
        load_registry(environ={"SIFT_MODELS__RERANK__CPU_DTYPE": "int4"})


def test_the_hardware_probe_wants_avx512_bf16_or_amx_tiles_with_the_bf16_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    def probe(tiles: bool | Exception, flags: set[str] | None) -> bool:
        def tile_probe() -> bool:
            if isinstance(tiles, Exception):
                raise tiles
            return tiles

        cpu_has_native_bf16.cache_clear()
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", tile_probe, raising=False)
        monkeypatch.setattr(loading, "cpu_flags", lambda: flags)
        return cpu_has_native_bf16()

    try:
        assert probe(True, {"avx512f", "amx_tile", "amx_bf16"}) is True
        assert probe(True, {"amx_tile", "amx_int8"}) is False  # tiles for int8 only
        assert probe(False, {"amx_bf16"}) is False  # the CPU has it, the kernel does not allow it
        assert probe(RuntimeError("no AMX"), {"amx_bf16"}) is False
        assert probe(True, None) is True  # no /proc to read: torch's tile probe decides
        # AVX512-BF16 (Cooper Lake, Zen 4) needs no tiles and no permission beyond the flag the kernel shows.
        assert probe(False, {"avx2", "avx512f", "avx512_bf16"}) is True
        assert probe(RuntimeError("no AMX"), {"avx512_bf16"}) is True
        assert probe(False, {"avx2", "avx512f", "avx512_vnni"}) is False  # AVX-512 without bf16: emulated
        assert probe(False, {"avx2", "fma"}) is False
    finally:
        monkeypatch.undo()
        cpu_has_native_bf16.cache_clear()


def test_a_bf16_cpu_model_is_really_served_in_bf16_and_labels_like_fp32(offline_registry: Path, tmp_path: Path) -> None:
    raw = yaml.safe_load(offline_registry.read_text())
    base = offline_registry.parent
    for role in raw["models"].values():
        role["source"] = str((base / role["source"]).resolve())
    raw["models"]["rerank"]["cpu_dtype"] = "bfloat16"
    raw["models"]["rerank"]["cpu_runtime"] = "auto"
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(raw))
    registry = load_registry(path)

    loaded = load_model("rerank", registry.models["rerank"], CPU)
    assert loaded.dtype is torch.bfloat16 and loaded.runtime == "torch"
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    assert loaded.pad_multiple == 8  # oneDNN builds bf16 kernels per row count: fewer lengths, each warmed up

    fp32 = registry.models["rerank"].model_copy(update={"cpu_dtype": "float32", "cpu_runtime": "torch"})
    fp32_loaded = load_model("rerank", fp32, CPU)
    assert fp32_loaded.pad_multiple == 1
    engines = [
        Engine({"rerank": model}, registry, load_policies(), DEFAULT_LIMITS, "test") for model in (loaded, fp32_loaded)
    ]
    items = [
        {"id": f"p{i}", "query": f"question {i}", "documents": [f"an answer about {i}", "weather"]} for i in range(8)
    ]
    job = Job(job_id="bf16-probe", task="rerank", items=items, enqueued_at=time.time())
    bf16_scores, fp32_scores = (
        np.array([[d.score for d in sorted(r.ranking or [], key=lambda d: d.index)] for r in engine.run(job)])
        for engine in engines
    )
    # Logits of bf16 weights and activations: close to fp32 (random weights, so near ties may reorder), never equal.
    assert np.all(np.isfinite(bf16_scores))
    assert np.max(np.abs(bf16_scores - fp32_scores)) < 0.05
    assert not np.array_equal(bf16_scores, fp32_scores)


def test_a_bf16_cpu_model_pads_each_pass_to_a_multiple_of_8_and_warms_up_every_such_length(
    offline_registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec_bf16 = load_registry(offline_registry).models["rerank"].model_copy(update={"cpu_dtype": "bfloat16"})
    loaded = load_model("rerank", spec_bf16, CPU)
    shapes: list[tuple[int, ...]] = []
    real_forward = loaded.model.forward

    def recording(**inputs: torch.Tensor) -> object:
        shapes.append(tuple(inputs["input_ids"].shape))
        return real_forward(**inputs)

    monkeypatch.setattr(loaded.model, "forward", recording)
    forward.warm_up(loaded)
    lengths = sorted({length for _, length in shapes[1:]})
    assert lengths == list(range(8, loaded.max_length + 1, 8)) and all(rows == 1 for rows, _ in shapes)

    shapes.clear()
    pairs = [("short query", "a document of a few words"), ("q", "d")]
    encoded = forward.encode(loaded, pairs)
    scored = forward.score(loaded, encoded)
    assert shapes and all(length % 8 == 0 for _, length in shapes)
    assert max(encoded.lengths) % 8 != 0  # so the padding above was added, not found
    # Padding is masked: the padded pass scores each pair as an unpadded pass of it alone does.
    monkeypatch.setattr(loaded, "pad_multiple", 1)
    alone = np.vstack([forward.score(loaded, forward.encode(loaded, [pair])).logits for pair in pairs])
    np.testing.assert_allclose(scored.logits, alone, atol=0.02)
