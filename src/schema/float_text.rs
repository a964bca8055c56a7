//! Floats as `prometheus_client.utils.floatToGoString` prints them: Python's
//! shortest `repr`, switched to an exponent from 1e6 up as Go does. Sample
//! values and bucket labels are both written this way; an exemplar's
//! timestamp is written as Python's own `repr` (see [`write_repr`]).

use std::fmt::Write as _;

/// A small stack buffer for the digits of one float.
struct Digits {
    bytes: [u8; 40],
    len: usize,
}

impl std::fmt::Write for Digits {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        let end = self.len + text.len();
        let room = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        room.copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
}

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
    if value.fract() == 0.0 && value.abs() < 1e15 {
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
    let (negative, significant, exponent) = decompose(shortest.format_finite(value));
    let mut digits = Digits {
        bytes: [0; 40],
        len: 0,
    };
    let _ = digits.write_str(significant.0);
    let _ = digits.write_str(significant.1);
    let all = std::str::from_utf8(&digits.bytes[..digits.len]).unwrap_or("0");
    let all = all.trim_start_matches('0');
    let skipped = significant.0.len() + significant.1.len() - all.len();
    let all = match all.trim_end_matches('0') {
        "" => "0",
        trimmed => trimmed,
    };
    let exponent = if all == "0" {
        0
    } else {
        exponent - skipped as i32
    };
    let (lead, rest) = all.split_at(1);

    if negative {
        out.push('-');
    }
    let python_uses_exponent = !(-5 < exponent && exponent < 16);
    let go_uses_exponent = go && value > 0.0 && exponent >= 6;
    if python_uses_exponent || go_uses_exponent {
        out.push_str(lead);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let sign = if exponent < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exponent.unsigned_abs());
    } else if exponent >= 0 {
        let integer_digits = exponent as usize + 1;
        let digits_after_lead = rest.len();
        out.push_str(lead);
        if digits_after_lead < integer_digits {
            out.push_str(rest);
            out.extend(std::iter::repeat_n(
                '0',
                integer_digits - 1 - digits_after_lead,
            ));
            out.push_str(".0");
        } else {
            out.push_str(&rest[..integer_digits - 1]);
            out.push('.');
            out.push_str(&rest[integer_digits - 1..]);
        }
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exponent - 1) as usize));
        out.push_str(lead);
        out.push_str(rest);
    }
}

/// Splits a Ryu rendering into its sign, the digits before and after the point,
/// and the decimal exponent of the first of those digits.
fn decompose(text: &str) -> (bool, (&str, &str), i32) {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, shift) = match text.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, exponent.parse::<i32>().unwrap_or(0)),
        None => (text, 0),
    };
    let (integer, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let exponent = integer.len() as i32 - 1 + shift;
    (negative, (integer, fraction), exponent)
}

/// The common case of counts: an integral value below 1e15, printed without float formatting.
fn write_integral_value(out: &mut String, value: f64) {
    let integer = value as i64;
    if integer == 0 && value.is_sign_negative() {
        out.push_str("-0.0");
    } else if integer >= 1_000_000 {
        // Go's exponent form, as floatToGoString switches to it from 1e6 up.
        let mut digits = Digits {
            bytes: [0; 40],
            len: 0,
        };
        write!(digits, "{integer}").expect("an i64 fits in 40 bytes");
        let text = std::str::from_utf8(&digits.bytes[..digits.len]).unwrap_or("0");
        let exponent = text.len() - 1;
        let significant = text.trim_end_matches('0');
        out.push_str(&significant[..1]);
        if significant.len() > 1 {
            out.push('.');
            out.push_str(&significant[1..]);
        }
        let _ = write!(out, "e+{exponent:02}");
    } else {
        let _ = write!(out, "{integer}.0");
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
            (123456.5, "123456.5"),
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
