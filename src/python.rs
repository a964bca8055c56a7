//! The PyO3 binding: `gateway_metrics._core`.
//!
//! Only argument validation and conversion live here; every recording and
//! rendering decision is made by the plain-Rust [`Store`]. Each recording call
//! validates all of its arguments before it touches the store, so a call that
//! raises leaves the metrics exactly as they were.

use pyo3::exceptions::{
    PyAttributeError, PyOSError, PyOverflowError, PyRuntimeError, PyRuntimeWarning, PyTimeoutError,
    PyTypeError, PyValueError,
};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use std::fmt::Display;

use smallvec::SmallVec;

use std::ffi::CString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::time::Duration;

use crate::counter::{Coding, Recording, Writers};
use crate::exposition::{render, Format, TextEncoder};
use crate::family::{FamilyDesc, FAMILIES};
use crate::fork_guard;
use crate::multiprocess::{self, Aggregate};
use crate::pricing::{Price, PriceTable};
use crate::prometheus_file::PrometheusFiles;
use crate::shared_file::SharedFile;
use crate::slots::SlotArena;
use crate::store::{
    CacheOutcome, CounterSeries, RequestEntry, RequestLabels, RequestValues, SampleVisitor, Store,
};

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map_or_else(|_| "object".to_owned(), |name| name.to_string())
}

/// The argument named in errors about a tool call's name (`tool_calls[i].name`, or
/// `tool_calls[row][i].name` in a batch), formatted only on error.
#[derive(Clone, Copy)]
struct ToolCallName {
    row: Option<usize>,
    index: usize,
}

impl Display for ToolCallName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.row {
            Some(row) => write!(f, "tool_calls[{row}][{}].name", self.index),
            None => write!(f, "tool_calls[{}].name", self.index),
        }
    }
}

/// A label value as `prometheus_client` takes it: a `str` as it is, a `str`
/// subclass as `str()` makes it (the reference calls `str()` on every label).
fn label_object<'py>(
    value: &Bound<'py, PyAny>,
    argument: impl Display,
) -> PyResult<Bound<'py, PyString>> {
    if value.is_exact_instance_of::<PyString>() {
        return Ok(value.clone().downcast_into::<PyString>()?);
    }
    if value.is_instance_of::<PyString>() {
        return value.str();
    }
    Err(PyTypeError::new_err(format!(
        "{argument} must be str, not {}",
        type_name(value)
    )))
}

/// The UTF-8 text of a label object, or which argument is wrong.
fn label_text<'a>(text: &'a Bound<'_, PyString>, argument: impl Display) -> PyResult<&'a str> {
    text.to_str().map_err(|_| {
        PyValueError::new_err(format!(
            "{argument} must be valid UTF-8 text (it contains a lone surrogate): {}",
            text.to_string_lossy().escape_debug()
        ))
    })
}

/// A validated label object: its text as the exposition shows it.
fn label<'py>(
    value: &Bound<'py, PyAny>,
    argument: impl Display + Copy,
) -> PyResult<Bound<'py, PyString>> {
    let text = label_object(value, argument)?;
    label_text(&text, argument)?;
    Ok(text)
}

fn latency_seconds(value: &Bound<'_, PyAny>, argument: impl Display + Copy) -> PyResult<f64> {
    let seconds = if let Ok(float) = value.downcast_exact::<PyFloat>() {
        float.value()
    } else if value.is_instance_of::<PyString>() || value.is_instance_of::<PyBytes>() {
        return Err(PyTypeError::new_err(format!(
            "{argument} must be a real number, not {}",
            type_name(value)
        )));
    } else {
        value.extract::<f64>().map_err(|error| {
            if error.is_instance_of::<PyOverflowError>(value.py()) {
                PyValueError::new_err(format!(
                    "{argument} must be finite, got an int too large for a float"
                ))
            } else {
                PyTypeError::new_err(format!(
                    "{argument} must be a real number, not {}",
                    type_name(value)
                ))
            }
        })?
    };
    checked_latency(seconds, argument)
}

/// `seconds` if it is a usable latency: finite and not negative.
fn checked_latency(seconds: f64, argument: impl Display) -> PyResult<f64> {
    if seconds.is_nan() || seconds.is_infinite() {
        return Err(PyValueError::new_err(format!(
            "{argument} must be finite, got {seconds}"
        )));
    }
    if seconds < 0.0 {
        return Err(PyValueError::new_err(format!(
            "{argument} must not be negative, got {seconds}"
        )));
    }
    Ok(seconds)
}

/// A token count; `None` means the keyword was not passed (an explicit `None` is an error).
fn token_count(value: Option<&Bound<'_, PyAny>>, argument: &str) -> PyResult<u64> {
    match value {
        Some(value) => token_value(value, argument),
        None => Ok(0),
    }
}

/// A token count given as a Python object: an `int` from 0 to 2**64-1.
fn token_value(value: &Bound<'_, PyAny>, argument: impl Display) -> PyResult<u64> {
    if value.is_exact_instance_of::<PyInt>() {
        // An exact `int` needs no `__index__` call: read it directly.
        // SAFETY: `value` is a live `int`.
        let count = unsafe { pyo3::ffi::PyLong_AsUnsignedLongLong(value.as_ptr()) };
        if count != u64::MAX || PyErr::take(value.py()).is_none() {
            return Ok(count);
        }
    } else if value.is_instance_of::<PyFloat>() {
        return Err(PyTypeError::new_err(format!(
            "{argument} must be an int, not {}",
            type_name(value)
        )));
    }
    value.extract::<u64>().map_err(|error| {
        if !error.is_instance_of::<PyOverflowError>(value.py()) {
            PyTypeError::new_err(format!(
                "{argument} must be an int, not {}",
                type_name(value)
            ))
        } else if value.lt(0).unwrap_or(false) {
            PyValueError::new_err(format!("{argument} must not be negative, got {value}"))
        } else {
            PyValueError::new_err(format!("{argument} must be at most 2**64-1, got {value}"))
        }
    })
}

/// The tool-call series a request feeds, resolved as far as validation allows.
enum ToolName<'py, 's> {
    /// A missing, `None` or empty name.
    Unknown,
    /// A name whose series the identity cache already knew.
    Cached(&'s CounterSeries),
    /// A validated name seen for the first time through this object; `cacheable`
    /// when it is the call's own `str` (not what `str()` made of a subclass).
    New {
        text: Bound<'py, PyString>,
        cacheable: bool,
    },
}

/// Tool calls of one request; most requests have none or a few, kept inline.
type ToolNames<'py, 's> = SmallVec<[ToolName<'py, 's>; 4]>;

/// The name objects of the tool calls (`None` standing for `"unknown"`), all validated.
///
/// `row` is set for a row of a batch, for error messages.
fn tool_call_names<'py, 's>(
    tool_calls: Option<&Bound<'py, PyAny>>,
    row: Option<usize>,
    cache: &'s IdentityCache<CounterSeries, 1>,
) -> PyResult<ToolNames<'py, 's>> {
    let mut names = ToolNames::new();
    let Some(tool_calls) = tool_calls.filter(|value| !value.is_none()) else {
        return Ok(names);
    };
    let not_iterable = || {
        let argument = row.map_or_else(
            || "tool_calls".to_owned(),
            |row| format!("tool_calls[{row}]"),
        );
        PyTypeError::new_err(format!(
            "{argument} must be None or an iterable of tool calls, not {}",
            type_name(tool_calls)
        ))
    };
    if tool_calls.is_instance_of::<PyString>() {
        return Err(not_iterable());
    }
    if let Ok(list) = tool_calls.downcast::<PyList>() {
        for (index, item) in list.iter().enumerate() {
            names.push(tool_name(&item, ToolCallName { row, index }, cache)?);
        }
        return Ok(names);
    }
    let items = tool_calls.try_iter().map_err(|_| not_iterable())?;
    for (index, item) in items.enumerate() {
        names.push(tool_name(&item?, ToolCallName { row, index }, cache)?);
    }
    Ok(names)
}

/// The validated name of one tool call.
fn tool_name<'py, 's>(
    item: &Bound<'py, PyAny>,
    argument: ToolCallName,
    cache: &'s IdentityCache<CounterSeries, 1>,
) -> PyResult<ToolName<'py, 's>> {
    let py = item.py();
    let name = match item.getattr(intern!(py, "name")) {
        Ok(name) => name,
        Err(error) if error.is_instance_of::<PyAttributeError>(py) => return Ok(ToolName::Unknown),
        Err(error) => return Err(error),
    };
    if let Some(series) = cache.get(py, [&name]) {
        return Ok(ToolName::Cached(series));
    }
    if let Ok(text) = name.downcast::<PyString>() {
        if text.len()? == 0 {
            return Ok(ToolName::Unknown);
        }
        return Ok(ToolName::New {
            text: label(&name, argument)?,
            cacheable: name.is_exact_instance_of::<PyString>(),
        });
    }
    if name.is_none() || !name.is_truthy()? {
        return Ok(ToolName::Unknown);
    }
    label(&name, argument).map(|_| ToolName::Unknown)
}

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
    cache_hits: IdentityCache<CounterSeries, 1>,
    cache_misses: IdentityCache<CounterSeries, 1>,
    tool_calls: IdentityCache<CounterSeries, 1>,
}

#[pymethods]
impl PyMetricsStore {
    /// Creates an empty store pricing requests with `prices`: `(model, input_per_million, output_per_million)`.
    #[new]
    #[pyo3(signature = (
        prices, multiprocess_dir = None, prometheus_multiproc_dir = None, *_args, **_kwargs
    ))]
    fn new(
        py: Python<'_>,
        prices: Vec<(String, f64, f64)>,
        multiprocess_dir: Option<PathBuf>,
        prometheus_multiproc_dir: Option<PathBuf>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let table = PriceTable::new(prices.iter().map(|(model, input, output)| {
            (
                model.as_str(),
                Price {
                    input_per_million: *input,
                    output_per_million: *output,
                },
            )
        }));
        let shared = match (multiprocess_dir, prometheus_multiproc_dir) {
            (Some(directory), _) => Some((directory, Layout::Own)),
            (None, Some(directory)) => Some((directory, Layout::PrometheusClient)),
            (None, None) => None,
        };
        let (store, multiprocess) = match shared {
            None => (
                Store::with_arena(table, SlotArena::heap(), recording(py, Coding::Integer)?),
                None,
            ),
            Some((directory, layout)) => {
                let state = Multiprocess {
                    directory,
                    layout,
                    prices: table,
                    epoch: AtomicU64::new(fork_guard::epoch()),
                };
                (state.new_store(py)?, Some(state))
            }
        };
        Ok(PyMetricsStore {
            store: AtomicPtr::new(Box::into_raw(Box::new(store))),
            multiprocess,
            request_entries: IdentityCache::new(),
            cache_hits: IdentityCache::new(),
            cache_misses: IdentityCache::new(),
            tool_calls: IdentityCache::new(),
        })
    }

    /// The path of this process's metrics file in multi-process mode, else None.
    fn _multiprocess_file(&self) -> Option<PathBuf> {
        self.multiprocess.as_ref()?;
        self.store().arena_file_path()
    }

    /// Records `n` requests given as columns; returns `n`.
    #[pyo3(signature = (
        *, provider, model, operation, status, latency_s,
        input_tokens = None, output_tokens = None, tool_calls = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn record_batch(
        &self,
        provider: &Bound<'_, PyAny>,
        model: &Bound<'_, PyAny>,
        operation: &Bound<'_, PyAny>,
        status: &Bound<'_, PyAny>,
        latency_s: &Bound<'_, PyAny>,
        input_tokens: Option<&Bound<'_, PyAny>>,
        output_tokens: Option<&Bound<'_, PyAny>>,
        tool_calls: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let columns = batch::Columns {
            labels: [provider, model, operation, status],
            latency_s,
            input_tokens,
            output_tokens,
            tool_calls,
        };
        self.record_columns(&columns)
    }

    /// Every family in the text format 0.0.4, or OpenMetrics 1.0 without the
    /// final `# EOF` line, as UTF-8 bytes for an HTTP response.
    fn _render<'py>(
        &self,
        py: Python<'py>,
        include_created: bool,
        openmetrics: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let format = if openmetrics {
            Format::OpenMetrics
        } else {
            Format::Text
        };
        let text = self.rendered(py, format, include_created)?;
        Ok(PyBytes::new(py, text.as_bytes()))
    }

    /// Every family in the text format 0.0.4, as `str`.
    fn _render_str<'py>(
        &self,
        py: Python<'py>,
        include_created: bool,
    ) -> PyResult<Bound<'py, PyString>> {
        let text = self.rendered(py, Format::Text, include_created)?;
        Ok(PyString::new(py, &text))
    }

    /// Every family as `(name, help, type, samples)` with `prometheus_client` `Sample`s.
    fn _collect<'py>(
        &self,
        py: Python<'py>,
        include_created: bool,
        sample_type: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let mut builder = SampleBuilder {
            py,
            sample_type: sample_type.clone(),
            families: PyList::empty(py),
            samples: PyList::empty(py),
            sample_names: Vec::new(),
            label_names: Vec::new(),
            last_labels: None,
            error: None,
        };
        match &self.multiprocess {
            None => self.store().visit(include_created, &mut builder),
            Some(multiprocess) => multiprocess.aggregate(py, self.store())?.visit(
                include_created && multiprocess.keeps_created(),
                &mut builder,
            ),
        }
        match builder.error {
            Some(error) => Err(error),
            None => Ok(builder.families),
        }
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
    /// Every family in `format`: this store's, or in multi-process mode the
    /// directory's sum. Rendered without the GIL.
    fn rendered(&self, py: Python<'_>, format: Format, include_created: bool) -> PyResult<String> {
        Ok(match &self.multiprocess {
            None => py.allow_threads(|| render(self.store(), format, include_created)),
            Some(multiprocess) => {
                let sum = multiprocess.aggregate(py, self.store())?;
                let include_created = include_created && multiprocess.keeps_created();
                py.allow_threads(|| {
                    let mut encoder = TextEncoder::new(format);
                    sum.visit(include_created, &mut encoder);
                    encoder.into_text()
                })
            }
        })
    }

    /// The store being recorded into.
    #[inline]
    fn store(&self) -> &Store {
        // SAFETY: the pointer is always a live store owned (or leaked) by `self`.
        unsafe { &*self.store.load(Ordering::Acquire) }
    }

    /// In a forked child of a multi-process store, moves recording to a new file
    /// of this process, so that what the parent recorded counts once.
    #[inline]
    fn follow_fork(&self, py: Python<'_>) -> PyResult<()> {
        let Some(multiprocess) = &self.multiprocess else {
            return Ok(());
        };
        let epoch = fork_guard::epoch();
        if multiprocess.epoch.load(Ordering::Relaxed) == epoch {
            return Ok(());
        }
        let store = multiprocess.new_store(py)?;
        // The parent's store stays mapped but unused: leaking it keeps every
        // reference into it valid without tracking who might still hold one.
        self.store
            .store(Box::into_raw(Box::new(store)), Ordering::Release);
        self.request_entries.clear(py);
        self.cache_hits.clear(py);
        self.cache_misses.clear(py);
        self.tool_calls.clear(py);
        multiprocess.epoch.store(epoch, Ordering::Relaxed);
        Ok(())
    }

    /// Adds one to the series of each (validated) tool call.
    fn record_tool_calls(&self, py: Python<'_>, tool_names: &ToolNames<'_, '_>) -> PyResult<()> {
        for name in tool_names {
            let series = match name {
                ToolName::Unknown => self.store().tool_call_series("unknown"),
                ToolName::Cached(series) => series,
                ToolName::New { text, cacheable } => {
                    let series = self.store().tool_call_series(text.to_str()?);
                    if *cacheable {
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

    /// Adds one cache hit or miss of `cache_type` (`"exact"` or `"semantic"`).
    fn record_cache(&self, outcome: CacheOutcome, cache_type: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = cache_type.py();
        self.follow_fork(py)?;
        let cache = match outcome {
            CacheOutcome::Hit => &self.cache_hits,
            CacheOutcome::Miss => &self.cache_misses,
        };
        let series = match cache.get(py, [cache_type]) {
            Some(series) => series,
            None => {
                let text = label(cache_type, "cache_type")?;
                let series = self.store().cache_series(outcome, text.to_str()?);
                if cache_type.is_exact_instance_of::<PyString>() {
                    // SAFETY: series live as long as the store, which lives as long as the cache.
                    unsafe { cache.insert(py, [&text], series) };
                }
                series
            }
        };
        self.store().count(series);
        Ok(())
    }

    /// The cached entry of these label objects, or their validated text (to look
    /// up once the whole call is known to be valid). `row` names a batch row in errors.
    fn resolve_labels<'s, 'py>(
        &'s self,
        py: Python<'py>,
        [provider, model, operation, status]: [&Bound<'py, PyAny>; 4],
        row: Option<usize>,
    ) -> PyResult<Resolved<'s, 'py>> {
        if let Some(entry) = self
            .request_entries
            .get(py, [provider, model, operation, status])
        {
            return Ok(Resolved::Cached(entry));
        }
        let argument = |name| ColumnArgument { name, row };
        Ok(Resolved::Labels([
            label(provider, argument("provider"))?,
            label(model, argument("model"))?,
            label(operation, argument("operation"))?,
            label(status, argument("status"))?,
        ]))
    }

    /// The entry of resolved labels, created on first use, and cached when the
    /// call's label objects are `str`s themselves.
    fn request_entry<'s>(
        &'s self,
        py: Python<'_>,
        resolved: Resolved<'s, '_>,
        label_objects: [&Bound<'_, PyAny>; 4],
    ) -> PyResult<&'s RequestEntry> {
        let [provider, model, operation, status] = match resolved {
            Resolved::Cached(entry) => return Ok(entry),
            Resolved::Labels(texts) => texts,
        };
        let labels = RequestLabels {
            provider: provider.to_str()?,
            model: model.to_str()?,
            operation: operation.to_str()?,
            status: status.to_str()?,
        };
        let entry = self.store().request_entry(&labels);
        if label_objects
            .iter()
            .all(|object| object.is_exact_instance_of::<PyString>())
        {
            // SAFETY: entries live as long as the store, which lives as long as the cache.
            unsafe {
                self.request_entries
                    .insert(py, [&provider, &model, &operation, &status], entry)
            };
        }
        Ok(entry)
    }

    /// Validates every argument of `record_request`, then records it.
    #[allow(clippy::too_many_arguments)]
    fn record_request(
        &self,
        provider: &Bound<'_, PyAny>,
        model: &Bound<'_, PyAny>,
        operation: &Bound<'_, PyAny>,
        status: &Bound<'_, PyAny>,
        latency_s: &Bound<'_, PyAny>,
        input_tokens: Option<&Bound<'_, PyAny>>,
        output_tokens: Option<&Bound<'_, PyAny>>,
        tool_calls: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = provider.py();
        self.follow_fork(py)?;
        let label_objects = [provider, model, operation, status];
        let resolved = self.resolve_labels(py, label_objects, None)?;
        let values = RequestValues {
            latency_s: latency_seconds(latency_s, "latency_s")?,
            input_tokens: token_count(input_tokens, "input_tokens")?,
            output_tokens: token_count(output_tokens, "output_tokens")?,
        };
        let tool_names = tool_call_names(tool_calls, None, &self.tool_calls)?;
        // Everything is valid: from here on the call records.
        let entry = self.request_entry(py, resolved, label_objects)?;
        self.store().record_request_on(entry, &values);
        self.record_tool_calls(py, &tool_names)?;
        Ok(())
    }
}

/// How the stores of this interpreter are written to.
///
/// Every recording method runs while holding the GIL and calls no Python code
/// once it starts writing, so with a GIL its writes never overlap and plain
/// atomic stores suffice. A free-threaded interpreter gets concurrent writers.
fn recording(py: Python<'_>, coding: Coding) -> PyResult<Recording> {
    let sys = py.import("sys")?;
    let gil = match sys.getattr("_is_gil_enabled") {
        Ok(is_gil_enabled) => is_gil_enabled.call0()?.is_truthy()?,
        Err(_) => true,
    };
    let writers = if gil {
        Writers::Serialized
    } else {
        Writers::Concurrent
    };
    Ok(Recording { writers, coding })
}

/// Which files a multi-process store writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Our own format (`multiprocess_dir`, `GATEWAY_METRICS_MULTIPROC_DIR`).
    Own,
    /// `prometheus_client`'s format (`PROMETHEUS_MULTIPROC_DIR`), which its
    /// `MultiProcessCollector` reads.
    PrometheusClient,
}

/// Where a multi-process store records and what a scrape sums.
struct Multiprocess {
    directory: PathBuf,
    layout: Layout,
    prices: PriceTable,
    /// The fork epoch of the process that made the store being recorded into:
    /// when the current one differs, this is a forked child, and the next
    /// recording call moves to a file of its own.
    epoch: AtomicU64,
}

impl Multiprocess {
    /// Whether the files keep each series' creation time (`prometheus_client`'s
    /// do not, and its multi-process collector shows no `_created` samples).
    fn keeps_created(&self) -> bool {
        self.layout == Layout::Own
    }

    /// A new store recording into new files of this process.
    fn new_store(&self, py: Python<'_>) -> PyResult<Store> {
        let cannot = |error: std::io::Error| {
            PyOSError::new_err(format!(
                "cannot create a metrics file in {}: {error}",
                self.directory.display()
            ))
        };
        let (arena, coding) = match self.layout {
            Layout::Own => (
                SlotArena::file(SharedFile::create(&self.directory).map_err(cannot)?),
                Coding::Integer,
            ),
            Layout::PrometheusClient => (
                SlotArena::prometheus(PrometheusFiles::create(&self.directory).map_err(cannot)?),
                Coding::Float,
            ),
        };
        Ok(Store::with_arena(
            self.prices.clone(),
            arena,
            recording(py, coding)?,
        ))
    }

    /// The sum over the directory's files, warning about each file left out.
    ///
    /// Also warns when this process's own file could not grow, so that series
    /// created since then are missing from every process's scrape.
    fn aggregate(&self, py: Python<'_>, store: &Store) -> PyResult<Aggregate> {
        let directory = self.directory.clone();
        let sum = py
            .allow_threads(|| match self.layout {
                Layout::Own => multiprocess::aggregate(&directory),
                Layout::PrometheusClient => multiprocess::aggregate_prometheus(&directory),
            })
            .map_err(|error| PyOSError::new_err(error.to_string()))?;
        let skipped = sum
            .skipped
            .iter()
            .map(|(path, reason)| format!("skipped metrics file {}: {reason}", path.display()));
        let own = store.file_error().map(|error| {
            format!("new series of this process are not shared (metrics file full): {error}")
        });
        for message in skipped.chain(own).chain(sum.caveat.clone()) {
            PyErr::warn(
                py,
                &py.get_type::<PyRuntimeWarning>(),
                &CString::new(message)?,
                1,
            )?;
        }
        Ok(sum)
    }
}

/// An I/O error of the multi-process tools as a Python exception.
fn io_error(error: std::io::Error) -> PyErr {
    if error.kind() == std::io::ErrorKind::TimedOut {
        PyTimeoutError::new_err(error.to_string())
    } else {
        PyOSError::new_err(error.to_string())
    }
}

fn lock_wait(timeout: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(timeout).map_err(|_| {
        PyValueError::new_err(format!(
            "timeout must be a non-negative number of seconds, got {timeout}"
        ))
    })
}

/// What `compact` reports: files folded, damaged files discarded, the new
/// file, and the files that could not be removed with the reason.
type CompactionReport = (usize, usize, Option<PathBuf>, Vec<(PathBuf, String)>);

/// Folds the files of processes that are gone into one; returns `(files folded,
/// damaged files discarded, path of the new file or None, [(path, why) of files
/// that could not be removed]`.
#[pyfunction]
#[pyo3(signature = (directory, *, timeout))]
fn compact(py: Python<'_>, directory: PathBuf, timeout: f64) -> PyResult<CompactionReport> {
    let wait = lock_wait(timeout)?;
    let done = py
        .allow_threads(|| multiprocess::compact(&directory, wait))
        .map_err(io_error)?;
    Ok((done.folded, done.discarded, done.into, done.not_removed))
}

/// Removes the files of processes that are gone; returns how many. Unless
/// `force`, raises `RuntimeError` (removing nothing) while a live process holds a file.
#[pyfunction]
#[pyo3(signature = (directory, *, force, timeout))]
fn cleanup(py: Python<'_>, directory: PathBuf, force: bool, timeout: f64) -> PyResult<usize> {
    let wait = lock_wait(timeout)?;
    let outcome = py
        .allow_threads(|| multiprocess::cleanup(&directory, force, wait))
        .map_err(io_error)?;
    match outcome {
        multiprocess::Cleanup::Removed(count) => Ok(count),
        multiprocess::Cleanup::Refused(live) => Err(PyRuntimeError::new_err(format!(
            "{} (written by process {}) is held by a live process: cleanup() would make the \
             totals it serves fall; stop the process first, or pass force=True",
            live.path.display(),
            live.pid
        ))),
    }
}

/// Request labels resolved by identity, or validated label objects (provider,
/// model, operation, status) still to be looked up.
enum Resolved<'s, 'py> {
    Cached(&'s RequestEntry),
    Labels([Bound<'py, PyString>; 4]),
}

/// An argument, or one row of a column argument, as named in error messages.
#[derive(Clone, Copy)]
struct ColumnArgument {
    name: &'static str,
    row: Option<usize>,
}

impl Display for ColumnArgument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.row {
            Some(row) => write!(f, "{}[{row}]", self.name),
            None => f.write_str(self.name),
        }
    }
}

/// Turns visited samples into `prometheus_client` `Sample` tuples.
struct SampleBuilder<'py> {
    py: Python<'py>,
    sample_type: Bound<'py, PyAny>,
    families: Bound<'py, PyList>,
    samples: Bound<'py, PyList>,
    /// Interned full sample names of the current family, by suffix.
    sample_names: Vec<(&'static str, Bound<'py, PyString>)>,
    label_names: Vec<Bound<'py, PyString>>,
    /// The label values of the series being visited, converted once for all its samples.
    last_labels: Option<(usize, Vec<Bound<'py, PyString>>)>,
    error: Option<PyErr>,
}

impl<'py> SampleBuilder<'py> {
    fn sample_name(&mut self, desc: &FamilyDesc, suffix: &'static str) -> Bound<'py, PyString> {
        if let Some((_, name)) = self.sample_names.iter().find(|(known, _)| *known == suffix) {
            return name.clone();
        }
        let name = PyString::new(self.py, &format!("{}{suffix}", desc.name));
        self.sample_names.push((suffix, name.clone()));
        name
    }

    fn build(
        &mut self,
        desc: &FamilyDesc,
        suffix: &'static str,
        le: Option<&'static str>,
        series: usize,
        labels: &[&str],
        value: f64,
    ) -> PyResult<()> {
        let name = self.sample_name(desc, suffix);
        let reuse = matches!(&self.last_labels, Some((known, _)) if *known == series);
        if !reuse {
            let values = labels.iter().map(|v| PyString::new(self.py, v)).collect();
            self.last_labels = Some((series, values));
        }
        let dict = PyDict::new(self.py);
        if let Some(le) = le {
            dict.set_item(intern!(self.py, "le"), le)?;
        }
        if let Some((_, values)) = &self.last_labels {
            for (key, value) in self.label_names.iter().zip(values) {
                dict.set_item(key, value)?;
            }
        }
        let sample = self.sample_type.call1((name, dict, value))?;
        self.samples.append(sample)
    }
}

impl SampleVisitor for SampleBuilder<'_> {
    fn family(&mut self, desc: &FamilyDesc) {
        self.samples = PyList::empty(self.py);
        self.sample_names.clear();
        self.last_labels = None;
        self.label_names = desc
            .label_names
            .iter()
            .map(|name| PyString::intern(self.py, name))
            .collect();
    }

    fn sample(
        &mut self,
        desc: &FamilyDesc,
        suffix: &'static str,
        le: Option<&'static str>,
        series: usize,
        labels: &[&str],
        value: f64,
    ) {
        if self.error.is_none() {
            if let Err(error) = self.build(desc, suffix, le, series, labels, value) {
                self.error = Some(error);
            }
        }
    }

    fn end_family(&mut self, desc: &FamilyDesc) {
        let family = (
            desc.name,
            desc.help,
            desc.kind.type_name(),
            self.samples.clone(),
        );
        if let Err(error) = self.families.append(family) {
            self.error.get_or_insert(error);
        }
    }
}

mod batch;
mod buffer_column;
mod fast_call;
mod identity_cache;

use identity_cache::IdentityCache;

/// The gateway-metrics native core.
#[pymodule]
fn _core(module: &Bound<'_, PyModule>) -> PyResult<()> {
    fork_guard::install();
    module.add_class::<PyMetricsStore>()?;
    module.add_function(wrap_pyfunction!(compact, module)?)?;
    module.add_function(wrap_pyfunction!(cleanup, module)?)?;
    fast_call::install_recording_methods(&module.py().get_type::<PyMetricsStore>())?;
    let families: Vec<(&str, &str, &str)> = FAMILIES
        .iter()
        .map(|desc| (desc.name, desc.help, desc.kind.type_name()))
        .collect();
    module.add("FAMILIES", families)?;
    module.add(
        "HISTOGRAM_BUCKETS",
        crate::histogram::LATENCY_BOUNDS.to_vec(),
    )?;
    Ok(())
}
