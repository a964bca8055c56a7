//! Text as the two-byte code units of a CPython string.
//!
//! An exposition is UTF-8 and ASCII but for a few characters (the help texts'
//! em dashes); one of those makes CPython store the whole `str` at two bytes a
//! character. Widening each UTF-8 sequence straight into such a string's
//! storage spares the decoder's second pass (see the binding's `str_released`).

/// What [`widen`] wrote: its number of code units and the largest non-ASCII one.
#[derive(Debug, PartialEq, Eq)]
pub struct Widened {
    /// Code units written.
    pub len: usize,
    /// The largest beyond ASCII, 0 when all are ASCII.
    pub max: u32,
}

/// Writes `text`'s characters into `units`, one two-byte code unit each; None
/// when one needs four UTF-8 bytes (a surrogate pair in two-byte units, which
/// a CPython string does not hold).
pub fn widen(text: &str, units: &mut [u16]) -> Option<Widened> {
    let bytes = text.as_bytes();
    let mut read = 0;
    let mut written = 0;
    let mut max = 0;
    while read < bytes.len() {
        // Runs of ASCII, sixteen bytes at a time: the bulk of an exposition.
        let (ascii_read, ascii_written) = widen_ascii(&bytes[read..], &mut units[written..]);
        read += ascii_read;
        written += ascii_written;
        let Some(&lead) = bytes.get(read) else {
            break;
        };
        // `text` is valid UTF-8: a lead byte says how many continuation bytes follow.
        let (code, length) = match lead {
            0..=0x7f => (u32::from(lead), 1),
            0xc0..=0xdf => (
                (u32::from(lead & 0x1f) << 6) | u32::from(bytes[read + 1] & 0x3f),
                2,
            ),
            0xe0..=0xef => (
                (u32::from(lead & 0x0f) << 12)
                    | (u32::from(bytes[read + 1] & 0x3f) << 6)
                    | u32::from(bytes[read + 2] & 0x3f),
                3,
            ),
            _ => return None,
        };
        units[written] = code as u16;
        if length > 1 {
            max = max.max(code);
        }
        read += length;
        written += 1;
    }
    Some(Widened { len: written, max })
}

/// Widens the leading whole blocks of sixteen ASCII bytes of `bytes` into
/// `units`; returns how many bytes it read and units it wrote (the same).
#[cfg(target_arch = "x86_64")]
fn widen_ascii(bytes: &[u8], units: &mut [u16]) -> (usize, usize) {
    use std::arch::x86_64::{
        __m128i, _mm_loadu_si128, _mm_movemask_epi8, _mm_setzero_si128, _mm_storeu_si128,
        _mm_unpackhi_epi8, _mm_unpacklo_epi8,
    };
    let mut done = 0;
    while let (Some(block), Some(out)) =
        (bytes.get(done..done + 16), units.get_mut(done..done + 16))
    {
        // SAFETY: SSE2 is part of every x86_64 processor; `block` holds the 16
        // bytes loaded and `out` the 16 units (32 bytes) stored, both unaligned.
        unsafe {
            let chunk = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
            // A set top bit in any byte: not ASCII.
            if _mm_movemask_epi8(chunk) != 0 {
                break;
            }
            let zero = _mm_setzero_si128();
            let target = out.as_mut_ptr().cast::<__m128i>();
            _mm_storeu_si128(target, _mm_unpacklo_epi8(chunk, zero));
            _mm_storeu_si128(target.add(1), _mm_unpackhi_epi8(chunk, zero));
        }
        done += 16;
    }
    (done, done)
}

/// Widens the leading run of ASCII bytes of `bytes` into `units`; returns how
/// many bytes it read and units it wrote (the same): what processors other
/// than x86_64 run, compiled on every target so that the tests hold the SSE2
/// routine to it.
#[cfg_attr(all(target_arch = "x86_64", not(test)), allow(dead_code))]
fn widen_ascii_scalar(bytes: &[u8], units: &mut [u16]) -> (usize, usize) {
    let run = bytes
        .iter()
        .take_while(|byte| byte.is_ascii())
        .count()
        .min(units.len());
    for (unit, byte) in units[..run].iter_mut().zip(bytes) {
        *unit = u16::from(*byte);
    }
    (run, run)
}

#[cfg(not(target_arch = "x86_64"))]
use widen_ascii_scalar as widen_ascii;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sse2_widening_agrees_with_its_scalar_twin() {
        // The SSE2 routine widens whole blocks of sixteen, the scalar one the
        // whole ASCII run: the first's units must be the second's, up to
        // where it stopped, and it must stop within one block of the run's end.
        let mut next = crate::test_random::xorshift(0x2545_f491_4f6c_dd1d);
        for case in 0..4_000_u64 {
            let length = (next() % 80) as usize;
            let mut bytes: Vec<u8> = (0..length).map(|_| (next() % 0x7f) as u8).collect();
            // Every other case puts a non-ASCII byte somewhere (0x80..=0xff).
            if case % 2 == 1 && length > 0 {
                let at = (next() % length as u64) as usize;
                bytes[at] = 0x80 | (next() as u8);
            }
            for room in [length, length / 2, length.saturating_sub(1)] {
                let (mut fast, mut slow) = (vec![0_u16; room], vec![0_u16; room]);
                let (read, written) = widen_ascii(&bytes, &mut fast);
                let (run, run_written) = widen_ascii_scalar(&bytes, &mut slow);
                assert_eq!(read, written);
                assert_eq!(run, run_written);
                assert!(
                    read <= run && run - read < 16,
                    "{bytes:?} in {room}: {read} of {run}"
                );
                assert_eq!(read % 16, 0);
                assert_eq!(fast[..read], slow[..read], "{bytes:?}");
                let expected: Vec<u16> = bytes[..run].iter().map(|byte| u16::from(*byte)).collect();
                assert_eq!(slow[..run], expected[..]);
            }
        }
    }

    fn widened(text: &str) -> Option<(Vec<u16>, u32)> {
        let mut units = vec![0; text.len()];
        widen(text, &mut units).map(|Widened { len, max }| {
            units.truncate(len);
            (units, max)
        })
    }

    #[test]
    fn characters_become_their_utf16_code_units() {
        for text in [
            "",
            "plain ascii, longer than one chunk of eight",
            "# HELP requests \u{2014} total\nname{model=\"caf\u{e9}\"} 1.0\n",
            "\u{2014}\u{2014}\u{2014}",
            "ab\u{e9}cdefghijklmnop\u{ffff}q",
        ] {
            let expected: Vec<u16> = text.encode_utf16().collect();
            let max = text
                .chars()
                .map(u32::from)
                .filter(|code| *code > 0x7f)
                .max()
                .unwrap_or(0);
            assert_eq!(widened(text), Some((expected, max)), "{text:?}");
        }
    }

    #[test]
    fn characters_beyond_two_bytes_are_refused() {
        assert_eq!(widened("model \u{1f600} name"), None);
    }
}
