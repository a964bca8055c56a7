"""A Ray Data batch-inference job whose metrics come back whole to the driver.

Each actor of a ``map_batches`` pool records its batches with ``record_batch``
into a middleware of its own, at full speed, and returns with every batch a
snapshot of what it recorded since its last one (``snapshot(reset=True)``). The
driver merges those snapshots as the results stream in, so its middleware holds
the job's exact totals however the rows were spread, and can serve, push or
remote-write them:

    python examples/ray_batch_inference.py --rows 200000
    python examples/ray_batch_inference.py --remote-write http://127.0.0.1:9090/api/v1/write
    python examples/ray_batch_inference.py --address ray://head:10001 --actors 16 --actor-cpus 1

The model is simulated: each row's latency and token counts are a fixed
function of its id, so a run over the same rows gives the same totals on one
process or a thousand.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import ray
from gateway_metrics import GatewayMetricsMiddleware
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

#: (provider, model) the simulated rows are spread over.
MODELS = [
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-haiku-4-5"),
    ("google", "gemini-2.5-flash"),
]


def requests_of(ids: np.ndarray) -> dict[str, Any]:
    """The simulated requests of rows ``ids``, as ``record_batch`` columns.

    Latencies are multiples of 1/1024 s, so their sums are exact in any order.
    """
    ids = np.asarray(ids, dtype=np.int64)
    model_index = ids % len(MODELS)
    failed = ids % 50 == 7
    latency_s = ((ids * 2_654_435_761) % 4096 + 64) / 1024.0
    output_tokens = np.where(failed, 0, (ids * 104_729) % 600 + 1)
    return {
        "provider": [MODELS[index][0] for index in model_index],
        "model": [MODELS[index][1] for index in model_index],
        "operation": "chat",
        "status": ["error" if bad else "ok" for bad in failed],
        "latency_s": latency_s,
        "input_tokens": np.where(failed, 0, (ids * 7_919) % 2_000 + 100),
        "output_tokens": output_tokens,
        "cache_read_tokens": np.where(failed | (ids % 3 != 0), 0, 64),
        "time_to_first_token_s": np.where(ids % 2 == 0, latency_s / 4, np.nan),
    }


class MeteredInference:
    """A Ray Data actor: runs a batch, records it, returns its metrics delta."""

    def __init__(self) -> None:
        # Made in the actor, so it holds only what this actor records.
        self.metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = batch["id"]
        self.metrics.record_batch(**requests_of(ids))
        return {
            "rows": np.array([len(ids)]),
            "snapshot": np.array([self.metrics.snapshot(reset=True)], dtype=object),
        }


def run(
    rows: int,
    metrics: GatewayMetricsMiddleware,
    *,
    actors: int = 2,
    actor_cpus: float = 0.5,
    batch_size: int = 10_000,
    on_rows: Any = None,
) -> int:
    """Runs the job over ``rows`` rows and merges every actor's deltas into ``metrics``.

    Returns the number of snapshots merged; ``on_rows(count)`` hears of each batch.
    """
    dataset = ray.data.range(rows).map_batches(
        MeteredInference,
        # A pool of `actors` actors (Ray 2.51 deprecated `concurrency=` for this).
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=actor_cpus,
        batch_size=batch_size,
        batch_format="numpy",
    )
    merged = 0
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        for count, snapshot in zip(batch["rows"], batch["snapshot"]):
            metrics.merge(snapshot)
            merged += 1
            if on_rows is not None:
                on_rows(int(count))
    return merged


def totals(metrics: GatewayMetricsMiddleware) -> dict[str, float]:
    """Requests, tokens and USD over every series, from the exposition."""
    found = {"requests": 0.0, "tokens": 0.0, "usd": 0.0}
    names = {
        "ractogateway_requests_total": "requests",
        "ractogateway_tokens_total": "tokens",
        "ractogateway_cost_usd_total": "usd",
    }
    for family in text_string_to_metric_families(metrics.generate_latest()):
        for sample in family.samples:
            if sample.name in names:
                found[names[sample.name]] += sample.value
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows (prompts) to run")
    parser.add_argument("--actors", type=int, default=2, help="actors in the pool")
    parser.add_argument("--actor-cpus", type=float, default=0.5, help="CPUs per actor")
    parser.add_argument("--batch-size", type=int, default=10_000, help="rows per batch")
    parser.add_argument("--address", help="a Ray cluster's address (default: a local one)")
    parser.add_argument("--remote-write", metavar="URL", help="remote-write the totals there")
    parser.add_argument("--pushgateway", metavar="HOST:PORT", help="push the totals there")
    parser.add_argument("--job", default="ray_batch_inference", help="job label")
    parser.add_argument("--save-snapshot", metavar="PATH", help="write the totals' snapshot")
    args = parser.parse_args()

    console = Console()
    ray.init(
        address=args.address,
        num_cpus=None if args.address else 2,
        include_dashboard=False,
        log_to_driver=False,
    )
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    started = time.monotonic()
    with Progress(
        TextColumn("[bold]rows"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("rows", total=args.rows)
        merged = run(
            args.rows,
            metrics,
            actors=args.actors,
            actor_cpus=args.actor_cpus,
            batch_size=args.batch_size,
            on_rows=lambda count: progress.advance(task, count),
        )
    ray.shutdown()
    found = totals(metrics)
    console.print(
        f"{merged} snapshots merged in {time.monotonic() - started:.1f} s: "
        f"{found['requests']:,.0f} requests, {found['tokens']:,.0f} tokens, "
        f"{found['usd']:,.4f} USD"
    )
    if args.save_snapshot:
        with open(args.save_snapshot, "wb") as file:
            file.write(metrics.snapshot())
    if args.remote_write:
        metrics.remote_write(args.remote_write, job=args.job)
        console.print(f"remote-written to {args.remote_write} (job={args.job!r})")
    if args.pushgateway:
        metrics.push_to_gateway(args.pushgateway, job=args.job)
        console.print(f"pushed to http://{args.pushgateway}/metrics (job={args.job!r})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
