"""What a new user meets first: errors that name their cause, and calls that mean
what they look like (tool names as strings, LiteLLM's model names, booleans)."""

from __future__ import annotations

import errno
import logging
import socket
import subprocess
import sys

import pytest
from gateway_metrics import (
    GatewayMetricsMiddleware,
    PrometheusExporter,
    compute_cost,
    tool_call_names,
)
from gateway_metrics.ops import Thresholds
from prometheus_client import CollectorRegistry
from support import sample_value

REQUEST = {"provider": "openai", "model": "gpt-4o", "operation": "chat", "status": "ok"}


def command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway_metrics", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# 6. Invalid explicit counts raise where they are given.


def test_invalid_explicit_counts_raise_in_the_block_and_the_call_is_an_error():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    with (
        pytest.raises(TypeError, match="input must be an int, not str"),
        metrics.track("openai", "gpt-4o") as call,
    ):
        call.tokens(input="10")  # type: ignore[arg-type]
    text = metrics.generate_latest()
    assert sample_value(text, "ractogateway_requests_total", **{**REQUEST, "status": "error"}) == 1
    assert sample_value(text, "ractogateway_requests_total", **REQUEST) is None


# 8. and 9. The command line.


def test_ops_export_into_a_file_exits_2_naming_it(tmp_path):
    target = tmp_path / "kit"
    target.write_text("not a directory")
    done = command("ops", "export", str(target))
    assert done.returncode == 2
    assert f"DIR {target}: directory is a file, not a directory" in done.stderr
    assert "Traceback" not in done.stderr
    below = command("ops", "export", str(target / "below"))
    assert below.returncode == 2
    assert f"DIR {target / 'below'}" in below.stderr and "Traceback" not in below.stderr


def test_an_error_ratio_that_could_never_fire_is_refused(tmp_path):
    done = command("ops", "export", str(tmp_path / "kit"), "--error-ratio", "5")
    assert done.returncode == 2
    assert "--error-ratio is a share of requests, at most 1, got 5.0" in done.stderr
    assert not (tmp_path / "kit").exists()
    with pytest.raises(ValueError, match="error_ratio is a share of requests"):
        Thresholds(error_ratio=1.5)
    assert Thresholds(error_ratio=1.0).error_ratio == 1.0


def test_the_demo_without_rich_says_what_to_install():
    hide_rich = (
        "import sys, runpy; sys.modules['rich'] = None; "
        "sys.argv = ['gateway_metrics', 'demo', '--duration', '0.1']; "
        "runpy.run_module('gateway_metrics', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", hide_rich], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "pip install 'gateway-metrics[demo]'" in done.stderr
    assert "Traceback" not in done.stderr


# 10. The exporter.


def test_a_missing_certificate_file_is_named(tmp_path):
    key = tmp_path / "tls.key"
    key.write_text("")
    with pytest.raises(FileNotFoundError) as raised:
        PrometheusExporter(0, certfile="/nonexistent.crt", keyfile=str(key))
    assert raised.value.filename == "/nonexistent.crt"
    assert "certfile" in str(raised.value) and "/nonexistent.crt" in str(raised.value)
    with pytest.raises(ValueError, match="not a PEM certificate chain"):
        PrometheusExporter(0, certfile=str(key), keyfile=str(key))


def test_a_port_in_use_is_named_with_its_address():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        exporter = PrometheusExporter(port, addr="127.0.0.1", registry=CollectorRegistry())
        with pytest.raises(OSError, match="cannot listen on") as raised:
            exporter.start()
    assert raised.value.errno == errno.EADDRINUSE
    assert f"cannot listen on 127.0.0.1:{port}" in str(raised.value)
    assert not exporter.is_running


# 11. Tool names.


def test_strings_are_tool_names_and_unreadable_elements_are_reported_once(caplog):
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    calls = ["search", None, object(), {"name": "x"}, ""]
    with caplog.at_level(logging.WARNING, logger="gateway_metrics"):
        metrics.record_request(**REQUEST, latency_s=0.1, tool_calls=calls)
        metrics.record_request(**REQUEST, latency_s=0.1, tool_calls=[None])
    text = metrics.generate_latest()
    name = "ractogateway_tool_calls_total"
    assert sample_value(text, name, tool_name="search") == 1.0
    assert sample_value(text, name, tool_name="x") == 1.0
    assert sample_value(text, name, tool_name="unknown") == 4.0
    reports = [r for r in caplog.records if "has no name" in r.getMessage()]
    assert len(reports) == 1 and "NoneType" in reports[0].getMessage()
    # The public reader agrees with what was recorded.
    assert tool_call_names(["search", None, {"name": "x"}]) == ["search", "unknown", "x"]


# 12. Prices of provider-prefixed names, and no price told from a zero one.


def test_a_provider_prefixed_model_finds_its_price_and_a_missing_one_is_told(caplog):
    assert compute_cost("openai/gpt-4o", 1000, 100) == compute_cost("gpt-4o", 1000, 100) > 0
    assert compute_cost("openrouter/openai/gpt-4o", 1000, 100) > 0
    with caplog.at_level(logging.WARNING, logger="gateway_metrics"):
        assert compute_cost("no-such-model-xyz", 1000, 100) == 0.0
        assert compute_cost("no-such-model-xyz", 1000, 100, default=None) is None
    assert sum("no-such-model-xyz" in r.getMessage() for r in caplog.records) == 1
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    metrics.record_request(
        **{**REQUEST, "model": "openai/gpt-4o"}, latency_s=0.1, input_tokens=1000, output_tokens=100
    )
    cost = sample_value(
        metrics.generate_latest(),
        "ractogateway_cost_usd_total",
        provider="openai",
        model="openai/gpt-4o",
    )
    assert cost == compute_cost("gpt-4o", 1000, 100)


# 13. Booleans, and the overflow series of tokens.


@pytest.mark.parametrize(
    "arguments",
    [
        {"latency_s": True},
        {"latency_s": 0.1, "input_tokens": True},
        {"latency_s": 0.1, "output_tokens": False},
    ],
)
def test_a_bool_is_not_a_latency_or_a_count_and_nothing_is_recorded(arguments):
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    with pytest.raises(TypeError, match="not bool"):
        metrics.record_request(**REQUEST, **arguments)
    assert "ractogateway_requests_total{" not in metrics.generate_latest()


def test_overflowed_token_counts_keep_their_token_type():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), max_series=2)
    for index in range(6):
        metrics.record_request(
            **{**REQUEST, "model": f"m{index}"}, latency_s=0.1, input_tokens=10, output_tokens=3
        )
    text = metrics.generate_latest()
    overflow = {"provider": "__overflow__", "model": "__overflow__"}
    tokens = "ractogateway_tokens_total"
    input_total = sample_value(text, tokens, token_type="input", **overflow)
    output_total = sample_value(text, tokens, token_type="output", **overflow)
    assert input_total is not None and output_total is not None
    assert input_total % 10 == 0 and output_total % 3 == 0
    assert input_total / 10 == output_total / 3  # the same requests, each type apart
    assert sample_value(text, tokens, token_type="__overflow__", **overflow) is None
