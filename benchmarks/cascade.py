"""What a cascade policy costs and changes: ``python -m benchmarks.cascade [--policy fast] [--items 512]``.

Scores the same moderation texts twice through sift's engine: with the policy as written (its small model first,
the policy's model only for the items it escalates) and with the policy's model alone. Prints, from that one run:
the fraction of items escalated, the agreement with the policy's model alone (the verdict, and every category's
flag), and items/s of both, with their ratio. Writes ``cascade.json`` under ``--out``.

By default it serves the offline random-weight stand-ins (``sift build-test-models``), whose labels are
meaningless: the figures then show the mechanics, not a quality. ``--registry`` and ``--policy-file`` point it at
real models and your own policy; ``--texts`` at a JSONL file with a ``text`` field per line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks import data


@dataclass
class CascadeReport:
    """One run's figures (see the module docstring)."""

    policy: str
    small_model: str
    large_model: str
    margin: float
    items: int
    escalated: int
    verdict_agreement: float
    """Share of items whose allow/flag verdict equals the policy model's alone."""
    flag_agreement: float
    """Share of (item, category) flags equal to the policy model's alone."""
    cascade_items_per_s: float
    large_items_per_s: float

    @property
    def escalated_share(self) -> float:
        """Fraction of the items the small model sent on."""
        return self.escalated / self.items if self.items else 0.0

    @property
    def speedup(self) -> float:
        """Cascade throughput over the policy's model alone."""
        return self.cascade_items_per_s / self.large_items_per_s if self.large_items_per_s else 0.0


def compare(cascaded: Sequence[Any], alone: Sequence[Any], large_model: str) -> tuple[int, float, float]:
    """Escalated count, verdict agreement and per-category flag agreement of two runs over the same items."""
    if len(cascaded) != len(alone) or not cascaded:
        raise ValueError("both runs must answer the same, non-empty, items")
    escalated = verdicts = flags = categories = 0
    for one, other in zip(cascaded, alone, strict=True):
        if one.moderation is None or other.moderation is None:
            raise ValueError(f"item {one.id} has no moderation answer: {one.error or other.error}")
        escalated += one.model == large_model
        verdicts += one.moderation.verdict == other.moderation.verdict
        theirs = {c.category: c.flagged for c in other.moderation.categories}
        for category in one.moderation.categories:
            flags += category.flagged == theirs[category.category]
            categories += 1
    return escalated, verdicts / len(cascaded), flags / categories


def run(registry_path: Path, policy_path: Path | None, policy_name: str, texts: list[str]) -> CascadeReport:
    """Both runs over ``texts`` on the CPU, back to back, with the logit cache off."""
    import torch

    from sift.contract import DEFAULT_LIMITS, Job, Lane
    from workers.engine.engine import Engine
    from workers.engine.policy import load_policies
    from workers.engine.registry import load_registry

    policies = load_policies(policy_path)
    policy = policies.policies[policy_name]
    if policy.cascade is None:
        raise SystemExit(f"policy {policy_name!r} has no cascade (see workers/config/moderation.yaml)")
    alone_name = f"{policy_name}-alone"
    both = policies.model_copy(update={"policies": {**policies.policies, alone_name: policy.without_cascade()}})
    roles = [policy.cascade.model, policy.model]
    engine = Engine.load(load_registry(registry_path), roles, torch.device("cpu"), both, DEFAULT_LIMITS, "bench")

    def timed(name: str) -> tuple[list[Any], float]:
        items = [{"id": f"t{i}", "text": text, "policy": name} for i, text in enumerate(texts)]
        job = Job(job_id=f"cascade-{name}", task="moderate", items=items, lane=Lane.BULK, enqueued_at=time.time())
        began = time.perf_counter()
        results = engine.run(job)
        return results, len(texts) / (time.perf_counter() - began)

    timed(policy_name)  # warm-up: first calls allocate
    alone, large_rate = timed(alone_name)
    cascaded, cascade_rate = timed(policy_name)
    escalated, verdicts, flags = compare(cascaded, alone, policy.model)
    return CascadeReport(
        policy_name,
        policy.cascade.model,
        policy.model,
        policy.cascade.margin,
        len(texts),
        escalated,
        verdicts,
        flags,
        cascade_rate,
        large_rate,
    )


def print_report(result: CascadeReport, console: Console) -> None:
    """The figures as a table."""
    table = Table(title=f"cascade policy {result.policy!r}: {result.small_model} first, then {result.large_model}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("items", f"{result.items:,}")
    table.add_row(f"escalated (margin {result.margin:g})", f"{result.escalated:,} ({result.escalated_share:.1%})")
    table.add_row(f"verdict agreement with {result.large_model} alone", f"{result.verdict_agreement:.1%}")
    table.add_row("category flag agreement", f"{result.flag_agreement:.1%}")
    table.add_row("cascade items/s", f"{result.cascade_items_per_s:,.1f}")
    table.add_row(f"{result.large_model} alone items/s", f"{result.large_items_per_s:,.1f}")
    table.add_row("cascade / alone", f"{result.speedup:.2f}x")
    console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cascade", description=__doc__.split("\n")[0])
    parser.add_argument("--policy", default="fast", help="a policy with a cascade (default: fast)")
    parser.add_argument("--policy-file", type=Path, help="policies YAML (default: sift's shipped policies)")
    parser.add_argument("--registry", type=Path, help="model registry YAML (default: the offline stand-ins)")
    parser.add_argument("--texts", type=Path, help="JSONL with a 'text' field per line (default: generated)")
    parser.add_argument("--items", type=int, default=512, help="generated texts to score (without --texts)")
    parser.add_argument("--out", type=Path, default=Path("out/cascade"))
    args = parser.parse_args(argv)
    if args.items < 1:
        parser.error("--items must be at least 1")
    registry = args.registry
    if registry is None:
        from sift.settings import cache_dir
        from workers.offline_models import build_offline_models

        registry = build_offline_models(cache_dir() / "offline-models")
    if args.texts is not None:
        texts = [json.loads(line)["text"] for line in args.texts.read_text().splitlines() if line.strip()]
    else:
        texts = data.generate(args.items, data.bert_token_counter()).texts
    result = run(registry, args.policy_file, args.policy, texts)
    print_report(result, Console())
    args.out.mkdir(parents=True, exist_ok=True)
    figures = {**asdict(result), "escalated_share": result.escalated_share, "speedup": result.speedup}
    (args.out / "cascade.json").write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
