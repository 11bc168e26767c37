"""``cpu_runtime: onnx``: ONNX Runtime serves the same logits as torch fp32 (1e-4), exports once, refuses a bad export,
and workers without the ``onnx`` extra still work."""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from sift.contract import DEFAULT_LIMITS, Job
from sift.settings import SettingsError
from workers.engine.engine import Engine
from workers.engine.forward import encode, score
from workers.engine.loading import LoadedModel, add_realtime_session, load_model, resolve_runtime
from workers.engine.onnx_runtime import (
    OnnxUnavailable,
    cached_export,
    check_against_torch,
    export_key,
    export_onnx,
    missing_packages,
    open_session,
    probe_inputs,
)
from workers.engine.policy import load_policies
from workers.engine.registry import ModelSpec, Registry, load_registry
from workers.priority import thread_niceness

MISSING = missing_packages()
needs_onnx = pytest.mark.skipif(
    bool(MISSING), reason=f"the ONNX path needs {', '.join(MISSING)} (pip install 'sift[onnx]')"
)
TOL = 1e-4
CPU = torch.device("cpu")
TEXTS = [
    "I absolutely loved this film, the acting was superb.",
    "ok",
    "Terrible service. We waited an hour and the food was cold.",
    "Ce produit est vraiment excellent, je le recommande. 🙂 great stuff!!!",
    "The quarterly report shows revenue grew by 12% while costs stayed flat. " * 60,  # truncated at 512 tokens
]
PAIRS = [(text, "This text is about food.") for text in TEXTS]


@pytest.fixture(scope="module")
def registry(offline_registry: Path) -> Registry:
    return load_registry(offline_registry)


def _load(registry: Registry, role: str, runtime: str) -> LoadedModel:
    torch.set_num_threads(2)
    spec = registry.models[role].model_copy(update={"cpu_runtime": runtime})
    return load_model(role, spec, CPU)


@needs_onnx
@pytest.mark.parametrize("role", ["sentiment", "nli", "rerank"])
def test_onnx_logits_match_torch_fp32(registry: Registry, role: str) -> None:
    """DistilBERT (no token types), TinyBERT NLI (3 labels, pairs) and the bert-tiny cross-encoder (1 logit)."""
    torch_model = _load(registry, role, "torch")
    onnx_model = _load(registry, role, "onnx")
    assert (torch_model.runtime, onnx_model.runtime) == ("torch", "onnx")
    sequences = [(t, None) for t in TEXTS] if role == "sentiment" else list(PAIRS)
    encoded = encode(torch_model, sequences)
    assert max(encoded.lengths) == 512 and min(encoded.lengths) <= 10  # one full-length sequence, one tiny
    want, got = score(torch_model, encoded), score(onnx_model, encoded)
    assert not want.failures and not got.failures
    assert got.logits.shape == want.logits.shape == (len(sequences), torch_model.info.num_labels)
    np.testing.assert_allclose(got.logits, want.logits, atol=TOL, rtol=0)
    assert not np.array_equal(got.logits, want.logits)  # really another runtime, not torch again


@needs_onnx
def test_engine_on_onnx_answers_like_torch(registry: Registry) -> None:
    def answers(runtime: str) -> list:
        torch.set_num_threads(2)
        models = {r: s.model_copy(update={"cpu_runtime": runtime}) for r, s in registry.models.items()}
        variant = registry.model_copy(update={"models": models})
        engine = Engine.load(variant, ["sentiment", "rerank"], CPU, load_policies(), DEFAULT_LIMITS, "test")
        texts = [{"id": str(i), "text": t} for i, t in enumerate(TEXTS)]
        query = [{"id": "q", "query": "is the food good?", "documents": TEXTS}]
        classify = Job(job_id="c", task="classify", items=texts, enqueued_at=time.time())
        rerank = Job(job_id="r", task="rerank", items=query, enqueued_at=time.time())
        return engine.run(classify) + engine.run(rerank)

    for want, got in zip(answers("torch"), answers("onnx"), strict=True):
        assert got.error is None and want.error is None
        assert (got.label, got.truncated) == (want.label, want.truncated)
        if want.ranking is not None:
            assert [d.index for d in got.ranking] == [d.index for d in want.ranking]
            np.testing.assert_allclose([d.score for d in got.ranking], [d.score for d in want.ranking], atol=TOL)
        else:
            np.testing.assert_allclose([s.score for s in got.scores], [s.score for s in want.scores], atol=TOL)


@needs_onnx
def test_export_is_cached_keyed_on_the_weights_and_checked(registry: Registry, tmp_path: Path) -> None:
    loaded = _load(registry, "rerank", "torch")
    model, names = loaded.model, loaded.input_names
    path = cached_export(model, names, tmp_path)
    written = path.stat().st_mtime_ns
    started = time.perf_counter()
    assert cached_export(model, names, tmp_path) == path  # the second worker finds it
    assert path.stat().st_mtime_ns == written and time.perf_counter() - started < 5.0
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".lock"] == [path.parent.name]  # no staging left

    session = open_session(path, threads=1)
    assert check_against_torch(session, model, names) <= TOL
    # The worker's event loop shares its cores: ORT's pool must not spin-wait between operators.
    assert session.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with torch.no_grad():
        model.classifier.bias += 0.5  # what serving a stale export of retrained weights would look like
    assert export_key(model, names) != path.parent.name  # retrained weights are a new export...
    with pytest.raises(OnnxUnavailable, match="differs from torch"):
        check_against_torch(session, model, names)  # ...and a stale one is refused


@needs_onnx
def test_workers_starting_together_export_once(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many workers loading the same model on a cold cache: one exports, the others wait for its file."""
    from workers.engine import onnx_runtime

    loaded = _load(registry, "rerank", "torch")
    exports: list[Path] = []
    real_export = onnx_runtime.export_onnx

    def counted(model: torch.nn.Module, names: tuple[str, ...], path: Path) -> None:
        exports.append(path)
        real_export(model, names, path)

    monkeypatch.setattr(onnx_runtime, "export_onnx", counted)
    with ThreadPoolExecutor(3) as pool:  # flock excludes separate opens of the lock file, threads or processes
        paths = list(pool.map(lambda _: cached_export(loaded.model, loaded.input_names, tmp_path), range(3)))
    assert len(exports) == 1 and len(set(paths)) == 1 and paths[0].is_file()
    session = open_session(paths[0], threads=1)
    assert check_against_torch(session, loaded.model, loaded.input_names) <= TOL


@needs_onnx
def test_a_token_type_blind_export_is_refused_even_from_the_cache(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why nli and rerank failed: a graph without ``token_type_ids`` (an exporter that dropped the input, or a stale
    file of an export made without it) gives torch's logits on single texts, where every segment id is 0, so a probe
    of single texts passed it, and it then scored every pair as one segment. The probe now holds pairs."""
    loaded = _load(registry, "rerank", "torch")
    assert "token_type_ids" in loaded.input_names
    # Written where this model's export is cached, as a stale file of an export made without token_type_ids.
    monkeypatch.setenv("SIFT_CACHE_DIR", str(tmp_path))
    blind = tmp_path / "onnx" / export_key(loaded.model, loaded.input_names) / "model.onnx"
    blind.parent.mkdir(parents=True)
    export_onnx(loaded.model, ("input_ids", "attention_mask"), blind)
    session = open_session(blind, threads=1)
    assert session.input_names == ("input_ids", "attention_mask")
    single = {**probe_inputs(), "token_type_ids": torch.zeros_like(probe_inputs()["token_type_ids"])}
    with torch.inference_mode():
        want = loaded.model(**single).logits.numpy()
    np.testing.assert_allclose(session.run({k: v.numpy() for k, v in single.items()}), want, atol=TOL)  # blind spot
    with pytest.raises(OnnxUnavailable, match="differs from torch"):
        check_against_torch(session, loaded.model, loaded.input_names)

    # Found in the cache at load: never served. auto falls back to torch (with a warning), onnx refuses to start.
    assert _load(registry, "rerank", "auto").runtime == "torch"
    with pytest.raises(OnnxUnavailable, match="differs from torch"):
        _load(registry, "rerank", "onnx")


@needs_onnx
def test_onnx_model_frees_torch_weights_and_reports_its_runtime(registry: Registry) -> None:
    loaded = _load(registry, "rerank", "onnx")
    assert loaded.onnx is not None and loaded.runtime == "onnx"
    assert all(p.device.type == "meta" for p in loaded.model.parameters())  # ORT holds the only copy
    assert loaded.model.config.num_labels == 1  # the config is still there for whoever reads it
    scored = score(loaded, encode(loaded, [("q", "d"), ("a longer query", "and a longer document")]))
    assert not scored.failures and np.isfinite(scored.logits).all() and scored.logits.shape == (2, 1)


def test_onnx_is_float32_only_and_cpu_only(offline_registry: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cpu_runtime onnx serves float32 only"):
        ModelSpec(source="x", cpu_runtime="onnx", dtype="bfloat16")
    with pytest.raises(ValueError, match="cpu_runtime onnx serves float32 only"):
        ModelSpec(source="x", cpu_runtime="onnx", quantize="int8")
    registry = yaml.safe_load(offline_registry.read_text())
    registry["models"]["rerank"].update(cpu_runtime="onnx", quantize="int8")
    bad = tmp_path / "registry.yaml"
    bad.write_text(yaml.safe_dump(registry))
    with pytest.raises(SettingsError, match="rerank"):
        load_registry(bad)
    with pytest.raises(SettingsError, match="cpu_runtime"):
        load_registry(offline_registry, environ={"SIFT_MODELS__RERANK__CPU_RUNTIME": "tensorrt"})
    # auto picks ORT only for plain fp32 on the CPU; a GPU always runs torch (dtype auto: bf16 there).
    assert resolve_runtime(ModelSpec(source="x", cpu_runtime="onnx"), torch.device("cuda")) == "torch"
    assert resolve_runtime(ModelSpec(source="x", cpu_runtime="auto", dtype="bfloat16"), CPU) == "torch"
    assert resolve_runtime(ModelSpec(source="x", cpu_runtime="auto"), CPU) == ("torch" if MISSING else "onnx")
    assert resolve_runtime(ModelSpec(source="x"), CPU) == "torch"


def test_without_the_onnx_extra_auto_serves_torch_and_onnx_says_what_to_install(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if `pip install 'sift[onnx]'` had not been run
    assert "onnxruntime" in missing_packages()
    with pytest.raises(OnnxUnavailable, match=r"pip install 'sift\[onnx\]'"):
        resolve_runtime(ModelSpec(source="x", cpu_runtime="onnx"), CPU)
    loaded = _load(registry, "rerank", "auto")
    assert loaded.runtime == "torch" and loaded.onnx is None
    encoded = encode(loaded, [("q", "d")])
    assert np.isfinite(score(loaded, encoded).logits).all()
    with pytest.raises(OnnxUnavailable, match="onnxruntime"):
        _load(registry, "rerank", "onnx")


@needs_onnx
def test_a_real_time_session_of_its_own_scores_exactly_like_the_main_one_beside_a_running_pass(
    registry: Registry,
) -> None:
    loaded = _load(registry, "nli", "onnx")
    assert add_realtime_session(loaded) and loaded.realtime_onnx is not None
    assert loaded.realtime_onnx.session is not loaded.onnx.session and loaded.realtime_onnx.path == loaded.onnx.path
    first = loaded.realtime_onnx
    assert add_realtime_session(loaded) and loaded.realtime_onnx is first, "opened once"
    encoded = encode(loaded, list(PAIRS) * 8)
    want = score(loaded, encoded)
    with ThreadPoolExecutor(max_workers=1) as bulk_thread:
        bulk = bulk_thread.submit(score, loaded, encoded)  # the main session busy meanwhile
        got = score(loaded, encoded, realtime=True)
        beside = bulk.result()
    # The same graph and options: equal up to the summation order threads may take.
    np.testing.assert_allclose(got.logits, want.logits, atol=1e-6, rtol=0)
    np.testing.assert_allclose(beside.logits, want.logits, atol=1e-6, rtol=0)
    assert not add_realtime_session(_load(registry, "nli", "torch")), "torch needs no second copy"


def _threads() -> set[int]:
    """Ids of this process's threads (Linux)."""
    return {int(task.name) for task in Path("/proc/self/task").iterdir()}


def _niceness(tid: int) -> int | None:
    """The nice value of thread ``tid``, None once it has ended."""
    try:
        return os.getpriority(os.PRIO_PROCESS, tid)
    except ProcessLookupError:
        return None


@needs_onnx
@pytest.mark.skipif(sys.platform != "linux", reason="a nice value per thread is Linux's")
def test_with_a_bulk_niceness_the_loaded_session_serves_real_time_and_a_lowered_one_serves_bulk(
    registry: Registry,
) -> None:
    own = thread_niceness()
    if own + 5 > 19:
        pytest.skip(f"the tests run at nice {own}: no room to lower a thread by 5")
    loaded = _load(registry, "nli", "onnx")
    loaded_first = loaded.onnx
    before = _threads()
    assert add_realtime_session(loaded, bulk_niceness=5)
    assert loaded.realtime_onnx is loaded_first and loaded.onnx is not loaded_first
    # The bulk session's intra-op pool (2 threads: the caller and one of its own); the thread that made the session
    # has been joined, but may still be listed for a moment.
    pool = {tid: _niceness(tid) for tid in _threads() - before}
    assert {value for value in pool.values() if value is not None} == {own + 5}, pool
    assert thread_niceness() == own, "the loading thread keeps its priority"
    encoded = encode(loaded, list(PAIRS) * 4)
    np.testing.assert_allclose(
        score(loaded, encoded).logits, score(loaded, encoded, realtime=True).logits, atol=1e-6, rtol=0
    )
