//! The `PyO3` binding: `gateway_metrics._core`, one module per thing it binds.
//!
//! Only argument validation and conversion live here; every recording and
//! rendering decision is made by the plain-Rust [`crate::store::Store`]. Each
//! recording call validates all of its arguments before it touches the store,
//! so a call that raises leaves the metrics exactly as they were.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::formats::gzip::{gzip_with, Compressor};
use crate::multiprocess::fork_guard;
use crate::schema::family::{Schema, DEFAULT_NAMESPACE, LATENCY_BOUNDS};
use crate::schema::native::NativeConfig;
use crate::schema::request::{
    Observed, Rate, ERROR_TYPES, REQUEST_FIELDS, TOKEN_FIELDS, TOKEN_TYPES,
};
use crate::schema::semconv;
use exit_gate::release_gil;
use ffi::bytes::bytes_released;
use metrics_store::PyMetricsStore;

mod arguments;
mod batch;
mod buffer_column;
mod collected;
mod column_source;
// Unsafe: `pthread_atfork`.
#[allow(unsafe_code)]
mod exit_gate;
// Unsafe: CPython's vectorcall entry points.
#[allow(unsafe_code)]
mod fast_call;
// Unsafe: the raw C API, behind typed wrappers.
#[allow(unsafe_code)]
mod ffi;
// Unsafe: entries keyed by object identity, valid while the store lives.
#[allow(unsafe_code)]
mod identity_cache;
// Unsafe: fills the identity caches with series of the store.
#[allow(unsafe_code)]
mod label_resolver;
// Unsafe: the store behind an atomic pointer, replaced after a fork.
#[allow(unsafe_code)]
mod metrics_store;
mod multiprocess;
mod prices;
mod record;
mod recording;
mod request_arguments;
mod samples;
mod source;
mod warnings;

/// The gateway-metrics native core.
///
/// It needs the GIL: the identity caches are guarded by it, and recording
/// relies on it to keep writers apart. Declared, so that a free-threaded
/// interpreter turns the GIL on when importing the module instead of running
/// it unguarded.
#[pymodule(gil_used = true)]
fn _core(module: &Bound<'_, PyModule>) -> PyResult<()> {
    fork_guard::install();
    exit_gate::install();
    module.add_class::<PyMetricsStore>()?;
    module.add_class::<column_source::ArrowColumn>()?;
    module.add_function(wrap_pyfunction!(column_source::arrow_table, module)?)?;
    module.add_function(wrap_pyfunction!(multiprocess::compact, module)?)?;
    module.add_function(wrap_pyfunction!(multiprocess::cleanup, module)?)?;
    module.add_function(wrap_pyfunction!(check_extra_labels, module)?)?;
    module.add_function(wrap_pyfunction!(check_namespace, module)?)?;
    module.add_function(wrap_pyfunction!(check_exemplar, module)?)?;
    module.add_function(wrap_pyfunction!(gzip_parts, module)?)?;
    module.add_function(wrap_pyfunction!(gzip_compressor, module)?)?;
    module.add_function(wrap_pyfunction!(collected::encode_collected, module)?)?;
    let finish = wrap_pyfunction!(exit_gate::finish_native_work, module)?;
    module.add_function(finish.clone())?;
    module
        .py()
        .import("atexit")?
        .call_method1("register", (finish, exit_gate::EXIT_WAIT_S))?;
    fast_call::install_recording_methods(&module.py().get_type::<PyMetricsStore>())?;
    module.add("FAMILIES", families())?;
    module.add("REQUEST_FIELDS", request_fields())?;
    module.add("TOKEN_TYPES", token_types())?;
    module.add("ERROR_TYPES", ERROR_TYPES.to_vec())?;
    module.add_function(wrap_pyfunction!(prices::request_cost, module)?)?;
    module.add_function(wrap_pyfunction!(prices::price_names, module)?)?;
    module.add("HISTOGRAM_BUCKETS", LATENCY_BOUNDS.to_vec())?;
    let native = NativeConfig::DEFAULT;
    module.add(
        "NATIVE_HISTOGRAM_DEFAULTS",
        (native.schema, native.zero_threshold, native.max_buckets),
    )?;
    module.add("VERSION", env!("CARGO_PKG_VERSION"))?;
    module.add("DEFAULT_NAMESPACE", DEFAULT_NAMESPACE)?;
    module.add("GEN_AI_SEMCONV_VERSION", semconv::VERSION)?;
    module.add(
        "PROTOBUF_CONTENT_TYPE",
        crate::formats::protobuf::CONTENT_TYPE,
    )?;
    let schema = Schema::default();
    let metrics: Vec<(&str, &str)> = semconv::METRICS
        .iter()
        .map(|(family, name)| (schema.family(*family).name.as_ref(), *name))
        .collect();
    module.add(
        "GEN_AI_SEMCONV_NAMES",
        (metrics, semconv::ATTRIBUTES.to_vec()),
    )?;
    Ok(())
}

/// A family as `_core.FAMILIES` shows it: name, help, type, label names (of
/// the reference's configuration), bucket bounds of a histogram, what a
/// request gives it to observe, and its unit (UCUM, empty for none).
type FamilyRow = (
    String,
    &'static str,
    &'static str,
    Vec<String>,
    Option<Vec<f64>>,
    Option<String>,
    &'static str,
);

/// The families of the default schema.
fn families() -> Vec<FamilyRow> {
    Schema::default()
        .families()
        .iter()
        .map(|desc| {
            (
                desc.name.to_string(),
                desc.help,
                desc.kind.type_name(),
                desc.label_names.clone(),
                desc.buckets
                    .as_ref()
                    .map(|buckets| buckets.bounds().to_vec()),
                desc.observes.map(Observed::describe),
                desc.unit,
            )
        })
        .collect()
}

/// A request field as `_core.REQUEST_FIELDS` shows it: name, kind, default
/// (Python source, None when required), annotation, doc line, and the whole
/// it is part of (with its group) or None.
type FieldRow = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static str,
    &'static str,
    Option<(&'static str, u8)>,
);

/// The request fields, for the package (signatures, validation, the stub and
/// the docs are generated from them).
fn request_fields() -> Vec<FieldRow> {
    REQUEST_FIELDS
        .iter()
        .map(|field| {
            let part_of = field
                .part_of
                .map(|part_of| (REQUEST_FIELDS[part_of.whole].name, part_of.group));
            (
                field.name,
                field.feeds.kind_name(),
                field.default,
                field.annotation,
                field.doc,
                part_of,
            )
        })
        .collect()
}

/// The token types as `(name, field, rate)`: the `token_type` label, the
/// keyword that carries it, and the price it is billed at.
fn token_types() -> Vec<(&'static str, &'static str, &'static str)> {
    TOKEN_TYPES
        .iter()
        .enumerate()
        .map(|(token_type, desc)| {
            let rate = match desc.rate {
                Rate::Input => "input",
                Rate::Output => "output",
                Rate::CacheRead => "cache_read",
                Rate::CacheWrite => "cache_write",
                Rate::Whole => "whole",
            };
            (
                desc.name,
                REQUEST_FIELDS[TOKEN_FIELDS[token_type]].name,
                rate,
            )
        })
        .collect()
}

/// `parts`, one after the other, as one gzip member, compressed without the
/// GIL by `compressor` (`builtin`, `zlib`, `zlib:N`; None: the process's setting).
#[pyfunction]
#[pyo3(signature = (parts, compressor = None))]
fn gzip_parts<'py>(
    py: Python<'py>,
    parts: Vec<Bound<'py, PyBytes>>,
    compressor: Option<&str>,
) -> PyResult<Bound<'py, PyBytes>> {
    let compressor = match compressor {
        None => Compressor::of_process().0,
        Some(name) => Compressor::named(name).map_err(|_| {
            PyValueError::new_err(format!(
                "compressor must be builtin, zlib or zlib:1 to zlib:9, got {name:?}"
            ))
        })?,
    };
    let parts: Vec<&[u8]> = parts.iter().map(PyBytesMethods::as_bytes).collect();
    let body = release_gil(py, || gzip_with(compressor, &parts));
    bytes_released(py, &body)
}

/// The process's gzip compressor (`builtin` or `zlib:N`, from
/// `GATEWAY_METRICS_GZIP`), and why the setting was not taken, if it was not.
#[pyfunction]
fn gzip_compressor() -> (String, Option<&'static str>) {
    let (compressor, problem) = Compressor::of_process();
    let name = match compressor {
        Compressor::Builtin => "builtin".to_owned(),
        Compressor::Zlib(level) => format!("zlib:{level}"),
    };
    (name, problem)
}

/// Raises `TypeError`/`ValueError` (naming `exemplar`) unless `labels` may be
/// an exemplar's: a dict of label names to values, at most 128 characters in all.
#[pyfunction]
fn check_exemplar(labels: &Bound<'_, PyAny>) -> PyResult<()> {
    arguments::exemplar_labels(labels, "exemplar").map(|_| ())
}

/// Raises `ValueError` unless a middleware accepts `namespace` as the prefix
/// of its family names: the one rule, for the ops kit's names too.
#[pyfunction]
fn check_namespace(namespace: &str) -> PyResult<()> {
    Schema::default()
        .with_namespace(namespace)
        .map(|_| ())
        .map_err(PyValueError::new_err)
}

/// Raises `ValueError` unless a middleware accepts `names` as its extra
/// labels: the one rule, for what is generated for them (the ops kit).
#[pyfunction]
fn check_extra_labels(names: Vec<String>) -> PyResult<()> {
    Schema::with_extra_labels(&LATENCY_BOUNDS, &names)
        .map(|_| ())
        .map_err(PyValueError::new_err)
}
