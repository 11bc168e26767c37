"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach the Hugging Face hub: everything runs on models built offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session")
def offline_registry() -> Path:
    """Registry YAML of the offline random-weight models (built once, cached across runs)."""
    from sift.settings import cache_dir
    from workers.offline_models import build_offline_models

    return build_offline_models(cache_dir() / "offline-models")
