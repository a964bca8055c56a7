//! A 1-dimensional buffer's elements, read in place or copied in row order,
//! and its element format.
//!
//! `PyO3`'s typed buffers check the element format themselves, and in the
//! `PyO3` version used here that check has its byte-order test inverted: it
//! takes big-endian elements for native ones and refuses explicit
//! little-endian formats. So the view is taken raw here, and the caller reads
//! its format.

use std::ffi::CStr;
use std::mem::MaybeUninit;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;

/// A buffer view, released when dropped.
struct View(Box<ffi::Py_buffer>);

impl Drop for View {
    fn drop(&mut self) {
        // SAFETY: the view was filled by a successful `PyObject_GetBuffer` and is
        // released once; the GIL is held by whoever holds the view.
        unsafe { ffi::PyBuffer_Release(&raw mut *self.0) };
    }
}

/// Whether `value` offers the buffer protocol.
pub(in crate::python) fn supports_buffer(value: &Bound<'_, PyAny>) -> bool {
    // SAFETY: a type check on a live object, with the GIL held (`Bound`).
    unsafe { ffi::PyObject_CheckBuffer(value.as_ptr()) == 1 }
}

/// A 1-dimensional buffer's view, its element format and size.
pub(in crate::python) struct BufferView {
    view: View,
    /// The `struct` format of one element (`B` when the exporter gave none).
    pub(in crate::python) format: Vec<u8>,
    /// Bytes per element.
    pub(in crate::python) item_size: usize,
}

impl BufferView {
    /// The view's bytes in row order, copied (strided views gathered).
    pub(in crate::python) fn copy(&self, py: Python<'_>, name: &str) -> PyResult<Vec<u8>> {
        let len = usize::try_from(self.view.0.len).unwrap_or(0);
        // Filled by the copy below before it is read: not zeroed first.
        let mut bytes: Vec<u8> = Vec::with_capacity(len);
        // CPython before 3.11 declares the view argument mutable; it is only read.
        let view_pointer = (&raw const *self.view.0).cast_mut();
        // SAFETY: `bytes` has room for the view's `len` bytes; strided views are
        // gathered in row order ('C'); the view stays valid while `self` lives,
        // and `PyBuffer_ToContiguous` only reads it.
        let copied = unsafe {
            ffi::PyBuffer_ToContiguous(
                bytes.as_mut_ptr().cast(),
                view_pointer,
                self.view.0.len,
                b'C' as std::os::raw::c_char,
            )
        };
        if copied != 0 {
            return Err(PyErr::take(py)
                .unwrap_or_else(|| PyValueError::new_err(format!("{name} could not be read"))));
        }
        // SAFETY: the successful copy wrote all `len` bytes of the capacity.
        unsafe { bytes.set_len(len) };
        Ok(bytes)
    }

    /// Each 8-byte element in row order, read in place, when the elements
    /// are 8 bytes and contiguous: a large column is then read once, not
    /// copied first (the copy's fresh memory costs page faults too).
    pub(in crate::python) fn contiguous_words(
        &self,
    ) -> Option<impl ExactSizeIterator<Item = [u8; 8]> + '_> {
        let view_pointer = (&raw const *self.view.0).cast_mut();
        // SAFETY: a query of a valid view.
        let contiguous =
            unsafe { ffi::PyBuffer_IsContiguous(view_pointer, b'C' as std::os::raw::c_char) };
        if contiguous != 1 || self.item_size != 8 || self.view.0.buf.is_null() {
            return None;
        }
        let start = self.view.0.buf.cast::<u8>().cast_const();
        let count = usize::try_from(self.view.0.len).unwrap_or(0) / 8;
        Some((0..count).map(move |index| {
            // SAFETY: a contiguous view holds `len` readable bytes from `buf`,
            // valid while `self` (and its view) lives; each read copies one
            // element, unaligned, without making a reference into memory that
            // an exporter may let other threads write.
            unsafe { start.add(index * 8).cast::<[u8; 8]>().read_unaligned() }
        }))
    }
}

/// The view of the 1-dimensional buffer `value`; `name` names the argument
/// in errors (not a readable buffer: `TypeError`; several dimensions: `ValueError`).
pub(in crate::python) fn buffer_view(value: &Bound<'_, PyAny>, name: &str) -> PyResult<BufferView> {
    let py = value.py();
    let mut raw = Box::new(MaybeUninit::<ffi::Py_buffer>::uninit());
    // SAFETY: `raw` has room for a view; the call fills it or fails.
    let status =
        unsafe { ffi::PyObject_GetBuffer(value.as_ptr(), raw.as_mut_ptr(), ffi::PyBUF_RECORDS_RO) };
    if status != 0 {
        let cause = PyErr::take(py).map_or_else(String::new, |error| format!(": {error}"));
        return Err(PyTypeError::new_err(format!(
            "{name} must be a list, a tuple or a readable numeric buffer{cause}"
        )));
    }
    // SAFETY: `PyObject_GetBuffer` succeeded, so the view is initialised.
    let view = View(unsafe { Box::from_raw(Box::into_raw(raw).cast::<ffi::Py_buffer>()) });
    if view.0.ndim != 1 {
        return Err(PyValueError::new_err(format!(
            "{name} must be 1-dimensional, got {} dimensions",
            view.0.ndim
        )));
    }
    let format = if view.0.format.is_null() {
        b"B".to_vec()
    } else {
        // SAFETY: a non-null format is a NUL-terminated string owned by the view.
        unsafe { CStr::from_ptr(view.0.format) }.to_bytes().to_vec()
    };
    let item_size = usize::try_from(view.0.itemsize).unwrap_or(0);
    Ok(BufferView {
        view,
        format,
        item_size,
    })
}
