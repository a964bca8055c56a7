//! Floats as `prometheus_client.utils.floatToGoString` prints them: Python's
//! shortest `repr`, switched to an exponent from 1e6 up as Go does. Sample
//! values and bucket labels are both written this way; an exemplar's
//! timestamp is written as Python's own `repr` (see [`write_repr`]).

/// Appends `value` exactly as `prometheus_client.utils.floatToGoString` prints it.
pub fn write_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
        return;
    }
    if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    // Counts are integral: a cast and back tells that without `fract`'s libm call.
    if value.abs() < 1e15 && (value as i64) as f64 == value {
        write_integral_value(out, value);
        return;
    }
    write_shortest(out, value, true);
}

/// Appends `value` as Python's `repr` prints it, which is how
/// `prometheus_client` writes an exemplar's timestamp in `OpenMetrics`.
pub fn write_repr(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("nan");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "inf" } else { "-inf" });
    } else {
        write_shortest(out, value, false);
    }
}

/// Appends the finite `value`'s shortest round-tripping digits as Python's
/// `repr` places them, with Go's exponent from 1e6 up when `go` is set.
fn write_shortest(out: &mut String, value: f64, go: bool) {
    // Ryu gives the shortest digits that round-trip and, when two are equally
    // close, the even one: the digits Python's `repr` chooses. (Rust's own `{:e}`
    // rounds such ties up: 74576834028684.625 would end in 63 instead of 62.)
    let mut shortest = ryu::Buffer::new();
    let ryu_text = shortest.format_finite(value);
    if (1e-4..1e16).contains(&value.abs()) {
        // Here Ryu and Python both write plain decimals (Ryu down to 1e-5,
        // Python to 1e-4; both up to 16 integer digits), with the same digits.
        if go && value >= 1e6 {
            write_go_exponent(out, ryu_text);
        } else {
            out.push_str(ryu_text);
        }
        return;
    }
    write_placed(out, value, ryu_text, go);
}

/// Appends Ryu's rendering `ryu_text` of the finite `value` with its digits
/// placed as Python's `repr` places them, with Go's exponent from 1e6 up when
/// `go` is set: any value, taken apart and put together again.
fn write_placed(out: &mut String, value: f64, ryu_text: &str, go: bool) {
    let mut digits = [0; 24];
    let (negative, all, exponent) = significant(ryu_text, &mut digits);
    let (lead, rest) = all.split_at(1);
    // Composed on the stack and appended once: one copy into `out`, not six.
    let mut text = Scratch::default();

    if negative {
        text.push_str("-");
    }
    let python_uses_exponent = !(-5 < exponent && exponent < 16);
    let go_uses_exponent = go && value > 0.0 && exponent >= 6;
    if python_uses_exponent || go_uses_exponent {
        text.push_str(lead);
        if !rest.is_empty() {
            text.push_str(".");
            text.push_str(rest);
        }
        text.exponent(exponent);
    } else if exponent >= 0 {
        let integer_digits = exponent as usize + 1;
        let digits_after_lead = rest.len();
        text.push_str(lead);
        if digits_after_lead < integer_digits {
            text.push_str(rest);
            text.zeros(integer_digits - 1 - digits_after_lead);
            text.push_str(".0");
        } else {
            text.push_str(&rest[..integer_digits - 1]);
            text.push_str(".");
            text.push_str(&rest[integer_digits - 1..]);
        }
    } else {
        text.push_str("0.");
        text.zeros((-exponent - 1) as usize);
        text.push_str(lead);
        text.push_str(rest);
    }
    out.push_str(text.as_str());
}

/// A float's text as it is composed: at most 17 digits, a sign, `0.` and up to
/// four zeros before them (Python's exponent starts at 1e-5), or a point and
/// `e+308`.
#[derive(Default)]
struct Scratch {
    bytes: [u8; 32],
    len: usize,
}

impl Scratch {
    fn push_str(&mut self, text: &str) {
        self.bytes[self.len..self.len + text.len()].copy_from_slice(text.as_bytes());
        self.len += text.len();
    }

    fn zeros(&mut self, count: usize) {
        self.bytes[self.len..self.len + count].fill(b'0');
        self.len += count;
    }

    /// `e`, the exponent's sign and at least two of its digits, as Go and
    /// Python write an exponent.
    fn exponent(&mut self, exponent: i32) {
        self.push_str(if exponent < 0 { "e-" } else { "e+" });
        let magnitude = exponent.unsigned_abs();
        if magnitude < 10 {
            self.push_str("0");
        }
        self.push_str(itoa::Buffer::new().format(magnitude));
    }

    fn as_str(&self) -> &str {
        ascii(&self.bytes[..self.len])
    }
}

/// Appends `decimal` (Ryu's plain decimal of a value from 1e6 to 1e16: seven
/// to sixteen integer digits, a point, at least one more digit) as
/// `floatToGoString` rewrites Python's: `d.ddd` without trailing zeros, then
/// `e+` and the exponent in at least two digits.
fn write_go_exponent(out: &mut String, decimal: &str) {
    let bytes = decimal.as_bytes();
    let point = bytes
        .iter()
        .position(|byte| *byte == b'.')
        .unwrap_or(bytes.len());
    let fraction = bytes.get(point + 1..).unwrap_or_default();
    // At most 17 digits, the point and `e+15`: composed on the stack, one copy out.
    let mut text = [0u8; 32];
    text[0] = bytes[0];
    text[1] = b'.';
    let mut len = 2 + point - 1;
    text[2..len].copy_from_slice(&bytes[1..point]);
    text[len..len + fraction.len()].copy_from_slice(fraction);
    len += fraction.len();
    // Trailing zeros go, and the point with them when no digit follows it
    // (the first digit of a value from 1e6 up is not a zero).
    while matches!(text[len - 1], b'0' | b'.') {
        len -= 1;
    }
    // Seven to sixteen integer digits: an exponent of two digits.
    let exponent = point - 1;
    text[len..len + 4].copy_from_slice(&[
        b'e',
        b'+',
        b'0' + (exponent / 10) as u8,
        b'0' + (exponent % 10) as u8,
    ]);
    len += 4;
    out.push_str(ascii(&text[..len]));
}

/// Splits a Ryu rendering into its sign, its significant digits (written
/// into `digits`; "0" for zero) and the decimal exponent of the first of them.
/// Ryu writes at most 17 digits, a point and an exponent (`1.5e-7`, `1e16`,
/// `0.0001`, `123.25`).
fn significant<'d>(text: &str, digits: &'d mut [u8; 24]) -> (bool, &'d str, i32) {
    let bytes = text.as_bytes();
    let (negative, bytes) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    let (mantissa, shift) = match bytes.iter().position(|byte| *byte == b'e') {
        Some(at) => (&bytes[..at], parse_exponent(&bytes[at + 1..])),
        None => (bytes, 0),
    };
    let point = mantissa
        .iter()
        .position(|byte| *byte == b'.')
        .unwrap_or(mantissa.len());
    let mut len = 0;
    let mut leading_zeros = 0;
    for &byte in mantissa.iter().filter(|byte| byte.is_ascii_digit()) {
        if len == 0 && byte == b'0' {
            leading_zeros += 1;
        } else if len < digits.len() {
            digits[len] = byte;
            len += 1;
        }
    }
    while len > 0 && digits[len - 1] == b'0' {
        len -= 1;
    }
    if len == 0 {
        return (negative, "0", 0);
    }
    let exponent = point as i32 - 1 + shift - leading_zeros;
    let all = ascii(&digits[..len]);
    (negative, all, exponent)
}

/// A Ryu exponent's value (`-7`, `16`).
fn parse_exponent(text: &[u8]) -> i32 {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let magnitude = digits
        .iter()
        .fold(0, |value: i32, digit| value * 10 + i32::from(digit - b'0'));
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

/// `bytes`, composed here of ASCII digits, signs, points and exponents, as
/// text. Unchecked: `str::from_utf8` on these few bytes costs 2.5 % of a
/// scrape's instructions (38.56 M against 37.61 M for 2,500 label sets).
#[inline]
fn ascii(bytes: &[u8]) -> &str {
    debug_assert!(bytes.is_ascii());
    // SAFETY: every caller passes bytes it wrote itself, all ASCII (the
    // digits of Ryu's or itoa's output, `-`, `.`, `e`, `+`, `0`).
    unsafe { std::str::from_utf8_unchecked(bytes) }
}

/// The common case of counts: an integral value below 1e15, printed without float formatting.
fn write_integral_value(out: &mut String, value: f64) {
    let integer = value as i64;
    if integer == 0 && value.is_sign_negative() {
        out.push_str("-0.0");
        return;
    }
    if integer < 0 {
        out.push('-');
    }
    let mut digits = itoa::Buffer::new();
    let text = digits.format(integer.unsigned_abs());
    if integer >= 1_000_000 {
        // Go's exponent form, as floatToGoString switches to it from 1e6 up.
        let exponent = text.len() - 1;
        let significant = text.trim_end_matches('0');
        out.push_str(&significant[..1]);
        if significant.len() > 1 {
            out.push('.');
            out.push_str(&significant[1..]);
        }
        let mut text = Scratch::default();
        text.exponent(exponent as i32);
        out.push_str(text.as_str());
    } else {
        out.push_str(text);
        out.push_str(".0");
    }
}

#[cfg(test)]
// Floats are written as the exposition prints them, digit for digit.
#[allow(clippy::unreadable_literal)]
mod tests {
    use super::*;

    fn formatted(value: f64) -> String {
        let mut out = String::new();
        write_value(&mut out, value);
        out
    }

    #[test]
    fn values_print_as_prometheus_client_prints_them() {
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (0.3, "0.3"),
            (61.0, "61.0"),
            (0.0045000000000000005, "0.0045000000000000005"),
            (3e-05, "3e-05"),
            (0.0001, "0.0001"),
            (0.000_099_999_999_999_999, "9.9999999999999e-05"),
            (0.000_099_99, "9.999e-05"),
            (123456.5, "123456.5"),
            (9_999_999_999_999_998.0, "9.999999999999998e+15"),
            (999999.0, "999999.0"),
            (1000000.0, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (1234567.25, "1.23456725e+06"),
            (10000000.0, "1e+07"),
            (74576834028684.0 + 0.625, "7.457683402868462e+13"),
            (2250993423003049.2, "2.2509934230030492e+15"),
            (0.125, "0.125"),
            (1.5e-7, "1.5e-07"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (120000000.0, "1.2e+08"),
            (999999999999999.0, "9.99999999999999e+14"),
            (123.0, "123.0"),
            (1e15, "1e+15"),
            (1e16, "1e+16"),
            (1.8446744073709552e19, "1.8446744073709552e+19"),
            (1.7642e9, "1.7642e+09"),
            (-1234567.0, "-1234567.0"),
            (-1e16, "-1e+16"),
            (-3e-05, "-3e-05"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for (value, expected) in cases {
            assert_eq!(formatted(value), expected, "formatting {value:e}");
        }
    }

    #[test]
    fn plain_decimals_are_written_as_the_general_placement_writes_them() {
        // Values spread over every binary exponent from 2^-20 to 2^60 and
        // their mantissas, both signs: the shortcut for Ryu's plain decimals
        // must agree with taking the digits apart and placing them again.
        let mut next = crate::test_random::xorshift(0x2545_f491_4f6c_dd1d);
        for exponent in -20..=60 {
            for _ in 0..200 {
                let state = next();
                let mantissa = 1.0 + (state >> 12) as f64 / (1u64 << 52) as f64;
                for value in [
                    mantissa * 2f64.powi(exponent),
                    -mantissa * 2f64.powi(exponent),
                ] {
                    for go in [true, false] {
                        let mut fast = String::new();
                        write_shortest(&mut fast, value, go);
                        let mut placed = String::new();
                        write_placed(
                            &mut placed,
                            value,
                            ryu::Buffer::new().format_finite(value),
                            go,
                        );
                        assert_eq!(fast, placed, "{value:e}, go: {go}");
                    }
                }
            }
        }
    }

    #[test]
    fn timestamps_print_as_python_prints_them() {
        let cases = [
            (1796167796.58827, "1796167796.58827"),
            (1796167796.0, "1796167796.0"),
            (1.5, "1.5"),
            (-0.0, "-0.0"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (3e-05, "3e-05"),
            (0.0001, "0.0001"),
            (f64::INFINITY, "inf"),
        ];
        for (value, expected) in cases {
            let mut out = String::new();
            write_repr(&mut out, value);
            assert_eq!(out, expected, "formatting {value:e}");
        }
    }
}
