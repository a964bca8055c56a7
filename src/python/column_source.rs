//! What a column argument of `record_batch` holds, found once per argument:
//! one value for every row, a list or tuple, a numeric buffer (numpy), Arrow
//! data (any object with the PyCapsule interface, or a table's column), or
//! what `gateway_metrics._columns` makes of a pandas or numpy object that is
//! none of these (a nullable column's values and null mask, a categorical's
//! codes and categories). Nothing here imports pandas, numpy or pyarrow.

use std::rc::Rc;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use super::arguments::type_name;
use super::ffi::arrow::{import_arrow, Imported};
use super::ffi::buffer::{buffer_view, supports_buffer};
use super::ffi::fastcall::FastcallArgs;
use crate::formats::arrow::array::{ArrayView, ArrowError};
use crate::formats::arrow::data_type::DataType;

/// Imported Arrow data: a column, or one column (`child`) of a table.
#[derive(Clone)]
pub(super) struct ArrowData {
    imported: Rc<Imported>,
    child: Option<usize>,
}

impl ArrowData {
    /// The column's chunks, checked, in row order; `name` names it in errors.
    pub(super) fn chunks(&self, name: &str) -> PyResult<Vec<ArrayView<'_>>> {
        let failed = |error| arrow_error(name, &error, "");
        self.imported
            .arrays
            .iter()
            .map(|array| {
                let view = ArrayView::new(&self.imported.schema, array).map_err(failed)?;
                match self.child {
                    Some(child) => view.child(child).map_err(failed),
                    None => Ok(view),
                }
            })
            .collect()
    }
}

/// The error of Arrow data the argument `name` holds: a `TypeError` for a
/// type it cannot have, a `ValueError` for broken data; `hint` follows the message.
pub(super) fn arrow_error(name: &str, error: &ArrowError, hint: &str) -> PyErr {
    match error {
        ArrowError::Unsupported(message) => {
            PyTypeError::new_err(format!("{name}: {message}{hint}"))
        }
        ArrowError::Broken(message) => PyValueError::new_err(format!("{name}: {message}")),
    }
}

/// A column of an Arrow table (`_core._arrow_table`), read in place by `record_batch`.
#[pyclass(unsendable, module = "gateway_metrics._core", name = "ArrowColumn")]
pub(super) struct ArrowColumn {
    data: ArrowData,
}

/// The columns of `table`, an object with Arrow's PyCapsule interface whose
/// type is a struct (a pyarrow Table or RecordBatch, a Polars DataFrame, a
/// DuckDB result), by name; its data is imported once and shared.
#[pyfunction]
pub(super) fn arrow_table<'py>(table: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
    let py = table.py();
    let Some(imported) = import_arrow(table, "the table")? else {
        return Err(PyTypeError::new_err(format!(
            "the table must have Arrow's PyCapsule interface, not {}",
            type_name(table)
        )));
    };
    let imported = Rc::new(imported);
    let whole = ArrowData {
        imported: imported.clone(),
        child: None,
    };
    let columns = PyDict::new(py);
    if DataType::parse(imported.schema.format()) != DataType::Struct {
        return Err(PyTypeError::new_err(
            "the table's Arrow data is one column, not a table (a struct of columns)",
        ));
    }
    // Every chunk is checked here, so that a broken table fails before any column is read.
    whole.chunks("the table")?;
    let names = imported.schema.child_names();
    for (index, name) in names.into_iter().enumerate() {
        let column = ArrowColumn {
            data: ArrowData {
                imported: imported.clone(),
                child: Some(index),
            },
        };
        columns.set_item(String::from_utf8_lossy(name), Bound::new(py, column)?)?;
    }
    Ok(columns)
}

/// What a column argument holds.
pub(super) enum Given<'py> {
    /// One value for every row (checked by the argument's own rules).
    Scalar(Bound<'py, PyAny>),
    /// A list's or tuple's items.
    Items(Vec<Bound<'py, PyAny>>),
    /// A 1-dimensional numeric buffer.
    Buffer(Bound<'py, PyAny>),
    /// Arrow data, read in place.
    Arrow(ArrowData),
    /// A numeric buffer whose rows flagged in the mask are null.
    Masked(Bound<'py, PyAny>, Vec<bool>),
    /// Integer codes (a buffer, -1 for null) into the categories' values.
    Coded(Bound<'py, PyAny>, Vec<Bound<'py, PyAny>>),
}

/// `gateway_metrics._columns.column`, imported on first use.
fn normalizer(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static COLUMN: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    COLUMN
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(
                py.import(intern!(py, "gateway_metrics._columns"))?
                    .getattr(intern!(py, "column"))?
                    .unbind(),
            )
        })
        .map(|column| column.bind(py))
}

/// Whether `value`'s type comes from pandas or numpy (by its module's name:
/// neither is imported to ask).
fn pandas_or_numpy(value: &Bound<'_, PyAny>) -> bool {
    let py = value.py();
    value
        .get_type()
        .getattr(intern!(py, "__module__"))
        .ok()
        .and_then(|module| module.extract::<String>().ok())
        .is_some_and(|module| {
            module == "numpy" || module.starts_with("pandas.") || module == "pandas"
        })
}

/// What `value`, the argument `name`, holds; `label` for a label argument
/// (its numpy buffers are text, not numbers).
pub(super) fn given<'py>(
    value: &Bound<'py, PyAny>,
    name: &str,
    label: bool,
) -> PyResult<Given<'py>> {
    given_once(value, name, label, true)
}

fn given_once<'py>(
    value: &Bound<'py, PyAny>,
    name: &str,
    label: bool,
    normalize: bool,
) -> PyResult<Given<'py>> {
    if let Ok(list) = value.cast::<PyList>() {
        return Ok(Given::Items(list.iter().collect()));
    }
    if let Ok(tuple) = value.cast::<PyTuple>() {
        return Ok(Given::Items(tuple.iter().collect()));
    }
    if value.is_instance_of::<PyString>()
        || value.is_instance_of::<PyBytes>()
        || value.is_instance_of::<PyByteArray>()
        || value.is_exact_instance_of::<PyFloat>()
        || value.is_exact_instance_of::<PyInt>()
    {
        return Ok(Given::Scalar(value.clone()));
    }
    if !label && supports_buffer(value) && !pandas_scalar(value) {
        return Ok(Given::Buffer(value.clone()));
    }
    if let Ok(column) = value.cast::<ArrowColumn>() {
        return Ok(Given::Arrow(column.borrow().data.clone()));
    }
    if normalize && pandas_or_numpy(value) {
        let normalized = normalizer(value.py())?.call1((value, label))?;
        if !normalized.is_none() {
            let (values, mask, categories): (
                Bound<'py, PyAny>,
                Bound<'py, PyAny>,
                Bound<'py, PyAny>,
            ) = normalized.extract()?;
            if !categories.is_none() {
                let categories: Vec<Bound<'py, PyAny>> =
                    categories.cast_into::<PyList>()?.iter().collect();
                return Ok(Given::Coded(values, categories));
            }
            if !mask.is_none() {
                return Ok(Given::Masked(values, null_mask(&mask, name)?));
            }
            return given_once(&values, name, label, false);
        }
    }
    if let Some(imported) = import_arrow(value, name)? {
        return Ok(Given::Arrow(ArrowData {
            imported: Rc::new(imported),
            child: None,
        }));
    }
    Ok(Given::Scalar(value.clone()))
}

/// Whether `value` is a numpy scalar (numbers one value for every row, not
/// a buffer of one): a buffer of no dimensions.
fn pandas_scalar(value: &Bound<'_, PyAny>) -> bool {
    value
        .getattr(intern!(value.py(), "ndim"))
        .and_then(|ndim| ndim.extract::<usize>())
        .is_ok_and(|ndim| ndim == 0)
}

/// A null mask (a buffer of bools or bytes, non-zero for null) as flags.
fn null_mask(mask: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<bool>> {
    let view = buffer_view(mask, name)?;
    if view.item_size != 1 {
        return Err(PyTypeError::new_err(format!(
            "{name}'s null mask must be of bools"
        )));
    }
    Ok(view
        .copy(mask.py(), name)?
        .into_iter()
        .map(|flag| flag != 0)
        .collect())
}

/// `record_batch(table, ...)` on `receiver`: `gateway_metrics._columns.record_table`
/// finds the table's columns and records them, all-or-nothing, as keywords.
pub(super) fn record_table<'py>(
    receiver: &Bound<'py, PyAny>,
    arguments: &FastcallArgs<'_, 'py>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = arguments.py();
    let mut positional = vec![receiver.clone()];
    positional.extend(
        (0..arguments.positional_count()).map(|index| arguments.positional(index).to_owned()),
    );
    let keywords = PyDict::new(py);
    for index in 0..arguments.keyword_count() {
        let (name, value) = arguments.keyword(index);
        keywords.set_item(name, value)?;
    }
    py.import(intern!(py, "gateway_metrics._columns"))?
        .getattr(intern!(py, "record_table"))?
        .call(PyTuple::new(py, positional)?, Some(&keywords))
}
