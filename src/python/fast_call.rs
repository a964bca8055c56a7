//! The recording methods as raw CPython methods, installed on the class.
//!
//! Profiling showed PyO3's generic argument parser to be the largest single
//! cost of a call: it decodes each keyword name to UTF-8 and compares it with
//! every parameter name. `record_request` is a `METH_FASTCALL | METH_KEYWORDS`
//! method instead: call sites pass keyword names as interned `str` objects, so
//! each name is first matched by pointer against our own interned copies, with
//! a string comparison only as the fallback. `record_cache_hit` and
//! `record_cache_miss` use the same convention, which reads their one argument
//! (positional, or the `cache_type` keyword) without building a tuple.
//! Everything after argument matching is the shared validation and recording
//! code of [`PyMetricsStore`].

use std::ffi::CStr;

use pyo3::exceptions::{PySystemError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyType};
use pyo3::Borrowed;

use super::column_source::record_table;
use super::ffi::fastcall::{call_method, install, FastcallArgs};
use super::metrics_store::PyMetricsStore;
use super::request_arguments::{request_fields, RequestArguments};
use crate::schema::request::REQUEST_FIELDS;
use crate::store::CacheOutcome;

const RECORD_REQUEST_DOC: &str = "Records one completed LLM request.

Adds 1 to ractogateway_requests_total, observes latency_s in
ractogateway_request_duration_seconds, adds positive token counts to
ractogateway_tokens_total, the priced cost to ractogateway_cost_usd_total and
1 per tool call (by its .name; \"unknown\" when missing or empty) to
ractogateway_tool_calls_total. Every argument is validated before anything is
recorded: a call that raises records nothing.";
const RECORD_BATCH_DOC: &str = "Records many requests given as columns; returns the row count.

Each argument is a scalar for every row, or a column with one value per row.
Every row is validated before any is recorded.";

/// `__text_signature__` (for `inspect.signature`) and docstring of a request method.
fn request_method_doc(method: &str, doc: &str) -> PyResult<&'static CStr> {
    let fields: Vec<String> = REQUEST_FIELDS
        .iter()
        .map(|field| match field.default {
            Some(default) => format!("{}={default}", field.name),
            None => field.name.to_owned(),
        })
        .collect();
    // `record_batch` also takes a table by position, its columns mapped by `columns`.
    let text = if method == "record_batch" {
        format!(
            "{method}($self, table=None, /, *, {}, columns=None)\n--\n\n{doc}",
            fields.join(", ")
        )
    } else {
        format!("{method}($self, /, *, {})\n--\n\n{doc}", fields.join(", "))
    };
    let text = std::ffi::CString::new(text)
        .map_err(|_| PySystemError::new_err("a docstring contains NUL"))?;
    // Method definitions keep their docstring for the life of the process.
    Ok(Box::leak(text.into_boxed_c_str()))
}

const RECORD_CACHE_HIT_DOC: &CStr = c"record_cache_hit($self, /, cache_type, *, provider=None, model=None, input_tokens=0, output_tokens=0)
--

Adds one to ractogateway_cache_hits_total{cache_type} (\"exact\" or \"semantic\").

With provider and model, the hit avoided a call of that model: its input and
output tokens are added to ractogateway_cache_saved_tokens_total and their
cost, priced as a request of that model would be, to
ractogateway_cache_saved_usd_total.";
const RECORD_CACHE_MISS_DOC: &CStr = c"record_cache_miss($self, /, cache_type)
--

Adds one to ractogateway_cache_misses_total{cache_type} (\"exact\" or \"semantic\").";

/// A new reference to `None`, what the recording methods return.
fn none(py: Python<'_>) -> *mut ffi::PyObject {
    py.None().into_ptr()
}

unsafe extern "C" fn record_request_fastcall(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls this entry point, installed on the class below,
    // with its receiver and arguments.
    unsafe {
        call_method(
            slf,
            args,
            nargs,
            kwnames,
            |store: &PyMetricsStore, arguments| {
                let (fields, given) = request_fields("record_request", arguments)?;
                store.record_request(&RequestArguments::from_fields(&fields, given)?)?;
                Ok(none(arguments.py()))
            },
        )
    }
}

unsafe extern "C" fn record_batch_fastcall(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls this entry point, installed on the class below,
    // with its receiver and arguments.
    unsafe {
        call_method(
            slf,
            args,
            nargs,
            kwnames,
            |store: &PyMetricsStore, arguments| {
                if arguments.positional_count() > 0 {
                    // A table: its columns are found in Python, which calls back
                    // with them as keywords.
                    // The receiver CPython passed, alive for the call (this
                    // closure runs inside the entry point's unsafe block).
                    let receiver = Borrowed::from_ptr(arguments.py(), slf);
                    return Ok(record_table(&receiver, arguments)?.into_ptr());
                }
                let (fields, given) = request_fields("record_batch", arguments)?;
                let rows = store.record_columns(&RequestArguments::from_fields(&fields, given)?)?;
                Ok(rows.into_pyobject(arguments.py())?.into_ptr())
            },
        )
    }
}

/// The `cache_type` argument of a cache method called with one argument,
/// given by position or keyword.
fn cache_type_argument<'a, 'py>(
    method: &str,
    arguments: &FastcallArgs<'a, 'py>,
) -> PyResult<Borrowed<'a, 'py, PyAny>> {
    if arguments.keyword_count() == 0 {
        return Ok(arguments.positional(0));
    }
    let (name, value) = arguments.keyword(0);
    let name = name.cast::<PyString>()?;
    let name = name.to_cow()?;
    if name != "cache_type" {
        return Err(PyTypeError::new_err(format!(
            "{method}() got an unexpected keyword argument '{name}'"
        )));
    }
    Ok(value)
}

/// The keywords of `record_cache_hit` besides `cache_type`: what the hit saved.
const SAVING_KEYWORDS: [&str; 4] = ["provider", "model", "input_tokens", "output_tokens"];

/// `record_cache_hit`'s cache type, and the provider, model, input and output
/// tokens of its saving (each absent: None).
type CacheHitArguments<'a, 'py> = (
    Borrowed<'a, 'py, PyAny>,
    [Option<Borrowed<'a, 'py, PyAny>>; 4],
);

/// `record_cache_hit`'s arguments past the fast path's one: the cache type
/// and the saving's provider, model, input and output tokens (absent: None).
fn cache_hit_arguments<'a, 'py>(
    arguments: &FastcallArgs<'a, 'py>,
) -> PyResult<CacheHitArguments<'a, 'py>> {
    let method = "record_cache_hit";
    if arguments.positional_count() > 1 {
        return Err(PyTypeError::new_err(format!(
            "{method}() takes 1 positional argument (cache_type), {} given",
            arguments.positional_count()
        )));
    }
    let mut cache_type = (arguments.positional_count() == 1).then(|| arguments.positional(0));
    let mut saving = [None; 4];
    for index in 0..arguments.keyword_count() {
        let (name, value) = arguments.keyword(index);
        let name = name.cast::<PyString>()?;
        let name = name.to_cow()?;
        let slot = if name == "cache_type" {
            if cache_type.is_some() {
                return Err(PyTypeError::new_err(format!(
                    "{method}() got multiple values for argument 'cache_type'"
                )));
            }
            &mut cache_type
        } else {
            match SAVING_KEYWORDS.iter().position(|known| *known == name) {
                Some(at) => &mut saving[at],
                None => {
                    return Err(PyTypeError::new_err(format!(
                        "{method}() got an unexpected keyword argument '{name}'"
                    )))
                }
            }
        };
        *slot = Some(value);
    }
    let cache_type = cache_type.ok_or_else(|| {
        PyTypeError::new_err(format!(
            "{method}() missing 1 required argument: 'cache_type'"
        ))
    })?;
    Ok((cache_type, saving))
}

/// `record_cache_hit` with what the hit saved: apart from the reference's
/// one-argument call, whose path it leaves as it was.
#[cold]
#[inline(never)]
fn record_cache_hit_saving(
    store: &PyMetricsStore,
    arguments: &FastcallArgs<'_, '_>,
) -> PyResult<()> {
    let (cache_type, saving) = cache_hit_arguments(arguments)?;
    store.record_cache_hit_saving(
        &cache_type,
        saving.map(|given| {
            given
                .map(Borrowed::to_owned)
                .filter(|value| !value.is_none())
        }),
    )
}

/// `record_cache_hit` (`HIT`) or `record_cache_miss`.
unsafe extern "C" fn record_cache_fastcall<const HIT: bool>(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let (method, outcome) = if HIT {
        ("record_cache_hit", CacheOutcome::Hit)
    } else {
        ("record_cache_miss", CacheOutcome::Miss)
    };
    // SAFETY: CPython calls this entry point, installed on the class below,
    // with its receiver and arguments.
    unsafe {
        call_method(
            slf,
            args,
            nargs,
            kwnames,
            |store: &PyMetricsStore, arguments| {
                // One argument is the reference's call, `record_cache_hit("exact")`.
                let given = arguments.positional_count() + arguments.keyword_count();
                if given == 1 {
                    let cache_type = cache_type_argument(method, arguments)?;
                    store.record_cache(outcome, &cache_type)?;
                } else if HIT {
                    record_cache_hit_saving(store, arguments)?;
                } else {
                    return Err(PyTypeError::new_err(format!(
                        "{method}() takes exactly one argument (cache_type), {given} given"
                    )));
                }
                Ok(none(arguments.py()))
            },
        )
    }
}

/// Adds `record_request`, `record_batch`, `record_cache_hit` and
/// `record_cache_miss` to the class.
pub(super) fn install_recording_methods(class: &Bound<'_, PyType>) -> PyResult<()> {
    install(
        class,
        c"record_request",
        record_request_fastcall,
        request_method_doc("record_request", RECORD_REQUEST_DOC)?,
    )?;
    install(
        class,
        c"record_batch",
        record_batch_fastcall,
        request_method_doc("record_batch", RECORD_BATCH_DOC)?,
    )?;
    install(
        class,
        c"record_cache_hit",
        record_cache_fastcall::<true>,
        RECORD_CACHE_HIT_DOC,
    )?;
    install(
        class,
        c"record_cache_miss",
        record_cache_fastcall::<false>,
        RECORD_CACHE_MISS_DOC,
    )
}
