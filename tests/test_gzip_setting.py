"""GATEWAY_METRICS_GZIP: a process that says zlib compresses its scrapes with
zlib-rs, the same text in another body; a value it cannot take is warned about."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

SCRAPE = textwrap.dedent(
    """
    import gzip, json, warnings
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        from gateway_metrics import GatewayMetricsMiddleware, _core
        from prometheus_client import CollectorRegistry
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())
    for index in range(200):
        metrics.record_request(provider="openai", model=f"m{index}", operation="chat",
                               status="ok", latency_s=0.25, input_tokens=10)
    text = metrics._exposition(True) + b"# EOF\\n"
    body = metrics._exposition_gzip(True, False, b"# EOF\\n")
    print(json.dumps({
        "compressor": _core.gzip_compressor()[0],
        "same_text": gzip.decompress(body) == text,
        "body": body.hex(),
        "builtin": _core.gzip_parts([text], "builtin").hex(),
        "zlib": _core.gzip_parts([text], "zlib:1").hex(),
        "warnings": [str(w.message) for w in caught if w.category is RuntimeWarning],
    }))
    """
)


def scrape_with(setting: str | None) -> dict:
    environment = {k: v for k, v in os.environ.items() if k != "GATEWAY_METRICS_GZIP"}
    if setting is not None:
        environment["GATEWAY_METRICS_GZIP"] = setting
    done = subprocess.run(
        [sys.executable, "-c", SCRAPE],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def test_zlib_compresses_the_same_text_with_zlib_rs():
    ours, zlib = scrape_with(None), scrape_with("zlib")
    assert (ours["compressor"], zlib["compressor"]) == ("builtin", "zlib:1")
    assert ours["same_text"] and zlib["same_text"]
    assert ours["body"] == ours["builtin"]
    assert zlib["body"] == zlib["zlib"] != zlib["builtin"]
    assert ours["warnings"] == zlib["warnings"] == []


def test_a_level_can_be_named_and_a_bad_setting_is_warned_about():
    assert scrape_with("zlib:9")["compressor"] == "zlib:9"
    bad = scrape_with("brotli")
    assert bad["compressor"] == "builtin" and bad["same_text"]
    assert len(bad["warnings"]) == 1 and "GATEWAY_METRICS_GZIP" in bad["warnings"][0]
