//! `MetricsStore`: the class behind `GatewayMetricsMiddleware`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyMemoryView, PyString, PyTuple};

use super::exit_gate::release_gil;
use super::ffi::bytes::bytes_released;
use super::ffi::string::str_released;
use super::label_resolver::LabelResolver;
use super::multiprocess::{Layout, Multiprocess};
use super::prices::python_price_resolver;
use super::recording::recording;
use super::samples::SampleBuilder;
use super::source::Source;
use crate::cells::arena::CellArena;
use crate::cells::counter::Coding;
use crate::formats::otlp::OtlpEncoder;
use crate::formats::protobuf::ProtobufEncoder;
use crate::formats::remote_write::RemoteWriteEncoder;
use crate::formats::snapshot;
use crate::formats::text::{Format, TextEncoder};
use crate::schema::family::{Schema, DEFAULT_NAMESPACE, LATENCY_BOUNDS};
use crate::schema::native::NativeConfig;
use crate::schema::semconv::{Charset, Convention};
use crate::store::pricing::{Price, PriceTable};
use crate::store::{ReadMode, Store};

/// The lock-free metric store behind `GatewayMetricsMiddleware`.
#[pyclass(
    frozen,
    subclass,
    name = "MetricsStore",
    module = "gateway_metrics._core"
)]
pub struct PyMetricsStore {
    /// The store being recorded into; replaced (the old one leaked on purpose)
    /// only when a forked child of a multi-process store records for the first time.
    store: AtomicPtr<Store>,
    /// Set in multi-process mode.
    multiprocess: Option<Multiprocess>,
    /// The identity caches from a call's label objects to their series.
    pub(super) labels: LabelResolver,
    /// Whether an unreadable tool call has been logged (once per middleware).
    pub(super) unreadable_tool_call_reported: AtomicBool,
    /// The last exposition's buffer, reused so that a large exposition does not
    /// fault in fresh pages on every scrape; it keeps that exposition's size.
    render_buffer: Mutex<String>,
    /// Whose names the expositions and pushes use.
    pub(super) convention: Convention,
}

#[pymethods]
impl PyMetricsStore {
    /// Creates an empty store pricing requests with `prices`: `(model, input, output,
    /// cache read, cache write)` in USD per million tokens.
    #[new]
    #[allow(clippy::too_many_arguments)] // The Python constructor's keywords, one each.
    #[pyo3(signature = (
        prices, multiprocess_dir = None, prometheus_multiproc_dir = None, latency_buckets = None,
        extra_labels = None, max_series = None, price_resolver = None,
        native_histograms = None, semconv = None, namespace = None, *_args, **_kwargs
    ))]
    fn new(
        py: Python<'_>,
        prices: Vec<(String, f64, f64, f64, f64)>,
        multiprocess_dir: Option<PathBuf>,
        prometheus_multiproc_dir: Option<PathBuf>,
        latency_buckets: Option<Vec<f64>>,
        extra_labels: Option<Vec<String>>,
        max_series: Option<usize>,
        price_resolver: Option<Py<PyAny>>,
        native_histograms: Option<(i8, f64, usize)>,
        semconv: Option<&str>,
        namespace: Option<&str>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let extra_names = extra_labels.clone().unwrap_or_default();
        let convention = convention_named(semconv)?;
        let native = native_histograms
            .map(|(schema, zero_threshold, max_buckets)| {
                NativeConfig::new(schema, zero_threshold, max_buckets)
                    .map_err(|reason| PyValueError::new_err(format!("native_histograms: {reason}")))
            })
            .transpose()?;
        let schema = Arc::new(
            Schema::with_options(
                latency_buckets.as_deref().unwrap_or(&LATENCY_BOUNDS),
                extra_labels.as_deref().unwrap_or_default(),
                native,
            )
            .and_then(|schema| schema.with_namespace(namespace.unwrap_or(DEFAULT_NAMESPACE)))
            .map_err(PyValueError::new_err)?
            .keeping_semconv_histograms(keeps_semconv_histograms(convention)),
        );
        let table = PriceTable::new(prices.iter().map(
            |(model, input, output, cache_read, cache_write)| {
                (
                    model.as_str(),
                    Price {
                        input_per_million: *input,
                        output_per_million: *output,
                        cache_read_per_million: *cache_read,
                        cache_write_per_million: *cache_write,
                        tiers: Box::new([]),
                        per_request: 0.0,
                    },
                )
            },
        ));
        let shared = match (multiprocess_dir, prometheus_multiproc_dir) {
            (Some(directory), _) => Some((directory, Layout::Own)),
            (None, Some(directory)) => Some((directory, Layout::PrometheusClient)),
            (None, None) => None,
        };
        let max_series = max_series.unwrap_or(usize::MAX);
        let (store, multiprocess) = match shared {
            None => {
                let mut store =
                    Store::with_arena(table, CellArena::heap(), recording(Coding::Integer), schema);
                store.set_max_series(max_series);
                if let Some(resolver) = &price_resolver {
                    store.set_price_resolver(python_price_resolver(resolver.clone_ref(py)));
                    store.set_count_unpriced(true);
                }
                (store, None)
            }
            Some((directory, layout)) => {
                let resolver = price_resolver
                    .as_ref()
                    .map(|resolver| resolver.clone_ref(py));
                let state =
                    Multiprocess::new(directory, layout, table, schema, max_series, resolver);
                (state.new_store(py)?, Some(state))
            }
        };
        Ok(PyMetricsStore {
            store: AtomicPtr::new(Box::into_raw(Box::new(store))),
            multiprocess,
            labels: LabelResolver::new(py, &extra_names),
            unreadable_tool_call_reported: AtomicBool::new(false),
            render_buffer: Mutex::new(String::new()),
            convention,
        })
    }

    /// Adds `delta` to the requests in flight of a call's labels (+1 when it
    /// starts, -1 when it ends); `labels` maps the extra labels.
    #[pyo3(signature = (provider, model, operation, labels, delta))]
    fn _in_flight(
        &self,
        provider: &Bound<'_, PyAny>,
        model: &Bound<'_, PyAny>,
        operation: &Bound<'_, PyAny>,
        labels: Option<&Bound<'_, PyAny>>,
        delta: i64,
    ) -> PyResult<()> {
        self.add_in_flight([provider, model, operation], labels, delta)
    }

    /// The extra label names of the request families, in their configured order.
    fn _extra_labels(&self) -> Vec<String> {
        self.store().schema().extra_labels().to_vec()
    }

    /// The prefix of every family name.
    fn _namespace(&self) -> String {
        self.store().schema().namespace().to_owned()
    }

    /// The upper bounds of the latency buckets, `+Inf` implied.
    fn _latency_buckets(&self) -> Vec<f64> {
        self.store().latency_buckets().bounds().to_vec()
    }

    /// The path of this process's metrics file in multi-process mode, else None.
    fn _multiprocess_file(&self) -> Option<PathBuf> {
        self.multiprocess.as_ref()?;
        self.store().arena_file_path()
    }

    /// Every family in the text format 0.0.4, or `OpenMetrics` 1.0 without the
    /// final `# EOF` line, as UTF-8 bytes for an HTTP response; the names
    /// UTF-8 when `utf8` (the scraper asked for `escaping=allow-utf-8`).
    #[pyo3(signature = (include_created, openmetrics, utf8 = false))]
    fn _render<'py>(
        &self,
        py: Python<'py>,
        include_created: bool,
        openmetrics: bool,
        utf8: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let format = if openmetrics {
            Format::OpenMetrics
        } else {
            Format::Text
        };
        self.with_rendered(py, format, charset(utf8), include_created, |text| {
            bytes_released(py, text.as_bytes())
        })?
    }

    /// As [`Self::_render`], followed by `others` (the other collectors'
    /// exposition), as one gzip member: the text is compressed a chunk at a
    /// time as it is rendered, never held whole nor copied into a `bytes`,
    /// all without the GIL.
    #[pyo3(signature = (include_created, openmetrics, utf8, others))]
    fn _render_gzip<'py>(
        &self,
        py: Python<'py>,
        include_created: bool,
        openmetrics: bool,
        utf8: bool,
        others: &[u8],
    ) -> PyResult<Bound<'py, PyBytes>> {
        let format = if openmetrics {
            Format::OpenMetrics
        } else {
            Format::Text
        };
        let mut encoder = TextEncoder::new(format)
            .named(self.convention, charset(utf8))
            .gzipped();
        self.render_into(py, include_created, &mut encoder)?;
        let body = release_gil(py, || encoder.finish_gzip(others)).unwrap_or_default();
        bytes_released(py, &body)
    }

    /// Every family in the delimited protobuf format, native histograms
    /// included; the names UTF-8 when `utf8`.
    #[pyo3(signature = (include_created, utf8 = false))]
    fn _render_protobuf<'py>(
        &self,
        py: Python<'py>,
        include_created: bool,
        utf8: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let source = self.source(py)?;
        let mut encoder = ProtobufEncoder::new(source.created(include_created))
            .named(self.convention, charset(utf8));
        let body = release_gil(py, || {
            source.visit_series(&mut encoder);
            encoder.finish()
        });
        bytes_released(py, &body)
    }

    /// Every series as the body of an OTLP metrics export (protobuf, not
    /// compressed) of resource `resource` at Unix time `now`, named as the
    /// OpenTelemetry GenAI conventions do with `semconv="gen_ai"` (None: as
    /// the store names them); in multi-process mode, the directory's sum.
    #[pyo3(signature = (resource, now, semconv = None))]
    fn _otlp_body<'py>(
        &self,
        py: Python<'py>,
        resource: Vec<(String, String)>,
        now: f64,
        semconv: Option<&str>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let convention = match semconv {
            None => self.convention,
            named => convention_named(named)?.for_store(self.store().keeps_semconv_histograms()),
        };
        let body = self.otlp_body(py, convention, &resource, now)?;
        bytes_released(py, &body)
    }

    /// Every family as `(name, help, type)`, named as the expositions name
    /// it, in UTF-8 when `utf8`.
    fn _families(&self, utf8: bool) -> Vec<(String, &'static str, &'static str)> {
        self.store()
            .schema()
            .families()
            .iter()
            .map(|desc| {
                let names = self.convention.prometheus(desc, charset(utf8));
                (names.name, desc.help, desc.kind.type_name())
            })
            .collect()
    }

    /// Whose names the expositions use: None (ours) or `"gen_ai"`.
    fn _semconv(&self) -> Option<&'static str> {
        match self.convention {
            Convention::Ours => None,
            Convention::GenAi { .. } => Some("gen_ai"),
        }
    }

    /// The native histograms' `(schema, zero threshold, max buckets)`, if kept.
    fn _native_histograms(&self) -> Option<(i8, f64, usize)> {
        self.store()
            .schema()
            .native()
            .map(|native| (native.schema, native.zero_threshold, native.max_buckets))
    }

    /// Every family in the text format 0.0.4, as `str`.
    fn _render_str<'py>(
        &self,
        py: Python<'py>,
        include_created: bool,
    ) -> PyResult<Bound<'py, PyString>> {
        self.with_rendered(py, Format::Text, Charset::Legacy, include_created, |text| {
            str_released(py, text)
        })?
    }

    /// This process's values as snapshot bytes; `reset` takes them, leaving zeros.
    #[pyo3(signature = (*, reset = false))]
    fn snapshot<'py>(&self, py: Python<'py>, reset: bool) -> PyResult<Bound<'py, PyBytes>> {
        if reset && self.multiprocess.is_some() {
            return Err(PyValueError::new_err(
                "snapshot(reset=True) is refused in multi-process mode: the other processes' \
                 scrapes read these values, and would see counters go down",
            ));
        }
        self.follow_fork(py)?;
        let mode = if reset {
            ReadMode::Reset
        } else {
            ReadMode::Keep
        };
        Ok(PyBytes::new(py, &snapshot::take(self.store(), mode)))
    }

    /// Adds a snapshot's values; returns the number of series it held.
    fn merge(&self, py: Python<'_>, snapshot: &Bound<'_, PyAny>) -> PyResult<usize> {
        let copied;
        let bytes = if let Ok(bytes) = snapshot.cast::<PyBytes>() {
            bytes.as_bytes()
        } else if snapshot.is_instance_of::<PyByteArray>()
            || snapshot.is_instance_of::<PyMemoryView>()
        {
            copied = py.get_type::<PyBytes>().call1((snapshot,))?;
            copied.cast::<PyBytes>()?.as_bytes()
        } else {
            return Err(PyTypeError::new_err(format!(
                "snapshot must be bytes, bytearray or memoryview, not {}",
                snapshot.get_type().name()?
            )));
        };
        self.follow_fork(py)?;
        let merged = snapshot::merge(self.store(), bytes)
            .map_err(|error| PyValueError::new_err(format!("snapshot: {error}")))?;
        self.report_overflows(py);
        Ok(merged)
    }

    /// A remote-write 1.0 request body of every sample a scrape shows, stamped
    /// `timestamp_ms`, each series labelled with `job` and `instance`.
    fn _remote_write_body<'py>(
        &self,
        py: Python<'py>,
        job: &str,
        instance: &str,
        timestamp_ms: i64,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut encoder =
            RemoteWriteEncoder::new(&[("job", job), ("instance", instance)], timestamp_ms)
                .named(self.convention);
        self.source(py)?.visit(false, &mut encoder);
        let body = release_gil(py, || encoder.finish());
        bytes_released(py, &body)
    }

    /// Every family as `(name, help, type, samples)` with `prometheus_client`
    /// `Sample`s; the names UTF-8 when `utf8` (`prometheus_client` escapes
    /// them as the scraper asks), legacy otherwise.
    #[pyo3(signature = (include_created, sample_type, utf8 = false))]
    fn _collect<'py>(
        &self,
        py: Python<'py>,
        include_created: bool,
        sample_type: &Bound<'py, PyAny>,
        utf8: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let mut builder = SampleBuilder::new(sample_type, self.convention, charset(utf8));
        self.source(py)?.visit(include_created, &mut builder);
        builder.finish()
    }
}

impl Drop for PyMetricsStore {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `Box::into_raw` and is freed once, here;
        // stores replaced after a fork are leaked on purpose (see `follow_fork`).
        drop(unsafe { Box::from_raw(*self.store.get_mut()) });
    }
}

impl PyMetricsStore {
    /// The encoded OTLP export of every series, named as `convention` does:
    /// this store's, or in multi-process mode the directory's sum. Encoded
    /// without the GIL.
    fn otlp_body(
        &self,
        py: Python<'_>,
        convention: Convention,
        resource: &[(String, String)],
        now: f64,
    ) -> PyResult<Vec<u8>> {
        let resource: Vec<(&str, &str)> = resource
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        let scope = ("gateway_metrics", env!("CARGO_PKG_VERSION"));
        let mut encoder = OtlpEncoder::new(convention, &resource, scope, now);
        let source = self.source(py)?;
        Ok(release_gil(py, || {
            source.visit_series(&mut encoder);
            encoder.finish()
        }))
    }

    /// Passes every family in `format` to `convert`: this store's, or in
    /// multi-process mode the directory's sum. Rendered without the GIL.
    fn with_rendered<R>(
        &self,
        py: Python<'_>,
        format: Format,
        charset: Charset,
        include_created: bool,
        convert: impl FnOnce(&str) -> R,
    ) -> PyResult<R> {
        // A concurrent scrape (or a lock held across a fork) renders into a new buffer.
        let mut shared = self.render_buffer.try_lock().ok();
        let buffer = shared
            .as_deref_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        let mut encoder = TextEncoder::reusing(format, buffer).named(self.convention, charset);
        self.render_into(py, include_created, &mut encoder)?;
        let text = encoder.into_text();
        let converted = convert(&text);
        if let Some(shared) = shared.as_deref_mut() {
            *shared = text;
        }
        Ok(converted)
    }

    /// Every family written by `encoder` without the GIL; in multi-process
    /// mode, the directory's sum.
    fn render_into(
        &self,
        py: Python<'_>,
        include_created: bool,
        encoder: &mut TextEncoder,
    ) -> PyResult<()> {
        let source = self.source(py)?;
        release_gil(py, || source.visit(include_created, encoder));
        Ok(())
    }

    /// What the exports read: this store, or in multi-process mode the
    /// directory's sum (warning about each file left out).
    fn source(&self, py: Python<'_>) -> PyResult<Source<'_>> {
        Ok(match &self.multiprocess {
            None => Source::Store(self.store()),
            Some(multiprocess) => Source::Sum {
                sum: multiprocess.aggregate(py, self.store())?,
                keeps_created: multiprocess.keeps_created(),
            },
        })
    }

    /// The store being recorded into.
    #[inline]
    pub(super) fn store(&self) -> &Store {
        // SAFETY: the pointer is always a live store owned (or leaked) by `self`.
        unsafe { &*self.store.load(Ordering::Acquire) }
    }

    /// In a forked child of a multi-process store, moves recording to a new file
    /// of this process, so that what the parent recorded counts once.
    #[inline]
    pub(super) fn follow_fork(&self, py: Python<'_>) -> PyResult<()> {
        let Some(multiprocess) = &self.multiprocess else {
            return Ok(());
        };
        let Some(epoch) = multiprocess.forked() else {
            return Ok(());
        };
        let store = multiprocess.new_store(py)?;
        // The parent's store stays mapped but unused: leaking it keeps every
        // reference into it valid without tracking who might still hold one.
        self.store
            .store(Box::into_raw(Box::new(store)), Ordering::Release);
        self.labels.clear(py);
        multiprocess.followed(epoch);
        Ok(())
    }
}

/// The convention a `semconv` argument names, or a `ValueError` naming it.
fn convention_named(semconv: Option<&str>) -> PyResult<Convention> {
    Convention::named(semconv).map_err(|reason| PyValueError::new_err(format!("semconv {reason}")))
}

/// Whether a store of `convention` keeps the histograms only the GenAI
/// conventions show (`gen_ai.client.token.usage`, and the duration by
/// `error.type`).
pub(super) fn keeps_semconv_histograms(convention: Convention) -> bool {
    matches!(convention, Convention::GenAi { .. })
}

/// The names' characters: UTF-8 when the scraper asked for them.
fn charset(utf8: bool) -> Charset {
    if utf8 {
        Charset::Utf8
    } else {
        Charset::Legacy
    }
}
