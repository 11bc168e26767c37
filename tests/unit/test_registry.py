"""Model registry and moderation policies: files, env overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from sift.contract import TaskName
from sift.settings import SettingsError
from workers.engine.policy import load_policies
from workers.engine.registry import load_registry


def test_builtin_registry_names_the_reference_models() -> None:
    registry = load_registry(environ={})
    assert registry.models["sentiment"].source == "distilbert-base-uncased-finetuned-sst-2-english"
    assert registry.models["rerank"].kind == "cross_encoder"
    assert registry.default_role(TaskName.MODERATE) == "zero_shot"


def test_env_overrides_a_field_of_a_role() -> None:
    registry = load_registry(
        environ={"SIFT_MODELS__SENTIMENT__SOURCE": "/models/sst2", "SIFT_MODELS__SENTIMENT__BATCH_TOKENS": "4096"}
    )
    assert registry.models["sentiment"].source == "/models/sst2"
    assert registry.models["sentiment"].batch_tokens == 4096


def test_bad_env_override_is_a_clear_error() -> None:
    with pytest.raises(SettingsError, match="SIFT_MODELS__<ROLE>__<FIELD>"):
        load_registry(environ={"SIFT_MODELS__SENTIMENT": "x"})
    with pytest.raises(SettingsError, match="invalid model registry"):
        load_registry(environ={"SIFT_MODELS__SENTIMENT__DTYPE": "int3"})


def test_relative_sources_resolve_against_the_registry_file(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    path = tmp_path / "registry.yaml"
    path.write_text("models:\n  m: {source: ./mine}\n  hub: {source: org/model}\ntasks: {classify: m}\n")
    registry = load_registry(path, environ={})
    assert registry.models["m"].source == str((tmp_path / "mine").resolve())
    assert registry.models["hub"].source == "org/model"


def test_registry_task_must_point_at_a_known_role(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text("models:\n  m: {source: org/model}\ntasks: {classify: missing}\n")
    with pytest.raises(SettingsError, match="not in models"):
        load_registry(path, environ={})
    with pytest.raises(SettingsError, match="cannot read"):
        load_registry(tmp_path / "absent.yaml", environ={})


def test_shipped_policy_and_a_broken_one(tmp_path: Path) -> None:
    policies = load_policies()
    assert policies.default == "default"
    assert {"harassment", "hate", "violence", "self_harm", "sexual", "spam"} <= set(
        policies.policies["default"].categories
    )
    assert policies.policies["strict"].name == "strict"
    broken = tmp_path / "policy.yaml"
    broken.write_text(
        "default: nope\npolicies:\n  p: {version: 1, model: m, categories: {c: {hypothesis: h, threshold: 2}}}\n"
    )
    with pytest.raises(SettingsError, match="invalid moderation policy"):
        load_policies(broken)
