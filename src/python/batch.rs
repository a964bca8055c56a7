//! `record_batch`: many requests in one call, given as columns.
//!
//! Each argument is a scalar that applies to every row, or a column of `n`
//! values: a list or tuple, for the numeric arguments any 1-dimensional
//! object with the buffer protocol (a numpy array, an `array.array`), and
//! Arrow, pandas and numpy text columns ([`super::column_source`]). Every row
//! is validated before any is recorded; rows then go through a [`Batch`], which
//! adds each label set's totals once.
//!
//! [`Batch`]: crate::store::batch::Batch

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::Hash;

use foldhash::fast::RandomState;
use pyo3::exceptions::{PySystemError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use smallvec::SmallVec;

use super::arguments::{
    checked_latency, checked_parts, error_type, exemplar_labels, latency_seconds, token_value,
    tool_call_names, type_name, ColumnArgument, ToolNames,
};
use super::buffer_column::buffer_column;
use super::column_source::{arrow_error, given, Given};
use super::label_resolver::Resolved;
use super::metrics_store::PyMetricsStore;
use super::request_arguments::RequestArguments;
use crate::formats::arrow::array::ArrayView;
use crate::formats::arrow::labels::{LabelCodes, NULL_CODE};
use crate::formats::columns::Number;
use crate::schema::request::{
    ErrorType, RequestValues, ERROR_TYPE_FIELD, EXEMPLAR_FIELD, EXTRA_LABELS_FIELD, LABEL_FIELDS,
    LATENCY_FIELD, REFERENCE_TOKEN_TYPES, REQUEST_FIELDS, SECONDS_POSITIONS, TOKEN_FIELDS,
    TOOL_CALLS_FIELD,
};
use crate::store::batch::{Batch, Column, Columns};
use crate::store::series::unix_now;

/// Up to this many distinct label combinations, a batch finds a row's combination
/// by scanning them; past it, by hashing.
const RECENT_COMBINATIONS: usize = 8;

/// A list or tuple column, or `None` for a scalar argument.
fn sequence_items<'py>(value: &Bound<'py, PyAny>) -> Option<Vec<Bound<'py, PyAny>>> {
    if let Ok(list) = value.cast::<PyList>() {
        Some(list.iter().collect())
    } else if let Ok(tuple) = value.cast::<PyTuple>() {
        Some(tuple.iter().collect())
    } else {
        None
    }
}

/// What a column argument may be, for errors about one that is none of these.
const COLUMN_FORMS: &str =
    "a list, a tuple, a numpy array, a pandas Series or an Arrow array (pyarrow, Polars)";

/// A label argument: one object for every row, or one per row (directly, or
/// as codes of distinct values).
enum LabelArgument<'py> {
    Scalar(Bound<'py, PyAny>),
    Column(Vec<Bound<'py, PyAny>>),
    /// Each row's index into the distinct values (none is null).
    Coded(Vec<Bound<'py, PyAny>>, Vec<u32>),
}

impl<'py> LabelArgument<'py> {
    fn new(value: &Bound<'py, PyAny>, name: &str) -> PyResult<Self> {
        if value.is_instance_of::<PyString>() {
            return Ok(LabelArgument::Scalar(value.clone()));
        }
        match given(value, name, true)? {
            Given::Items(items) => Ok(LabelArgument::Column(items)),
            coded @ (Given::Arrow(_) | Given::Coded(..)) => {
                let (values, codes) = coded_labels(value.py(), &coded, name)?;
                if let Some(row) = codes.iter().position(|code| *code == NULL_CODE) {
                    return Err(PyValueError::new_err(format!(
                        "{name}[{row}] is null: every request has a {name}"
                    )));
                }
                Ok(LabelArgument::Coded(values, codes))
            }
            _ => Err(PyTypeError::new_err(format!(
                "{name} must be str or a column of str ({COLUMN_FORMS}), not {}",
                type_name(value)
            ))),
        }
    }

    fn rows(&self) -> Option<usize> {
        match self {
            LabelArgument::Scalar(_) => None,
            LabelArgument::Column(items) => Some(items.len()),
            LabelArgument::Coded(_, codes) => Some(codes.len()),
        }
    }

    #[inline]
    fn at(&self, row: usize) -> &Bound<'py, PyAny> {
        match self {
            LabelArgument::Scalar(value) => value,
            LabelArgument::Column(items) => &items[row],
            LabelArgument::Coded(values, codes) => &values[codes[row] as usize],
        }
    }

    fn is_column(&self) -> bool {
        !matches!(self, LabelArgument::Scalar(_))
    }
}

/// A text column given as Arrow data or as codes into categories: its
/// distinct values (each made a `str` once) and each row's code, [`NULL_CODE`]
/// where null.
fn coded_labels<'py>(
    py: Python<'py>,
    coded: &Given<'py>,
    name: &str,
) -> PyResult<(Vec<Bound<'py, PyAny>>, Vec<u32>)> {
    match coded {
        Given::Arrow(data) => {
            let chunks = data.chunks(name)?;
            let mut codes = LabelCodes::default();
            let mut first = 0;
            for chunk in &chunks {
                codes
                    .add(chunk, first)
                    .map_err(|error| arrow_error(name, &error, "; labels must be text"))?;
                first += chunk.len();
            }
            let values = codes
                .distinct
                .iter()
                .enumerate()
                .map(|(code, text)| {
                    std::str::from_utf8(text)
                        .map(|text| PyString::new(py, text).into_any())
                        .map_err(|_| {
                            // An unused dictionary entry is not checked by its row.
                            let row = codes.first_row(code as u32).map_or_else(
                                || "(an unused dictionary entry)".to_owned(),
                                |row| format!("[{row}]"),
                            );
                            PyValueError::new_err(format!("{name}{row} is not valid UTF-8"))
                        })
                })
                .collect::<PyResult<_>>()?;
            Ok((values, codes.codes))
        }
        Given::Coded(codes, categories) => {
            let count = categories.len() as u64;
            let codes = buffer_column(
                codes,
                name,
                |number| match number {
                    Number::Signed(-1) => Some(NULL_CODE),
                    Number::Signed(code) => u64::try_from(code)
                        .ok()
                        .filter(|code| *code < count)
                        .map(|code| code as u32),
                    Number::Unsigned(code) => (code < count).then_some(code as u32),
                    Number::Float(_) => None,
                },
                |row, number| {
                    PyValueError::new_err(format!(
                        "{name}[{row}]'s category code {number:?} is not one of its {count} categories"
                    ))
                },
            )?;
            Ok((categories.clone(), codes))
        }
        _ => Err(PySystemError::new_err("not a coded column")),
    }
}

/// A dict-valued argument (`labels`, `exemplar`): one dict for every row, or a
/// list or tuple with one (or None) per row; None when it is not given. `dict_of`
/// says what the dict holds, in errors.
fn dict_argument<'py>(
    value: Option<&Bound<'py, PyAny>>,
    name: &str,
    dict_of: &str,
) -> PyResult<Option<LabelArgument<'py>>> {
    let Some(value) = value.filter(|value| !value.is_none()) else {
        return Ok(None);
    };
    if value.is_instance_of::<PyDict>() {
        return Ok(Some(LabelArgument::Scalar(value.clone())));
    }
    sequence_items(value)
        .map(|items| Some(LabelArgument::Column(items)))
        .ok_or_else(|| {
            PyTypeError::new_err(format!(
                "{name} must be a dict of {dict_of}, or a list or tuple with one (or None) \
                 per row, not {}",
                type_name(value)
            ))
        })
}

/// An exemplar's checked labels.
type ExemplarLabels = Vec<(String, String)>;

/// The `latency_s` argument (what [`given`] found it holds), every row checked.
fn latencies<'g>(given: &'g Given<'_>) -> PyResult<Column<'g, f64>> {
    let name = "latency_s";
    let column = |row| ColumnArgument {
        name,
        row: Some(row),
    };
    let usable = |seconds: &f64| seconds.is_finite() && *seconds >= 0.0;
    if let Some(values) = in_place(given, name, ArrayView::f64_values)? {
        // Arrow float64 without nulls: checked, then read where it is.
        if let Some(row) = values.iter().position(|seconds| !usable(seconds)) {
            return Err(rejected_seconds(values[row], column(row)));
        }
        return Ok(Column::Rows(Cow::Borrowed(values)));
    }
    match given {
        Given::Items(items) => items
            .iter()
            .enumerate()
            .map(|(row, item)| latency_seconds(item, column(row)))
            .collect::<PyResult<_>>()
            .map(rows),
        Given::Scalar(value) => Ok(Column::Scalar(
            latency_seconds(value, name).map_err(|error| or_column(error, value))?,
        )),
        Given::Buffer(value) => buffer_column(
            value,
            name,
            |number| {
                Some(seconds_of(number)).filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
            },
            |row, number| rejected_seconds(seconds_of(number), column(row)),
        )
        .map(rows),
        nullable => nullable_rows(
            nullable,
            name,
            |number| number.map(seconds_of).filter(usable),
            |row, number| match number {
                Some(number) => rejected_seconds(seconds_of(number), column(row)),
                None => PyValueError::new_err(format!(
                    "{name}[{row}] is null: every request has a latency"
                )),
            },
        )
        .map(rows),
    }
}

/// A column of converted values.
fn rows<'g, T: Clone>(values: Vec<T>) -> Column<'g, T> {
    Column::Rows(Cow::Owned(values))
}

/// The values of a one-chunk Arrow column that `slice` reads in place (its
/// type, no nulls, aligned), or None.
fn in_place<'g, T: 'g>(
    given: &'g Given<'_>,
    name: &str,
    slice: impl Fn(&ArrayView<'g>) -> Option<T>,
) -> PyResult<Option<T>> {
    let Given::Arrow(data) = given else {
        return Ok(None);
    };
    Ok(match &data.chunks(name)?[..] {
        [chunk] => slice(chunk),
        _ => None,
    })
}

/// A scalar argument's `TypeError` saying, too, which columns it could have been.
#[cold]
fn or_column(error: PyErr, value: &Bound<'_, PyAny>) -> PyErr {
    if !error.is_instance_of::<PyTypeError>(value.py()) {
        return error;
    }
    PyTypeError::new_err(format!(
        "{} or a column ({COLUMN_FORMS})",
        error.value(value.py())
    ))
}

/// The rows of a numeric column that may hold nulls (Arrow data, or a
/// buffer with a null mask), each converted by `convert` (given None for a
/// null); the first row it refuses fails the column with `reject`'s error.
fn nullable_rows<T>(
    column: &Given<'_>,
    name: &str,
    convert: impl Fn(Option<Number>) -> Option<T>,
    reject: impl FnOnce(usize, Option<Number>) -> PyErr,
) -> PyResult<Vec<T>> {
    let mut values = Vec::new();
    let mut failed: Option<(usize, Option<Number>)> = None;
    match column {
        Given::Arrow(data) => {
            let chunks = data.chunks(name)?;
            values.reserve(chunks.iter().map(ArrayView::len).sum());
            let mut first = 0;
            for chunk in &chunks {
                if chunk.dictionary().is_some() {
                    return Err(PyTypeError::new_err(format!(
                        "{name} is dictionary-encoded ({}): numbers must be plain",
                        chunk.type_name()
                    )));
                }
                let refused = chunk
                    .collect_numbers(&convert, &mut values)
                    .map_err(|error| arrow_error(name, &error, ""))?;
                if let Some((row, number)) = refused {
                    failed = Some((first + row, number));
                    break;
                }
                first += chunk.len();
            }
        }
        Given::Masked(buffer, nulls) => {
            let numbers = buffer_column(buffer, name, Some, |_, _| {
                PySystemError::new_err("every number is taken")
            })?;
            if numbers.len() != nulls.len() {
                return Err(PyValueError::new_err(format!(
                    "{name}'s values and null mask differ in length"
                )));
            }
            values.reserve(numbers.len());
            for (row, (number, null)) in numbers.into_iter().zip(nulls).enumerate() {
                let number = (!null).then_some(number);
                let Some(value) = convert(number) else {
                    failed = Some((row, number));
                    break;
                };
                values.push(value);
            }
        }
        Given::Coded(..) => {
            return Err(PyTypeError::new_err(format!(
                "{name} is categorical: its categories are labels, not numbers"
            )))
        }
        Given::Scalar(_) | Given::Items(_) | Given::Buffer(_) => {
            return Err(PySystemError::new_err("not a nullable column"));
        }
    }
    match failed {
        Some((row, number)) => Err(reject(row, number)),
        None => Ok(values),
    }
}

/// The error of a duration that is not finite, or negative (the check's own
/// message; the fallback is for a value it would accept, which is not refused).
#[cold]
fn rejected_seconds(seconds: f64, argument: ColumnArgument) -> PyErr {
    checked_latency(seconds, argument).map_or_else(
        |error| error,
        |_| PyValueError::new_err(format!("{argument} must be finite and not negative")),
    )
}

/// A numeric buffer's element as seconds.
#[inline]
fn seconds_of(number: Number) -> f64 {
    match number {
        Number::Float(value) => value,
        Number::Signed(value) => value as f64,
        Number::Unsigned(value) => value as f64,
    }
}

/// An optional duration's argument (`time_to_first_token_s`, say), every row
/// checked: `None` (or NaN in a numeric buffer, or a null) where a request has none.
fn optional_seconds(
    value: Option<&Bound<'_, PyAny>>,
    name: &'static str,
) -> PyResult<Column<'static, Option<f64>>> {
    let column = |row| ColumnArgument {
        name,
        row: Some(row),
    };
    let Some(value) = value.filter(|value| !value.is_none()) else {
        return Ok(Column::Scalar(None));
    };
    let convert = |number: Option<Number>| match number.map(seconds_of) {
        None => Some(None),
        Some(seconds) if seconds.is_nan() => Some(None),
        Some(seconds) if seconds.is_finite() && seconds >= 0.0 => Some(Some(seconds)),
        Some(_) => None,
    };
    let reject = |row, number: Number| rejected_seconds(seconds_of(number), column(row));
    match given(value, name, false)? {
        Given::Items(items) => items
            .iter()
            .enumerate()
            .map(|(row, item)| {
                (!item.is_none())
                    .then(|| latency_seconds(item, column(row)))
                    .transpose()
            })
            .collect::<PyResult<_>>()
            .map(rows),
        Given::Scalar(value) => Ok(Column::Scalar(Some(
            latency_seconds(&value, name).map_err(|error| or_column(error, &value))?,
        ))),
        Given::Buffer(value) => {
            buffer_column(&value, name, |number| convert(Some(number)), reject).map(rows)
        }
        nullable => nullable_rows(&nullable, name, convert, |row, number| {
            reject(row, number.unwrap_or(Number::Float(f64::NAN)))
        })
        .map(rows),
    }
}

/// A token-count argument (`input_tokens` or `output_tokens`; what [`given`]
/// found it holds), every row checked; a null counts 0.
fn token_counts<'g>(given: Option<&'g Given<'_>>, name: &'static str) -> PyResult<Column<'g, u64>> {
    let Some(given) = given else {
        return Ok(Column::Scalar(0));
    };
    let convert = |number| match number {
        Number::Unsigned(count) => Some(count),
        Number::Signed(count) => u64::try_from(count).ok(),
        Number::Float(_) => None,
    };
    if let Some((counts, signed)) = in_place(given, name, ArrayView::u64_bits)? {
        // Arrow 64-bit integers without nulls: checked, then read where they are.
        if signed {
            if let Some(row) = counts.iter().position(|count| *count > i64::MAX as u64) {
                return Err(rejected_count(
                    Number::Signed(counts[row] as i64),
                    name,
                    row,
                ));
            }
        }
        return Ok(Column::Rows(Cow::Borrowed(counts)));
    }
    match given {
        Given::Items(items) => items
            .iter()
            .enumerate()
            .map(|(row, item)| {
                token_value(
                    item,
                    ColumnArgument {
                        name,
                        row: Some(row),
                    },
                )
            })
            .collect::<PyResult<_>>()
            .map(rows),
        Given::Scalar(value) => Ok(Column::Scalar(
            token_value(value, name).map_err(|error| or_column(error, value))?,
        )),
        Given::Buffer(value) => buffer_column(value, name, convert, |row, number| {
            rejected_count(number, name, row)
        })
        .map(rows),
        nullable => nullable_rows(
            nullable,
            name,
            |number| number.map_or(Some(0), convert),
            |row, number| rejected_count(number.unwrap_or(Number::Signed(0)), name, row),
        )
        .map(rows),
    }
}

/// The error of a token count that is negative, or of a float column.
#[cold]
fn rejected_count(number: Number, name: &'static str, row: usize) -> PyErr {
    match number {
        Number::Float(_) => PyTypeError::new_err(format!(
            "{name} has an unsupported element type: token counts must be integers \
             (a float column with missing values can be made one with .astype(\"Int64\") in pandas)"
        )),
        Number::Signed(count) => {
            let argument = ColumnArgument {
                name,
                row: Some(row),
            };
            PyValueError::new_err(format!("{argument} must not be negative, got {count}"))
        }
        // Unsigned counts are never refused; the message names the rule anyway.
        Number::Unsigned(_) => {
            PyValueError::new_err(format!("{name} must hold counts from 0 to 2**64-1"))
        }
    }
}

/// Finds each row's combination of label objects: the first row of each new
/// combination is resolved (validated) with `resolve`, and `row_combination`
/// gets, per row, the index of its combination in `combinations`.
fn group_rows<'s, 'a, K: Copy + Eq + Hash>(
    rows: usize,
    key_of: impl Fn(usize) -> K,
    resolve: &mut impl FnMut(usize) -> PyResult<Resolved<'s, 'a>>,
    combinations: &mut Vec<(usize, Resolved<'s, 'a>)>,
    row_combination: &mut Vec<u32>,
) -> PyResult<()> {
    let mut known: HashMap<K, u32, RandomState> = HashMap::default();
    // A few combinations are the common case: scanning them (the first
    // `RECENT_COMBINATIONS`, in a fixed array) beats hashing.
    let mut recent: [Option<K>; RECENT_COMBINATIONS] = [None; RECENT_COMBINATIONS];
    row_combination.reserve(rows);
    for row in 0..rows {
        let key = key_of(row);
        let scanned = recent.iter().position(|known_key| *known_key == Some(key));
        let found = match scanned {
            Some(combination) => Some(combination as u32),
            None if combinations.len() < RECENT_COMBINATIONS => None,
            None => known.get(&key).copied(),
        };
        let combination = if let Some(combination) = found {
            combination
        } else {
            let combination = u32::try_from(combinations.len())
                .map_err(|_| PyValueError::new_err("too many label sets"))?;
            combinations.push((row, resolve(row)?));
            known.insert(key, combination);
            if let Some(slot) = recent.get_mut(combination as usize) {
                *slot = Some(key);
            }
            combination
        };
        row_combination.push(combination);
    }
    Ok(())
}

/// [`group_rows`] for one coded label column: the rows of each of the
/// `distinct` codes share a combination, resolved at the code's first row.
fn coded_rows<'s, 'a>(
    codes: &[u32],
    distinct: usize,
    resolve: &mut impl FnMut(usize) -> PyResult<Resolved<'s, 'a>>,
    combinations: &mut Vec<(usize, Resolved<'s, 'a>)>,
    row_combination: &mut Vec<u32>,
) -> PyResult<()> {
    let mut combination_of = vec![u32::MAX; distinct];
    row_combination.reserve(codes.len());
    for (row, code) in codes.iter().enumerate() {
        let slot = &mut combination_of[*code as usize];
        if *slot == u32::MAX {
            *slot = u32::try_from(combinations.len())
                .map_err(|_| PyValueError::new_err("too many label sets"))?;
            combinations.push((row, resolve(row)?));
        }
        row_combination.push(*slot);
    }
    Ok(())
}

/// The `error_type` argument: None, one error type for every row, or a list
/// or tuple with one (or None) per row (`items`, as [`sequence_items`] gave
/// them); each checked against its row's status.
fn error_types(
    value: Option<&Bound<'_, PyAny>>,
    items: Option<&[Bound<'_, PyAny>]>,
    status: &LabelArgument<'_>,
    rows: usize,
) -> PyResult<Column<'static, Option<ErrorType>>> {
    let name = REQUEST_FIELDS[ERROR_TYPE_FIELD].name;
    let Some(value) = value else {
        return Ok(Column::Scalar(None));
    };
    if let Some(items) = items {
        return items
            .iter()
            .enumerate()
            .map(|(row, item)| {
                error_type(
                    item,
                    status.at(row),
                    ColumnArgument {
                        name,
                        row: Some(row),
                    },
                )
            })
            .collect::<PyResult<_>>()
            .map(|types| Column::Rows(Cow::Owned(types)));
    }
    if !value.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(format!(
            "{name} must be None, str, or a list or tuple of str (or None), not {}",
            type_name(value)
        )));
    }
    let argument = |row| ColumnArgument {
        name,
        row: status.is_column().then_some(row),
    };
    let mut found = None;
    for row in 0..if status.is_column() { rows } else { 1 } {
        found = error_type(value, status.at(row), argument(row))?;
    }
    Ok(Column::Scalar(found))
}

/// The row count shared by every column argument (1 when all are scalars).
fn row_count(columns: &[(&str, Option<usize>)]) -> PyResult<usize> {
    let mut rows: Option<(&str, usize)> = None;
    for (name, length) in columns {
        let Some(length) = *length else { continue };
        match rows {
            None => rows = Some((name, length)),
            Some((first, expected)) if expected != length => {
                return Err(PyValueError::new_err(format!(
                    "columns differ in length: {first} has {expected} rows, {name} has {length}"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(rows.map_or(1, |(_, length)| length))
}

impl PyMetricsStore {
    /// Validates every row of `columns`, then records them all; returns the row count.
    pub(super) fn record_columns(&self, arguments: &RequestArguments<'_, '_>) -> PyResult<usize> {
        let [provider, model, operation, status] = arguments.labels;
        let py = provider.py();
        self.follow_fork(py)?;
        let (latency_s, tool_calls) = (arguments.latency_s, arguments.tool_calls());
        let labels = [
            LabelArgument::new(provider, "provider")?,
            LabelArgument::new(model, "model")?,
            LabelArgument::new(operation, "operation")?,
            LabelArgument::new(status, "status")?,
        ];
        let field_name = |position: usize| REQUEST_FIELDS[position].name;
        // What each numeric argument holds, kept while its values are read in place.
        let latency_given = given(latency_s, field_name(LATENCY_FIELD), false)?;
        let token_givens = TOKEN_FIELDS
            .iter()
            .enumerate()
            .map(|(token_type, position)| {
                arguments
                    .tokens(token_type)
                    .filter(|value| !value.is_none())
                    .map(|value| given(value, field_name(*position), false))
                    .transpose()
            })
            .collect::<PyResult<Vec<_>>>()?;
        let latency = latencies(&latency_given)?;
        let tokens = TOKEN_FIELDS
            .iter()
            .zip(&token_givens)
            .map(|(position, given)| token_counts(given.as_ref(), field_name(*position)))
            .collect::<PyResult<Vec<_>>>()?;
        let seconds = SECONDS_POSITIONS
            .iter()
            .enumerate()
            .map(|(field, position)| {
                optional_seconds(arguments.seconds(field), field_name(*position))
            })
            .collect::<PyResult<Vec<_>>>()?;
        let extra = dict_argument(arguments.extra_labels(), "labels", "extra label values")?;
        let exemplar = dict_argument(arguments.exemplar(), "exemplar", "labels")?;
        let tool_column = match tool_calls.filter(|value| !value.is_none()) {
            None => None,
            Some(value) => Some(sequence_items(value).ok_or_else(|| {
                PyTypeError::new_err(format!(
                    "tool_calls must be None or a list or tuple with one iterable of tool \
                     calls (or None) per row, not {}",
                    type_name(value)
                ))
            })?),
        };
        // Each argument's rows, named as the table names it.
        let mut lengths: Vec<(&str, Option<usize>)> = LABEL_FIELDS
            .iter()
            .zip(&labels)
            .map(|(position, column)| (field_name(*position), column.rows()))
            .collect();
        lengths.push((field_name(LATENCY_FIELD), latency.rows()));
        lengths.extend(
            TOKEN_FIELDS
                .iter()
                .zip(&tokens)
                .map(|(position, column)| (field_name(*position), column.rows())),
        );
        lengths.extend(
            SECONDS_POSITIONS
                .iter()
                .zip(&seconds)
                .map(|(position, column)| (field_name(*position), column.rows())),
        );
        lengths.push((
            field_name(TOOL_CALLS_FIELD),
            tool_column.as_ref().map(Vec::len),
        ));
        lengths.push((
            field_name(EXTRA_LABELS_FIELD),
            extra.as_ref().and_then(LabelArgument::rows),
        ));
        lengths.push((
            field_name(EXEMPLAR_FIELD),
            exemplar.as_ref().and_then(LabelArgument::rows),
        ));
        let error_value = arguments.error_type().filter(|value| !value.is_none());
        let error_items = match error_value
            .map(|value| given(value, field_name(ERROR_TYPE_FIELD), true))
            .transpose()?
        {
            Some(Given::Items(items)) => Some(items),
            Some(coded @ (Given::Arrow(_) | Given::Coded(..))) => {
                let (values, codes) = coded_labels(py, &coded, field_name(ERROR_TYPE_FIELD))?;
                Some(
                    codes
                        .iter()
                        .map(|code| match values.get(*code as usize) {
                            Some(value) => value.clone(),
                            None => py.None().into_bound(py),
                        })
                        .collect(),
                )
            }
            _ => None,
        };
        lengths.push((
            field_name(ERROR_TYPE_FIELD),
            error_items.as_ref().map(Vec::len),
        ));
        let rows = row_count(&lengths)?;
        let errors = error_types(error_value, error_items.as_deref(), &labels[3], rows)?;
        // Rows of the reference's values alone (every other argument absent,
        // zero or None) need none of the rest.
        let plain = tokens[REFERENCE_TOKEN_TYPES..]
            .iter()
            .all(|column| matches!(column, Column::Scalar(0)))
            && seconds
                .iter()
                .all(|column| matches!(column, Column::Scalar(None)))
            && matches!(errors, Column::Scalar(None));
        let numeric = Columns {
            latency: &latency,
            tokens: &tokens,
            seconds: &seconds,
            errors: &errors,
            plain,
        };
        let fill_row = |values: &mut RequestValues, row: usize| numeric.fill(values, row);
        let row_values = |row: usize| {
            let mut values = RequestValues::new(0.0, 0, 0);
            fill_row(&mut values, row);
            values
        };
        // The parts of each row's values, checked against the row's wholes.
        let named_row = |row| {
            lengths
                .iter()
                .any(|(_, length)| length.is_some())
                .then_some(row)
        };
        if !plain {
            for row in 0..rows {
                checked_parts(&row_values(row), named_row(row))?;
            }
        }

        // Validate the labels: each distinct combination of label objects once. With
        // scalar labels the whole batch is one combination; otherwise each row
        // records which combination it uses.
        let mut combinations: Vec<(usize, Resolved<'_, '_>)> = Vec::new();
        let mut row_combination: Vec<u32> = Vec::new();
        let columns: SmallVec<[usize; 4]> = (0..4).filter(|&i| labels[i].is_column()).collect();
        let extra_column = extra.as_ref().is_some_and(LabelArgument::is_column);
        let mut resolve = |row: usize| {
            let objects = [0, 1, 2, 3].map(|i| labels[i].at(row));
            let named = (!columns.is_empty() || extra_column).then_some(row);
            self.labels
                .resolve(py, objects, extra.as_ref().map(|e| e.at(row)), named)
        };
        if extra_column {
            let key = |row| {
                let mut key = [0; 5];
                for (part, index) in key.iter_mut().zip(0..4) {
                    *part = labels[index].at(row).as_ptr() as usize;
                }
                key[4] = extra.as_ref().map_or(0, |e| e.at(row).as_ptr() as usize);
                key
            };
            group_rows(
                rows,
                key,
                &mut resolve,
                &mut combinations,
                &mut row_combination,
            )?;
        } else if let [column] = columns[..] {
            match &labels[column] {
                // Coded text (Arrow, a categorical): a row's code is its combination.
                LabelArgument::Coded(values, codes) => coded_rows(
                    codes,
                    values.len(),
                    &mut resolve,
                    &mut combinations,
                    &mut row_combination,
                )?,
                // One label column (a model per row, say): its object alone is the key.
                LabelArgument::Column(items) => group_rows(
                    rows,
                    |row| items[row].as_ptr() as usize,
                    &mut resolve,
                    &mut combinations,
                    &mut row_combination,
                )?,
                LabelArgument::Scalar(_) => combinations.push((0, resolve(0)?)),
            }
        } else if !columns.is_empty() {
            let key = |row| [0, 1, 2, 3].map(|i| labels[i].at(row).as_ptr() as usize);
            group_rows(
                rows,
                key,
                &mut resolve,
                &mut combinations,
                &mut row_combination,
            )?;
        } else {
            combinations.push((0, resolve(0)?));
        }
        // One checked exemplar for every row, or one (or None) per row.
        let (every_row, per_row): (Option<ExemplarLabels>, Vec<Option<ExemplarLabels>>) =
            match &exemplar {
                None => (None, Vec::new()),
                Some(LabelArgument::Scalar(value)) => {
                    (Some(exemplar_labels(value, "exemplar")?), Vec::new())
                }
                Some(column) => (
                    None,
                    (0..column.rows().unwrap_or(0))
                        .map(|row| {
                            let item = column.at(row);
                            let argument = ColumnArgument {
                                name: "exemplar",
                                row: Some(row),
                            };
                            (!item.is_none())
                                .then(|| exemplar_labels(item, argument))
                                .transpose()
                        })
                        .collect::<PyResult<_>>()?,
                ),
            };
        let tool_names: Vec<ToolNames<'_, '_>> = match &tool_column {
            None => Vec::new(),
            Some(items) => items
                .iter()
                .enumerate()
                .map(|(row, item)| tool_call_names(Some(item), Some(row), self.labels.tool_calls()))
                .collect::<PyResult<_>>()?,
        };

        // Everything is valid: record. Entries are created in order of first use.
        let store = self.store();
        let mut batch = Batch::new(store);
        let entries: Vec<_> = combinations
            .into_iter()
            .map(|(first_row, resolved)| {
                let labelled = extra.as_ref().is_some_and(|e| !e.at(first_row).is_none());
                self.labels.entry(store, py, resolved, labelled)
            })
            .collect::<PyResult<_>>()?;
        let positions: Vec<usize> = entries.iter().map(|entry| batch.position(entry)).collect();
        // The rules of the values beyond the reference's run when a column has
        // some, or when the conventions' histograms are kept.
        let more = !plain || self.store().keeps_semconv_histograms();
        if tool_names.is_empty() {
            // No tool calls: the rows alone, in one loop.
            batch.add_rows(&positions, &row_combination, rows, more, &numeric);
        } else {
            let mut values = RequestValues::new(0.0, 0, 0);
            for row in 0..rows {
                let combination = row_combination.get(row).map_or(0, |c| *c as usize);
                fill_row(&mut values, row);
                batch.add_to(positions[combination], &values, more);
                if let Some(names) = tool_names.get(row) {
                    self.record_tool_calls(py, names)?;
                }
            }
        }
        batch.finish();
        // Each bucket keeps the last row's exemplar, as with one call per row.
        let now = unix_now();
        let exemplar_rows = if every_row.is_some() || !per_row.is_empty() {
            rows
        } else {
            0
        };
        for row in 0..exemplar_rows {
            let labels = every_row.as_ref().or_else(|| per_row.get(row)?.as_ref());
            if let Some(labels) = labels {
                let combination = row_combination.get(row).map_or(0, |c| *c as usize);
                self.store()
                    .attach_exemplar(entries[combination], &row_values(row), labels, now);
            }
        }
        self.report_overflows(py);
        Ok(rows)
    }
}
