"""The demo: simulated gateway traffic through the middleware, scraped over HTTP."""

from __future__ import annotations

import importlib.util
import random
import time
import urllib.request
from collections import defaultdict

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gateway_metrics._core import DEFAULT_NAMESPACE
from gateway_metrics._exporter import PrometheusExporter
from gateway_metrics._middleware import GatewayMetricsMiddleware
from gateway_metrics._track import ToolCall

#: (provider, model, typical latency in seconds, typical output tokens)
TRAFFIC = [
    ("openai", "gpt-4o", 0.9, 350),
    ("openai", "gpt-4o-mini", 0.4, 250),
    ("anthropic", "claude-sonnet-4-5", 1.2, 420),
    ("anthropic", "claude-haiku-4-5", 0.35, 180),
    ("google", "gemini-2.5-flash", 0.5, 300),
    ("google", "gemini-2.5-pro", 2.4, 600),
    # A model no price source knows: its requests count as unpriced.
    ("self-hosted", "acme-internal-7b", 0.3, 200),
]
TOOLS = ["search", "calculator", "calendar", "weather"]
TEAMS = ["search", "support", "research"]
#: Label sets per family: the demo's long tail of tool names passes it, to show the overflow.
MAX_SERIES = 200


#: The error types of the demo's failed requests.
DEMO_ERROR_TYPES = ("rate_limit", "timeout", "server_error")


def simulate_request(metrics: GatewayMetricsMiddleware, rng: random.Random) -> None:
    """One request as a kit would record it: cache lookups, then the call or a cache hit."""
    provider, model, latency, output = rng.choice(TRAFFIC)
    labels = {"team": rng.choice(TEAMS)}
    # The exact cache is asked first, then the semantic one.
    for cache_type, hit_rate in (("exact", 0.08), ("semantic", 0.1)):
        if rng.random() < hit_rate:
            if cache_type == "semantic":
                # The call it avoided: the model's typical answer, from a
                # prompt of the model's size, without a draw of its own.
                metrics.record_cache_hit(
                    cache_type,
                    provider=provider,
                    model=model,
                    input_tokens=output * 4,
                    output_tokens=output,
                )
            else:
                metrics.record_cache_hit(cache_type)
            return
        metrics.record_cache_miss(cache_type)
    operation = rng.choices(["chat", "stream", "embed"], weights=[6, 3, 1])[0]
    seconds = rng.lognormvariate(0, 0.6) * latency
    if rng.random() < 0.04:
        metrics.record_request(
            provider=provider,
            model=model,
            operation=operation,
            status="error",
            latency_s=min(seconds * 3, 65.0),
            labels=labels,
            # Why, without a draw of its own (the traffic stays that of the seed).
            error_type=DEMO_ERROR_TYPES[int(seconds * 1000) % len(DEMO_ERROR_TYPES)],
        )
        return
    tool_calls = None
    if operation != "embed" and rng.random() < 0.2:
        tool_calls = [ToolCall(rng.choice(TOOLS), id=str(i)) for i in range(rng.randint(1, 3))]
        if rng.random() < 0.1:
            # Generated tool names (one per user-defined function, say): a long tail.
            tool_calls.append(ToolCall(f"user_fn_{rng.randrange(10**6)}", id="f"))
    input_tokens = rng.randint(50, 3000)
    output_tokens = 0 if operation == "embed" else int(rng.expovariate(1 / output))
    streamed = operation == "stream"
    metrics.record_request(
        provider=provider,
        model=model,
        operation=operation,
        status="ok",
        latency_s=seconds,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        # A prompt prefix served from the provider's cache, and reasoning output.
        cache_read_tokens=int(input_tokens * rng.choice([0, 0, 0.5, 0.8])),
        reasoning_tokens=int(output_tokens * rng.choice([0, 0, 0.3])),
        time_to_first_token_s=seconds * rng.uniform(0.05, 0.3) if streamed else None,
        # Most of a request is the provider's; a little is queueing and the gateway.
        queue_s=seconds * rng.uniform(0.0, 0.04),
        upstream_latency_s=seconds * rng.uniform(0.9, 0.95),
        tool_calls=tool_calls,
        labels=labels,
    )


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body: bytes = response.read()
        return body.decode("utf-8")


def _short(value: float) -> str:
    """A count in three significant digits: 16.7M, 5.35k, 812."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.0f}"


def histogram_quantile(quantile: float, buckets: list[tuple[float, float]]) -> float:
    """Estimates a quantile from cumulative buckets, interpolating as PromQL does."""
    buckets = sorted(buckets)
    total = buckets[-1][1]
    if total == 0:
        return float("nan")
    rank = quantile * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


def summarise(text: str, namespace: str = DEFAULT_NAMESPACE) -> dict[str, dict[str, float]]:
    """Per model: requests, errors, p50/p95 latency, p50 time to first token,
    tokens by type and cost, from one scrape of a middleware of ``namespace``."""
    rows: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    first_token: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            model = sample.labels.get("model")
            if model is None:
                continue
            row = rows[model]
            if sample.name == f"{namespace}_requests_total":
                row["requests"] += sample.value
                if sample.labels["status"] == "error":
                    row["errors"] += sample.value
            elif sample.name == f"{namespace}_request_duration_seconds_bucket":
                buckets[model][float(sample.labels["le"])] += sample.value
            elif sample.name == f"{namespace}_time_to_first_token_seconds_bucket":
                first_token[model][float(sample.labels["le"])] += sample.value
            elif sample.name == f"{namespace}_tokens_total":
                row[f"{sample.labels['token_type']}_tokens"] += sample.value
            elif sample.name == f"{namespace}_cost_usd_total":
                row["cost"] += sample.value
    for model, by_bound in buckets.items():
        cumulative = list(by_bound.items())
        rows[model]["p50"] = histogram_quantile(0.5, cumulative)
        rows[model]["p95"] = histogram_quantile(0.95, cumulative)
    for model, by_bound in first_token.items():
        rows[model]["ttft_p50"] = histogram_quantile(0.5, list(by_bound.items()))
    return rows


def new_demo_metrics(
    registry: CollectorRegistry, namespace: str = DEFAULT_NAMESPACE
) -> GatewayMetricsMiddleware:
    """The demo's middleware: a ``team`` label, the series cap, and genai-prices
    when installed (the ``prices`` extra), which counts unpriced requests."""
    prices = "genai-prices" if importlib.util.find_spec("genai_prices") else None
    return GatewayMetricsMiddleware(
        registry=registry,
        extra_labels=["team"],
        max_series=MAX_SERIES,
        prices=prices,
        namespace=namespace,
    )


def run_demo(
    *,
    duration: float,
    port: int,
    addr: str,
    seed: int,
    serve: bool,
    serve_seconds: float | None = None,
    serve_rate: float = 1000.0,
    namespace: str = DEFAULT_NAMESPACE,
) -> int:
    """Runs the demo and prints the summary; returns the process exit code.

    With ``serve`` the exporter stays up afterwards, ``serve_seconds`` long (until
    Ctrl-C when None), while ``serve_rate`` simulated requests per second go on.
    """
    from rich import box
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    console = Console()
    registry = CollectorRegistry()
    metrics = new_demo_metrics(registry, namespace)
    exporter = PrometheusExporter(port, registry=registry, addr=addr)
    exporter.start()
    scrape_port = exporter.port
    console.print(f"Exporter on http://{addr}:{scrape_port}/metrics")
    rng = random.Random(seed)
    recorded = 0
    scrapes = 0
    # Long calls that stay in flight while the demo runs, one per model.
    waiting = [
        metrics.track(provider, model, "stream", labels={"team": TEAMS[0]})
        for provider, model in dict.fromkeys((p, m) for p, m, _, _ in TRAFFIC)
    ]
    for call in waiting:
        call.__enter__()
    try:
        with Progress(
            TextColumn("[bold]simulated traffic"),
            BarColumn(),
            TextColumn("{task.fields[requests]:>9,} calls  {task.fields[scraped]}"),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("traffic", total=duration, requests=0, scraped="")
            started = time.monotonic()
            next_scrape = started
            while (elapsed := time.monotonic() - started) < duration:
                for _ in range(200):
                    simulate_request(metrics, rng)
                recorded += 200
                time.sleep(0.002)
                if time.monotonic() >= next_scrape:
                    seen = summarise(scrape(scrape_port), namespace)
                    scrapes += 1
                    total = sum(row["requests"] for row in seen.values())
                    scraped = f"scrape #{scrapes}: {total:,.0f} requests"
                    next_scrape += 1.0
                    progress.update(task, scraped=scraped)
                progress.update(task, completed=min(elapsed, duration), requests=recorded)
            progress.update(task, completed=duration, requests=recorded)

        text = scrape(scrape_port)
        rows = summarise(text, namespace)
        title = f"Gateway traffic: {recorded:,} calls in {duration:g} s, scraped over HTTP"
        ordered = sorted(rows.items(), key=lambda item: -item[1]["cost"])
        # One table where it fits; on a narrow terminal or in a log (80
        # columns) two tables with token counts in thousands and millions,
        # so that no cell is cut short.
        narrow = console.width < 130
        count = _short if narrow else (lambda value: f"{value:,.0f}")
        cells = {
            "requests": lambda row: f"{row['requests']:,.0f}",
            "errors": lambda row: f"{row['errors']:,.0f}",
            "p50": lambda row: f"{row['p50']:.2f} s",
            "p95": lambda row: f"{row['p95']:.2f} s",
            "TTFT p50": lambda row: f"{row['ttft_p50']:.2f} s" if "ttft_p50" in row else "-",
            "tokens in": lambda row: count(row["input_tokens"]),
            "cached": lambda row: count(row["cache_read_tokens"]),
            "tokens out": lambda row: count(row["output_tokens"]),
            "reasoning": lambda row: count(row["reasoning_tokens"]),
            "USD": lambda row: f"{row['cost']:,.4f}",
        }
        groups = [list(cells)[:5], list(cells)[5:]] if narrow else [list(cells)]
        for index, group in enumerate(groups):
            table = Table(title=title if index == 0 else None, box=box.SIMPLE_HEAD)
            table.add_column("model", justify="left", no_wrap=True)
            for column in group:
                table.add_column(column, justify="right", no_wrap=True)
            for model, row in ordered:
                table.add_row(model, *(cells[column](row) for column in group))
            console.print(table)
        hits = sum(
            s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == f"{metrics.namespace}_cache_hits_total"
        )
        console.print(f"cache hits: {hits:,.0f}   exposition: {len(text):,} bytes")
        if serve:
            until = "Ctrl-C stops" if serve_seconds is None else f"for {serve_seconds:g} s"
            console.print(f"Serving http://{addr}:{scrape_port}/metrics for Prometheus; {until}.")
            serve_until = None if serve_seconds is None else time.monotonic() + serve_seconds
            try:
                while serve_until is None or time.monotonic() < serve_until:
                    for _ in range(round(serve_rate / 20)):
                        simulate_request(metrics, rng)
                    time.sleep(0.05)
            except KeyboardInterrupt:
                console.print("stopped")
    finally:
        for call in waiting:
            call.__exit__(None, None, None)
        exporter.stop()
    return 0
