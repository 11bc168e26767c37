"""``sift eval`` through the real queue and worker.

The offline models have random weights, so their labels are meaningless: these tests never expect
an accuracy. They check that the report's figures equal those computed here, independently, from
the results the worker stored for the report's job.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console
from sift_it_helpers import cli_env, run_sift, squash

from producers.client import SiftClient
from producers.evaluate import EvalDataError, EvalReport, evaluate, print_eval
from sift.contract import ItemResult
from sift.local import WorkerProcess
from sift.settings import SiftSettings
from workers.engine.registry import Registry

pytestmark = pytest.mark.integration

TOL = 1e-9


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def stored_results(client: SiftClient, report: EvalReport, ids: list[str]) -> dict[str, ItemResult]:
    stored = client.store.get_many(report.job_id, ids)
    assert sorted(stored) == sorted(ids), "one stored result per item"
    return stored


def expected_classification(gold: dict[str, str], stored: dict[str, ItemResult]) -> dict:
    """Accuracy, per-class P/R/F1, macro-F1 and (gold, predicted) counts, from the stored results."""
    pairs = Counter(
        (gold[i].lower(), (r.label or "").lower()) for i, r in stored.items() if r.error is None and i in gold
    )
    n = sum(pairs.values())
    classes = {g for g, _ in pairs} | {p for _, p in pairs}
    per_class = {}
    for c in classes:
        tp = pairs[(c, c)]
        n_predicted = sum(count for (_, p), count in pairs.items() if p == c)
        n_gold = sum(count for (g, _), count in pairs.items() if g == c)
        precision = tp / n_predicted if n_predicted else 0.0
        recall = tp / n_gold if n_gold else 0.0
        f1 = 0.0 if tp == 0 else 2 * precision * recall / (precision + recall)
        per_class[c] = (precision, recall, f1, n_gold)
    return {
        "n": n,
        "accuracy": sum(count for (g, p), count in pairs.items() if g == p) / n,
        "macro_f1": sum(v[2] for v in per_class.values()) / len(per_class),
        "per_class": per_class,
        "pairs": dict(pairs),
    }


def check_classification(report: EvalReport, expected: dict) -> None:
    assert report.n_scored == expected["n"]
    assert report.metrics["accuracy"] == pytest.approx(expected["accuracy"], abs=TOL)
    assert report.metrics["macro_f1"] == pytest.approx(expected["macro_f1"], abs=TOL)
    got = {label.lower(): (s.precision, s.recall, s.f1, s.support) for label, s in report.per_class.items()}
    assert got.keys() == expected["per_class"].keys()
    for label, values in expected["per_class"].items():
        assert got[label] == pytest.approx(values, abs=TOL), label
    confusion = report.confusion
    assert confusion is not None
    pairs = {
        (g.lower(), p.lower()): confusion.count(g, p)
        for g in confusion.labels
        for p in confusion.labels
        if confusion.count(g, p)
    }
    assert pairs == expected["pairs"]


def check_served_by(report: EvalReport, stored: dict[str, ItemResult], role: str, registry: Registry) -> None:
    ok = [r for r in stored.values() if r.error is None]
    assert report.model == role
    assert report.model_source == registry.models[role].source == ok[0].model_source
    assert report.revision == ok[0].revision
    assert report.reference is None, "the offline test models are not reference models"
    assert report.seconds > 0 and report.items_per_s > 0


TEXTS = [
    "I love this phone, the camera is amazing.",
    "Terrible service, never again.",
    "It was fine I guess.",
    "Best purchase of the year!",
    "The box arrived crushed and the screen was cracked.",
    "Works as described.",
    "Absolutely wonderful experience from start to finish.",
    "I want my money back.",
]


@pytest.mark.timeout(120)
def test_eval_classify_matches_stored_results(client, worker: WorkerProcess, registry, id2label, tmp_path) -> None:
    negative, positive = id2label("sentiment")
    label_map = {"0": negative, "1": positive}
    rows: list[dict] = []
    gold: dict[str, str] = {}
    for i, text in enumerate(TEXTS):
        label = [negative, positive][i % 2]
        # Gold spelled as datasets spell it: lower case, or a number mapped by label_map.
        spelled: str | int = label.lower() if i % 3 else (i % 2)
        rows.append({"id": f"c-{i}", "text": text, "label": spelled, "source": "extra fields are dropped"})
        gold[f"c-{i}"] = label
    rows.append({"id": 99, "text": "an integer id", "label": positive})
    gold["99"] = positive
    rows.append({"id": "c-empty", "text": "", "label": negative})  # invalid: an error result, not a miss
    path = write_jsonl(tmp_path / "sst.jsonl", rows)

    report = evaluate(client, path, "classify", label_map=label_map)

    stored = stored_results(client, report, [*gold, "c-empty"])
    assert stored["c-empty"].error is not None and stored["c-empty"].error.code == "invalid_input"
    assert report.n == len(rows)
    assert report.n_errors == 1 and report.errors == {"invalid_input": 1}
    assert report.task == "classify" and report.n_skipped == 0
    check_classification(report, expected_classification(gold, stored))
    check_served_by(report, stored, "sentiment", registry)
    assert report.confusion is not None
    assert set(report.confusion.labels) <= {negative, positive}, "labels spelled as the model spells them"


@pytest.mark.timeout(120)
def test_eval_nli_matches_stored_results(client, worker: WorkerProcess, registry, id2label, tmp_path) -> None:
    labels = id2label("nli")
    pairs = [
        ("A man is playing a guitar on stage.", "A person is performing music."),
        ("A man is playing a guitar on stage.", "The stage is empty."),
        ("Two dogs run through a field.", "Animals are outside."),
        ("Two dogs run through a field.", "The dogs are sleeping indoors."),
        ("A woman reads a book in the park.", "Someone is reading."),
        ("A woman reads a book in the park.", "The book is a novel."),
        ("Children are building a sandcastle.", "Kids are at the beach."),
    ]
    rows, gold = [], {}
    for i, (premise, hypothesis) in enumerate(pairs):
        label = labels[i % len(labels)]
        # MNLI-style numeric gold for some, upper case for the others.
        spelled: str | int = i % len(labels) if i % 2 else label.upper()
        rows.append({"id": f"n-{i}", "premise": premise, "hypothesis": hypothesis, "label": spelled})
        gold[f"n-{i}"] = label
    rows.append({"id": "n-empty", "premise": "   ", "hypothesis": "Nothing.", "label": labels[0]})
    path = write_jsonl(tmp_path / "mnli.jsonl", rows)

    report = evaluate(client, path, "nli", label_map={str(i): label for i, label in enumerate(labels)})

    stored = stored_results(client, report, [*gold, "n-empty"])
    assert stored["n-empty"].error is not None
    assert report.n == len(rows) and report.n_errors == 1
    check_classification(report, expected_classification(gold, stored))
    check_served_by(report, stored, "nli", registry)


@pytest.mark.timeout(120)
def test_eval_zero_shot_matches_stored_results(client, worker: WorkerProcess, registry, tmp_path) -> None:
    candidates = ["sports", "politics", "cooking"]
    texts = ["The match went to extra time.", "Parliament passed the bill.", "Simmer the sauce for ten minutes."]
    rows = [{"id": f"z-{i}", "text": t, "labels": candidates, "label": candidates[i]} for i, t in enumerate(texts)]
    path = write_jsonl(tmp_path / "topics.jsonl", rows)

    report = evaluate(client, path, "zero_shot")

    gold = {row["id"]: row["label"] for row in rows}
    stored = stored_results(client, report, list(gold))
    assert report.n_errors == 0
    check_classification(report, expected_classification(gold, stored))
    check_served_by(report, stored, "zero_shot", registry)


def expected_ranking(relevance: dict[str, list[int]], stored: dict[str, ItemResult]) -> dict:
    """nDCG@10, MRR@10 and MAP written out independently of producers.metrics."""
    ndcgs, rrs, aps, skipped = [], [], [], 0
    for item_id, grades in relevance.items():
        result = stored[item_id]
        if result.error is not None:
            continue
        if max(grades) == 0:
            skipped += 1
            continue
        order = [d.index for d in result.ranking or []]
        assert sorted(order) == list(range(len(grades))), "the whole ranking came back"
        gained = [grades[i] for i in order]
        dcg = sum(g / math.log2(r + 2) for r, g in enumerate(gained[:10]))
        idcg = sum(g / math.log2(r + 2) for r, g in enumerate(sorted(grades, reverse=True)[:10]))
        ndcgs.append(dcg / idcg)
        first = next((r for r, g in enumerate(gained[:10]) if g > 0), None)
        rrs.append(0.0 if first is None else 1 / (first + 1))
        hit_ranks = [r + 1 for r, g in enumerate(gained) if g > 0]
        aps.append(sum((h + 1) / rank for h, rank in enumerate(hit_ranks)) / sum(g > 0 for g in grades))
    return {
        "ndcg@10": sum(ndcgs) / len(ndcgs),
        "mrr@10": sum(rrs) / len(rrs),
        "map": sum(aps) / len(aps),
        "n": len(ndcgs),
        "skipped": skipped,
    }


@pytest.mark.timeout(120)
def test_eval_rerank_matches_stored_results(client, worker: WorkerProcess, registry, tmp_path) -> None:
    documents = [
        "Paris is the capital of France.",
        "Bananas are yellow.",
        "The Eiffel Tower is in Paris.",
        "Cats sleep a lot.",
        "France borders Spain.",
        "Lyon is a French city.",
        "The Louvre is a museum in Paris.",
        "Rome is the capital of Italy.",
        "Berlin is in Germany.",
        "Madrid is the capital of Spain.",
        "The Seine flows through Paris.",
        "Mount Everest is very tall.",
    ]
    rows = [
        {
            "id": "r-graded",
            "query": "capital of France",
            "documents": documents,
            "relevance": [3, 0, 2, 0, 1] + [0] * 7,
        },
        # top_k in the data is dropped: MAP needs the whole ranking.
        {"id": "r-top-k", "query": "cats", "documents": documents[:5], "relevance": [0, 0, 0, 2, 0], "top_k": 1},
        {"id": "r-indices", "query": "capital cities", "documents": documents, "relevant": [0, 7, 9]},
        {"id": "r-none", "query": "quantum physics", "documents": documents[:4], "relevance": [0, 0, 0, 0]},
        {"id": "r-empty", "query": "nothing to rank", "documents": [], "relevance": []},
    ]
    relevance = {
        "r-graded": [3, 0, 2, 0, 1] + [0] * 7,
        "r-top-k": [0, 0, 0, 2, 0],
        "r-indices": [1 if i in (0, 7, 9) else 0 for i in range(len(documents))],
        "r-none": [0, 0, 0, 0],
        "r-empty": [],
    }
    path = write_jsonl(tmp_path / "rerank.jsonl", rows)

    report = evaluate(client, path, "rerank")

    stored = stored_results(client, report, list(relevance))
    assert stored["r-empty"].error is not None and stored["r-empty"].error.code == "invalid_input"
    expected = expected_ranking(relevance, stored)
    assert report.n == 5 and report.n_errors == 1
    assert report.n_skipped == expected["skipped"] == 1
    assert report.n_scored == expected["n"] == 3
    assert report.metrics.keys() == {"ndcg@10", "mrr@10", "map"}
    for name in ("ndcg@10", "mrr@10", "map"):
        assert report.metrics[name] == pytest.approx(expected[name], abs=TOL), name
    assert report.confusion is None and report.per_class == {}
    check_served_by(report, stored, "rerank", registry)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("task", "row", "message"),
    [
        ("classify", {"id": "a", "text": "no gold"}, "gold field 'label'"),
        ("zero_shot", {"id": "a", "text": "t", "labels": ["x", "y"], "label": "z"}, "not one of the candidate"),
        ("rerank", {"id": "a", "query": "q", "documents": ["d"], "relevance": [1, 0]}, "2 relevance grades for 1"),
        ("rerank", {"id": "a", "query": "q", "documents": ["d"], "relevant": [3]}, "document indices"),
        ("rerank", {"id": "a", "query": "q", "documents": ["d"]}, "exactly one of"),
    ],
)
def test_unusable_gold_fails_before_submitting(client, tmp_path, task: str, row: dict, message: str) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [row])
    with pytest.raises(EvalDataError, match=message):
        evaluate(client, path, task, job_id="eval-never-submitted")
    assert client.store.count("eval-never-submitted") == 0


def test_card_figure_is_printed_beside_a_reference_models_metric() -> None:
    report = EvalReport(
        task="classify",
        path="sst2-dev.jsonl",
        job_id="eval-x",
        n=10,
        n_errors=0,
        metrics={"accuracy": 0.9, "macro_f1": 0.89},
        seconds=1.0,
        model="sentiment",
        model_source="distilbert-base-uncased-finetuned-sst-2-english",
        revision="abc",
    )
    console = Console(record=True, width=160)
    print_eval(console, report)
    text = squash(console.export_text())
    assert "(card: 0.913 on SST-2 dev)" in text
    assert "not a reference model" not in text
    assert report.to_dict()["reference"] == {
        "task": "classify",
        "metric": "accuracy",
        "value": 0.913,
        "dataset": "SST-2 dev",
        "digits": 3,
    }


@pytest.fixture(scope="module")
def env(settings: SiftSettings, worker: WorkerProcess) -> dict[str, str]:
    assert settings.redis_url and settings.registry
    return cli_env(redis_url=settings.redis_url, registry=str(settings.registry), queue_prefix=settings.queue_prefix)


@pytest.mark.timeout(150)
def test_sift_eval_command_prints_the_table_and_writes_json(
    env: dict[str, str], client, registry, id2label, tmp_path
) -> None:
    negative, positive = id2label("sentiment")
    rows = [{"id": f"cli-{i}", "text": text, "label": i % 2} for i, text in enumerate(TEXTS[:6])]
    rows.append({"id": "cli-empty", "text": " ", "label": 0})
    path = write_jsonl(tmp_path / "labeled.jsonl", rows)
    out = tmp_path / "reports" / "eval.json"
    label_map = json.dumps({"0": negative, "1": positive})

    done = run_sift(["eval", str(path), "--task", "classify", "--label-map", label_map, "--json", str(out)], env)

    assert done.returncode == 0, done.stderr
    printed = squash(done.stdout)
    assert "classify: 6 of 7 items scored" in printed
    assert "accuracy" in printed and "macro_f1" in printed
    assert "per class" in printed and "confusion matrix" in printed
    assert "is not a reference model: no card figure to compare with" in printed
    assert "errors: 1, excluded from the metrics (invalid_input 1)" in printed
    assert "items/s" in printed
    saved = json.loads(out.read_text(encoding="utf-8"))
    assert saved["n"] == 7 and saved["n_errors"] == 1 and saved["n_scored"] == 6
    assert saved["model"] == "sentiment" and saved["model_source"] == registry.models["sentiment"].source
    assert saved["reference"] is None
    assert f"{saved['metrics']['accuracy']:.4f}" in printed
    gold = {row["id"]: [negative, positive][row["label"]] for row in rows[:-1]}
    stored = client.store.get_many(saved["job_id"], [*gold, "cli-empty"])
    assert stored["cli-empty"].error is not None
    expected = expected_classification(gold, stored)
    assert saved["metrics"]["accuracy"] == pytest.approx(expected["accuracy"], abs=TOL)
    assert saved["metrics"]["macro_f1"] == pytest.approx(expected["macro_f1"], abs=TOL)
    confusion = saved["confusion"]
    assert sum(map(sum, confusion["counts"])) == 6


@pytest.mark.timeout(60)
def test_sift_eval_of_an_unusable_file_fails_clearly(env: dict[str, str], tmp_path) -> None:
    path = write_jsonl(tmp_path / "nolabels.jsonl", [{"id": "a", "text": "hello"}])

    done = run_sift(["eval", str(path), "--task", "classify"], env)

    assert done.returncode == 2
    assert squash(done.stderr).startswith("error:") and "gold field 'label'" in done.stderr
    assert "Traceback" not in done.stderr
