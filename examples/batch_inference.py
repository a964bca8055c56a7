"""A batch-inference job: worker processes answer N prompts, the job reports once at the end.

The job uses gateway-metrics' multi-process mode: every worker records into its
own file of a metrics directory, with one ``record_batch`` call per chunk of
prompts it ran through a simulated model. The parent shows progress, folds the
workers' files together at the end, prints a summary from the sum and, with
``--pushgateway``, pushes that sum to a Prometheus Pushgateway before exiting.

    python examples/batch_inference.py --prompts 200000 --workers 4
    python examples/batch_inference.py --pushgateway 127.0.0.1:9091
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import tempfile
import time

from gateway_metrics import GatewayMetricsMiddleware, ToolCall, multiprocess
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

#: (provider, model, typical seconds per prompt, typical completion tokens)
MODELS = [
    ("openai", "gpt-4o-mini", 0.4, 220),
    ("anthropic", "claude-haiku-4-5", 0.35, 180),
    ("google", "gemini-2.5-flash", 0.5, 260),
]
CHUNK = 5_000


#: This worker process's middleware, created on its first chunk.
_worker_metrics: GatewayMetricsMiddleware | None = None


def run_chunk(task: tuple[str, int, int, int]) -> int:
    """Runs prompts ``[start, start + count)`` and records them; returns how many."""
    global _worker_metrics
    directory, seed, start, count = task
    if _worker_metrics is None:
        _worker_metrics = GatewayMetricsMiddleware(
            registry=CollectorRegistry(), multiprocess_dir=directory
        )
    return _worker_metrics.record_batch(operation="chat", **simulate(seed, start, count))


def simulate(seed: int, start: int, count: int) -> dict[str, list]:
    """The simulated model on prompts ``[start, start + count)``, as columns."""
    rng = random.Random(seed * 1_000_003 + start)
    columns: dict[str, list] = {
        "provider": [],
        "model": [],
        "status": [],
        "latency_s": [],
        "input_tokens": [],
        "output_tokens": [],
        "tool_calls": [],
    }
    for prompt in range(start, start + count):
        provider, model, seconds, completion = MODELS[prompt % len(MODELS)]
        failed = rng.random() < 0.02
        columns["provider"].append(provider)
        columns["model"].append(model)
        columns["status"].append("error" if failed else "ok")
        columns["latency_s"].append(rng.lognormvariate(0, 0.5) * seconds)
        columns["input_tokens"].append(0 if failed else rng.randint(100, 2000))
        columns["output_tokens"].append(0 if failed else int(rng.expovariate(1 / completion)))
        tools = None
        if not failed and rng.random() < 0.1:
            tools = [ToolCall(rng.choice(["search", "calculator"]), id=f"{prompt}")]
        columns["tool_calls"].append(tools)
    return columns


def summary_table(metrics: GatewayMetricsMiddleware, elapsed: float) -> Table:
    rows: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(metrics.generate_latest()):
        for sample in family.samples:
            model = sample.labels.get("model")
            if model is None:
                continue
            row = rows.setdefault(model, {"requests": 0, "errors": 0, "in": 0, "out": 0, "cost": 0})
            if sample.name == "ractogateway_requests_total":
                row["requests"] += sample.value
                row["errors"] += sample.value if sample.labels["status"] == "error" else 0
            elif sample.name == "ractogateway_tokens_total":
                row["in" if sample.labels["token_type"] == "input" else "out"] += sample.value
            elif sample.name == "ractogateway_cost_usd_total":
                row["cost"] += sample.value
    table = Table(title=f"Batch job summary ({elapsed:.1f} s)")
    for column in ("model", "requests", "errors", "tokens in", "tokens out", "USD"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for model, row in sorted(rows.items()):
        table.add_row(
            model,
            f"{row['requests']:,.0f}",
            f"{row['errors']:,.0f}",
            f"{row['in']:,.0f}",
            f"{row['out']:,.0f}",
            f"{row['cost']:,.4f}",
        )
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=100_000, help="prompts to answer")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    parser.add_argument("--pushgateway", metavar="HOST:PORT", help="push the result there")
    parser.add_argument("--job", default="batch_inference", help="Pushgateway job name")
    parser.add_argument(
        "--metrics-dir", help="multi-process metrics directory (default: a temporary one)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="batch-metrics-") as temporary:
        return run_job(args, args.metrics_dir or temporary)


def run_job(args: argparse.Namespace, directory: str) -> int:
    """Runs the job with its metrics in ``directory``; returns the exit code."""
    console = Console()
    multiprocess.cleanup(directory)
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), multiprocess_dir=directory)
    tasks = [
        (directory, args.seed, start, min(CHUNK, args.prompts - start))
        for start in range(0, args.prompts, CHUNK)
    ]
    started = time.monotonic()
    with (
        Progress(
            TextColumn("[bold]prompts"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress,
        multiprocessing.Pool(args.workers) as pool,
    ):
        task = progress.add_task("prompts", total=args.prompts)
        for recorded in pool.imap_unordered(run_chunk, tasks):
            progress.advance(task, recorded)
    folded = multiprocess.compact(directory)
    console.print(f"worker files folded into one: {folded.folded}")
    console.print(summary_table(metrics, time.monotonic() - started))
    if args.pushgateway:
        metrics.push_to_gateway(
            args.pushgateway, job=args.job, grouping_key={"seed": str(args.seed)}
        )
        console.print(f"pushed to http://{args.pushgateway}/metrics (job={args.job!r})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
