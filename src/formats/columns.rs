//! The elements of a numeric column handed over as raw bytes, as a Python
//! buffer's struct-module format describes them.
//!
//! A format such as `d`, `<q` or `>I` gives the element's kind (its type code)
//! and byte order (its prefix); the buffer's item size gives its width. Elements
//! in the other byte order than this machine's are converted, never misread.

/// What one element is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A two's-complement integer.
    Signed,
    /// An unsigned integer.
    Unsigned,
    /// An IEEE-754 float.
    Float,
}

/// An element type read from a format string and an item size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element {
    kind: Kind,
    /// Width in bytes.
    pub size: usize,
    /// Stored in the other byte order than this machine's.
    swapped: bool,
}

impl Element {
    /// Parses a one-element struct format such as `d`, `<q` or `>I`.
    pub fn parse(format: &[u8], item_size: usize) -> Option<Self> {
        let (order, code) = match format {
            [code] => (b'@', *code),
            [order, code] => (*order, *code),
            _ => return None,
        };
        let big_endian = match order {
            b'@' | b'=' => cfg!(target_endian = "big"),
            b'<' => false,
            b'>' | b'!' => true,
            _ => return None,
        };
        let kind = match code {
            b'b' | b'h' | b'i' | b'l' | b'q' | b'n' => Kind::Signed,
            b'B' | b'H' | b'I' | b'L' | b'Q' | b'N' => Kind::Unsigned,
            b'f' | b'd' => Kind::Float,
            _ => return None,
        };
        let widths: &[usize] = match kind {
            Kind::Float => &[4, 8],
            Kind::Signed | Kind::Unsigned => &[1, 2, 4, 8],
        };
        widths.contains(&item_size).then_some(Element {
            kind,
            size: item_size,
            swapped: big_endian != cfg!(target_endian = "big"),
        })
    }

    /// The kind of an 8-byte element in this machine's byte order (`f64`,
    /// `i64`, `u64`: what numpy makes by default), which reads without
    /// conversion; None for any other.
    pub fn native_wide(self) -> Option<Kind> {
        (self.size == 8 && !self.swapped).then_some(self.kind)
    }

    /// The element at the start of `bytes` (`self.size` long), widened.
    pub fn read(self, bytes: &[u8]) -> Number {
        let mut word = [0_u8; 8];
        let native = &mut word[..self.size];
        native.copy_from_slice(&bytes[..self.size]);
        if self.swapped {
            native.reverse();
        }
        let unsigned = match self.size {
            1 => u64::from(native[0]),
            2 => u64::from(u16::from_ne_bytes([native[0], native[1]])),
            4 => u64::from(u32::from_ne_bytes([
                native[0], native[1], native[2], native[3],
            ])),
            _ => u64::from_ne_bytes(word),
        };
        let bits = self.size * 8;
        match self.kind {
            Kind::Unsigned => Number::Unsigned(unsigned),
            // Sign-extends from the element's width.
            Kind::Signed => Number::Signed(((unsigned << (64 - bits)) as i64) >> (64 - bits)),
            Kind::Float if self.size == 4 => {
                Number::Float(f64::from(f32::from_bits(unsigned as u32)))
            }
            Kind::Float => Number::Float(f64::from_bits(unsigned)),
        }
    }
}

/// One element of a numeric column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// From a signed integer element.
    Signed(i64),
    /// From an unsigned integer element.
    Unsigned(u64),
    /// From a float element.
    Float(f64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_give_kind_width_and_byte_order() {
        let little = cfg!(target_endian = "little");
        let parsed = |format: &[u8], size| Element::parse(format, size);
        assert_eq!(
            parsed(b">I", 4),
            Some(Element {
                kind: Kind::Unsigned,
                size: 4,
                swapped: little
            })
        );
        assert_eq!(parsed(b"<d", 8).map(|e| e.swapped), Some(!little));
        assert_eq!(parsed(b"d", 8).map(|e| e.swapped), Some(false));
        assert_eq!(parsed(b"=q", 8).map(|e| e.kind), Some(Kind::Signed));
        for refused in [&b"?"[..], b"e", b">e", b"Zd", b"2d", b"T{d}", b"d", b""] {
            let size = if refused == b"d" { 3 } else { 8 };
            assert_eq!(parsed(refused, size), None, "{refused:?}");
        }
    }

    #[test]
    fn elements_are_read_in_their_byte_order_and_sign_extended() {
        let big_u32 = Element::parse(b">I", 4).unwrap();
        assert_eq!(
            big_u32.read(&1200_u32.to_be_bytes()),
            Number::Unsigned(1200)
        );
        let big_i16 = Element::parse(b">h", 2).unwrap();
        assert_eq!(big_i16.read(&(-3_i16).to_be_bytes()), Number::Signed(-3));
        let little_f64 = Element::parse(b"<d", 8).unwrap();
        assert_eq!(little_f64.read(&1.5_f64.to_le_bytes()), Number::Float(1.5));
        let big_f32 = Element::parse(b">f", 4).unwrap();
        assert_eq!(big_f32.read(&0.25_f32.to_be_bytes()), Number::Float(0.25));
    }
}
