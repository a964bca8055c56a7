//! Arrow arrays made from Rust values and exported through the C data
//! interface, released by their own callback: the producer the readers' tests
//! (under Miri too) and the fuzz targets import from, with any buffer
//! contents, offsets and validity they choose.

use std::ffi::{c_void, CString};
use std::ptr;

use super::interface::{ArrowArray, ArrowSchema, OwnedArray, OwnedSchema, Released};

/// An array to export: its format, rows, buffers (as bytes; `None` for a null
/// buffer), children and dictionary.
#[derive(Debug, Clone, Default)]
pub struct Built {
    /// The format string (`"l"`, `"u"`, `"+s"`).
    pub format: String,
    /// The field name.
    pub name: String,
    /// Rows.
    pub length: i64,
    /// The first row's position in the buffers.
    pub offset: i64,
    /// Null rows, or -1.
    pub null_count: i64,
    /// The buffers, the validity bitmap first.
    pub buffers: Vec<Option<Vec<u8>>>,
    /// The children (a struct's columns).
    pub children: Vec<Built>,
    /// The dictionary of a dictionary-encoded array.
    pub dictionary: Option<Box<Built>>,
}

/// A validity bitmap of `valid`, or None when every row is valid.
fn bitmap(valid: &[bool]) -> Option<Vec<u8>> {
    if valid.iter().all(|valid| *valid) {
        return None;
    }
    let mut bits = vec![0_u8; valid.len().div_ceil(8)];
    for (row, _) in valid.iter().enumerate().filter(|(_, valid)| **valid) {
        bits[row / 8] |= 1 << (row % 8);
    }
    Some(bits)
}

impl Built {
    /// A primitive array (`format` such as `"l"` or `"g"`) of little-endian
    /// values `T`, None where null.
    pub fn primitive<T: Copy + Default>(
        format: &str,
        values: &[Option<T>],
        to_bytes: impl Fn(T) -> Vec<u8>,
    ) -> Built {
        let valid: Vec<bool> = values.iter().map(Option::is_some).collect();
        let bytes = values
            .iter()
            .flat_map(|value| to_bytes(value.unwrap_or_default()))
            .collect();
        Built {
            format: format.to_owned(),
            length: values.len() as i64,
            null_count: valid.iter().filter(|valid| !**valid).count() as i64,
            buffers: vec![bitmap(&valid), Some(bytes)],
            ..Built::default()
        }
    }

    /// An int64 array.
    pub fn int64(values: &[Option<i64>]) -> Built {
        Built::primitive("l", values, |value| value.to_le_bytes().to_vec())
    }

    /// A float64 array.
    pub fn float64(values: &[Option<f64>]) -> Built {
        Built::primitive("g", values, |value| value.to_le_bytes().to_vec())
    }

    /// A `string` array (`large` for `large_string`).
    pub fn strings(values: &[Option<&str>], large: bool) -> Built {
        let valid: Vec<bool> = values.iter().map(Option::is_some).collect();
        let mut data = Vec::new();
        let mut offsets = vec![0_i64];
        for value in values {
            data.extend_from_slice(value.unwrap_or_default().as_bytes());
            offsets.push(data.len() as i64);
        }
        let offsets = if large {
            offsets
                .iter()
                .flat_map(|offset| offset.to_le_bytes())
                .collect()
        } else {
            offsets
                .iter()
                .flat_map(|offset| (*offset as i32).to_le_bytes())
                .collect()
        };
        Built {
            format: if large { "U" } else { "u" }.to_owned(),
            length: values.len() as i64,
            null_count: valid.iter().filter(|valid| !**valid).count() as i64,
            buffers: vec![bitmap(&valid), Some(offsets), Some(data)],
            ..Built::default()
        }
    }

    /// A `string_view` array, its long strings in one data buffer.
    pub fn string_views(values: &[Option<&str>]) -> Built {
        let valid: Vec<bool> = values.iter().map(Option::is_some).collect();
        let mut views = Vec::new();
        let mut data = Vec::new();
        for value in values {
            let text = value.unwrap_or_default().as_bytes();
            let mut view = [0_u8; 16];
            view[..4].copy_from_slice(&(text.len() as i32).to_le_bytes());
            if text.len() <= 12 {
                view[4..4 + text.len()].copy_from_slice(text);
            } else {
                view[4..8].copy_from_slice(&text[..4]);
                view[12..].copy_from_slice(&(data.len() as i32).to_le_bytes());
                data.extend_from_slice(text);
            }
            views.extend_from_slice(&view);
        }
        let sizes = (data.len() as i64).to_le_bytes().to_vec();
        Built {
            format: "vu".to_owned(),
            length: values.len() as i64,
            null_count: valid.iter().filter(|valid| !**valid).count() as i64,
            buffers: vec![bitmap(&valid), Some(views), Some(data), Some(sizes)],
            ..Built::default()
        }
    }

    /// A dictionary-encoded array: int32 `keys` into `values`.
    pub fn dictionary(keys: &[Option<i32>], values: Built) -> Built {
        let mut built = Built::primitive("i", keys, |key| key.to_le_bytes().to_vec());
        built.dictionary = Some(Box::new(values));
        built
    }

    /// A struct of `columns` (a table), each named.
    pub fn table(columns: Vec<(&str, Built)>) -> Built {
        let length = columns.first().map_or(0, |(_, column)| column.length);
        Built {
            format: "+s".to_owned(),
            length,
            buffers: vec![None],
            children: columns
                .into_iter()
                .map(|(name, mut column)| {
                    name.clone_into(&mut column.name);
                    column
                })
                .collect(),
            ..Built::default()
        }
    }

    /// The same rows from `offset` on, `length` of them.
    #[must_use]
    pub fn sliced(mut self, offset: i64, length: i64) -> Built {
        self.offset += offset;
        self.length = length;
        self.null_count = -1;
        self
    }

    /// The schema and the array, owned (and released) by the reader's side.
    pub fn export(self) -> (OwnedSchema, OwnedArray) {
        let (mut schema, mut array) = self.export_raw();
        // SAFETY: both were just filled by `export_raw` with their release callbacks.
        let owned = unsafe {
            (
                OwnedSchema::take(&raw mut schema),
                OwnedArray::take(&raw mut array),
            )
        };
        (owned.0.expect("filled"), owned.1.expect("filled"))
    }

    /// The schema and the array as C structs, each released by its callback.
    pub fn export_raw(self) -> (ArrowSchema, ArrowArray) {
        let dictionary = self.dictionary.map(|built| built.export_raw());
        let children: Vec<(ArrowSchema, ArrowArray)> =
            self.children.into_iter().map(Built::export_raw).collect();
        let (child_schemas, child_arrays): (Vec<_>, Vec<_>) = children.into_iter().unzip();
        let (dictionary_schema, dictionary_array) = dictionary.unzip();

        let mut schema_data = Box::new(SchemaData {
            format: CString::new(self.format).unwrap_or_default(),
            name: CString::new(self.name).unwrap_or_default(),
            children: child_schemas,
            pointers: Vec::new(),
            dictionary: dictionary_schema.map(Box::new),
        });
        schema_data.pointers = schema_data
            .children
            .iter_mut()
            .map(|child| &raw mut *child)
            .collect();
        let schema = ArrowSchema {
            format: schema_data.format.as_ptr(),
            name: schema_data.name.as_ptr(),
            metadata: ptr::null(),
            flags: 2, // nullable
            n_children: schema_data.children.len() as i64,
            children: schema_data.pointers.as_mut_ptr(),
            dictionary: schema_data
                .dictionary
                .as_mut()
                .map_or(ptr::null_mut(), |dictionary| &raw mut **dictionary),
            release: Some(release_schema),
            private_data: Box::into_raw(schema_data).cast(),
        };

        // Each buffer in 8-byte words: aligned as Arrow's producers align them.
        let buffers = self
            .buffers
            .into_iter()
            .map(|buffer| {
                buffer.map(|bytes| {
                    let mut words = vec![0_u64; bytes.len().div_ceil(8)];
                    for (word, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
                        let mut full = [0_u8; 8];
                        full[..chunk.len()].copy_from_slice(chunk);
                        *word = u64::from_ne_bytes(full);
                    }
                    words
                })
            })
            .collect();
        let mut array_data = Box::new(ArrayData {
            buffers,
            buffer_pointers: Vec::new(),
            children: child_arrays,
            pointers: Vec::new(),
            dictionary: dictionary_array.map(Box::new),
        });
        array_data.buffer_pointers = array_data
            .buffers
            .iter()
            .map(|buffer| {
                buffer
                    .as_ref()
                    .map_or(ptr::null(), |words| words.as_ptr().cast::<c_void>())
            })
            .collect();
        array_data.pointers = array_data
            .children
            .iter_mut()
            .map(|child| &raw mut *child)
            .collect();
        let array = ArrowArray {
            length: self.length,
            null_count: self.null_count,
            offset: self.offset,
            n_buffers: array_data.buffer_pointers.len() as i64,
            n_children: array_data.children.len() as i64,
            buffers: array_data.buffer_pointers.as_mut_ptr(),
            children: array_data.pointers.as_mut_ptr(),
            dictionary: array_data
                .dictionary
                .as_mut()
                .map_or(ptr::null_mut(), |dictionary| &raw mut **dictionary),
            release: Some(release_array),
            private_data: Box::into_raw(array_data).cast(),
        };
        (schema, array)
    }
}

/// What an exported schema's pointers point into.
struct SchemaData {
    format: CString,
    name: CString,
    children: Vec<ArrowSchema>,
    pointers: Vec<*mut ArrowSchema>,
    dictionary: Option<Box<ArrowSchema>>,
}

/// What an exported array's pointers point into.
struct ArrayData {
    buffers: Vec<Option<Vec<u64>>>,
    buffer_pointers: Vec<*const c_void>,
    children: Vec<ArrowArray>,
    pointers: Vec<*mut ArrowArray>,
    dictionary: Option<Box<ArrowArray>>,
}

/// Releases the children and dictionary an exported struct owns.
///
/// # Safety
/// Each was exported by `export_raw` and is released here once.
unsafe fn release_parts<T: Released>(children: Vec<T>, dictionary: Option<Box<T>>) {
    for mut part in children.into_iter().chain(dictionary.map(|boxed| *boxed)) {
        if let Some(release) = *part.release() {
            // SAFETY: the caller's promise.
            unsafe { release(&raw mut part) };
        }
    }
}

unsafe extern "C" fn release_schema(schema: *mut ArrowSchema) {
    // SAFETY: called once on a schema `export_raw` made, whose private data is
    // its boxed `SchemaData`, which owns its children and dictionary.
    unsafe {
        let data = Box::from_raw((*schema).private_data.cast::<SchemaData>());
        release_parts(data.children, data.dictionary);
        (*schema).release = None;
    }
}

unsafe extern "C" fn release_array(array: *mut ArrowArray) {
    // SAFETY: called once on an array `export_raw` made, whose private data is
    // its boxed `ArrayData`, which owns its children and dictionary.
    unsafe {
        let data = Box::from_raw((*array).private_data.cast::<ArrayData>());
        release_parts(data.children, data.dictionary);
        (*array).release = None;
    }
}
