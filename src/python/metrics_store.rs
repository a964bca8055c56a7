//! `MetricsStore`: the class behind `GatewayMetricsMiddleware`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyMemoryView, PyString, PyTuple};
use smallvec::SmallVec;

use super::arguments::{
    checked_parts, exemplar_labels, extra_label_values, label, latency_seconds, token_count,
    tool_call_names, ColumnArgument, ToolName, ToolNames,
};
use super::exit_gate::release_gil;
use super::ffi::bytes::bytes_released;
use super::ffi::string::str_released;
use super::identity_cache::IdentityCache;
use super::multiprocess::{Layout, Multiprocess};
use super::prices::python_price_resolver;
use super::recording::recording;
use super::request_arguments::RequestArguments;
use super::samples::SampleBuilder;
use crate::cells::arena::CellArena;
use crate::cells::counter::Coding;
use crate::formats::otlp::OtlpEncoder;
use crate::formats::protobuf::ProtobufEncoder;
use crate::formats::remote_write::RemoteWriteEncoder;
use crate::formats::snapshot;
use crate::formats::text::{Format, TextEncoder};
use crate::schema::family::{Schema, LATENCY_BOUNDS};
use crate::schema::native::NativeConfig;
use crate::schema::request::{
    RequestValues, INPUT, OUTPUT, REFERENCE_TOKEN_TYPES, REQUEST_FIELDS, SECONDS_FIELDS,
    SECONDS_POSITIONS, TOKEN_FIELDS, TOKEN_TYPE_COUNT,
};
use crate::schema::semconv::{Charset, Convention};
use crate::store::pricing::{Price, PriceTable};
use crate::store::series::unix_now;
use crate::store::series::CounterSeries;
use crate::store::{
    CacheOutcome, ReadMode, RequestEntry, RequestLabels, Store, NAMED_UNPRICED_MODELS,
};

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
    /// Request label objects (provider, model, operation, status) to their entry.
    request_entries: IdentityCache<RequestEntry, 4>,
    /// The same with the values of a `labels` mapping, in the order of the
    /// extra labels (the empty string standing for a missing one).
    labelled_entries: IdentityCache<RequestEntry, LABELLED_KEY>,
    /// The extra label names, interned, for looking them up in `labels` mappings.
    extra_names: Vec<Py<PyString>>,
    /// The interned empty string: a missing extra label's value.
    empty: Py<PyString>,
    cache_hits: IdentityCache<CounterSeries, 1>,
    cache_misses: IdentityCache<CounterSeries, 1>,
    pub(super) tool_calls: IdentityCache<CounterSeries, 1>,
    /// Whether an unreadable tool call has been logged (once per middleware).
    unreadable_tool_call_reported: AtomicBool,
    /// The last exposition's buffer, reused so that a large exposition does not
    /// fault in fresh pages on every scrape; it keeps that exposition's size.
    render_buffer: Mutex<String>,
    /// Whose names the expositions and pushes use.
    convention: Convention,
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
        native_histograms = None, semconv = None, *_args, **_kwargs
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
            .map_err(PyValueError::new_err)?
            .keeping_token_usage(keeps_token_usage(convention)),
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
            request_entries: IdentityCache::new(),
            labelled_entries: IdentityCache::new(),
            extra_names: extra_names
                .iter()
                .map(|name| PyString::intern(py, name).unbind())
                .collect(),
            empty: PyString::intern(py, "").unbind(),
            cache_hits: IdentityCache::new(),
            cache_misses: IdentityCache::new(),
            tool_calls: IdentityCache::new(),
            unreadable_tool_call_reported: AtomicBool::new(false),
            render_buffer: Mutex::new(String::new()),
            convention,
        })
    }

    /// The extra label names of the request families, in their configured order.
    fn _extra_labels(&self) -> Vec<String> {
        self.store().schema().extra_labels().to_vec()
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
        let encoder = |include_created| {
            ProtobufEncoder::new(include_created).named(self.convention, charset(utf8))
        };
        let body = match &self.multiprocess {
            None => release_gil(py, || {
                let mut encoder = encoder(include_created);
                self.store().visit_series(ReadMode::Keep, &mut encoder);
                encoder.finish()
            }),
            Some(multiprocess) => {
                let sum = multiprocess.aggregate(py, self.store())?;
                let include_created = include_created && multiprocess.keeps_created();
                release_gil(py, || {
                    let mut encoder = encoder(include_created);
                    sum.visit_series(&mut encoder);
                    encoder.finish()
                })
            }
        };
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
            named => convention_named(named)?,
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
            Convention::GenAi => Some("gen_ai"),
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
        match &self.multiprocess {
            None => self.store().visit(false, &mut encoder),
            Some(multiprocess) => multiprocess
                .aggregate(py, self.store())?
                .visit(false, &mut encoder),
        }
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
        match &self.multiprocess {
            None => self.store().visit(include_created, &mut builder),
            Some(multiprocess) => multiprocess.aggregate(py, self.store())?.visit(
                include_created && multiprocess.keeps_created(),
                &mut builder,
            ),
        }
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
        match &self.multiprocess {
            None => release_gil(py, || {
                self.store().visit_series(ReadMode::Keep, &mut encoder);
                Ok(encoder.finish())
            }),
            Some(multiprocess) => {
                let sum = multiprocess.aggregate(py, self.store())?;
                release_gil(py, || {
                    sum.visit_series(&mut encoder);
                    Ok(encoder.finish())
                })
            }
        }
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
        match &self.multiprocess {
            None => release_gil(py, || self.store().visit(include_created, encoder)),
            Some(multiprocess) => {
                let sum = multiprocess.aggregate(py, self.store())?;
                let include_created = include_created && multiprocess.keeps_created();
                release_gil(py, || sum.visit(include_created, encoder));
            }
        }
        Ok(())
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
        self.request_entries.clear(py);
        self.labelled_entries.clear(py);
        self.cache_hits.clear(py);
        self.cache_misses.clear(py);
        self.tool_calls.clear(py);
        multiprocess.followed(epoch);
        Ok(())
    }

    /// Adds one to the series of each (validated) tool call.
    pub(super) fn record_tool_calls(
        &self,
        py: Python<'_>,
        tool_names: &ToolNames<'_, '_>,
    ) -> PyResult<()> {
        for name in tool_names {
            let series = match name {
                ToolName::Unknown => self.store().tool_call_series("unknown"),
                ToolName::Unreadable(item) => {
                    self.report_unreadable_tool_call(py, item);
                    self.store().tool_call_series("unknown")
                }
                ToolName::Cached(series) => series,
                ToolName::New { text, cacheable } => {
                    let (series, folded) = self.store().tool_call_series_capped(text.to_str()?);
                    if *cacheable && !folded {
                        // SAFETY: series live as long as the store, which lives as long as the cache.
                        unsafe { self.tool_calls.insert(py, [text], series) };
                    }
                    series
                }
            };
            self.store().count(series);
        }
        Ok(())
    }

    /// Logs, the first time only, a tool call whose name cannot be read.
    #[cold]
    #[inline(never)]
    fn report_unreadable_tool_call(&self, py: Python<'_>, item: &Bound<'_, PyAny>) {
        if self
            .unreadable_tool_call_reported
            .swap(true, Ordering::Relaxed)
        {
            return;
        }
        let kind = item
            .get_type()
            .name()
            .map_or_else(|_| "?".to_owned(), |name| name.to_string());
        log_warnings(
            py,
            [format!(
                "a tool call of type {kind} has no name (no .name, .function.name, \
                 .custom.name or such keys, and is not a str): recorded as \
                 tool_name=\"unknown\" (reported once)"
            )],
        );
    }

    /// Adds one cache hit or miss of `cache_type` (`"exact"` or `"semantic"`).
    pub(super) fn record_cache(
        &self,
        outcome: CacheOutcome,
        cache_type: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = cache_type.py();
        self.follow_fork(py)?;
        let cache = match outcome {
            CacheOutcome::Hit => &self.cache_hits,
            CacheOutcome::Miss => &self.cache_misses,
        };
        let series = if let Some(series) = cache.get(py, [cache_type]) {
            series
        } else {
            let text = label(cache_type, "cache_type")?;
            let (series, folded) = self.store().cache_series_capped(outcome, text.to_str()?);
            if cache_type.is_exact_instance_of::<PyString>() && !folded {
                // SAFETY: series live as long as the store, which lives as long as the cache.
                unsafe { cache.insert(py, [&text], series) };
            }
            series
        };
        self.store().count(series);
        self.report_overflows(py);
        Ok(())
    }

    /// Logs, once per family, that a family reached `max_series` label sets,
    /// and once per label set, a model without a price. One relaxed load when
    /// there is nothing to report.
    #[inline]
    pub(super) fn report_overflows(&self, py: Python<'_>) {
        self.report_overflows_of(py, self.store());
    }

    /// [`Self::report_overflows`] with the store already at hand (a call
    /// that has recorded into it need not load the pointer again).
    #[inline]
    fn report_overflows_of(&self, py: Python<'_>, store: &Store) {
        if store.has_notices() {
            self.log_overflows(py);
        }
    }

    #[cold]
    fn log_overflows(&self, py: Python<'_>) {
        let families = self.store().take_overflowed_families();
        let (unpriced, past_named) = self.store().take_unpriced_models();
        let unpriced = unpriced.into_iter().map(|(provider, model)| {
            format!(
                "no price for model {model:?} of provider {provider:?}: its cost is not \
                 counted; give it a price with price_table= or prices=\"genai-prices\""
            )
        });
        let past_named = past_named.then(|| {
            format!(
                "more than {NAMED_UNPRICED_MODELS} models have no price: further ones are \
                 not named (with prices=\"genai-prices\", \
                 ractogateway_unpriced_requests_total counts their requests)"
            )
        });
        let overflowed = families.into_iter().map(|family| {
            format!(
                "{family} reached max_series label sets: new ones are recorded into its \
                 __overflow__ series (see ractogateway_overflow_requests_total)"
            )
        });
        log_warnings(py, unpriced.chain(past_named).chain(overflowed));
    }

    /// The cached entry of these label objects, or their validated text (to look
    /// up once the whole call is known to be valid). `row` names a batch row in errors.
    ///
    /// `extra` is the call's `labels` mapping of extra label values, if any.
    pub(super) fn resolve_labels<'s, 'py>(
        &'s self,
        py: Python<'py>,
        objects: [&Bound<'py, PyAny>; 4],
        extra: Option<&Bound<'py, PyAny>>,
        row: Option<usize>,
    ) -> PyResult<Resolved<'s, 'py>> {
        let extra = extra.filter(|mapping| !mapping.is_none());
        let cached = match extra {
            None => self.request_entries.get(py, objects),
            Some(mapping) => self.labelled_values(py, mapping).and_then(|values| {
                let key: [&Bound<'py, PyAny>; LABELLED_KEY] = std::array::from_fn(|index| {
                    objects
                        .get(index)
                        .copied()
                        .unwrap_or_else(|| &values[index - 4])
                });
                self.labelled_entries.get(py, key)
            }),
        };
        if let Some(entry) = cached {
            return Ok(Resolved::Cached(entry));
        }
        let [provider, model, operation, status] = objects;
        let argument = |name| ColumnArgument { name, row };
        let texts = [
            label(provider, argument("provider"))?,
            label(model, argument("model"))?,
            label(operation, argument("operation"))?,
            label(status, argument("status"))?,
        ];
        let mut cacheable = objects
            .iter()
            .all(|object| object.is_exact_instance_of::<PyString>());
        let extra = match extra {
            None => SmallVec::new(),
            Some(mapping) => {
                let names = self.store().schema().extra_labels();
                let values = extra_label_values(mapping, names, self.empty.bind(py), row)?;
                // A value `str()` made of a subclass is a new object every call.
                cacheable &= names.len() <= LABELLED_KEY - 4
                    && mapping.cast::<PyDict>().is_ok_and(|dict| {
                        dict.values().iter().all(|value| {
                            value.is_none() || value.is_exact_instance_of::<PyString>()
                        })
                    });
                values
            }
        };
        Ok(Resolved::Labels {
            texts,
            extra,
            cacheable,
        })
    }

    /// The extra half of the identity-cache key of a call with a `labels`
    /// mapping: each extra label's value object (the interned empty string for
    /// a missing one); None when the mapping names anything else, or the extra
    /// labels are too many for the key.
    fn labelled_values<'py>(
        &self,
        py: Python<'py>,
        mapping: &Bound<'py, PyAny>,
    ) -> Option<[Bound<'py, PyAny>; LABELLED_KEY - 4]> {
        let dict = mapping.cast_exact::<PyDict>().ok()?;
        if self.extra_names.len() > LABELLED_KEY - 4 {
            return None;
        }
        let empty = self.empty.bind(py).as_any();
        let mut values: [Bound<'py, PyAny>; LABELLED_KEY - 4] =
            std::array::from_fn(|_| empty.clone());
        let mut present = 0;
        for (target, name) in values.iter_mut().zip(&self.extra_names) {
            if let Ok(Some(value)) = dict.get_item(name.bind(py)) {
                present += 1;
                if !value.is_none() {
                    *target = value;
                }
            }
        }
        (present == dict.len()).then_some(values)
    }

    /// The entry of resolved labels, created on first use, and cached when the
    /// call's label objects are `str`s themselves.
    pub(super) fn request_entry<'s>(
        &'s self,
        py: Python<'_>,
        resolved: Resolved<'s, '_>,
        labelled: bool,
    ) -> PyResult<&'s RequestEntry> {
        let ([provider, model, operation, status], extra, cacheable) = match resolved {
            Resolved::Cached(entry) => return Ok(entry),
            Resolved::Labels {
                texts,
                extra,
                cacheable,
            } => (texts, extra, cacheable),
        };
        let extra_texts = extra
            .iter()
            .map(|text| text.to_str())
            .collect::<PyResult<SmallVec<[&str; 4]>>>()?;
        let labels = RequestLabels {
            provider: provider.to_str()?,
            model: model.to_str()?,
            operation: operation.to_str()?,
            status: status.to_str()?,
            extra: &extra_texts,
        };
        let (entry, folded) = self.store().request_entry_capped(&labels);
        if folded {
            // The overflow entry must not stand for these labels in the caches.
        } else if cacheable && !labelled {
            // SAFETY: entries live as long as the store, which lives as long as the cache.
            unsafe {
                self.request_entries
                    .insert(py, [&provider, &model, &operation, &status], entry);
            };
        } else if cacheable {
            let empty = self.empty.bind(py);
            let key: [&Bound<'_, PyString>; LABELLED_KEY] = std::array::from_fn(|index| {
                [&provider, &model, &operation, &status]
                    .get(index)
                    .copied()
                    .or_else(|| extra.get(index - 4))
                    .unwrap_or(empty)
            });
            // SAFETY: entries live as long as the store, which lives as long as the cache.
            unsafe { self.labelled_entries.insert(py, key, entry) };
        }
        Ok(entry)
    }

    /// Whether every request's token counts are observed, as its store's
    /// schema says (read here, beside the other fields a call reads).
    #[inline]
    fn keeps_token_usage(&self) -> bool {
        keeps_token_usage(self.convention)
    }

    /// Validates every argument of `record_request`, then records it.
    pub(super) fn record_request(&self, arguments: &RequestArguments<'_, '_>) -> PyResult<()> {
        let label_objects = arguments.labels;
        let py = label_objects[0].py();
        self.follow_fork(py)?;
        let resolved = self.resolve_labels(py, label_objects, arguments.extra_labels(), None)?;
        let latency_s = latency_seconds(arguments.latency_s, "latency_s")?;
        let count = |token_type: usize| {
            let name = REQUEST_FIELDS[TOKEN_FIELDS[token_type]].name;
            token_count(arguments.tokens(token_type), name)
        };
        let mut values = RequestValues::new(latency_s, count(INPUT)?, count(OUTPUT)?);
        // The reference's arguments alone need none of the rest.
        if arguments.more {
            for token_type in REFERENCE_TOKEN_TYPES..TOKEN_TYPE_COUNT {
                values.tokens[token_type] = count(token_type)?;
            }
            for field in 0..SECONDS_FIELDS {
                if let Some(value) = arguments.seconds(field).filter(|value| !value.is_none()) {
                    let name = REQUEST_FIELDS[SECONDS_POSITIONS[field]].name;
                    values.seconds[field] = Some(latency_seconds(value, name)?);
                }
            }
            checked_parts(&values, None)?;
        }
        let tool_names = tool_call_names(arguments.tool_calls(), None, &self.tool_calls)?;
        let labelled = arguments
            .extra_labels()
            .is_some_and(|mapping| !mapping.is_none());
        if let Some(exemplar) = arguments.exemplar().filter(|value| !value.is_none()) {
            return self.record_with_exemplar(
                py,
                exemplar,
                resolved,
                labelled,
                &values,
                &tool_names,
            );
        }
        // Everything is valid: from here on the call records.
        // Both are plain reads: `|` rather than `||` spares the hot path a branch.
        let more = arguments.more | self.keeps_token_usage();
        self.record_valid(py, resolved, labelled, &values, more, &tool_names)
            .map(|_| ())
    }

    /// Records a call whose every argument is valid (`more`: whether any
    /// beyond the reference's was passed); returns its entry.
    #[inline]
    fn record_valid<'s>(
        &'s self,
        py: Python<'_>,
        resolved: Resolved<'s, '_>,
        labelled: bool,
        values: &RequestValues,
        more: bool,
        tool_names: &ToolNames<'_, '_>,
    ) -> PyResult<&'s RequestEntry> {
        let entry = self.request_entry(py, resolved, labelled)?;
        let store = self.store();
        store.record_known_request_on(entry, values, more);
        self.record_tool_calls(py, tool_names)?;
        self.report_overflows_of(py, store);
        Ok(entry)
    }

    /// Validates a call's exemplar, records the call, and keeps the exemplar
    /// on the buckets it observed (out of line: most calls have none).
    #[cold]
    #[inline(never)]
    fn record_with_exemplar<'s>(
        &'s self,
        py: Python<'_>,
        exemplar: &Bound<'_, PyAny>,
        resolved: Resolved<'s, '_>,
        labelled: bool,
        values: &RequestValues,
        tool_names: &ToolNames<'_, '_>,
    ) -> PyResult<()> {
        let labels = exemplar_labels(exemplar, "exemplar")?;
        let more = self.store().runs_more_rules(values);
        let entry = self.record_valid(py, resolved, labelled, values, more, tool_names)?;
        self.store()
            .attach_exemplar(entry, values, &labels, unix_now());
        Ok(())
    }
}

/// Request labels resolved by identity, or validated label objects (provider,
/// model, operation, status) still to be looked up.
pub(super) enum Resolved<'s, 'py> {
    Cached(&'s RequestEntry),
    Labels {
        texts: [Bound<'py, PyString>; 4],
        /// The extra labels' values, in the schema's order; empty without a `labels` mapping.
        extra: SmallVec<[Bound<'py, PyString>; 4]>,
        /// Whether the call's objects may key the identity cache: `str`s themselves.
        cacheable: bool,
    },
}

/// Objects in the key of a call with a `labels` mapping: the four request
/// labels and up to four extra ones.
const LABELLED_KEY: usize = 8;

/// The convention a `semconv` argument names, or a `ValueError` naming it.
fn convention_named(semconv: Option<&str>) -> PyResult<Convention> {
    Convention::named(semconv).map_err(|reason| PyValueError::new_err(format!("semconv {reason}")))
}

/// Whether a store of `convention` keeps the tokens-per-request histogram:
/// the GenAI conventions' `gen_ai.client.token.usage`, kept under their names.
fn keeps_token_usage(convention: Convention) -> bool {
    convention == Convention::GenAi
}

/// The names' characters: UTF-8 when the scraper asked for them.
fn charset(utf8: bool) -> Charset {
    if utf8 {
        Charset::Utf8
    } else {
        Charset::Legacy
    }
}

/// Logs each of `messages` as a warning on the `gateway_metrics` logger. A
/// logging failure is reported as unraisable: it must not fail a call that
/// has recorded.
#[cold]
fn log_warnings(py: Python<'_>, messages: impl IntoIterator<Item = String>) {
    let logged = py.import("logging").and_then(|logging| {
        let logger = logging.call_method1("getLogger", ("gateway_metrics",))?;
        for message in messages {
            logger.call_method1("warning", (message,))?;
        }
        Ok(())
    });
    if let Err(error) = logged {
        error.write_unraisable(py, None);
    }
}
