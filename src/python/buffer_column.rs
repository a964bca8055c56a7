//! Numeric columns given through the buffer protocol, in either byte order.
//!
//! The view's bytes and format come from [`super::ffi::buffer`]; the format is
//! read by [`crate::formats::columns`], which converts the other byte order.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use super::ffi::buffer::buffer_bytes;
pub(super) use super::ffi::buffer::supports_buffer;
use crate::formats::columns::{Element, Number};

/// The elements of the 1-dimensional numeric buffer `value`, widened, in row order.
///
/// `name` names the argument in errors: a buffer of several dimensions is a
/// `ValueError`, one of other elements (text, bool, half floats, records) a `TypeError`.
pub(super) fn buffer_numbers(value: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<Number>> {
    let buffer = buffer_bytes(value, name)?;
    let element = Element::parse(&buffer.format, buffer.item_size).ok_or_else(|| {
        PyTypeError::new_err(format!(
            "{name} has an unsupported element type (buffer format {:?}, {} bytes): \
             use integers or float32/float64, in either byte order",
            String::from_utf8_lossy(&buffer.format),
            buffer.item_size
        ))
    })?;
    Ok(buffer
        .bytes
        .chunks_exact(element.size)
        .map(|chunk| element.read(chunk))
        .collect())
}
