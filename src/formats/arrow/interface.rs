//! The structs of Arrow's C data interface and C stream interface, and owners
//! that release what they hold exactly once.
//!
//! A producer (pyarrow, Polars, nanoarrow, DuckDB, pandas) fills these structs;
//! the consumer moves them out of the producer's hands (copying the struct and
//! marking the original released, as the interface prescribes) and calls
//! `release` when done. See <https://arrow.apache.org/docs/format/CDataInterface.html>.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;

/// `struct ArrowSchema`: a type, its name, and its children's and dictionary's schemas.
#[repr(C)]
#[derive(Debug)]
pub struct ArrowSchema {
    /// The type's format string, NUL-terminated.
    pub format: *const c_char,
    /// The field's name, NUL-terminated, or null.
    pub name: *const c_char,
    /// Key-value metadata, or null.
    pub metadata: *const c_char,
    /// `ARROW_FLAG_*` bits.
    pub flags: i64,
    /// The number of children.
    pub n_children: i64,
    /// The children's schemas.
    pub children: *mut *mut ArrowSchema,
    /// The dictionary's schema of a dictionary-encoded type, else null.
    pub dictionary: *mut ArrowSchema,
    /// Frees the schema; null once released (or moved).
    pub release: Option<unsafe extern "C" fn(*mut ArrowSchema)>,
    /// The producer's own data.
    pub private_data: *mut c_void,
}

/// `struct ArrowArray`: an array's length, offset, buffers, children and dictionary.
#[repr(C)]
#[derive(Debug)]
pub struct ArrowArray {
    /// Rows.
    pub length: i64,
    /// Null rows, or -1 when not computed.
    pub null_count: i64,
    /// The first row's position in the buffers.
    pub offset: i64,
    /// The number of buffers.
    pub n_buffers: i64,
    /// The number of children.
    pub n_children: i64,
    /// The buffers; the validity bitmap (first) may be null.
    pub buffers: *mut *const c_void,
    /// The children.
    pub children: *mut *mut ArrowArray,
    /// The dictionary of a dictionary-encoded array, else null.
    pub dictionary: *mut ArrowArray,
    /// Frees the array; null once released (or moved).
    pub release: Option<unsafe extern "C" fn(*mut ArrowArray)>,
    /// The producer's own data.
    pub private_data: *mut c_void,
}

/// `struct ArrowArrayStream`: a schema, then arrays of it until one is released.
#[repr(C)]
#[derive(Debug)]
pub struct ArrowArrayStream {
    /// Fills the stream's schema; 0 on success, an errno value on error.
    pub get_schema: Option<unsafe extern "C" fn(*mut ArrowArrayStream, *mut ArrowSchema) -> c_int>,
    /// Fills the next array (released at the end); 0 on success, an errno value on error.
    pub get_next: Option<unsafe extern "C" fn(*mut ArrowArrayStream, *mut ArrowArray) -> c_int>,
    /// The last error's description, valid until the next call, or null.
    pub get_last_error: Option<unsafe extern "C" fn(*mut ArrowArrayStream) -> *const c_char>,
    /// Frees the stream; null once released (or moved).
    pub release: Option<unsafe extern "C" fn(*mut ArrowArrayStream)>,
    /// The producer's own data.
    pub private_data: *mut c_void,
}

impl ArrowSchema {
    /// A released (empty) schema, for a producer to fill.
    pub fn empty() -> Self {
        ArrowSchema {
            format: ptr::null(),
            name: ptr::null(),
            metadata: ptr::null(),
            flags: 0,
            n_children: 0,
            children: ptr::null_mut(),
            dictionary: ptr::null_mut(),
            release: None,
            private_data: ptr::null_mut(),
        }
    }
}

impl ArrowArray {
    /// A released (empty) array, for a producer to fill.
    pub fn empty() -> Self {
        ArrowArray {
            length: 0,
            null_count: 0,
            offset: 0,
            n_buffers: 0,
            n_children: 0,
            buffers: ptr::null_mut(),
            children: ptr::null_mut(),
            dictionary: ptr::null_mut(),
            release: None,
            private_data: ptr::null_mut(),
        }
    }
}

/// One of the interface's structs: where its release callback is.
pub trait Released: Sized {
    /// The release callback, None once released (or moved).
    fn release(&mut self) -> &mut Option<unsafe extern "C" fn(*mut Self)>;
}

impl Released for ArrowSchema {
    fn release(&mut self) -> &mut Option<unsafe extern "C" fn(*mut Self)> {
        &mut self.release
    }
}

impl Released for ArrowArray {
    fn release(&mut self) -> &mut Option<unsafe extern "C" fn(*mut Self)> {
        &mut self.release
    }
}

impl Released for ArrowArrayStream {
    fn release(&mut self) -> &mut Option<unsafe extern "C" fn(*mut Self)> {
        &mut self.release
    }
}

/// One of the interface's structs, owned by this side and released once, when
/// dropped. What it points to is valid while it lives (the interface's
/// promise, which [`Owned::take`]'s caller vouches for).
#[derive(Debug)]
pub struct Owned<T: Released>(Box<T>);

/// A schema owned here.
pub type OwnedSchema = Owned<ArrowSchema>;
/// An array owned here.
pub type OwnedArray = Owned<ArrowArray>;
/// A stream owned here.
pub type OwnedStream = Owned<ArrowArrayStream>;

impl<T: Released> Owned<T> {
    /// Moves the struct at `source` here, leaving it marked released; None
    /// when it was released already (as an array is at a stream's end).
    ///
    /// # Safety
    /// `source` points to a struct its producer filled as the C data (or
    /// stream) interface specifies, which nothing else will release: a schema's
    /// strings, children and dictionary valid; an array's buffers of the layout
    /// of the schema it is read with, each as long as its length and offset
    /// need; a stream's callbacks giving such schemas and arrays.
    pub unsafe fn take(source: *mut T) -> Option<Self> {
        // SAFETY: the caller's promise: a valid, writable struct.
        let mut moved = unsafe { ptr::read(source) };
        moved.release().as_ref()?;
        // SAFETY: as above; marking the source released is how the interface moves it.
        unsafe { *(*source).release() = None };
        Some(Owned(Box::new(moved)))
    }

    /// The struct.
    pub fn get(&self) -> &T {
        &self.0
    }
}

impl<T: Released> Drop for Owned<T> {
    fn drop(&mut self) {
        if let Some(release) = *self.0.release() {
            // SAFETY: the struct is ours (moved in by `take`) and released once;
            // the callback marks it released.
            unsafe { release(&raw mut *self.0) };
        }
    }
}

impl OwnedSchema {
    /// The format string's bytes.
    pub fn format(&self) -> &[u8] {
        format_of(&self.0)
    }

    /// Its children's field names (a table's column names), in order; empty
    /// when the children are missing.
    pub fn child_names(&self) -> Vec<&[u8]> {
        let count = usize::try_from(self.0.n_children).unwrap_or(0);
        if self.0.children.is_null() {
            return Vec::new();
        }
        (0..count)
            .map(|index| {
                // SAFETY: a schema's `children` holds `n_children` valid
                // schemas, which live as long as it does.
                let child = unsafe { *self.0.children.add(index) };
                if child.is_null() {
                    return &b""[..];
                }
                // SAFETY: as above.
                name_of(unsafe { &*child })
            })
            .collect()
    }
}

/// The format string of a schema that [`OwnedSchema`] vouches for (or one of
/// its descendants), empty when null.
pub(super) fn format_of(schema: &ArrowSchema) -> &[u8] {
    if schema.format.is_null() {
        return b"";
    }
    // SAFETY: a non-null format is a NUL-terminated string that lives as long
    // as the schema (the producer's promise, vouched for by `Owned::take`).
    unsafe { CStr::from_ptr(schema.format) }.to_bytes()
}

/// The field name of such a schema, empty when null.
pub(super) fn name_of(schema: &ArrowSchema) -> &[u8] {
    if schema.name.is_null() {
        return b"";
    }
    // SAFETY: as for `format_of`.
    unsafe { CStr::from_ptr(schema.name) }.to_bytes()
}

impl OwnedStream {
    /// The stream's schema.
    pub fn schema(&mut self) -> Result<OwnedSchema, String> {
        let get_schema = self.0.get_schema.ok_or("the stream has no get_schema")?;
        let mut schema = ArrowSchema::empty();
        // SAFETY: a live stream of ours, and a struct for it to fill.
        let status = unsafe { get_schema(&raw mut *self.0, &raw mut schema) };
        if status != 0 {
            return Err(self.error(status));
        }
        // SAFETY: the producer filled it (the stream's contract, vouched for by `take`).
        unsafe { OwnedSchema::take(&raw mut schema) }.ok_or_else(|| "no schema".to_owned())
    }

    /// The stream's next array, or None at its end.
    pub fn next_array(&mut self) -> Result<Option<OwnedArray>, String> {
        let get_next = self.0.get_next.ok_or("the stream has no get_next")?;
        let mut array = ArrowArray::empty();
        // SAFETY: a live stream of ours, and a struct for it to fill.
        let status = unsafe { get_next(&raw mut *self.0, &raw mut array) };
        if status != 0 {
            return Err(self.error(status));
        }
        // SAFETY: the producer filled it, or left it released at the stream's end.
        Ok(unsafe { OwnedArray::take(&raw mut array) })
    }

    /// The producer's description of the error `status`.
    fn error(&mut self, status: c_int) -> String {
        let described = self.0.get_last_error.and_then(|get_last_error| {
            // SAFETY: a live stream of ours; the text is valid until its next call,
            // and is copied before then.
            let text = unsafe { get_last_error(&raw mut *self.0) };
            (!text.is_null()).then(|| {
                // SAFETY: a non-null result is a NUL-terminated string.
                let text = unsafe { CStr::from_ptr(text) };
                text.to_string_lossy().into_owned()
            })
        });
        described.unwrap_or_else(|| format!("error {status}"))
    }
}
