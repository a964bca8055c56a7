//! The Arrow types a column of `record_batch` may have, read from the format
//! strings of Arrow's C data interface (`"g"` is float64, `"vu"` a string
//! view, `"+s"` a struct).
//!
//! Only the types a request's values can be are told apart; every other
//! format is kept as [`DataType::Other`] so that errors can name it.

/// A column's Arrow type, as far as recording needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// Arrow's null type: every row is null, and no buffer is held.
    Null,
    /// An integer `bytes` wide, signed or not.
    Int {
        /// Width in bytes: 1, 2, 4 or 8.
        bytes: u8,
        /// Two's complement (`true`) or unsigned.
        signed: bool,
    },
    /// An IEEE-754 float of 4 or 8 bytes.
    Float {
        /// Width in bytes: 4 or 8.
        bytes: u8,
    },
    /// UTF-8 text with 32-bit offsets (`string`).
    Utf8,
    /// UTF-8 text with 64-bit offsets (`large_string`).
    LargeUtf8,
    /// UTF-8 text as 16-byte views into variadic buffers (`string_view`).
    Utf8View,
    /// A struct: a table's rows, its columns the children.
    Struct,
    /// Any other type.
    Other,
}

impl DataType {
    /// The type a format string names.
    pub fn parse(format: &[u8]) -> DataType {
        let int = |bytes, signed| DataType::Int { bytes, signed };
        match format {
            b"n" => DataType::Null,
            b"c" => int(1, true),
            b"C" => int(1, false),
            b"s" => int(2, true),
            b"S" => int(2, false),
            b"i" => int(4, true),
            b"I" => int(4, false),
            b"l" => int(8, true),
            b"L" => int(8, false),
            b"f" => DataType::Float { bytes: 4 },
            b"g" => DataType::Float { bytes: 8 },
            b"u" => DataType::Utf8,
            b"U" => DataType::LargeUtf8,
            b"vu" => DataType::Utf8View,
            b"+s" => DataType::Struct,
            _ => DataType::Other,
        }
    }

    /// The number of buffers an array of this type has, before a string
    /// view's variadic ones; None for types not read here.
    pub(super) fn fixed_buffers(self) -> Option<usize> {
        match self {
            DataType::Null => Some(0),
            DataType::Struct => Some(1),
            DataType::Int { .. } | DataType::Float { .. } => Some(2),
            // Validity, offsets and data; or validity, views, and data
            // buffers before their sizes (three at least).
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(3),
            DataType::Other => None,
        }
    }
}

/// A readable name of a format string, for errors: Arrow's name of the type
/// where it is a common one, else the format itself.
pub fn type_name(format: &[u8]) -> String {
    let name = match format {
        b"n" => "null",
        b"b" => "bool",
        b"c" => "int8",
        b"C" => "uint8",
        b"s" => "int16",
        b"S" => "uint16",
        b"i" => "int32",
        b"I" => "uint32",
        b"l" => "int64",
        b"L" => "uint64",
        b"e" => "float16",
        b"f" => "float32",
        b"g" => "float64",
        b"z" => "binary",
        b"Z" => "large_binary",
        b"vz" => "binary_view",
        b"u" => "string",
        b"U" => "large_string",
        b"vu" => "string_view",
        b"+s" => "struct",
        b"+l" => "list",
        b"+L" => "large_list",
        b"tdD" => "date32",
        b"tdm" => "date64",
        _ if format.starts_with(b"tD") => "duration",
        _ if format.starts_with(b"ts") => "timestamp",
        _ if format.starts_with(b"d:") => "decimal",
        _ => return format!("format {:?}", String::from_utf8_lossy(format)),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_name_their_types() {
        assert_eq!(
            DataType::parse(b"i"),
            DataType::Int {
                bytes: 4,
                signed: true
            }
        );
        assert_eq!(
            DataType::parse(b"L"),
            DataType::Int {
                bytes: 8,
                signed: false
            }
        );
        assert_eq!(DataType::parse(b"g"), DataType::Float { bytes: 8 });
        assert_eq!(DataType::parse(b"vu"), DataType::Utf8View);
        for other in [&b"e"[..], b"b", b"z", b"tDs", b"+l", b"", b"gg", b"d:10,2"] {
            assert_eq!(DataType::parse(other), DataType::Other, "{other:?}");
        }
        assert_eq!(type_name(b"e"), "float16");
        assert_eq!(type_name(b"tDn"), "duration");
        assert_eq!(type_name(b"w:16"), "format \"w:16\"");
    }
}
