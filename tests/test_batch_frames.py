"""record_batch over Arrow, pandas, Polars and numpy text columns and whole tables
equals one record_request per row; nulls, bad values and broken tables record nothing."""

from __future__ import annotations

import random
import tracemalloc

import pytest

# pyarrow's compiled core: an interpreter on an older system than pyarrow's wheels
# are built for (Debian bullseye's, in the wheel tests) cannot load it, and pandas
# then has no Arrow-backed dtypes either.
pytest.importorskip("pyarrow.lib", reason="pyarrow's compiled core does not load here")

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
from gateway_metrics import GatewayMetricsMiddleware, _core
from prometheus_client import CollectorRegistry
from support import (
    assert_same_families,
    decode_delimited_families,
    native_buckets,
)

PROVIDERS = ["openai", "anthropic", "google"]
MODELS = ["gpt-4o", "gpt-4o-mini", 'we"ird\nmodel', "a-model-name-longer-than-twelve-bytes", ""]
#: The request table's fields a table column can give, by what they feed
#: (tool calls, extra labels and exemplars are keywords only).
FIELDS = {name: (feeds, whole) for name, feeds, _, _, _, whole in _core.REQUEST_FIELDS}
LABELS = tuple(name for name, (feeds, _) in FIELDS.items() if feeds == "label")
TOKENS = tuple(name for name, (feeds, _) in FIELDS.items() if feeds == "tokens")
SECONDS = tuple(
    name for name, (feeds, whole) in FIELDS.items() if feeds == "seconds" and whole is not None
)


def fresh() -> GatewayMetricsMiddleware:
    return GatewayMetricsMiddleware(registry=CollectorRegistry())


def random_rows(rng: random.Random, count: int) -> list[dict]:
    """Rows with every field a table can give: nulls (None) now and then in the
    optional ones; the parts of a whole (cache reads of input tokens, queueing of
    the latency) together at most the whole, as the request table groups them."""
    rows = []
    for _ in range(count):
        status = rng.choice(["ok", "ok", "error"])
        row = {
            "provider": rng.choice(PROVIDERS),
            "model": rng.choice(MODELS),
            "operation": rng.choice(["chat", "embed"]),
            "status": status,
            # Multiples of 2^-10 s: exact in float32 columns too.
            "latency_s": rng.choice([0, 4, 256, 2560, rng.randrange(0, 30 * 1024)]) / 1024,
            "input_tokens": None if rng.random() < 0.2 else rng.randrange(0, 5000),
            "output_tokens": None if rng.random() < 0.2 else rng.randrange(0, 5000),
            "error_type": rng.choice([None, *_core.ERROR_TYPES]) if status == "error" else None,
        }
        left: dict[tuple[str, int], float] = {}
        for name, (feeds, whole) in FIELDS.items():
            if whole is None or name in row:
                continue
            room = left.setdefault(whole, row[whole[0]] or 0)
            if rng.random() < 0.3:
                row[name] = None
            elif feeds == "tokens":
                row[name] = rng.randrange(0, int(room) + 1)
            else:
                row[name] = rng.randrange(0, int(room * 1024) + 1) / 1024
            left[whole] = room - (row[name] or 0)
        rows.append(row)
    return rows


def reference(rows: list[dict]) -> str:
    """One record_request per row, nulls as the docs say: counts 0, durations absent."""
    metrics = fresh()
    for row in rows:
        metrics.record_request(
            **{
                name: (0 if value is None and name in TOKENS else value)
                for name, value in row.items()
            }
        )
    return metrics.generate_latest()


def label_array(values: list[str], kind: str) -> pa.Array:
    if kind == "dictionary":
        return pa.array(values).dictionary_encode()
    if kind == "dictionary_view":
        return pa.array(values, pa.string_view()).dictionary_encode()
    return pa.array(
        values,
        {"string": pa.string(), "large_string": pa.large_string(), "string_view": pa.string_view()}[
            kind
        ],
    )


#: Arrow integer types that hold every count the rows have (below 5,001).
TOKEN_TYPES = [pa.int64(), pa.int32(), pa.uint16(), pa.uint64(), pa.int16()]


def arrow_table(rows: list[dict], rng: random.Random) -> pa.Table:
    columns = {}
    for name in LABELS:
        kind = rng.choice(
            ["string", "large_string", "string_view", "dictionary", "dictionary_view"]
        )
        columns[name] = label_array([row[name] for row in rows], kind)
    # Durations are exact in either float width.
    columns["latency_s"] = pa.array(
        [row["latency_s"] for row in rows], rng.choice([pa.float64(), pa.float32()])
    )
    for name in TOKENS:
        columns[name] = pa.array([row[name] for row in rows], rng.choice(TOKEN_TYPES))
    for name in SECONDS:
        columns[name] = pa.array(
            [row[name] for row in rows], rng.choice([pa.float64(), pa.float32()])
        )
    errors = pa.array([row["error_type"] for row in rows], pa.string())
    columns["error_type"] = errors.dictionary_encode() if rng.random() < 0.5 else errors
    return pa.table(columns)


def split_in_chunks(table: pa.Table, rng: random.Random) -> pa.Table:
    """The same rows, each column chunked at its own random places."""
    columns = {}
    for name in table.column_names:
        column = table[name].combine_chunks()
        cuts = sorted(rng.sample(range(1, len(column)), k=min(3, len(column) - 1)))
        pieces = [column.slice(a, b - a) for a, b in zip([0, *cuts], [*cuts, len(column)])]
        columns[name] = pa.chunked_array(pieces, column.type)
    return pa.table(columns)


@pytest.mark.parametrize("seed", range(12))
def test_arrow_tables_and_columns_equal_one_call_per_row(seed, no_created):
    rng = random.Random(seed)
    rows = random_rows(rng, rng.randrange(1, 120))
    table = arrow_table(rows, rng)
    expected = reference(rows)

    # The whole table; its rows from an offset (a slice); chunks that split the rows.
    for form in ("table", "sliced", "chunked", "columns", "polars", "record_batches"):
        metrics = fresh()
        if form == "table":
            recorded = metrics.record_batch(table)
            rows_seen = rows
        elif form == "sliced":
            start = rng.randrange(0, len(rows))
            recorded = metrics.record_batch(table.slice(start))
            rows_seen = rows[start:]
        elif form == "chunked":
            recorded = metrics.record_batch(split_in_chunks(table, rng))
            rows_seen = rows
        elif form == "columns":
            recorded = metrics.record_batch(**{name: table[name] for name in table.column_names})
            rows_seen = rows
        elif form == "polars":
            recorded = metrics.record_batch(pl.from_arrow(table))
            rows_seen = rows
        else:
            reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(7))
            recorded = metrics.record_batch(reader)
            rows_seen = rows
        assert recorded == len(rows_seen), form
        wanted = expected if rows_seen is rows else reference(rows_seen)
        assert_same_families(metrics.generate_latest(), wanted, float_tolerance=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_pandas_frames_and_series_equal_one_call_per_row(seed, no_created):
    rng = random.Random(seed)
    rows = random_rows(rng, rng.randrange(1, 80))
    frame = pd.DataFrame({name: [row[name] for row in rows] for name in (*LABELS, "latency_s")})
    frame["model"] = frame["model"].astype("category")
    frame["provider"] = frame["provider"].astype(
        rng.choice(["object", "string[python]", "string[pyarrow]", "str"])
    )
    frame["operation"] = frame["operation"].astype(pd.ArrowDtype(pa.string()))
    for name in TOKENS:
        frame[name] = pd.array([row[name] for row in rows], dtype=rng.choice(["Int64", "UInt32"]))
    for name in SECONDS:
        # numpy floats: NaN where a row has no value.
        frame[name] = [np.nan if row[name] is None else row[name] for row in rows]
    frame["error_type"] = pd.Series([row["error_type"] for row in rows], dtype=object)
    expected = reference(rows)
    for form in ("frame", "series", "numpy"):
        metrics = fresh()
        if form == "frame":
            recorded = metrics.record_batch(frame.assign(unrelated=1))
        elif form == "series":
            recorded = metrics.record_batch(**{name: frame[name] for name in frame.columns})
        else:
            recorded = metrics.record_batch(
                provider=frame["provider"].to_numpy(dtype=str),
                model=frame["model"].to_numpy(dtype=object),
                operation=np.array(frame["operation"].tolist(), dtype="U"),
                status=frame["status"].to_numpy(dtype=object),
                latency_s=frame["latency_s"].to_numpy(),
                error_type=frame["error_type"].to_numpy(),
                **{name: frame[name] for name in (*TOKENS, *SECONDS)},
            )
        assert recorded == len(rows), form
        assert_same_families(metrics.generate_latest(), expected, float_tolerance=1e-12)


def test_nanoarrow_and_polars_columns(no_created):
    na = pytest.importorskip("nanoarrow", reason="nanoarrow has no wheel for this Python")
    latencies = [0.5, 1.5, 0.25]
    metrics, expected = fresh(), fresh()
    for model, latency in zip(["a", "b", "a"], latencies):
        expected.record_request(
            provider="p",
            model=model,
            operation="chat",
            status="ok",
            latency_s=latency,
            input_tokens=3,
        )
    metrics.record_batch(
        provider="p",
        model=na.c_array(["a", "b", "a"], na.string()),
        operation="chat",
        status="ok",
        latency_s=na.c_array(latencies, na.float64()),
        input_tokens=pl.Series([3, 3, 3], dtype=pl.UInt8),
    )
    assert_same_families(metrics.generate_latest(), expected.generate_latest())
    categorical = fresh()
    categorical.record_batch(
        provider="p",
        model=pl.Series(["a", "b", "a"], dtype=pl.Categorical),
        operation="chat",
        status="ok",
        latency_s=pl.Series(latencies),
        input_tokens=3,
    )
    assert_same_families(categorical.generate_latest(), expected.generate_latest())


GOOD = {
    "provider": "openai",
    "operation": "chat",
    "status": "ok",
    "model": pa.array(["gpt-4o", "gpt-4o", "mystery"]).dictionary_encode(),
    "latency_s": pa.array([0.1, 0.2, 0.3]),
    "input_tokens": pa.array([1, 2, 3]),
}

BAD_BATCHES = [
    ({"latency_s": pa.array([0.1, None, 0.3])}, ValueError, r"latency_s\[1\] is null"),
    (
        {"latency_s": pd.array([0.1, 0.2, None], dtype="Float64")},
        ValueError,
        r"latency_s\[2\] is null",
    ),
    ({"latency_s": pa.array([0.1, -0.2, 0.3])}, ValueError, r"latency_s\[1\]"),
    ({"latency_s": pa.chunked_array([[0.1, 0.2], [float("nan")]])}, ValueError, r"latency_s\[2\]"),
    (
        {"latency_s": pa.array(["0.1", "0.2", "0.3"])},
        TypeError,
        "latency_s: string is not a number",
    ),
    ({"latency_s": pa.array([1, 2, 3], pa.float16())}, TypeError, "float16 is not read"),
    ({"model": pa.array(["a", None, "b"])}, ValueError, r"model\[1\] is null"),
    ({"model": pd.Series(["a", None, "b"], dtype="category")}, ValueError, r"model\[1\] is null"),
    ({"model": pa.array([1, 2, 3])}, TypeError, "labels must be text"),
    ({"model": pa.array([b"\xff", b"a", b"b"], pa.binary())}, TypeError, "binary is not read"),
    (
        {"model": pa.array([b"a", b"\xff", b"b"], pa.binary()).view(pa.string())},
        ValueError,
        r"model\[1\] is not valid UTF-8",
    ),
    ({"model": pl.Series(["a", "b"])}, ValueError, "differ in length"),
    ({"input_tokens": pa.array([1, -2, 3])}, ValueError, r"input_tokens\[1\] must not be negative"),
    ({"input_tokens": pa.array([1.0, 2.0, 3.0])}, TypeError, "token counts must be integers"),
    ({"input_tokens": pd.Series([1.0, None, 3.0])}, TypeError, r'astype\("Int64"\)'),
    ({"error_type": pa.array(["timeout", None, None])}, ValueError, "error_type"),
    ({"latency_s": object()}, TypeError, "or a column"),
]


@pytest.mark.parametrize(("override", "error", "message"), BAD_BATCHES)
def test_a_bad_column_records_nothing(override, error, message, no_created):
    metrics = fresh()
    metrics.record_batch(**GOOD)
    before = metrics.generate_latest()
    with pytest.raises(error, match=message):
        metrics.record_batch(**{**GOOD, **override})
    assert metrics.generate_latest() == before


def test_error_types_and_optional_nulls_from_arrow(no_created):
    metrics, expected = fresh(), fresh()
    statuses, errors = ["ok", "error", "error"], [None, "timeout", None]
    for status, error in zip(statuses, errors):
        expected.record_request(
            provider="p",
            model="m",
            operation="chat",
            status=status,
            latency_s=1.0,
            error_type=error,
        )
    metrics.record_batch(
        provider="p",
        model="m",
        operation="chat",
        status=pa.array(statuses),
        latency_s=1.0 if False else pa.array([1.0, 1.0, 1.0]),
        error_type=pa.array(errors).dictionary_encode(),
    )
    assert_same_families(metrics.generate_latest(), expected.generate_latest())


def test_whole_tables_map_and_ignore_columns(no_created):
    table = pa.table(
        {"m": ["gpt-4o", "o3"], "seconds": [0.5, 1.0], "extra": [1, 2], "status": ["ok", "ok"]}
    )
    metrics, expected = fresh(), fresh()
    for model, latency in (("gpt-4o", 0.5), ("o3", 1.0)):
        expected.record_request(
            provider="openai", model=model, operation="chat", status="ok", latency_s=latency
        )
    assert (
        metrics.record_batch(
            table,
            provider="openai",
            operation="chat",
            columns={"model": "m", "latency_s": "seconds"},
        )
        == 2
    )
    assert_same_families(metrics.generate_latest(), expected.generate_latest())

    before = metrics.generate_latest()
    with pytest.raises(TypeError, match=r"no column 'latency_s'.*columns: m, seconds, extra"):
        metrics.record_batch(table, provider="openai", operation="chat", columns={"model": "m"})
    with pytest.raises(ValueError, match="maps 'model' to 'name', which the table does not"):
        metrics.record_batch(table, columns={"model": "name"})
    with pytest.raises(ValueError, match="maps 'latency', which is not a column"):
        metrics.record_batch(table, columns={"latency": "seconds"})
    with pytest.raises(TypeError, match="takes a table"):
        metrics.record_batch([1, 2])
    with pytest.raises(TypeError, match="one column, not a table"):
        metrics.record_batch(pa.array([1.0]), provider="p", model="m", operation="o", status="s")
    with pytest.raises(TypeError, match="one positional argument"):
        metrics.record_batch(table, table)
    assert metrics.generate_latest() == before
    # An empty table records nothing and says so.
    assert (
        metrics.record_batch(
            table.slice(0, 0),
            provider="openai",
            operation="chat",
            columns={"model": "m", "latency_s": "seconds"},
        )
        == 0
    )
    assert metrics.generate_latest() == before


def test_dictionary_columns_make_no_object_per_row(no_created):
    """100,000 rows of a dictionary-encoded and a plain string column: the Python
    objects recording makes are a few, not one per row."""
    rows = 100_000
    models = pa.array(["gpt-4o", "gpt-4o-mini", "o3", "claude"])
    keys = pa.array(np.arange(rows, dtype=np.int32) % 4)
    table = pa.table(
        {
            "model": pa.DictionaryArray.from_arrays(keys, models),
            "provider": pa.array(np.array(["openai", "anthropic"])[np.arange(rows) % 2]),
            "latency_s": pa.array(np.linspace(0.01, 2.0, rows)),
            "input_tokens": pa.array(np.arange(rows) % 100),
        }
    )
    metrics = fresh()
    metrics.record_batch(table, operation="chat", status="ok")  # warm: label sets made
    tracemalloc.start()
    try:
        metrics.record_batch(table, operation="chat", status="ok")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One str per row would be megabytes; the dict of columns and a few labels are not.
    assert peak < 64_000, peak
    labels = 'model="o3",operation="chat",provider="openai",status="ok"'
    assert f"ractogateway_requests_total{{{labels}}} 50000.0" in metrics.generate_latest()


def test_snapshots_of_other_native_schemas_merge_at_the_coarser_one(no_created):
    def native(schema: int) -> GatewayMetricsMiddleware:
        return GatewayMetricsMiddleware(
            registry=CollectorRegistry(), native_histograms={"schema": schema}
        )

    fine, coarse, whole = native(4), native(0), native(0)
    latencies = [0.003, 0.07, 0.25, 0.3, 1.2, 4.5, 30.0, 0.25]
    for index, latency in enumerate(latencies):
        worker = fine if index % 2 else coarse
        for metrics in (worker, whole):
            metrics.record_request(
                provider="p", model="m", operation="chat", status="ok", latency_s=latency
            )
    for driver in (native(4), native(0), native(2)):
        driver.merge(fine.snapshot())
        driver.merge(coarse.snapshot())
        ours = {f.name: f for f in decode_delimited_families(driver._protobuf_exposition())}
        theirs = {f.name: f for f in decode_delimited_families(whole._protobuf_exposition())}
        name = "ractogateway_request_duration_seconds"
        [merged], [expected] = ours[name].metric, theirs[name].metric
        assert merged.histogram.schema == 0
        assert native_buckets(merged.histogram) == native_buckets(expected.histogram)
        assert merged.histogram.sample_count == len(latencies)
    plain = fresh()
    with pytest.raises(ValueError, match="buckets"):
        plain.merge(fine.snapshot())


@pytest.mark.integration
def test_ray_data_batches_of_both_formats_add_up(no_created):
    """Ray Data hands map_batches pyarrow Tables and pandas DataFrames; each actor
    records them whole and ships snapshots; the driver's totals are one call per row's."""
    import ray

    rows = 4_000
    models = ["gpt-4o", "gpt-4o-mini", "o3"]

    def row_values(row_id: int) -> dict:
        return {
            "provider": "openai",
            "model": models[row_id % 3],
            "operation": "chat",
            "status": "ok",
            "latency_s": 0.25 + (row_id % 8) / 16,
            "input_tokens": row_id % 1000,
            "output_tokens": 50,
        }

    class Metered:
        def __init__(self):
            self.metrics = GatewayMetricsMiddleware(registry=CollectorRegistry())

        def __call__(self, batch):
            if isinstance(batch, pa.Table):
                ids = batch["id"].to_numpy()
                table = (
                    batch.append_column(
                        "model",
                        pa.DictionaryArray.from_arrays(
                            pa.array(ids % 3, pa.int32()), pa.array(models)
                        ),
                    )
                    .append_column("latency_s", pa.array(0.25 + (ids % 8) / 16))
                    .append_column("input_tokens", pa.array(ids % 1000))
                )
            else:
                ids = batch["id"].to_numpy()
                table = batch.assign(
                    model=pd.Categorical.from_codes(ids % 3, models),
                    latency_s=0.25 + (ids % 8) / 16,
                    input_tokens=ids % 1000,
                )
            self.metrics.record_batch(
                table, provider="openai", operation="chat", status="ok", output_tokens=50
            )
            return {"snapshot": np.array([self.metrics.snapshot(reset=True)], dtype=object)}

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for batch_format in ("pyarrow", "pandas"):
            driver = fresh()
            dataset = ray.data.range(rows).map_batches(
                Metered,
                batch_format=batch_format,
                batch_size=500,
                compute=ray.data.ActorPoolStrategy(size=2),
                num_cpus=0.5,
            )
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                for snapshot in batch["snapshot"]:
                    driver.merge(snapshot)
            expected = fresh()
            for row_id in range(rows):
                expected.record_request(**row_values(row_id))
            assert_same_families(
                driver.generate_latest(), expected.generate_latest(), float_tolerance=1e-12
            )
    finally:
        ray.shutdown()
