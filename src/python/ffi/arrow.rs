//! Arrow's PyCapsule interface: the C structs a producer's
//! `__arrow_c_array__()` or `__arrow_c_stream__()` hands over, moved out of
//! their capsules (which then release nothing) into owners that release them.
//! See <https://arrow.apache.org/docs/format/CDataInterface/PyCapsuleInterface.html>.

use std::ffi::CStr;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::formats::arrow::interface::{
    ArrowArray, ArrowArrayStream, ArrowSchema, OwnedArray, OwnedSchema, OwnedStream,
};

/// An imported column or table: its schema and its arrays (one per chunk).
pub(in crate::python) struct Imported {
    /// The arrays' schema.
    pub(in crate::python) schema: OwnedSchema,
    /// The chunks, in row order.
    pub(in crate::python) arrays: Vec<OwnedArray>,
}

/// The pointer a capsule named `name` holds.
fn capsule_pointer(
    capsule: &Bound<'_, PyAny>,
    name: &CStr,
    what: &str,
) -> PyResult<*mut std::ffi::c_void> {
    // SAFETY: a live object with the GIL held; the call checks that it is a
    // capsule of that name, and sets an error when it is not.
    let pointer = unsafe { pyo3::ffi::PyCapsule_GetPointer(capsule.as_ptr(), name.as_ptr()) };
    if pointer.is_null() {
        let cause =
            PyErr::take(capsule.py()).map_or_else(String::new, |error| format!(": {error}"));
        return Err(PyTypeError::new_err(format!(
            "{what} did not give an Arrow capsule named {name:?}{cause}"
        )));
    }
    Ok(pointer)
}

/// `value`'s Arrow data, when it has the PyCapsule interface (None when it
/// has not); `name` names the argument in errors.
pub(in crate::python) fn import_arrow(
    value: &Bound<'_, PyAny>,
    name: &str,
) -> PyResult<Option<Imported>> {
    let py = value.py();
    let described = |what: &str| format!("{name}'s {what}");
    if value.hasattr(intern!(py, "__arrow_c_array__"))? {
        let pair = value.call_method0(intern!(py, "__arrow_c_array__"))?;
        let pair = pair.cast_into::<PyTuple>().map_err(|_| {
            PyTypeError::new_err(format!(
                "{} did not return a pair",
                described("__arrow_c_array__()")
            ))
        })?;
        if pair.len() != 2 {
            return Err(PyTypeError::new_err(format!(
                "{} did not return a pair",
                described("__arrow_c_array__()")
            )));
        }
        let what = described("__arrow_c_array__()");
        let schema = capsule_pointer(&pair.get_item(0)?, c"arrow_schema", &what)?;
        let array = capsule_pointer(&pair.get_item(1)?, c"arrow_array", &what)?;
        // SAFETY: capsules of these names hold the interface's structs, filled
        // by their producer; moving them out leaves them released, so the
        // capsules' destructors release nothing.
        let (schema, array) = unsafe {
            (
                OwnedSchema::take(schema.cast::<ArrowSchema>()),
                OwnedArray::take(array.cast::<ArrowArray>()),
            )
        };
        let (Some(schema), Some(array)) = (schema, array) else {
            return Err(PyValueError::new_err(format!(
                "{what} gave released Arrow data"
            )));
        };
        return Ok(Some(Imported {
            schema,
            arrays: vec![array],
        }));
    }
    if value.hasattr(intern!(py, "__arrow_c_stream__"))? {
        let capsule = value.call_method0(intern!(py, "__arrow_c_stream__"))?;
        let what = described("__arrow_c_stream__()");
        let stream = capsule_pointer(&capsule, c"arrow_array_stream", &what)?;
        // SAFETY: as above, for the stream interface's struct.
        let Some(mut stream) = (unsafe { OwnedStream::take(stream.cast::<ArrowArrayStream>()) })
        else {
            return Err(PyValueError::new_err(format!(
                "{what} gave a released stream"
            )));
        };
        let failed = |error: String| PyValueError::new_err(format!("{what} failed: {error}"));
        let schema = stream.schema().map_err(failed)?;
        let mut arrays = Vec::new();
        while let Some(array) = stream.next_array().map_err(failed)? {
            arrays.push(array);
        }
        return Ok(Some(Imported { schema, arrays }));
    }
    Ok(None)
}
