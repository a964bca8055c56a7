//! Validation and conversion of the recording methods' arguments: label
//! values, latencies, token counts and tool calls, each error naming its argument.

use std::fmt::Display;

use pyo3::exceptions::{PyAttributeError, PyOverflowError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString};
use smallvec::SmallVec;

use super::ffi::int::exact_u64;
use super::identity_cache::IdentityCache;
use crate::cells::exemplar::Exemplar;
use crate::schema::request::{error_type_named, ErrorType, RequestValues, ERROR_TYPES, OK_STATUS};
use crate::store::series::CounterSeries;

pub(super) fn type_name(value: &Bound<'_, PyAny>) -> String {
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
        return Ok(value.clone().cast_into::<PyString>()?);
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

/// The values of the extra labels from a call's `labels` mapping, in the
/// order of `names` (the schema's extra labels): a missing name is `""`, a
/// name the schema does not have is a `ValueError`.
pub(super) fn extra_label_values<'py>(
    mapping: &Bound<'py, PyAny>,
    names: &[String],
    empty: &Bound<'py, PyString>,
    row: Option<usize>,
) -> PyResult<SmallVec<[Bound<'py, PyString>; 4]>> {
    let argument = ColumnArgument {
        name: "labels",
        row,
    };
    let mapping = mapping.cast::<PyDict>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{argument} must be a dict of extra label values, not {}",
            type_name(mapping)
        ))
    })?;
    for key in mapping.keys() {
        let known = key
            .cast::<PyString>()
            .ok()
            .and_then(|key| {
                key.to_str()
                    .ok()
                    .map(|key| names.iter().any(|name| name == key))
            })
            .unwrap_or(false);
        if !known {
            return Err(PyValueError::new_err(format!(
                "{argument} names {key:?}, which is not among this middleware's extra labels ({})",
                names.join(", ")
            )));
        }
    }
    names
        .iter()
        .map(|name| match mapping.get_item(name)? {
            Some(value) if !value.is_none() => {
                label(&value, format!("{argument}['{name}']").as_str())
            }
            _ => Ok(empty.clone()),
        })
        .collect()
}

/// An exemplar's labels from a `dict` of `str` to `str`, checked as
/// [`Exemplar::check_labels`] says; `argument` names it in errors.
pub(super) fn exemplar_labels(
    value: &Bound<'_, PyAny>,
    argument: impl Display + Copy,
) -> PyResult<Vec<(String, String)>> {
    let mapping = value.cast::<PyDict>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{argument} must be a dict of label names to values, not {}",
            type_name(value)
        ))
    })?;
    let mut labels = Vec::with_capacity(mapping.len());
    // Over a copy of the items: a str subclass's __str__ may change the dict
    // while it is read, which iterating the dict itself turns into a panic.
    for pair in mapping.items().iter() {
        let (name, label_value) = pair.extract::<(Bound<'_, PyAny>, Bound<'_, PyAny>)>()?;
        let name = label(&name, format!("{argument} key").as_str())?;
        let text = label(&label_value, format!("{argument}[{name}]").as_str())?;
        labels.push((name.to_str()?.to_owned(), text.to_str()?.to_owned()));
    }
    Exemplar::check_labels(&labels)
        .map_err(|reason| PyValueError::new_err(format!("{argument}: {reason}")))?;
    Ok(labels)
}

/// A validated label object: its text as the exposition shows it.
pub(super) fn label<'py>(
    value: &Bound<'py, PyAny>,
    argument: impl Display + Copy,
) -> PyResult<Bound<'py, PyString>> {
    let text = label_object(value, argument)?;
    label_text(&text, argument)?;
    Ok(text)
}

/// A failed request's error type: None for None, else one of
/// [`ERROR_TYPES`], refused when the request's `status` is `"ok"` (a
/// request that did not fail has no error type).
pub(super) fn error_type(
    value: &Bound<'_, PyAny>,
    status: &Bound<'_, PyAny>,
    argument: impl Display + Copy,
) -> PyResult<Option<ErrorType>> {
    if value.is_none() {
        return Ok(None);
    }
    let text = label(value, argument)?;
    let name = text.to_str()?;
    let Some(error_type) = error_type_named(name) else {
        return Err(PyValueError::new_err(format!(
            "{argument} must be one of {}, not {:?}",
            ERROR_TYPES.join(", "),
            name.escape_debug().to_string()
        )));
    };
    if status
        .cast::<PyString>()
        .is_ok_and(|status| status.to_str().is_ok_and(|s| s == OK_STATUS))
    {
        return Err(PyValueError::new_err(format!(
            "{argument} is given for a request whose status is {OK_STATUS:?}: only a failed \
             request has an error type"
        )));
    }
    Ok(Some(error_type))
}

pub(super) fn latency_seconds(
    value: &Bound<'_, PyAny>,
    argument: impl Display + Copy,
) -> PyResult<f64> {
    let seconds = if let Ok(float) = value.cast_exact::<PyFloat>() {
        float.value()
    } else if value.is_instance_of::<PyString>()
        || value.is_instance_of::<PyBytes>()
        || value.is_instance_of::<PyBool>()
    {
        // A bool converts to 1.0, but latency_s=True is a caller's mistake.
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
pub(super) fn checked_latency(seconds: f64, argument: impl Display) -> PyResult<f64> {
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

/// Checks that each group of parts of a request's values fits its whole (the
/// cache parts of `input_tokens`, `time_to_first_token_s` in `latency_s`, ...,
/// as [`crate::schema::request::REQUEST_FIELDS`] says). `row` names a batch row in errors.
#[inline]
pub(super) fn checked_parts(values: &RequestValues, row: Option<usize>) -> PyResult<()> {
    values.check_parts().map_err(|error| {
        PyValueError::new_err(error.message(|name| ColumnArgument { name, row }.to_string()))
    })
}

/// A token count; `None` means the keyword was not passed (an explicit `None` is an error).
pub(super) fn token_count(value: Option<&Bound<'_, PyAny>>, argument: &str) -> PyResult<u64> {
    match value {
        Some(value) => token_value(value, argument),
        None => Ok(0),
    }
}

/// A token count given as a Python object: an `int` from 0 to 2**64-1.
pub(super) fn token_value(value: &Bound<'_, PyAny>, argument: impl Display) -> PyResult<u64> {
    if let Ok(int) = value.cast_exact::<PyInt>() {
        // An exact `int` needs no `__index__` call: read it directly.
        if let Some(count) = exact_u64(int) {
            return Ok(count);
        }
    } else if value.is_instance_of::<PyFloat>() || value.is_instance_of::<PyBool>() {
        // A bool is an int to Python, but True tokens is a caller's mistake.
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
pub(super) enum ToolName<'py, 's> {
    /// A missing, `None` or empty name.
    Unknown,
    /// An element that is no tool call this package can read (`None`, an
    /// object with no name anywhere): recorded as `"unknown"`, as the reference
    /// does, and reported once per middleware.
    Unreadable(Bound<'py, PyAny>),
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
pub(super) type ToolNames<'py, 's> = SmallVec<[ToolName<'py, 's>; 4]>;

/// The name objects of the tool calls (`None` standing for `"unknown"`), all validated.
///
/// `row` is set for a row of a batch, for error messages.
pub(super) fn tool_call_names<'py, 's>(
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
    if let Ok(list) = tool_calls.cast::<PyList>() {
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
        Err(error) if error.is_instance_of::<PyAttributeError>(py) => {
            if item.is_instance_of::<PyString>() {
                // A str is the tool's name, as tool_call_names() reads it.
                item.clone()
            } else {
                match nested_tool_name(item)? {
                    Some(name) => name,
                    None => return Ok(ToolName::Unreadable(item.clone())),
                }
            }
        }
        Err(error) => return Err(error),
    };
    if let Some(series) = cache.get(py, [&name]) {
        return Ok(ToolName::Cached(series));
    }
    if let Ok(text) = name.cast::<PyString>() {
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

/// The name of a tool call that has no `.name`: a dict's `"name"`, or the
/// `name` of its `function` (OpenAI Chat and LiteLLM tool calls) or `custom`
/// (OpenAI custom tools), as attributes or keys. Only calls without `.name`
/// come here, so the `.name` path costs nothing more.
#[cold]
#[inline(never)]
fn nested_tool_name<'py>(item: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = item.py();
    if let Ok(dict) = item.cast::<PyDict>() {
        // An object's `.name` was looked up already; a dict's key was not.
        if let Some(name) = dict.get_item(intern!(py, "name"))? {
            if !name.is_none() {
                return Ok(Some(name));
            }
        }
    }
    for holder in [intern!(py, "function"), intern!(py, "custom")] {
        if let Some(inner) = member(item, holder)? {
            if let Some(name) = member(&inner, intern!(py, "name"))? {
                return Ok(Some(name));
            }
        }
    }
    Ok(None)
}

/// `source[key]` of a dict, or `source.key`; None when absent or None.
fn member<'py>(
    source: &Bound<'py, PyAny>,
    key: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let found = if let Ok(dict) = source.cast::<PyDict>() {
        dict.get_item(key)?
    } else {
        match source.getattr(key) {
            Ok(value) => Some(value),
            Err(error) if error.is_instance_of::<PyAttributeError>(source.py()) => None,
            Err(error) => return Err(error),
        }
    };
    Ok(found.filter(|value| !value.is_none()))
}

/// An argument, or one row of a column argument, as named in error messages.
#[derive(Clone, Copy)]
pub(super) struct ColumnArgument {
    pub(super) name: &'static str,
    pub(super) row: Option<usize>,
}

impl Display for ColumnArgument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.row {
            Some(row) => write!(f, "{}[{row}]", self.name),
            None => f.write_str(self.name),
        }
    }
}
