//! An exact `int` read directly, without the `__index__` call `PyO3`'s
//! conversion makes.

use pyo3::prelude::*;
use pyo3::types::PyInt;

/// The value of `value` (an exact `int`) as a `u64`, or None when it is
/// negative or too large (the error CPython set is cleared).
#[inline]
pub(in crate::python) fn exact_u64(value: &Bound<'_, PyInt>) -> Option<u64> {
    // SAFETY: `value` is a live `int`, and the GIL is held (`Bound`).
    let count = unsafe { pyo3::ffi::PyLong_AsUnsignedLongLong(value.as_ptr()) };
    if count != u64::MAX || PyErr::take(value.py()).is_none() {
        return Some(count);
    }
    None
}
