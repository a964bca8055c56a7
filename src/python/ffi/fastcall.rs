//! `METH_FASTCALL | METH_KEYWORDS` methods: the arguments CPython passes them,
//! the one unsafe step from a C entry point to a safe method body, and
//! installing them on a class.

use std::ffi::CStr;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use pyo3::exceptions::PySystemError;
use pyo3::ffi;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::types::PyType;
use pyo3::{Borrowed, PyClass};

/// A C entry point of a `METH_FASTCALL | METH_KEYWORDS` method.
pub(in crate::python) type Entry = unsafe extern "C" fn(
    *mut ffi::PyObject,
    *const *mut ffi::PyObject,
    ffi::Py_ssize_t,
    *mut ffi::PyObject,
) -> *mut ffi::PyObject;

/// The arguments of one call: positional values, then one value per keyword
/// name, all borrowed from the caller for the call (`'a`).
pub(in crate::python) struct FastcallArgs<'a, 'py> {
    py: Python<'py>,
    args: *const *mut ffi::PyObject,
    positional: usize,
    keywords: usize,
    kwnames: *mut ffi::PyObject,
    call: PhantomData<&'a ()>,
}

impl<'a, 'py> FastcallArgs<'a, 'py> {
    /// The call's interpreter token.
    pub(in crate::python) fn py(&self) -> Python<'py> {
        self.py
    }

    /// How many values were passed by position.
    pub(in crate::python) fn positional_count(&self) -> usize {
        self.positional
    }

    /// How many values were passed by keyword.
    pub(in crate::python) fn keyword_count(&self) -> usize {
        self.keywords
    }

    /// The value passed at position `index` (below [`Self::positional_count`]).
    pub(in crate::python) fn positional(&self, index: usize) -> Borrowed<'a, 'py, PyAny> {
        assert!(
            index < self.positional,
            "positional argument {index} was not passed"
        );
        // SAFETY: `args` holds `positional` values, each alive for the call.
        unsafe { Borrowed::from_ptr(self.py, *self.args.add(index)) }
    }

    /// The name and value of the keyword argument at `index` (below
    /// [`Self::keyword_count`]), in the order the caller passed them.
    #[inline]
    pub(in crate::python) fn keyword(
        &self,
        index: usize,
    ) -> (Borrowed<'a, 'py, PyAny>, Borrowed<'a, 'py, PyAny>) {
        assert!(
            index < self.keywords,
            "keyword argument {index} was not passed"
        );
        // `index` is below the tuple's size, which fits a `Py_ssize_t`.
        #[allow(clippy::cast_possible_wrap)]
        let position = index as ffi::Py_ssize_t;
        // SAFETY: `kwnames` is a tuple of `keywords` names (non-null since
        // `index < keywords`) that keeps them alive for the call, and `args`
        // holds one value per name after the positional ones.
        unsafe {
            let name = Borrowed::from_ptr(self.py, ffi::PyTuple_GET_ITEM(self.kwnames, position));
            let value = Borrowed::from_ptr(self.py, *self.args.add(self.positional + index));
            (name, value)
        }
    }
}

/// Runs `body` for a C entry point of a method of `T`'s class: on its
/// receiver and arguments, returning its result as a new reference, or null
/// with the error (or a panic, as `PanicException`) raised in Python.
///
/// # Safety
/// Only for an entry point installed with [`install`] on `T`'s class, passing
/// on exactly what CPython called it with: CPython's method descriptor has
/// checked that `slf` is an instance of that class, and `args`, `nargs` and
/// `kwnames` are a fastcall call's arguments, borrowed for the call, with the
/// GIL held.
pub(in crate::python) unsafe fn call_method<T>(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
    body: impl FnOnce(&T, &FastcallArgs<'_, '_>) -> PyResult<*mut ffi::PyObject>,
) -> *mut ffi::PyObject
where
    T: PyClass<Frozen = pyo3::pyclass::boolean_struct::True> + Sync,
{
    // SAFETY: CPython calls methods with the GIL held (the contract).
    let py = unsafe { Python::assume_attached() };
    let result = catch_unwind(AssertUnwindSafe(|| {
        let keywords = if kwnames.is_null() {
            0
        } else {
            // SAFETY: a non-null `kwnames` is a tuple (the contract).
            unsafe { ffi::PyTuple_GET_SIZE(kwnames) }
        };
        let arguments = FastcallArgs {
            py,
            args,
            positional: usize::try_from(nargs).unwrap_or(0),
            keywords: usize::try_from(keywords).unwrap_or(0),
            kwnames,
            call: PhantomData,
        };
        // SAFETY: `slf` is a live instance of `T`'s class for the call (the contract).
        let receiver = unsafe { Borrowed::from_ptr(py, slf).cast_unchecked::<T>() };
        body(receiver.get(), &arguments)
    }));
    let error = match result {
        Ok(Ok(result)) => return result,
        Ok(Err(error)) => error,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(ToString::to_string)
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic in gateway_metrics".to_owned());
            PanicException::new_err(message)
        }
    };
    error.restore(py);
    ptr::null_mut()
}

/// Adds `entry` to `class` as the method `name`, with `doc` (which may start
/// with a `__text_signature__`).
pub(in crate::python) fn install(
    class: &Bound<'_, PyType>,
    name: &'static CStr,
    entry: Entry,
    doc: &'static CStr,
) -> PyResult<()> {
    let definition = Box::leak(Box::new(ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: entry,
        },
        ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        ml_doc: doc.as_ptr(),
    }));
    let py = class.py();
    // SAFETY: the definition is leaked, so it outlives the descriptor; the
    // class is a live type object.
    let descriptor = unsafe {
        let raw = ffi::PyDescr_NewMethod(class.as_type_ptr(), definition);
        if raw.is_null() {
            return Err(PyErr::take(py)
                .unwrap_or_else(|| PySystemError::new_err("PyDescr_NewMethod failed")));
        }
        Bound::from_owned_ptr(py, raw)
    };
    let name = name
        .to_str()
        .map_err(|_| PySystemError::new_err("a method name is not UTF-8"))?;
    class.setattr(name, descriptor)
}
