//! A `str` written as its code units, without the GIL.
//!
//! An exposition is UTF-8 text that is ASCII but for a few characters (the
//! help texts' em dashes), and one of those makes CPython keep the whole
//! string at two bytes a character. `PyUnicode_FromStringAndSize` finds that
//! out by scanning the text, then decodes it in a second pass, all under the
//! GIL. Here the string is allocated at two bytes a character and each UTF-8
//! sequence is widened into it in one pass with the GIL released; texts of
//! any other kind (pure ASCII or Latin-1, or characters beyond the Basic
//! Multilingual Plane) are left to CPython's decoder, as they must be stored
//! at another width.

use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::formats::code_units::{widen, Widened};
use crate::python::exit_gate::release_gil;

/// A new `str` equal to `text`.
pub(in crate::python) fn str_released<'py>(
    py: Python<'py>,
    text: &str,
) -> PyResult<Bound<'py, PyString>> {
    if text.is_ascii() {
        return Ok(PyString::new(py, text));
    }
    // At most one character per byte.
    let size = isize::try_from(text.len())
        .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("text too long for str"))?;
    // SAFETY: CPython allocates a string of `size` two-byte code units, not
    // yet initialised, and returns a new reference or null with an exception set.
    let object = unsafe { pyo3::ffi::PyUnicode_New(size, 0xffff) };
    // SAFETY: a new reference, or null with an exception set (taken as `Err`).
    let string = unsafe { Bound::from_owned_ptr_or_err(py, object)? };
    // The object's code units, as an address: they are written by this thread
    // only, before the object is shared, so the GIL need not be held for them.
    // SAFETY: a compact string made by `PyUnicode_New` has its data inline.
    let units = unsafe { pyo3::ffi::PyUnicode_DATA(string.as_ptr()) } as usize;
    let widened = release_gil(py, || {
        // SAFETY: `units` holds `text.len()` two-byte code units (aligned, as
        // CPython aligns string data) that nothing else reads or writes until
        // this returns.
        let units = unsafe { std::slice::from_raw_parts_mut(units as *mut u16, text.len()) };
        widen(text, units)
    });
    let Some(Widened { len, .. }) = widened.filter(|widened| widened.max > 0xff) else {
        // Latin-1 text, or characters that need four bytes: CPython's decoder
        // stores them at the width such a string must have.
        return Ok(PyString::new(py, text));
    };
    let mut object = string.into_ptr();
    let len = isize::try_from(len).unwrap_or(size);
    // SAFETY: `object` is the only reference to a new, unshared string, which
    // CPython may reallocate to `len` code units; it sets `object` to the
    // result, or releases it and sets it to null with an exception set.
    let resized = unsafe { pyo3::ffi::PyUnicode_Resize(&raw mut object, len) };
    if resized != 0 {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: a new reference to the resized string.
    Ok(unsafe { Bound::from_owned_ptr(py, object) }.cast_into::<PyString>()?)
}
