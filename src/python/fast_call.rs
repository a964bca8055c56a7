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

use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use pyo3::exceptions::{PySystemError, PyTypeError};
use pyo3::ffi;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyString, PyType};

use super::PyMetricsStore;
use crate::store::CacheOutcome;

/// Keyword parameters in signature order; the first five are required.
const KEYWORDS: [&str; 8] = [
    "provider",
    "model",
    "operation",
    "status",
    "latency_s",
    "input_tokens",
    "output_tokens",
    "tool_calls",
];
const REQUIRED: usize = 5;

/// `__text_signature__` (for `inspect.signature`) followed by the docstring.
const RECORD_REQUEST_DOC: &CStr = c"record_request($self, /, *, provider, model, operation, status, latency_s, input_tokens=0, output_tokens=0, tool_calls=None)
--

Records one completed LLM request.

Adds 1 to ractogateway_requests_total, observes latency_s in
ractogateway_request_duration_seconds, adds positive token counts to
ractogateway_tokens_total, the priced cost to ractogateway_cost_usd_total and
1 per tool call (by its .name; \"unknown\" when missing or empty) to
ractogateway_tool_calls_total. Every argument is validated before anything is
recorded: a call that raises records nothing.";
const RECORD_CACHE_HIT_DOC: &CStr = c"record_cache_hit($self, /, cache_type)
--

Adds one to ractogateway_cache_hits_total{cache_type} (\"exact\" or \"semantic\").";
const RECORD_CACHE_MISS_DOC: &CStr = c"record_cache_miss($self, /, cache_type)
--

Adds one to ractogateway_cache_misses_total{cache_type} (\"exact\" or \"semantic\").";

static INTERNED_KEYWORDS: GILOnceCell<[Py<PyString>; 8]> = GILOnceCell::new();

fn interned_keywords(py: Python<'_>) -> &[Py<PyString>; 8] {
    INTERNED_KEYWORDS.get_or_init(py, || {
        KEYWORDS.map(|name| PyString::intern(py, name).unbind())
    })
}

/// Index of the parameter called `name`: by identity first, then by value.
fn keyword_index(py: Python<'_>, name: &Bound<'_, PyAny>) -> PyResult<usize> {
    let interned = interned_keywords(py);
    if let Some(index) = interned.iter().position(|k| k.as_ptr() == name.as_ptr()) {
        return Ok(index);
    }
    let text = name.downcast::<PyString>()?.to_cow()?;
    KEYWORDS
        .iter()
        .position(|keyword| *keyword == text)
        .ok_or_else(|| {
            PyTypeError::new_err(format!(
                "record_request() got an unexpected keyword argument '{text}'"
            ))
        })
}

/// Matches the vectorcall arguments to parameters and records the request.
///
/// # Safety
/// `args` holds `nargs` positional values followed by one value per name in
/// `kwnames` (a tuple or null), all borrowed for the duration of the call.
unsafe fn record_request_call(
    py: Python<'_>,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<()> {
    if nargs != 0 {
        return Err(PyTypeError::new_err(format!(
            "record_request() takes 0 positional arguments but {nargs} were given"
        )));
    }
    let mut slots: [Option<Bound<'_, PyAny>>; 8] = Default::default();
    if !kwnames.is_null() {
        let count = ffi::PyTuple_GET_SIZE(kwnames);
        for position in 0..count {
            let name = Bound::from_borrowed_ptr(py, ffi::PyTuple_GET_ITEM(kwnames, position));
            let index = keyword_index(py, &name)?;
            if slots[index].is_some() {
                return Err(PyTypeError::new_err(format!(
                    "record_request() got multiple values for argument '{}'",
                    KEYWORDS[index]
                )));
            }
            slots[index] = Some(Bound::from_borrowed_ptr(py, *args.offset(position)));
        }
    }
    let [Some(provider), Some(model), Some(operation), Some(status), Some(latency_s), input_tokens, output_tokens, tool_calls] =
        &slots
    else {
        let missing: Vec<&str> = (0..REQUIRED)
            .filter(|&index| slots[index].is_none())
            .map(|index| KEYWORDS[index])
            .collect();
        return Err(PyTypeError::new_err(format!(
            "record_request() missing required keyword argument(s): '{}'",
            missing.join("', '")
        )));
    };
    let store = Bound::from_borrowed_ptr(py, slf);
    store.downcast::<PyMetricsStore>()?.get().record_request(
        provider,
        model,
        operation,
        status,
        latency_s,
        input_tokens.as_ref(),
        output_tokens.as_ref(),
        tool_calls.as_ref(),
    )
}

/// Runs `call` for a C entry point: `None` on success, else the error (or the
/// panic, as `PanicException`) raised in Python and a null return.
fn trampoline(call: impl FnOnce(Python<'_>) -> PyResult<()>) -> *mut ffi::PyObject {
    // SAFETY: CPython calls methods with the GIL held.
    let py = unsafe { Python::assume_gil_acquired() };
    let error = match catch_unwind(AssertUnwindSafe(|| call(py))) {
        // SAFETY: `Py_None` is immortal in spirit; returning a new reference to it.
        Ok(Ok(())) => return unsafe { ffi::Py_NewRef(ffi::Py_None()) },
        Ok(Err(error)) => error,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|text| text.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic in gateway_metrics".to_owned());
            PanicException::new_err(message)
        }
    };
    error.restore(py);
    ptr::null_mut()
}

unsafe extern "C" fn record_request_fastcall(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    trampoline(|py| record_request_call(py, slf, args, nargs, kwnames))
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
        ffi::PyTuple_GET_SIZE(kwnames)
    };
    if nargs + keywords != 1 {
        return Err(PyTypeError::new_err(format!(
            "{method}() takes exactly one argument (cache_type), {} given",
            nargs + keywords
        )));
    }
    if keywords == 1 {
        let name = Bound::from_borrowed_ptr(py, ffi::PyTuple_GET_ITEM(kwnames, 0));
        if name.downcast::<PyString>()?.to_cow()? != "cache_type" {
            return Err(PyTypeError::new_err(format!(
                "{method}() got an unexpected keyword argument '{name}'"
            )));
        }
    }
    Ok(Bound::from_borrowed_ptr(py, *args))
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
        let cache_type = cache_type_argument(py, method, args, nargs, kwnames)?;
        let store = Bound::from_borrowed_ptr(py, slf);
        store
            .downcast::<PyMetricsStore>()?
            .get()
            .record_cache(outcome, &cache_type)
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
        ml_doc: doc.as_ptr() as *const c_char,
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
    class.setattr(name.to_str()?, descriptor)
}

/// Adds `record_request`, `record_cache_hit` and `record_cache_miss` to the class.
pub(super) fn install_recording_methods(class: &Bound<'_, PyType>) -> PyResult<()> {
    install(
        class,
        c"record_request",
        ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: record_request_fastcall,
        },
        ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        RECORD_REQUEST_DOC,
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
