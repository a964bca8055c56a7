//! Numeric columns given through the buffer protocol, in either byte order.
//!
//! The view's bytes and format come from [`super::ffi::buffer`]; the format is
//! read by [`crate::formats::columns`], which converts the other byte order.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use super::ffi::buffer::buffer_view;
use crate::formats::columns::{Element, Kind, Number};

/// The elements of the 1-dimensional numeric buffer `value`, each widened and
/// turned into a `T` by `convert`, in row order; the first element `convert`
/// refuses fails the whole column with the error `reject` makes of it (given
/// its row). Kept apart, the check stays small enough to inline into the loop.
///
/// `name` names the argument in errors: a buffer of several dimensions is a
/// `ValueError`, one of other elements (text, bool, half floats, records) a `TypeError`.
/// The 8-byte elements of this machine's byte order, numpy's defaults, are
/// read in one pass without the general conversion.
pub(super) fn buffer_column<T>(
    value: &Bound<'_, PyAny>,
    name: &str,
    convert: impl Fn(Number) -> Option<T>,
    reject: impl FnOnce(usize, Number) -> PyErr,
) -> PyResult<Vec<T>> {
    let buffer = buffer_view(value, name)?;
    let element = Element::parse(&buffer.format, buffer.item_size).ok_or_else(|| {
        PyTypeError::new_err(format!(
            "{name} has an unsupported element type (buffer format {:?}, {} bytes): \
             use integers or float32/float64, in either byte order",
            String::from_utf8_lossy(&buffer.format),
            buffer.item_size
        ))
    })?;
    if let (Some(kind), Some(words)) = (element.native_wide(), buffer.contiguous_words()) {
        return convert_words(words, kind, convert, reject);
    }
    let bytes = buffer.copy(value.py(), name)?;
    if let Some(kind) = element.native_wide() {
        let words = bytes
            .chunks_exact(8)
            .map(|chunk| <[u8; 8]>::try_from(chunk).unwrap_or_default());
        return convert_words(words, kind, convert, reject);
    }
    let mut values = Vec::with_capacity(bytes.len() / element.size);
    for (row, chunk) in bytes.chunks_exact(element.size).enumerate() {
        let number = element.read(chunk);
        match convert(number) {
            Some(value) => values.push(value),
            None => return Err(reject(row, number)),
        }
    }
    Ok(values)
}

/// Converts 8-byte elements of this machine's byte order, all of `kind`.
fn convert_words<T>(
    words: impl ExactSizeIterator<Item = [u8; 8]>,
    kind: Kind,
    convert: impl Fn(Number) -> Option<T>,
    reject: impl FnOnce(usize, Number) -> PyErr,
) -> PyResult<Vec<T>> {
    let mut values = Vec::with_capacity(words.len());
    for (row, word) in words.enumerate() {
        let number = match kind {
            Kind::Float => Number::Float(f64::from_ne_bytes(word)),
            Kind::Signed => Number::Signed(i64::from_ne_bytes(word)),
            Kind::Unsigned => Number::Unsigned(u64::from_ne_bytes(word)),
        };
        match convert(number) {
            Some(value) => values.push(value),
            None => return Err(reject(row, number)),
        }
    }
    Ok(values)
}
