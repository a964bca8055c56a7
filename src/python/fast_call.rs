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
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use pyo3::exceptions::{PySystemError, PyTypeError};
use pyo3::ffi;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyType};
use pyo3::Borrowed;

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
    let text = format!("{method}($self, /, *, {})\n--\n\n{doc}", fields.join(", "));
    let text = std::ffi::CString::new(text)
        .map_err(|_| PySystemError::new_err("a docstring contains NUL"))?;
    // Method definitions keep their docstring for the life of the process.
    Ok(Box::leak(text.into_boxed_c_str()))
}

const RECORD_CACHE_HIT_DOC: &CStr = c"record_cache_hit($self, /, cache_type)
--

Adds one to ractogateway_cache_hits_total{cache_type} (\"exact\" or \"semantic\").";
const RECORD_CACHE_MISS_DOC: &CStr = c"record_cache_miss($self, /, cache_type)
--

Adds one to ractogateway_cache_misses_total{cache_type} (\"exact\" or \"semantic\").";

/// Runs `call` on the store a recording method was called on, without a type check.
///
/// # Safety
/// `slf` must be the receiver CPython passes to a method installed by
/// [`install_recording_methods`], borrowed for the call. Those methods are
/// method descriptors of `PyMetricsStore`'s type, and CPython's descriptor call
/// checks that the receiver is an instance of that type (or a subclass) before
/// calling, so `slf` is a live `PyMetricsStore`.
unsafe fn with_receiver<R>(
    py: Python<'_>,
    slf: *mut ffi::PyObject,
    call: impl FnOnce(&PyMetricsStore) -> R,
) -> R {
    // SAFETY: `slf` is alive for the call (the caller's contract).
    let object = unsafe { Borrowed::from_ptr(py, slf) };
    // SAFETY: `slf` is an instance of `PyMetricsStore` (the caller's contract).
    let store = unsafe { object.cast_unchecked::<PyMetricsStore>() };
    call(store.get())
}

/// Records one request from its vectorcall arguments.
///
/// # Safety
/// As for [`request_fields`].
unsafe fn record_request_call(
    py: Python<'_>,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<()> {
    // SAFETY: the caller passes the vectorcall arguments as `request_fields` requires.
    let (fields, given) = unsafe { request_fields(py, "record_request", args, nargs, kwnames) }?;
    let arguments = RequestArguments::from_fields(&fields, given)?;
    // SAFETY: `slf` is the receiver of the installed `record_request` method.
    unsafe { with_receiver(py, slf, |store| store.record_request(&arguments)) }
}

/// Records the rows of a batch from its vectorcall arguments; returns the row count.
///
/// # Safety
/// As for [`request_fields`].
unsafe fn record_batch_call(
    py: Python<'_>,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<usize> {
    // SAFETY: the caller passes the vectorcall arguments as `request_fields` requires.
    let (fields, given) = unsafe { request_fields(py, "record_batch", args, nargs, kwnames) }?;
    let arguments = RequestArguments::from_fields(&fields, given)?;
    // SAFETY: `slf` is the receiver of the installed `record_batch` method.
    unsafe { with_receiver(py, slf, |store| store.record_columns(&arguments)) }
}

/// Runs `call` for a C entry point: its result on success, else the error (or
/// the panic, as `PanicException`) raised in Python and a null return.
fn trampoline(call: impl FnOnce(Python<'_>) -> PyResult<*mut ffi::PyObject>) -> *mut ffi::PyObject {
    // SAFETY: CPython calls methods with the GIL held.
    let py = unsafe { Python::assume_attached() };
    let error = match catch_unwind(AssertUnwindSafe(|| call(py))) {
        Ok(Ok(result)) => return result,
        Ok(Err(error)) => error,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(ToString::to_string)
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic in gateway_metrics".to_owned());
            PanicException::new_err(message)
        }
    };
    error.restore(py);
    ptr::null_mut()
}

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
    trampoline(|py| {
        // SAFETY: CPython calls a METH_FASTCALL | METH_KEYWORDS method with its
        // receiver and vectorcall arguments, borrowed for the call.
        unsafe { record_request_call(py, slf, args, nargs, kwnames) }.map(|()| none(py))
    })
}

unsafe extern "C" fn record_batch_fastcall(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    trampoline(|py| {
        // SAFETY: CPython calls a METH_FASTCALL | METH_KEYWORDS method with its
        // receiver and vectorcall arguments, borrowed for the call.
        let rows = unsafe { record_batch_call(py, slf, args, nargs, kwnames) }?;
        Ok(rows.into_pyobject(py)?.into_ptr())
    })
}

/// The `cache_type` argument of a cache method, given by position or keyword.
///
/// # Safety
/// As for [`record_request_call`].
unsafe fn cache_type_argument<'py>(
    py: Python<'py>,
    method: &str,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<Bound<'py, PyAny>> {
    let keywords = if kwnames.is_null() {
        0
    } else {
        // SAFETY: a non-null `kwnames` is a tuple (the caller's contract).
        unsafe { ffi::PyTuple_GET_SIZE(kwnames) }
    };
    if nargs + keywords != 1 {
        return Err(PyTypeError::new_err(format!(
            "{method}() takes exactly one argument (cache_type), {} given",
            nargs + keywords
        )));
    }
    if keywords == 1 {
        // SAFETY: the tuple has one item, kept alive by the tuple for the call.
        let name = unsafe { Bound::from_borrowed_ptr(py, ffi::PyTuple_GET_ITEM(kwnames, 0)) };
        if name.cast::<PyString>()?.to_cow()? != "cache_type" {
            return Err(PyTypeError::new_err(format!(
                "{method}() got an unexpected keyword argument '{name}'"
            )));
        }
    }
    // SAFETY: exactly one argument was given, so `args[0]` is it, alive for the call.
    Ok(unsafe { Bound::from_borrowed_ptr(py, *args) })
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
    trampoline(|py| {
        // SAFETY: CPython calls a METH_FASTCALL | METH_KEYWORDS method with its
        // receiver and vectorcall arguments, borrowed for the call.
        let cache_type = unsafe { cache_type_argument(py, method, args, nargs, kwnames) }?;
        // SAFETY: `slf` is the receiver of the installed cache method.
        unsafe { with_receiver(py, slf, |store| store.record_cache(outcome, &cache_type)) }
            .map(|()| none(py))
    })
}

/// Adds one raw method to the class as a method descriptor.
fn install(
    class: &Bound<'_, PyType>,
    name: &'static CStr,
    method: ffi::PyMethodDefPointer,
    flags: std::os::raw::c_int,
    doc: &'static CStr,
) -> PyResult<()> {
    let definition = Box::leak(Box::new(ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: method,
        ml_flags: flags,
        ml_doc: doc.as_ptr(),
    }));
    let py = class.py();
    // SAFETY: the definition is leaked, so it outlives the descriptor.
    let descriptor = unsafe {
        let raw = ffi::PyDescr_NewMethod(class.as_type_ptr(), definition);
        if raw.is_null() {
            return Err(PyErr::take(py)
                .unwrap_or_else(|| PySystemError::new_err("PyDescr_NewMethod failed")));
        }
        Bound::from_owned_ptr(py, raw)
    };
    let name = name
        .to_str()
        .map_err(|_| PySystemError::new_err("a method name is not UTF-8"))?;
    class.setattr(name, descriptor)
}

/// Adds `record_request`, `record_batch`, `record_cache_hit` and
/// `record_cache_miss` to the class.
pub(super) fn install_recording_methods(class: &Bound<'_, PyType>) -> PyResult<()> {
    install(
        class,
        c"record_request",
        ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: record_request_fastcall,
        },
        ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        request_method_doc("record_request", RECORD_REQUEST_DOC)?,
    )?;
    install(
        class,
        c"record_batch",
        ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: record_batch_fastcall,
        },
        ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        request_method_doc("record_batch", RECORD_BATCH_DOC)?,
    )?;
    install(
        class,
        c"record_cache_hit",
        ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: record_cache_fastcall::<true>,
        },
        ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        RECORD_CACHE_HIT_DOC,
    )?;
    install(
        class,
        c"record_cache_miss",
        ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: record_cache_fastcall::<false>,
        },
        ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        RECORD_CACHE_MISS_DOC,
    )
}
