//! A `bytes` object filled without the GIL.
//!
//! A scrape's body can be tens of megabytes. Copying it into a `bytes` takes
//! milliseconds, most of them the page faults of the new memory; with the GIL
//! held, every other thread (an event loop's among them) waits that long.
//! `PyO3`'s `PyBytes::new_with` zeroes the new object under the GIL first, so
//! the object is allocated raw here, and filled with the GIL released.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::python::exit_gate::release_gil;

/// A new `bytes` holding `data`, copied without the GIL.
pub(in crate::python) fn bytes_released<'py>(
    py: Python<'py>,
    data: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    let size = isize::try_from(data.len())
        .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("body too long for bytes"))?;
    // SAFETY: with a null source CPython allocates `size` bytes, not yet
    // initialised, and returns a new reference or null with an exception set.
    let object = unsafe { pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), size) };
    // SAFETY: a new reference, or null with an exception set (taken as `Err`).
    let bytes = unsafe { Bound::from_owned_ptr_or_err(py, object)? };
    // The object's buffer, as an address: it is written by this thread only,
    // before the object is shared, so the GIL need not be held for it.
    // SAFETY: a `bytes` object's buffer holds its `size` bytes (plus a NUL).
    let buffer = unsafe { pyo3::ffi::PyBytes_AsString(bytes.as_ptr()) } as usize;
    release_gil(py, || {
        // SAFETY: `buffer` is the new object's `data.len()` bytes, which nothing
        // else reads or writes until this returns; `data` does not overlap them.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buffer as *mut u8, data.len()) };
    });
    Ok(bytes.cast_into::<PyBytes>()?)
}
