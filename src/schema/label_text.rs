//! Label text scanned eight bytes at a time: a scrape checks every label
//! value it writes for escapes, and splits every label set it reads.
//!
//! The `memchr` crate was measured in both places: label values and label sets
//! are a few to a few dozen bytes, where its setup costs more than it saves. A
//! scrape of 2,500 label sets took 40.96 M instructions with `memchr3` for the
//! escapes and `memchr` for the splits, 39.22 M with the splits alone, and
//! 37.76 M as here (callgrind).

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// The high bit of each byte of `word` (read little-endian) that equals
/// `byte`: no bit when none does, and the lowest bit set marks the first that
/// does (bits above it may be set wrongly, never bits below).
#[inline]
pub fn bytes_equal_to(word: u64, byte: u8) -> u64 {
    // The classic test for a zero byte, on the bytes that equal `byte` turned to zeros.
    let zeros = word ^ (ONES * u64::from(byte));
    zeros.wrapping_sub(ONES) & !zeros & HIGHS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_equal_byte_is_flagged_and_none_below_it() {
        for at in 0..8 {
            for byte in [0x00, b'"', 0x7f, 0x80, 0xfe, 0xff] {
                for filler in [0x00, 0x01, byte.wrapping_sub(1), byte.wrapping_add(1)] {
                    if filler == byte {
                        continue;
                    }
                    let mut bytes = [filler; 8];
                    bytes[at] = byte;
                    let flags = bytes_equal_to(u64::from_le_bytes(bytes), byte);
                    assert_eq!(flags.trailing_zeros() as usize / 8, at, "{bytes:?}");
                }
                assert_eq!(bytes_equal_to(u64::from_le_bytes([byte ^ 1; 8]), byte), 0);
            }
        }
    }
}
