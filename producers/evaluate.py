"""``sift eval``: measure a model on a labeled JSONL file, through the real queue.

Each line is an item of its task plus its gold answer:

- ``classify``: ``{"id", "text", "label"}``
- ``nli``: ``{"id", "premise", "hypothesis", "label"}``
- ``zero_shot``: ``{"id", "text", "labels", "label"}`` (the gold label is one of ``labels``)
- ``rerank``: ``{"id", "query", "documents", "relevance": [grade per document]}``, or
  ``"relevant": [document indices]`` meaning grade 1 for those, 0 for the others.

The file is read twice: once to check every gold answer (so a bad file fails before anything is
queued), then streamed through :meth:`SiftClient.submit_many` with only the task's item fields,
since the wire contract forbids extra ones. Results are matched to gold answers by id; items
answered with an error are counted and left out of the metrics.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from producers.client import SiftClient
from producers.metrics import ClassScores, ConfusionMatrix, classification_metrics, ranking_metrics
from sift.contract import ITEM_MODELS, ItemResult, TaskName, parse_task

EVAL_TASKS = (TaskName.CLASSIFY, TaskName.NLI, TaskName.ZERO_SHOT, TaskName.RERANK)
RANKING_CUTOFF = 10
"""The k of nDCG@k and MRR@k."""

Gold = str | list[int]
"""A label (classification tasks) or one relevance grade per document (rerank)."""


@dataclass(frozen=True)
class CardFigure:
    """A figure published on a reference model's card, and the task and dataset it was measured on."""

    task: TaskName
    metric: str
    value: float
    dataset: str
    digits: int = 3

    def describe(self) -> str:
        """``card: 0.913 on SST-2 dev``."""
        return f"card: {self.value:.{self.digits}f} on {self.dataset}"


# Published figures, copied from each reference model's Hugging Face model card (sift did not measure
# them). Each is only comparable with sift's figure on that same dataset and split.
REFERENCE_FIGURES: dict[str, CardFigure] = {
    # SST-2 validation ("dev") accuracy.
    "distilbert-base-uncased-finetuned-sst-2-english": CardFigure(TaskName.CLASSIFY, "accuracy", 0.913, "SST-2 dev"),
    # The same model under the id the hub has since moved it to.
    "distilbert/distilbert-base-uncased-finetuned-sst-2-english": CardFigure(
        TaskName.CLASSIFY, "accuracy", 0.913, "SST-2 dev"
    ),
    # MNLI accuracy.
    "typeform/distilbert-base-uncased-mnli": CardFigure(TaskName.NLI, "accuracy", 0.820, "MNLI"),
    # MNLI matched accuracy.
    "agentlans/TinyBERT_General_4L_312D-nli": CardFigure(TaskName.NLI, "accuracy", 0.591, "MNLI-matched"),
    # NanoBEIR mean nDCG@10.
    "cross-encoder-testing/reranker-bert-tiny-gooaq-bce": CardFigure(
        TaskName.RERANK, "ndcg@10", 0.4313, "NanoBEIR", digits=4
    ),
}


class EvalDataError(ValueError):
    """The labeled file cannot be evaluated (bad JSON, missing or unusable gold, duplicate id)."""


@dataclass
class EvalReport:
    """What an evaluation measured, and on what."""

    task: str
    path: str
    job_id: str
    n: int
    """Items in the file."""
    n_errors: int
    """Items answered with an error: left out of the metrics."""
    metrics: dict[str, float]
    """``accuracy`` and ``macro_f1``, or ``ndcg@10``, ``mrr@10`` and ``map``."""
    seconds: float
    """Wall time from the first submission to the last result."""
    errors: dict[str, int] = field(default_factory=dict)
    """Error results by code."""
    n_skipped: int = 0
    """Rerank items without any relevant document: the ranking metrics are undefined for them."""
    per_class: dict[str, ClassScores] = field(default_factory=dict)
    confusion: ConfusionMatrix | None = None
    model: str | None = None
    """Registry role that served the items."""
    model_source: str | None = None
    revision: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def n_scored(self) -> int:
        """Items the metrics are computed over."""
        return self.n - self.n_errors - self.n_skipped

    @property
    def items_per_s(self) -> float:
        """Items per second of wall time, submission included."""
        return self.n / self.seconds if self.seconds > 0 else 0.0

    @property
    def reference(self) -> CardFigure | None:
        """The model card's figure for the model that served the items, if it is a reference model."""
        return REFERENCE_FIGURES.get(self.model_source or "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form of the report."""
        reference = self.reference
        return {
            "task": self.task,
            "path": self.path,
            "job_id": self.job_id,
            "n": self.n,
            "n_scored": self.n_scored,
            "n_errors": self.n_errors,
            "errors": dict(self.errors),
            "n_skipped": self.n_skipped,
            "metrics": dict(self.metrics),
            "per_class": {label: vars(scores) for label, scores in self.per_class.items()},
            "confusion": None if self.confusion is None else self.confusion.to_dict(),
            "model": self.model,
            "model_source": self.model_source,
            "revision": self.revision,
            "reference": None if reference is None else {**vars(reference), "task": reference.task.value},
            "seconds": self.seconds,
            "items_per_s": self.items_per_s,
            "notes": list(self.notes),
        }


def evaluate(
    client: SiftClient,
    path: Path,
    task: str,
    *,
    model: str | None = None,
    label_field: str = "label",
    label_map: Mapping[str, str] | None = None,
    job_id: str | None = None,
    idle_timeout_s: float = 300.0,
) -> EvalReport:
    """Run the labeled JSONL file ``path`` through the queue and score the results against its gold answers.

    ``label_map`` maps gold labels as the file spells them (``"0"``) to the model's (``"NEGATIVE"``);
    labels then compare case-insensitively. The job id is fresh unless given: the results store
    never replaces a stored answer, so re-using an id would score old results.
    Raises :class:`EvalDataError` before submitting anything when the file is unusable.
    """
    task_name = parse_task(task)
    if task_name not in EVAL_TASKS:
        raise EvalDataError(f"cannot evaluate task {task_name.value}; can: {', '.join(t.value for t in EVAL_TASKS)}")
    gold = read_gold(path, task_name, label_field=label_field, label_map=label_map or {})
    if not gold:
        raise EvalDataError(f"{path} has no items")
    job = job_id or f"eval-{uuid.uuid4().hex}"
    started = time.perf_counter()
    handle = client.submit_many(task_name, _items(path, task_name), model=model, job_id=job)
    results = {r.id: r for r in client.iter_results(job, expected=handle.expected, idle_timeout_s=idle_timeout_s)}
    seconds = time.perf_counter() - started
    report = EvalReport(
        task=task_name.value, path=str(path), job_id=job, n=len(gold), n_errors=0, metrics={}, seconds=seconds
    )
    _score(report, task_name, gold, results)
    return report


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line, with its id as a string (``line-N`` when absent)."""
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{number}"
            try:
                value = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
                raise EvalDataError(f"{where}: not valid JSON: {err}") from err
            if not isinstance(value, dict):
                raise EvalDataError(f"{where}: a JSON {type(value).__name__}, expected an object")
            item_id = value.get("id", f"line-{number}")
            if isinstance(item_id, int) and not isinstance(item_id, bool):
                item_id = str(item_id)  # as backfill does: numeric ids are common in datasets
            if not isinstance(item_id, str) or not item_id:
                raise EvalDataError(f"{where}: id must be a non-empty string or an integer")
            yield number, {**value, "id": item_id}


def read_gold(
    path: Path, task: TaskName, *, label_field: str = "label", label_map: Mapping[str, str] | None = None
) -> dict[str, Gold]:
    """Item id → gold answer for every line of ``path``; raises :class:`EvalDataError` on the first bad one."""
    gold: dict[str, Gold] = {}
    for number, record in _records(path):
        where = f"{path}:{number}"
        if record["id"] in gold:
            raise EvalDataError(f"{where}: id {record['id']!r} was used earlier")
        if task is TaskName.RERANK:
            gold[record["id"]] = _relevance(record, where)
        else:
            gold[record["id"]] = _gold_label(record, task, label_field, label_map or {}, where)
    return gold


def _gold_label(
    record: dict[str, Any], task: TaskName, label_field: str, label_map: Mapping[str, str], where: str
) -> str:
    raw = record.get(label_field)
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise EvalDataError(f"{where}: gold field {label_field!r} must be a string or an integer, got {raw!r}")
    label = label_map.get(str(raw), str(raw))
    candidates = record.get("labels")
    # A zero-shot gold label outside the candidates could never be predicted: a data error, not a miss.
    if (
        task is TaskName.ZERO_SHOT
        and isinstance(candidates, list)
        and label_key(label) not in {label_key(str(c)) for c in candidates}
    ):
        raise EvalDataError(f"{where}: gold label {label!r} is not one of the candidate labels {candidates}")
    return label


def _relevance(record: dict[str, Any], where: str) -> list[int]:
    documents = record.get("documents")
    n_documents = len(documents) if isinstance(documents, list) else 0
    if ("relevance" in record) == ("relevant" in record):
        raise EvalDataError(f"{where}: give exactly one of 'relevance' (grades) or 'relevant' (indices)")
    if "relevance" in record:
        grades = record["relevance"]
        if not isinstance(grades, list) or not all(_is_count(g) for g in grades):
            raise EvalDataError(f"{where}: 'relevance' must be a list of integers >= 0")
        if len(grades) != n_documents:
            raise EvalDataError(f"{where}: {len(grades)} relevance grades for {n_documents} documents")
        return list(grades)
    indices = record["relevant"]
    if not isinstance(indices, list) or not all(_is_count(i) and i < n_documents for i in indices):
        raise EvalDataError(f"{where}: 'relevant' must list document indices in 0..{n_documents - 1}")
    chosen = set(indices)
    return [1 if i in chosen else 0 for i in range(n_documents)]


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def label_key(label: str) -> str:
    """How labels compare: datasets say "positive" where models say "POSITIVE"."""
    return label.strip().casefold()


def _items(path: Path, task: TaskName) -> Iterator[dict[str, Any]]:
    """The file's items with only their task's fields: gold answers and other extras are dropped."""
    fields = set(ITEM_MODELS[task].model_fields)
    # MAP needs the whole ranking, so a dataset's top_k must not cut it.
    fields.discard("top_k")
    for _number, record in _records(path):
        yield {name: value for name, value in record.items() if name in fields}


def _score(report: EvalReport, task: TaskName, gold: dict[str, Gold], results: dict[str, ItemResult]) -> None:
    """Fill ``report`` from the results: errors, model, then the task's metrics over the rest."""
    ok = {item_id: r for item_id, r in results.items() if r.ok and item_id in gold}
    errors = Counter(str(r.error.code) for r in results.values() if r.error is not None)
    report.errors = dict(errors.most_common())
    missing = len(gold) - len(ok) - errors.total()
    report.n_errors = errors.total() + max(missing, 0)
    if missing > 0:
        report.notes.append(f"{missing} items got no result")
    _model_of(report, ok.values())
    if task is TaskName.RERANK:
        queries = [([d.index for d in r.ranking or []], _as_grades(gold[i])) for i, r in ok.items()]
        ranking = ranking_metrics(queries, k=RANKING_CUTOFF)
        report.metrics, report.n_skipped = ranking.as_dict(), ranking.n_skipped
        return
    if not ok:
        return
    names = _display_names(ok.values(), [_as_label(gold[i]) for i in ok])
    predicted = [names[label_key(r.label or "")] for r in ok.values()]
    expected = [names[label_key(_as_label(gold[i]))] for i in ok]
    scores = classification_metrics(expected, predicted)
    report.metrics = {"accuracy": scores.accuracy, "macro_f1": scores.macro_f1}
    report.per_class, report.confusion = scores.per_class, scores.confusion


def _as_label(gold: Gold) -> str:
    assert isinstance(gold, str)
    return gold


def _as_grades(gold: Gold) -> list[int]:
    assert isinstance(gold, list)
    return gold


def _display_names(results: Iterable[ItemResult], gold: list[str]) -> dict[str, str]:
    """Label key → the spelling to show: the model's (its scores name every label), else the file's."""
    names: dict[str, str] = {}
    for result in results:
        for label in [result.label or "", *(s.label for s in result.scores)]:
            names.setdefault(label_key(label), label)
    for label in gold:
        names.setdefault(label_key(label), label)
    return names


def _model_of(report: EvalReport, results: Iterable[ItemResult]) -> None:
    """The model that served the items; a note when several did (workers with different registries)."""
    served = Counter((r.model, r.model_source, r.revision) for r in results)
    if not served:
        return
    (report.model, report.model_source, report.revision), _count = served.most_common(1)[0]
    if len(served) > 1:
        others = ", ".join(f"{source}@{revision} ({count})" for (_m, source, revision), count in served.items())
        report.notes.append(f"results came from {len(served)} different models: {others}")


def print_eval(console: Console, report: EvalReport) -> None:
    """Metrics beside the model card's figure, per-class scores, confusion matrix, errors and throughput."""
    reference = report.reference
    table = Table(title=f"{report.task}: {report.n_scored} of {report.n} items scored", caption=escape(report.path))
    table.add_column("metric")
    table.add_column("sift", justify="right")
    table.add_column("model card")
    for name, value in report.metrics.items():
        card = reference is not None and reference.task.value == report.task and reference.metric == name
        table.add_row(name, f"{value:.4f}", f"({reference.describe()})" if card and reference else "")
    console.print(table)
    console.print(_model_line(report))
    if report.per_class:
        console.print(_per_class_table(report.per_class))
    if report.confusion is not None:
        console.print(_confusion_table(report.confusion))
    if report.n_errors:
        codes = ", ".join(f"{code} {count}" for code, count in report.errors.items())
        console.print(f"[red]errors: {report.n_errors}, excluded from the metrics[/] ({codes})")
    else:
        console.print("errors: 0")
    if report.n_skipped:
        console.print(f"skipped: {report.n_skipped} without a relevant document (the metrics are undefined for them)")
    for note in report.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    console.print(
        f"{report.n} items in {report.seconds:.2f} s, [bold]{report.items_per_s:.1f} items/s[/] (job {report.job_id})"
    )


def _model_line(report: EvalReport) -> str:
    source = escape(report.model_source or "(unknown)")
    served = f"model: {escape(report.model or '(none)')} = {source} @ {escape(report.revision or '(unknown)')}"
    reference = report.reference
    if reference is None:
        return f"{served}\n{source} is not a reference model: no card figure to compare with."
    if reference.task.value != report.task:
        return f"{served}\nits card figure ({reference.describe()}) is for task {reference.task.value}, not this one."
    return f"{served}\ncard figures are measured on the card's dataset: compare on that same data only."


def _per_class_table(per_class: dict[str, ClassScores]) -> Table:
    table = Table(title="per class")
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for label, scores in per_class.items():
        table.add_row(
            escape(label), f"{scores.precision:.4f}", f"{scores.recall:.4f}", f"{scores.f1:.4f}", str(scores.support)
        )
    return table


def _confusion_table(confusion: ConfusionMatrix) -> Table:
    table = Table(title="confusion matrix")
    table.add_column("gold \\ predicted")
    for label in confusion.labels:
        table.add_column(escape(label), justify="right")
    for label, row in zip(confusion.labels, confusion.counts, strict=True):
        table.add_row(escape(label), *(str(count) for count in row))
    return table
