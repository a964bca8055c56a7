//! The keyword arguments of `record_request` and `record_batch`, matched to
//! the core's request table.
//!
//! Call sites pass keyword names as interned `str` objects, so each name is
//! first matched by pointer against our own interned copies of the table's
//! names, with a string comparison only as the fallback.

use pyo3::exceptions::{PySystemError, PyTypeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyString;
use pyo3::Borrowed;

use super::ffi::fastcall::FastcallArgs;
use crate::schema::request::{
    ERROR_TYPE_FIELD, EXEMPLAR_FIELD, EXTRA_LABELS_FIELD, FIELD_COUNT, LABEL_FIELDS, LATENCY_FIELD,
    REFERENCE_TOKEN_TYPES, REQUEST_FIELDS, SECONDS_FIELDS, SECONDS_POSITIONS, TOKEN_FIELDS,
    TOKEN_TYPE_COUNT, TOOL_CALLS_FIELD,
};

/// One bit per required field, by position in [`REQUEST_FIELDS`].
const REQUIRED_MASK: u32 = {
    let mut mask = 0;
    let mut index = 0;
    while index < FIELD_COUNT {
        if REQUEST_FIELDS[index].default.is_none() {
            mask |= 1 << index;
        }
        index += 1;
    }
    mask
};

/// The arguments of one call, by position in [`REQUEST_FIELDS`], borrowed from
/// the caller's argument array for the duration of the call.
pub(super) type FieldValues<'a, 'py> = [Option<Borrowed<'a, 'py, PyAny>>; FIELD_COUNT];

static INTERNED_KEYWORDS: PyOnceLock<[Py<PyString>; FIELD_COUNT]> = PyOnceLock::new();

fn interned_keywords(py: Python<'_>) -> &[Py<PyString>; FIELD_COUNT] {
    INTERNED_KEYWORDS.get_or_init(py, || {
        REQUEST_FIELDS.map(|field| PyString::intern(py, field.name).unbind())
    })
}

/// Index of the field called `name`: by identity with the `interned` names
/// first, then by value.
#[inline]
fn keyword_index(
    interned: &[Py<PyString>; FIELD_COUNT],
    method: &str,
    name: Borrowed<'_, '_, PyAny>,
) -> PyResult<usize> {
    if let Some(index) = interned.iter().position(|k| k.as_ptr() == name.as_ptr()) {
        return Ok(index);
    }
    let string = name.cast::<PyString>()?;
    let text = string.to_cow()?;
    REQUEST_FIELDS
        .iter()
        .position(|field| field.name == text)
        .ok_or_else(|| {
            PyTypeError::new_err(format!(
                "{method}() got an unexpected keyword argument '{text}'"
            ))
        })
}

/// Matches the arguments of a call to `method` with [`REQUEST_FIELDS`],
/// every required one present; also returns a bit per field given.
pub(super) fn request_fields<'a, 'py>(
    method: &str,
    arguments: &FastcallArgs<'a, 'py>,
) -> PyResult<(FieldValues<'a, 'py>, u32)> {
    let positional = arguments.positional_count();
    if positional != 0 {
        return Err(PyTypeError::new_err(format!(
            "{method}() takes 0 positional arguments but {positional} were given"
        )));
    }
    let mut values: FieldValues<'a, 'py> = [None; FIELD_COUNT];
    let mut given = 0_u32;
    let interned = interned_keywords(arguments.py());
    // Callers mostly pass keywords in the signature's order: the field after
    // the last one matched is tried before the table is searched.
    let mut expected = 0;
    for position in 0..arguments.keyword_count() {
        let (name, value) = arguments.keyword(position);
        let index = match interned.get(expected) {
            Some(next) if next.as_ptr() == name.as_ptr() => expected,
            _ => keyword_index(interned, method, name)?,
        };
        expected = index + 1;
        if given & (1 << index) != 0 {
            return Err(PyTypeError::new_err(format!(
                "{method}() got multiple values for argument '{}'",
                REQUEST_FIELDS[index].name
            )));
        }
        values[index] = Some(value);
        given |= 1 << index;
    }
    if given & REQUIRED_MASK != REQUIRED_MASK {
        let missing: Vec<&str> = REQUEST_FIELDS
            .iter()
            .zip(&values)
            .filter(|(field, value)| field.default.is_none() && value.is_none())
            .map(|(field, _)| field.name)
            .collect();
        return Err(PyTypeError::new_err(format!(
            "{method}() missing required keyword argument(s): '{}'",
            missing.join("', '")
        )));
    }
    Ok((values, given))
}

/// The arguments of `record_request` or `record_batch`, by what they feed,
/// bound through the positions [`REQUEST_FIELDS`] gives each.
pub(super) struct RequestArguments<'a, 'py> {
    fields: &'a FieldValues<'a, 'py>,
    /// provider, model, operation, status.
    pub(super) labels: [&'a Bound<'py, PyAny>; 4],
    pub(super) latency_s: &'a Bound<'py, PyAny>,
    /// Whether a value beyond the reference's was passed: a token type past
    /// the reference's two, an optional duration, or an error type.
    pub(super) more: bool,
}

/// One bit per field, by position in [`REQUEST_FIELDS`], for the values beyond
/// the reference's: token types past its two, the optional durations and the
/// error type.
const MORE_MASK: u32 = {
    let mut mask = 1 << ERROR_TYPE_FIELD;
    let mut token_type = REFERENCE_TOKEN_TYPES;
    while token_type < TOKEN_TYPE_COUNT {
        mask |= 1 << TOKEN_FIELDS[token_type];
        token_type += 1;
    }
    let mut field = 0;
    while field < SECONDS_FIELDS {
        mask |= 1 << SECONDS_POSITIONS[field];
        field += 1;
    }
    mask
};

impl<'a, 'py> RequestArguments<'a, 'py> {
    /// Names the values [`request_fields`] matched, every required one present.
    pub(super) fn from_fields(fields: &'a FieldValues<'a, 'py>, given: u32) -> PyResult<Self> {
        let at = |position: usize| fields[position].as_deref();
        let required = |position: usize| {
            at(position).ok_or_else(|| {
                PySystemError::new_err("the request field table and the method disagree")
            })
        };
        Ok(RequestArguments {
            labels: [
                required(LABEL_FIELDS[0])?,
                required(LABEL_FIELDS[1])?,
                required(LABEL_FIELDS[2])?,
                required(LABEL_FIELDS[3])?,
            ],
            latency_s: required(LATENCY_FIELD)?,
            more: given & MORE_MASK != 0,
            fields,
        })
    }

    /// The count of token type `token_type` (see
    /// [`crate::schema::request::TOKEN_TYPES`]), if passed.
    #[inline]
    pub(super) fn tokens(&self, token_type: usize) -> Option<&'a Bound<'py, PyAny>> {
        self.fields[TOKEN_FIELDS[token_type]].as_deref()
    }

    /// The `tool_calls` argument, if passed.
    #[inline]
    pub(super) fn tool_calls(&self) -> Option<&'a Bound<'py, PyAny>> {
        self.fields[TOOL_CALLS_FIELD].as_deref()
    }

    /// The `labels` mapping of extra label values, if passed.
    #[inline]
    pub(super) fn extra_labels(&self) -> Option<&'a Bound<'py, PyAny>> {
        self.fields[EXTRA_LABELS_FIELD].as_deref()
    }

    /// The `exemplar` mapping of labels, if passed.
    #[inline]
    pub(super) fn exemplar(&self) -> Option<&'a Bound<'py, PyAny>> {
        self.fields[EXEMPLAR_FIELD].as_deref()
    }

    /// The `error_type` argument, if passed.
    #[inline]
    pub(super) fn error_type(&self) -> Option<&'a Bound<'py, PyAny>> {
        self.fields[ERROR_TYPE_FIELD].as_deref()
    }

    /// The optional duration `field` (a [`crate::schema::request::SecondsField`]), if passed.
    #[inline]
    pub(super) fn seconds(&self, field: usize) -> Option<&'a Bound<'py, PyAny>> {
        self.fields[SECONDS_POSITIONS[field]].as_deref()
    }
}
