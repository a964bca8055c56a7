"""Extra labels on the request families: a prometheus_client model of them, every path,
and clear refusals."""

from __future__ import annotations

import warnings

import pytest
from gateway_metrics import GatewayMetricsMiddleware
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support import ReferenceModel, prometheus_multiprocess_run, promtool_check

EXTRA = ("tenant", "app")
CALLS = [
    ({"tenant": "acme", "app": "chat-ui"}, "gpt-4o", 0.5, 100, 20),
    ({"tenant": "acme"}, "gpt-4o", 1.5, 50, 0),
    ({"app": "batch"}, "o3-mini", 2.5, 10, 5),
    (None, "gpt-4o", 0.2, 0, 3),
    ({"tenant": "globex", "app": "chat-ui"}, "gpt-4o", 0.7, 1, 1),
]


def samples(text: str, prefix: str = "ractogateway_") -> dict:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith(prefix) and not sample.name.endswith("_created")
    }


def call_arguments(call: tuple) -> dict:
    """The ``record_request`` arguments of one of ``CALLS``."""
    labels, model, latency, input_tokens, output_tokens = call
    return {
        "provider": "openai",
        "model": model,
        "operation": "chat",
        "status": "ok",
        "latency_s": latency,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "labels": labels,
    }


def modelled() -> str:
    """The request families with the extra labels, as prometheus_client keeps them."""
    model = ReferenceModel(extra_labels=EXTRA)
    for call in CALLS:
        model.record(**call_arguments(call))
    return generate_latest(model.registry).decode()


def record_call(metrics: GatewayMetricsMiddleware, call: tuple) -> None:
    metrics.record_request(**call_arguments(call))


def record_all(metrics: GatewayMetricsMiddleware) -> None:
    for call in CALLS:
        record_call(metrics, call)


def test_extra_labels_equal_prometheus_clients_model_and_pass_promtool():
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), extra_labels=EXTRA)
    assert metrics.extra_labels == EXTRA
    record_all(metrics)
    metrics.record_cache_hit("exact")
    text = metrics.generate_latest()
    promtool_check(text)
    ours = samples(text)
    expected = samples(modelled())
    assert {key: value for key, value in ours.items() if key in expected} == expected
    assert all(key in ours for key in expected)
    # The cache and tool families keep their own labels only.
    assert ours[("ractogateway_cache_hits_total", (("cache_type", "exact"),))] == 1.0
    # Labels print sorted, extra ones among the families' own.
    assert (
        'ractogateway_requests_total{app="chat-ui",model="gpt-4o",operation="chat",'
        'provider="openai",status="ok",tenant="acme"} 1.0' in text
    )


def test_a_batch_with_a_dict_or_a_column_of_dicts_equals_one_call_per_row(no_created):
    single = GatewayMetricsMiddleware(registry=CollectorRegistry(), extra_labels=EXTRA)
    record_all(single)
    batched = GatewayMetricsMiddleware(registry=CollectorRegistry(), extra_labels=EXTRA)
    batched.record_batch(
        provider="openai",
        model=[call[1] for call in CALLS],
        operation="chat",
        status="ok",
        latency_s=[call[2] for call in CALLS],
        input_tokens=[call[3] for call in CALLS],
        output_tokens=[call[4] for call in CALLS],
        labels=[call[0] for call in CALLS],
    )
    assert samples(batched.generate_latest()) == samples(single.generate_latest())
    one_tenant = GatewayMetricsMiddleware(registry=CollectorRegistry(), extra_labels=EXTRA)
    one_tenant.record_batch(
        provider="openai",
        model="gpt-4o",
        operation="chat",
        status="ok",
        latency_s=[0.1, 0.2],
        labels={"tenant": "acme"},
    )
    labels = (("app", ""), ("model", "gpt-4o"), ("operation", "chat"), ("provider", "openai"),
              ("status", "ok"), ("tenant", "acme"))  # fmt: skip
    assert samples(one_tenant.generate_latest())[("ractogateway_requests_total", labels)] == 2.0


@pytest.mark.parametrize(
    ("labels", "error", "message"),
    [
        ({"region": "eu"}, ValueError, "labels names 'region', which is not among"),
        ({"tenant": 5}, TypeError, r"labels\['tenant'\] must be str, not int"),
        ("tenant=acme", TypeError, "labels must be a dict of extra label values, not str"),
    ],
)
def test_bad_labels_are_refused_by_name_and_record_nothing(labels, error, message):
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), extra_labels=EXTRA)
    with pytest.raises(error, match=message):
        metrics.record_request(
            provider="openai",
            model="m",
            operation="chat",
            status="ok",
            latency_s=0.1,
            labels=labels,
        )
    assert "ractogateway_requests_total{" not in metrics.generate_latest()


@pytest.mark.parametrize(
    ("names", "error", "message"),
    [
        (["1tenant"], ValueError, "not a Prometheus label name"),
        (["__tenant"], ValueError, "not a Prometheus label name"),
        (["model"], ValueError, "a label the families already have"),
        (["le"], ValueError, "a label the families already have"),
        (["tenant", "tenant"], ValueError, "named twice"),
        ("tenant", TypeError, "extra_labels must be an iterable of label names"),
        ([3], TypeError, "extra_labels must hold str"),
    ],
)
def test_bad_extra_label_names_are_refused(names, error, message):
    with pytest.raises(error, match=message):
        GatewayMetricsMiddleware(registry=CollectorRegistry(), extra_labels=names)


def test_our_multiprocess_mode_sums_extra_labels_and_skips_other_schemas(tmp_path, no_created):
    single = GatewayMetricsMiddleware(registry=CollectorRegistry(), extra_labels=EXTRA)
    first, second = (
        GatewayMetricsMiddleware(
            registry=CollectorRegistry(), multiprocess_dir=tmp_path, extra_labels=EXTRA
        )
        for _ in range(2)
    )
    for index, call in enumerate(CALLS):
        for target in (single, (first, second)[index % 2]):
            record_call(target, call)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert samples(first.generate_latest()) == samples(single.generate_latest())
    other = GatewayMetricsMiddleware(registry=CollectorRegistry(), multiprocess_dir=tmp_path)
    with pytest.warns(RuntimeWarning, match="written with another schema"):
        other.generate_latest()


def test_prometheus_clients_mode_carries_the_extra_labels(tmp_path):
    collected = prometheus_multiprocess_run(
        """
        from prometheus_client import CollectorRegistry
        from gateway_metrics import GatewayMetricsMiddleware
        metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), extra_labels=["tenant"])
        with metrics.track("openai", "gpt-4o", labels={"tenant": "acme"}) as call:
            call.tokens(input=7, output=2)
        """,
        tmp_path,
    )
    found = samples(collected)
    labels = (("model", "gpt-4o"), ("operation", "chat"), ("provider", "openai"),
              ("status", "ok"), ("tenant", "acme"))  # fmt: skip
    assert found[("ractogateway_requests_total", labels)] == 1.0
    tokens = (("model", "gpt-4o"), ("provider", "openai"), ("tenant", "acme"),
              ("token_type", "input"))  # fmt: skip
    assert found[("ractogateway_tokens_total", tokens)] == 7.0


def test_a_reused_labels_dict_is_read_anew_on_every_call(no_created):
    metrics = GatewayMetricsMiddleware(registry=CollectorRegistry(), extra_labels=EXTRA)
    labels = {"tenant": "acme"}
    for tenant in ("acme", "globex", "acme", "initech"):
        labels["tenant"] = tenant
        metrics.record_request(
            provider="openai",
            model="m",
            operation="chat",
            status="ok",
            latency_s=0.1,
            labels=labels,
        )
    found = samples(metrics.generate_latest(), "ractogateway_requests_total")
    by_tenant = {dict(key[1])["tenant"]: value for key, value in found.items()}
    assert by_tenant == {"acme": 2.0, "globex": 1.0, "initech": 1.0}
