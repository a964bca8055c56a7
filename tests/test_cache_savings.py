"""``record_cache_hit(..., provider=, model=, input_tokens=, output_tokens=)``: what a
response served from the gateway's cache saved, in tokens and in dollars priced as a
request of that model, in every path a request's cost takes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from gateway_metrics import GatewayMetricsMiddleware
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from support import (
    otlp_metrics,
    prometheus_multiprocess_run,
    prometheus_server,
    sample_value,
    wait_for_values,
)

SAVED_TOKENS = "ractogateway_cache_saved_tokens_total"
SAVED_USD = "ractogateway_cache_saved_usd_total"
#: Hits that saved calls: provider, model, input and output tokens.
HITS = [
    ("openai", "gpt-4o", 1200, 300),
    ("openai", "gpt-4o", 0, 45),
    ("anthropic", "claude-sonnet-4-5", 5000, 800),
    ("openai", "gpt-4o-mini", 700, 0),
]


def record_hits(metrics: GatewayMetricsMiddleware) -> None:
    for provider, model, input_tokens, output_tokens in HITS:
        metrics.record_cache_hit(
            "semantic",
            provider=provider,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )
    metrics.record_cache_hit("exact")


def families(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def saved(text: str) -> dict[tuple[str, frozenset], float]:
    return {key: value for key, value in families(text).items() if "cache_saved" in key[0]}


def expected_savings(metrics: GatewayMetricsMiddleware) -> dict[tuple[str, frozenset], float]:
    """The same calls made as requests: their token and cost series, renamed."""
    requests = GatewayMetricsMiddleware(
        registry=CollectorRegistry(), price_table=dict(metrics.price_table)
    )
    for provider, model, input_tokens, output_tokens in HITS:
        requests.record_request(
            provider=provider,
            model=model,
            operation="chat",
            status="ok",
            latency_s=0.1,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )
    renamed = {"ractogateway_tokens_total": SAVED_TOKENS, "ractogateway_cost_usd_total": SAVED_USD}
    return {
        (renamed[name], labels): value
        for (name, labels), value in families(requests.generate_latest()).items()
        if name in renamed
    }


def test_a_hit_saves_the_tokens_and_the_cost_of_the_call_it_avoided():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    record_hits(metrics)
    text = metrics.generate_latest()
    found = saved(text)
    # Priced to the bit as the same requests' cost would be.
    assert found == expected_savings(metrics)
    assert (
        found[
            (
                SAVED_TOKENS,
                frozenset(
                    {"model": "gpt-4o", "provider": "openai", "token_type": "output"}.items()
                ),
            )
        ]
        == 345
    )
    gpt_4o = metrics.price_table["gpt-4o"]
    usd = (1200 * gpt_4o.input_per_million + 345 * gpt_4o.output_per_million) / 1e6
    assert found[(SAVED_USD, frozenset({"model": "gpt-4o", "provider": "openai"}.items()))] == (
        pytest.approx(usd, rel=1e-12)
    )
    assert sample_value(text, "ractogateway_cache_hits_total", cache_type="semantic") == 4
    assert sample_value(text, "ractogateway_cache_hits_total", cache_type="exact") == 1


def test_the_references_call_prints_the_references_bytes():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    metrics.record_cache_hit("exact")
    metrics.record_cache_hit(cache_type="semantic")
    text = metrics.generate_latest()
    assert "cache_saved" not in text


def test_an_unpriced_model_saves_tokens_and_is_named_once(caplog):
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), price_table={})
    for _ in range(2):
        metrics.record_cache_hit("exact", provider="acme", model="mystery", input_tokens=9)
    found = saved(metrics.generate_latest())
    assert found == {
        (
            SAVED_TOKENS,
            frozenset({"model": "mystery", "provider": "acme", "token_type": "input"}.items()),
        ): 18.0
    }
    assert sum("mystery" in record.getMessage() for record in caplog.records) == 1


@pytest.mark.parametrize(
    ("keywords", "error", "match"),
    [
        ({"provider": "openai"}, TypeError, "provider and model together: model is missing"),
        ({"model": "gpt-4o"}, TypeError, "provider is missing"),
        ({"input_tokens": 5}, ValueError, "need provider and model"),
        ({"provider": "openai", "model": "gpt-4o", "input_tokens": -1}, ValueError, "input_tokens"),
        (
            {"provider": "openai", "model": "gpt-4o", "output_tokens": 1.5},
            TypeError,
            "output_tokens",
        ),
        ({"provider": 3, "model": "gpt-4o"}, TypeError, "provider must be str"),
        ({"provider": "openai", "model": "gpt-4o", "tokens": 3}, TypeError, "'tokens'"),
        (
            {"provider": "openai", "model": "gpt-4o", "cache_type": "x"},
            TypeError,
            "multiple values",
        ),
    ],
)
def test_bad_arguments_are_refused_by_name_and_record_nothing(keywords, error, match):
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    before = metrics.generate_latest()
    with pytest.raises(error, match=match):
        metrics.record_cache_hit("exact", **keywords)
    with pytest.raises(TypeError, match="cache_type"):
        metrics.record_cache_hit(provider="openai", model="gpt-4o")
    with pytest.raises(TypeError, match="takes exactly one argument"):
        metrics.record_cache_miss("exact", model="gpt-4o")
    assert metrics.generate_latest() == before


def test_snapshots_merge_the_savings():
    single = GatewayMetricsMiddleware(registry=CollectorRegistry())
    record_hits(single)
    record_hits(single)
    driver = GatewayMetricsMiddleware(registry=CollectorRegistry())
    for _ in range(2):
        worker = GatewayMetricsMiddleware(registry=CollectorRegistry())
        record_hits(worker)
        driver.merge(worker.snapshot())
    assert saved(driver.generate_latest()) == pytest.approx(
        saved(single.generate_latest()), rel=1e-12
    )


WORKER = """
import sys
from gateway_metrics import GatewayMetricsMiddleware
from prometheus_client import CollectorRegistry
metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), multiprocess_dir=sys.argv[1])
for provider, model, input_tokens, output_tokens in {hits!r}:
    metrics.record_cache_hit("semantic", provider=provider, model=model,
                             input_tokens=input_tokens, output_tokens=output_tokens)
"""


def test_our_multiprocess_directory_sums_the_workers(tmp_path):
    for _ in range(3):
        subprocess.run(
            [sys.executable, "-c", WORKER.format(hits=HITS), str(tmp_path)],
            check=True,
            timeout=120,
        )
    scraper = GatewayMetricsMiddleware(registry=CollectorRegistry(), multiprocess_dir=tmp_path)
    expected = {key: value * 3 for key, value in expected_savings(scraper).items()}
    assert saved(scraper.generate_latest()) == pytest.approx(expected, rel=1e-12)


def test_prometheus_clients_multiprocess_mode_sums_the_workers(tmp_path):
    code = f"""
        from gateway_metrics import GatewayMetricsMiddleware
        from prometheus_client import CollectorRegistry
        for _ in range(2):
            metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
            for provider, model, input_tokens, output_tokens in {HITS!r}:
                metrics.record_cache_hit("semantic", provider=provider, model=model,
                                         input_tokens=input_tokens, output_tokens=output_tokens)
    """
    text = prometheus_multiprocess_run(textwrap.dedent(code), tmp_path)
    reference = GatewayMetricsMiddleware(registry=CollectorRegistry())
    expected = {key: value * 2 for key, value in expected_savings(reference).items()}
    assert saved(text) == pytest.approx(expected, rel=1e-12)


def test_the_otlp_push_carries_the_savings_as_monotonic_sums():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    record_hits(metrics)
    points = {}
    for metric in otlp_metrics(metrics):
        if metric.name.startswith("ractogateway_cache_saved"):
            assert metric.sum.is_monotonic
            for point in metric.sum.data_points:
                labels = frozenset((a.key, a.value.string_value) for a in point.attributes)
                value = point.as_int if metric.name.endswith("tokens") else point.as_double
                points[(metric.name + "_total", labels)] = value
    assert points == expected_savings(metrics)


@pytest.mark.integration
def test_remote_write_carries_the_savings_into_prometheus(tmp_path):
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    record_hits(metrics)
    with prometheus_server(tmp_path, "--web.enable-remote-write-receiver") as server:
        server.wait_ready()
        metrics.remote_write(f"{server.base}/api/v1/write", job="cache", instance="w")
        tokens = wait_for_values(server, f'{SAVED_TOKENS}{{job="cache",token_type="input"}}')
        usd = wait_for_values(server, f'{SAVED_USD}{{job="cache"}}')
    by_model = {dict(labels)["model"]: value for labels, value in tokens.items()}
    assert by_model == {"gpt-4o": 1200.0, "claude-sonnet-4-5": 5000.0, "gpt-4o-mini": 700.0}
    expected = expected_savings(metrics)
    assert {dict(labels)["model"]: value for labels, value in usd.items()} == {
        dict(labels)["model"]: value
        for (name, labels), value in expected.items()
        if name == SAVED_USD
    }
