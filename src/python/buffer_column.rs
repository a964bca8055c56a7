//! Numeric columns given through the buffer protocol, in either byte order.
//!
//! The view's bytes and format come from [`super::ffi::buffer`]; the format is
//! read by [`crate::formats::columns`], which converts the other byte order.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use super::ffi::buffer::buffer_bytes;
pub(super) use super::ffi::buffer::supports_buffer;
use crate::formats::columns::{Element, Kind, Number};

/// The elements of the 1-dimensional numeric buffer `value`, each widened and
/// turned into a `T` by `convert` (given its row, and failing the whole
/// column on the first bad element), in row order.
///
/// `name` names the argument in errors: a buffer of several dimensions is a
/// `ValueError`, one of other elements (text, bool, half floats, records) a `TypeError`.
/// The 8-byte elements of this machine's byte order, numpy's defaults, are
/// read in one pass without the general conversion.
pub(super) fn buffer_column<T>(
    value: &Bound<'_, PyAny>,
    name: &str,
    mut convert: impl FnMut(usize, Number) -> PyResult<T>,
) -> PyResult<Vec<T>> {
    let buffer = buffer_bytes(value, name)?;
    let element = Element::parse(&buffer.format, buffer.item_size).ok_or_else(|| {
        PyTypeError::new_err(format!(
            "{name} has an unsupported element type (buffer format {:?}, {} bytes): \
             use integers or float32/float64, in either byte order",
            String::from_utf8_lossy(&buffer.format),
            buffer.item_size
        ))
    })?;
    let mut values = Vec::with_capacity(buffer.bytes.len() / element.size);
    let words = || {
        buffer
            .bytes
            .chunks_exact(8)
            .map(|chunk| <[u8; 8]>::try_from(chunk).unwrap_or_default())
            .enumerate()
    };
    match element.native_wide() {
        Some(Kind::Float) => {
            for (row, word) in words() {
                values.push(convert(row, Number::Float(f64::from_ne_bytes(word)))?);
            }
        }
        Some(Kind::Signed) => {
            for (row, word) in words() {
                values.push(convert(row, Number::Signed(i64::from_ne_bytes(word)))?);
            }
        }
        Some(Kind::Unsigned) => {
            for (row, word) in words() {
                values.push(convert(row, Number::Unsigned(u64::from_ne_bytes(word)))?);
            }
        }
        None => {
            for (row, chunk) in buffer.bytes.chunks_exact(element.size).enumerate() {
                values.push(convert(row, element.read(chunk))?);
            }
        }
    }
    Ok(values)
}
