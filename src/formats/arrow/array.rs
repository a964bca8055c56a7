//! A checked view of an imported Arrow array: its type, rows and buffers,
//! read as numbers or text per row, nulls included.
//!
//! The C data interface gives buffers without their lengths: each is as long
//! as the type's layout needs for the array's offset and length, which is the
//! producer's promise ([`Owned::take`](super::interface::Owned::take)'s contract). Everything else the
//! structs say is checked before a byte is read: the buffer and child counts
//! against the type, lengths and offsets for overflow and range, text offsets
//! for order, string views' buffers and spans against the sizes the array
//! declares, and dictionary keys against the dictionary's length.

use std::fmt;
use std::slice;

use super::data_type::{type_name, DataType};
use super::interface::{format_of, ArrowArray, ArrowSchema, OwnedArray, OwnedSchema};
use crate::formats::columns::Number;

/// Why an array is not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArrowError {
    /// It breaks the interface's rules: the reason.
    Broken(String),
    /// Its type is not one a column of requests can have (or not the one
    /// asked for: text where numbers belong): the reason.
    Unsupported(String),
}

impl ArrowError {
    /// What went wrong.
    pub fn message(&self) -> &str {
        match self {
            ArrowError::Broken(message) | ArrowError::Unsupported(message) => message,
        }
    }
}

impl fmt::Display for ArrowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

fn error<T>(message: impl Into<String>) -> Result<T, ArrowError> {
    Err(ArrowError::Broken(message.into()))
}

fn unsupported<T>(message: impl Into<String>) -> Result<T, ArrowError> {
    Err(ArrowError::Unsupported(message.into()))
}

/// A length, offset or count of the interface as a `usize`, refused when negative.
fn count(value: i64, what: &str) -> Result<usize, ArrowError> {
    usize::try_from(value).or_else(|_| error(format!("the array's {what} is {value}")))
}

/// The bytes of one string view, in its 16-byte layout.
const VIEW_BYTES: usize = 16;
/// The longest string a view holds inline.
const INLINE_VIEW: usize = 12;

/// A checked view of rows `offset..offset + length` of an array's buffers,
/// valid while the array and schema it was made from live.
#[derive(Debug)]
pub struct ArrayView<'a> {
    schema: &'a ArrowSchema,
    array: &'a ArrowArray,
    data_type: DataType,
    /// The first row's position in the buffers (the array's offset, and a
    /// struct parent's).
    offset: usize,
    length: usize,
    /// The validity bitmap, or null when every row is valid.
    validity: *const u8,
    /// The values of a dictionary-encoded array, whose own buffers are the keys.
    dictionary: Option<Box<ArrayView<'a>>>,
}

impl<'a> ArrayView<'a> {
    /// The view of a whole imported array of `schema`.
    pub fn new(schema: &'a OwnedSchema, array: &'a OwnedArray) -> Result<Self, ArrowError> {
        let whole = count(array.get().length, "length")?;
        ArrayView::of(schema.get(), array.get(), 0, whole)
    }

    /// The view of rows `skip..skip + length` of `array` (a struct's child is
    /// read from its parent's offset on).
    fn of(
        schema: &'a ArrowSchema,
        array: &'a ArrowArray,
        skip: usize,
        length: usize,
    ) -> Result<Self, ArrowError> {
        let format = format_of(schema);
        let data_type = DataType::parse(format);
        let own_length = count(array.length, "length")?;
        let own_offset = count(array.offset, "offset")?;
        if array.null_count < -1 {
            return error(format!("the array's null count is {}", array.null_count));
        }
        if skip.checked_add(length).is_none_or(|end| end > own_length) {
            return error(format!(
                "rows {skip}..{} of an array of {own_length}",
                skip.saturating_add(length)
            ));
        }
        let offset = own_offset
            .checked_add(skip)
            .filter(|first| {
                first
                    .checked_add(length)
                    .is_some_and(|end| isize::try_from(end).is_ok())
            })
            .ok_or_else(|| {
                ArrowError::Broken(format!("the array's offset {own_offset} overflows"))
            })?;
        let n_buffers = count(array.n_buffers, "buffer count")?;
        let Some(fixed) = data_type.fixed_buffers() else {
            return unsupported(format!("the Arrow type {} is not read", type_name(format)));
        };
        let buffers_fit = match data_type {
            DataType::Utf8View => n_buffers >= fixed,
            // Some producers give the null type a (null) validity buffer.
            DataType::Null => n_buffers <= 1,
            _ => n_buffers == fixed,
        };
        if !buffers_fit {
            return error(format!(
                "an array of type {} has {n_buffers} buffers",
                type_name(format)
            ));
        }
        if n_buffers > 0 && array.buffers.is_null() {
            return error("the array's buffers are missing");
        }
        let mut view = ArrayView {
            schema,
            array,
            data_type,
            offset,
            length,
            validity: std::ptr::null(),
            dictionary: None,
        };
        if data_type != DataType::Null && n_buffers > 0 {
            view.validity = view.buffer(0);
            if view.validity.is_null() && array.null_count > 0 {
                return error("the array counts nulls but has no validity bitmap");
            }
        }
        // The values, offsets or views.
        let needs_values = !matches!(data_type, DataType::Null | DataType::Struct);
        if length > 0 && needs_values && view.buffer(1).is_null() {
            return error("a buffer the array's rows need is missing");
        }
        if data_type == DataType::Utf8View
            && n_buffers > fixed
            && view.buffer(n_buffers - 1).is_null()
        {
            return error("the string view's buffer sizes are missing");
        }
        match (schema.dictionary.is_null(), array.dictionary.is_null()) {
            (true, true) => {}
            (false, false) => {
                if !matches!(data_type, DataType::Int { .. }) {
                    return unsupported(format!("dictionary keys of type {}", type_name(format)));
                }
                // SAFETY: a non-null dictionary of a schema and array that live
                // as long as this view (`OwnedSchema`/`OwnedArray`'s promise).
                let (values_schema, values) = unsafe { (&*schema.dictionary, &*array.dictionary) };
                let whole = count(values.length, "dictionary length")?;
                view.dictionary = Some(Box::new(ArrayView::of(values_schema, values, 0, whole)?));
            }
            _ => return error("the schema and the array disagree on a dictionary"),
        }
        if data_type == DataType::Struct {
            if schema.n_children != array.n_children {
                return error("the schema and the array disagree on the children");
            }
            let children = count(array.n_children, "child count")?;
            if children > 0 && (schema.children.is_null() || array.children.is_null()) {
                return error("the array's children are missing");
            }
            if (0..length).any(|row| !view.is_valid(row)) {
                return error("a table row is null as a whole");
            }
        }
        Ok(view)
    }

    /// Buffer `index` (below the checked buffer count).
    fn buffer(&self, index: usize) -> *const u8 {
        // SAFETY: `index` is below `n_buffers`, checked when the view was made,
        // and the pointer array holds that many.
        unsafe { *self.array.buffers.add(index) }.cast()
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.length
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// Its type (the keys' type, for a dictionary-encoded array).
    pub fn data_type(&self) -> DataType {
        self.data_type
    }

    /// A readable name of its type, for errors.
    pub fn type_name(&self) -> String {
        match &self.dictionary {
            Some(values) => format!(
                "dictionary<{}, {}>",
                type_name(format_of(self.schema)),
                values.type_name()
            ),
            None => type_name(format_of(self.schema)),
        }
    }

    /// The values of a dictionary-encoded array.
    pub fn dictionary(&self) -> Option<&ArrayView<'a>> {
        self.dictionary.as_deref()
    }

    /// Whether row `row` has a value.
    #[inline]
    pub fn is_valid(&self, row: usize) -> bool {
        if self.data_type == DataType::Null {
            return false;
        }
        if self.validity.is_null() {
            return true;
        }
        let bit = self.offset + row;
        // SAFETY: the bitmap holds a bit for each of the array's `offset + length`
        // rows (the producer's promise), and `row` is below `length`.
        let byte = unsafe { self.validity.add(bit / 8).read() };
        byte & (1 << (bit % 8)) != 0
    }

    fn child_count(&self) -> usize {
        if self.data_type == DataType::Struct {
            usize::try_from(self.array.n_children).unwrap_or(0)
        } else {
            0
        }
    }

    /// A struct's child `index`: its rows that are this view's rows.
    pub fn child(&self, index: usize) -> Result<ArrayView<'a>, ArrowError> {
        if index >= self.child_count() {
            return error(format!("no child {index}"));
        }
        // SAFETY: `index` is below the child count that schema and array agree
        // on, and both lists were checked non-null when the view was made.
        let (schema, array) = unsafe {
            (
                *self.schema.children.add(index),
                *self.array.children.add(index),
            )
        };
        if schema.is_null() || array.is_null() {
            return error(format!("child {index} is missing"));
        }
        // SAFETY: non-null children live as long as their parent.
        let (schema, array) = unsafe { (&*schema, &*array) };
        ArrayView::of(schema, array, self.offset, self.length)
    }

    /// Each row's number (None where null), given to `each` in row order;
    /// an error for a type that is not numeric.
    pub fn numbers(&self, mut each: impl FnMut(usize, Option<Number>)) -> Result<(), ArrowError> {
        match self.data_type {
            DataType::Null => (0..self.length).for_each(|row| each(row, None)),
            DataType::Int {
                bytes: 1,
                signed: true,
            } => {
                self.each_value(|value: i8| Number::Signed(value.into()), each);
            }
            DataType::Int {
                bytes: 2,
                signed: true,
            } => {
                self.each_value(|value: i16| Number::Signed(value.into()), each);
            }
            DataType::Int {
                bytes: 4,
                signed: true,
            } => {
                self.each_value(|value: i32| Number::Signed(value.into()), each);
            }
            DataType::Int { signed: true, .. } => self.each_value(Number::Signed, each),
            DataType::Int { bytes: 1, .. } => {
                self.each_value(|value: u8| Number::Unsigned(value.into()), each);
            }
            DataType::Int { bytes: 2, .. } => {
                self.each_value(|value: u16| Number::Unsigned(value.into()), each);
            }
            DataType::Int { bytes: 4, .. } => {
                self.each_value(|value: u32| Number::Unsigned(value.into()), each);
            }
            DataType::Int { .. } => self.each_value(Number::Unsigned, each),
            DataType::Float { bytes: 4 } => {
                self.each_value(|value: f32| Number::Float(value.into()), each);
            }
            DataType::Float { .. } => self.each_value(Number::Float, each),
            _ => return unsupported(format!("{} is not a number type", self.type_name())),
        }
        Ok(())
    }

    /// The rows of a float64 array without nulls whose values are aligned,
    /// as a slice of its buffer; None for any other.
    pub fn f64_values(&self) -> Option<&'a [f64]> {
        (self.data_type == DataType::Float { bytes: 8 }).then_some(())?;
        self.wide_values()
    }

    /// The rows of a 64-bit integer array without nulls whose values are
    /// aligned, as a slice of its buffer, and whether they are signed (their
    /// bits are then two's complement); None for any other.
    pub fn u64_bits(&self) -> Option<(&'a [u64], bool)> {
        let DataType::Int { bytes: 8, signed } = self.data_type else {
            return None;
        };
        Some((self.wide_values()?, signed))
    }

    /// The rows of an 8-byte primitive array without nulls, as `T` (`f64` or
    /// `u64`, which every bit pattern is), when its values are aligned for it.
    fn wide_values<T: Copy>(&self) -> Option<&'a [T]> {
        if !self.validity.is_null() || self.length == 0 || std::mem::size_of::<T>() != 8 {
            return None;
        }
        // SAFETY: the values buffer holds `offset + length` 8-byte elements
        // (the producer's promise), so the offset stays within it.
        let first = unsafe { self.buffer(1).cast::<T>().add(self.offset) };
        if first.align_offset(std::mem::align_of::<T>()) != 0 {
            return None;
        }
        // SAFETY: `length` aligned 8-byte elements from `first`, immutable while
        // the array lives (the interface's rule), any bit pattern a valid `T`.
        Some(unsafe { slice::from_raw_parts(first, self.length) })
    }

    /// Each row's number (None where null) converted by `convert` and
    /// appended to `out` in row order, up to the first row it refuses, which is
    /// returned with its number; an error for a type that is not numeric.
    pub fn collect_numbers<T>(
        &self,
        convert: impl Fn(Option<Number>) -> Option<T>,
        out: &mut Vec<T>,
    ) -> Result<Option<(usize, Option<Number>)>, ArrowError> {
        out.reserve(self.length);
        Ok(match self.data_type {
            DataType::Null => (0..self.length).find_map(|row| match convert(None) {
                Some(value) => {
                    out.push(value);
                    None
                }
                None => Some((row, None)),
            }),
            DataType::Int {
                bytes: 1,
                signed: true,
            } => self.collect_values(|value: i8| Number::Signed(value.into()), convert, out),
            DataType::Int {
                bytes: 2,
                signed: true,
            } => self.collect_values(|value: i16| Number::Signed(value.into()), convert, out),
            DataType::Int {
                bytes: 4,
                signed: true,
            } => self.collect_values(|value: i32| Number::Signed(value.into()), convert, out),
            DataType::Int { signed: true, .. } => self.collect_values(Number::Signed, convert, out),
            DataType::Int { bytes: 1, .. } => {
                self.collect_values(|value: u8| Number::Unsigned(value.into()), convert, out)
            }
            DataType::Int { bytes: 2, .. } => {
                self.collect_values(|value: u16| Number::Unsigned(value.into()), convert, out)
            }
            DataType::Int { bytes: 4, .. } => {
                self.collect_values(|value: u32| Number::Unsigned(value.into()), convert, out)
            }
            DataType::Int { .. } => self.collect_values(Number::Unsigned, convert, out),
            DataType::Float { bytes: 4 } => {
                self.collect_values(|value: f32| Number::Float(value.into()), convert, out)
            }
            DataType::Float { .. } => self.collect_values(Number::Float, convert, out),
            _ => return unsupported(format!("{} is not a number type", self.type_name())),
        })
    }

    /// [`Self::collect_numbers`] of the primitive type `N`, widened: a loop
    /// that stops at the first refusal, so that it stays tight.
    #[inline]
    fn collect_values<N: Copy, T>(
        &self,
        widen: impl Fn(N) -> Number,
        convert: impl Fn(Option<Number>) -> Option<T>,
        out: &mut Vec<T>,
    ) -> Option<(usize, Option<Number>)> {
        let values = self.buffer(1).cast::<N>();
        // SAFETY: (for each read) the values buffer holds `offset + length`
        // elements of `N` (the producer's promise) and `row < length`; read
        // unaligned, as the interface only recommends alignment.
        let at = |row: usize| unsafe { values.add(self.offset + row).read_unaligned() };
        if self.validity.is_null() {
            // No nulls: the common case, in its own loop.
            for row in 0..self.length {
                let number = widen(at(row));
                match convert(Some(number)) {
                    Some(value) => out.push(value),
                    None => return Some((row, Some(number))),
                }
            }
        } else {
            for row in 0..self.length {
                let number = self.is_valid(row).then(|| widen(at(row)));
                match convert(number) {
                    Some(value) => out.push(value),
                    None => return Some((row, number)),
                }
            }
        }
        None
    }

    /// Each row's value of the primitive type `T`, widened.
    #[inline]
    fn each_value<T: Copy>(
        &self,
        widen: impl Fn(T) -> Number,
        mut each: impl FnMut(usize, Option<Number>),
    ) {
        let values = self.buffer(1).cast::<T>();
        // SAFETY: (for each read) the values buffer holds `offset + length`
        // elements of `T` (the producer's promise) and `row < length`; read
        // unaligned, as the interface only recommends alignment.
        let at = |row: usize| unsafe { values.add(self.offset + row).read_unaligned() };
        if self.validity.is_null() {
            for row in 0..self.length {
                each(row, Some(widen(at(row))));
            }
        } else {
            for row in 0..self.length {
                each(row, self.is_valid(row).then(|| widen(at(row))));
            }
        }
    }

    /// Each row's text (None where null) in row order, as bytes (not checked
    /// to be UTF-8); an error for a type that is not text or a row whose
    /// offsets or view are out of order or range.
    pub fn texts(&self, mut each: impl FnMut(usize, Option<&'a [u8]>)) -> Result<(), ArrowError> {
        match self.data_type {
            DataType::Null => (0..self.length).for_each(|row| each(row, None)),
            DataType::Utf8 => self.each_text(
                |index| {
                    // SAFETY: `index` is at most `offset + length`, and the offsets
                    // buffer holds `offset + length + 1` of them.
                    i64::from(unsafe { self.buffer(1).cast::<i32>().add(index).read_unaligned() })
                },
                each,
            )?,
            DataType::LargeUtf8 => self.each_text(
                |index| {
                    // SAFETY: as above, 64-bit offsets.
                    unsafe { self.buffer(1).cast::<i64>().add(index).read_unaligned() }
                },
                each,
            )?,
            DataType::Utf8View => {
                let sizes = self.view_buffer_sizes();
                for row in 0..self.length {
                    let text = if self.is_valid(row) {
                        Some(self.view_text(row, &sizes)?)
                    } else {
                        None
                    };
                    each(row, text);
                }
            }
            _ => return unsupported(format!("{} is not a string type", self.type_name())),
        }
        Ok(())
    }

    /// Rows of text between offsets that `offset_at(i)` reads.
    fn each_text(
        &self,
        offset_at: impl Fn(usize) -> i64,
        mut each: impl FnMut(usize, Option<&'a [u8]>),
    ) -> Result<(), ArrowError> {
        let data = self.buffer(2);
        if self.length == 0 {
            return Ok(());
        }
        let mut start = offset_at(self.offset);
        for row in 0..self.length {
            let end = offset_at(self.offset + row + 1);
            if start < 0 || end < start {
                return error(format!("row {row}'s text offsets are {start}..{end}"));
            }
            if self.is_valid(row) {
                let (first, length) = (start as usize, (end - start) as usize);
                let text = if length == 0 {
                    &[][..]
                } else if data.is_null() {
                    return error("the text's data buffer is missing");
                } else {
                    // SAFETY: the data buffer holds the bytes up to the last
                    // offset (the producer's promise), and offsets only grow.
                    unsafe { slice::from_raw_parts(data.add(first), length) }
                };
                each(row, Some(text));
            } else {
                each(row, None);
            }
            start = end;
        }
        Ok(())
    }

    /// The sizes of a string view's data buffers, from its last buffer.
    fn view_buffer_sizes(&self) -> Vec<i64> {
        let n_buffers = usize::try_from(self.array.n_buffers).unwrap_or(0);
        let variadic = n_buffers.saturating_sub(3);
        if variadic == 0 {
            return Vec::new();
        }
        let sizes = self.buffer(n_buffers - 1).cast::<i64>();
        (0..variadic)
            // SAFETY: the last buffer holds one size per data buffer (checked
            // non-null when the view was made).
            .map(|index| unsafe { sizes.add(index).read_unaligned() })
            .collect()
    }

    /// Row `row`'s text of a string view, checked against its buffers' sizes.
    fn view_text(&self, row: usize, sizes: &[i64]) -> Result<&'a [u8], ArrowError> {
        // SAFETY: the views buffer holds 16 bytes per row up to `offset + length`.
        let view = unsafe { self.buffer(1).add((self.offset + row) * VIEW_BYTES) };
        // SAFETY: a 16-byte view, read by value.
        let bytes = unsafe { view.cast::<[u8; VIEW_BYTES]>().read_unaligned() };
        let word = |at: usize| {
            i32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let length = usize::try_from(word(0))
            .or_else(|_| error(format!("row {row}'s string view has length {}", word(0))))?;
        if length <= INLINE_VIEW {
            // SAFETY: an inline string is within the view's 12 bytes after its length.
            return Ok(unsafe { slice::from_raw_parts(view.add(4), length) });
        }
        let (index, start) = (word(8), word(12));
        let size = usize::try_from(index)
            .ok()
            .and_then(|index| sizes.get(index));
        let first = usize::try_from(start).ok();
        match (size, first) {
            (Some(&size), Some(first))
                if first.checked_add(length).is_some_and(|end| end as u64 <= size as u64) =>
            {
                // `index` is a data buffer's: buffer `2 + index`.
                let data = self.buffer(2 + index as usize);
                if data.is_null() {
                    return error(format!("row {row}'s string view buffer is missing"));
                }
                // SAFETY: the span lies within the buffer's declared size.
                Ok(unsafe { slice::from_raw_parts(data.add(first), length) })
            }
            _ => error(format!(
                "row {row}'s string view points past its buffers (buffer {index}, bytes {start}..+{length})"
            )),
        }
    }
}
