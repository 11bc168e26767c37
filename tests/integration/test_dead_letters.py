"""A poison item through a real worker: isolated, retried, dead-lettered, then requeued once fixed.

The poison is real, not mocked: a model whose vocabulary (5,000) is smaller than its tokenizer's
(30,522) raises IndexError in the embedding lookup on rarer words ("zebra"), while common words
(ids < 5,000) pass. A misconfigured tokenizer/model pair fails exactly like this.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from sift_it_helpers import cli_env, new_job_id, redis_url_of, run_sift, start_worker, wait_until
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

from producers.client import SiftClient
from sift.contract import ErrorCode
from sift.settings import SiftSettings
from workers.offline_models import tokenizer_source

pytestmark = pytest.mark.integration


def registry_for(tmp_path: Path, name: str, model_dir: Path) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump({"models": {"sentiment": {"source": str(model_dir)}}, "tasks": {"classify": "sentiment"}})
    )
    return path


def save_model(path: Path, vocab_size: int) -> Path:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=128,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    AutoModelForSequenceClassification.from_config(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(str(tokenizer_source())).save_pretrained(path)
    return path


@pytest.mark.timeout(240)
def test_poison_item_is_dead_lettered_and_requeued(redis_server: Any, tmp_path: Path) -> None:
    poisoned = registry_for(tmp_path, "poisoned", save_model(tmp_path / "small-vocab", vocab_size=5000))
    fixed = registry_for(tmp_path, "fixed", save_model(tmp_path / "full-vocab", vocab_size=30522))
    settings = SiftSettings(
        redis_url=redis_url_of(redis_server),
        registry=poisoned,
        queue_prefix=f"dead-{uuid.uuid4().hex[:8]}",
        item_retries=2,
        retry_backoff_s=0.01,
    )
    job_id = new_job_id("poison")
    items = [
        {"id": "ok-1", "text": "it was good"},
        {"id": "poison", "text": "hello zebra"},
        {"id": "ok-2", "text": "not bad at all"},
    ]

    with SiftClient(settings) as client:
        worker = start_worker(settings, tmp_path / "poisoned.log")
        try:
            handle = client.submit_many("classify", items, job_id=job_id)
            results = client.wait(handle, timeout_s=60)
        finally:
            worker.stop()
        assert results["ok-1"].ok and results["ok-2"].ok, "the poison's batch-mates are processed"
        error = results["poison"].error
        assert error is not None and error.code == ErrorCode.INFERENCE_FAILED
        assert "IndexError" in error.message
        log = (tmp_path / "poisoned.log").read_text()
        assert "after 2 retries" in log, "the item was retried alone before it was given up"

        [letter] = client.dead_letters.peek()
        assert (letter.job_id, letter.task, letter.item) == (job_id, "classify", items[1])
        assert letter.error == error

        env = cli_env(redis_url=settings.require_redis_url(), queue_prefix=settings.queue_prefix)
        listed = run_sift(["dead", "list"], env)
        assert listed.returncode == 0, listed.stderr
        assert "poison" in listed.stdout and job_id in listed.stdout and "inference_failed" in listed.stdout

        # The cause is fixed (a model that matches its tokenizer); the letter goes back under its ids.
        fixed_settings = settings.model_copy(update={"registry": fixed})
        worker = start_worker(fixed_settings, tmp_path / "fixed.log")
        try:
            requeued = run_sift(["dead", "requeue"], env)
            assert requeued.returncode == 0, requeued.stderr
            assert "requeued 1" in requeued.stdout
            wait_until(
                lambda: (r := client.store.get(job_id, "poison")) is not None and r.ok,
                timeout_s=60,
                what="the requeued item's success to replace its error",
            )
        finally:
            worker.stop()
        assert client.dead_letters.count() == 0
        assert client.store.get(job_id, "ok-1") == results["ok-1"], "other results are untouched"
