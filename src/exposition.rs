//! The Prometheus text exposition format (version 0.0.4) and OpenMetrics 1.0,
//! byte for byte as `prometheus_client.generate_latest` and
//! `prometheus_client.openmetrics.exposition.generate_latest` write them.
//!
//! Values are formatted like `prometheus_client.utils.floatToGoString`
//! (Python's shortest `repr`, switched to an exponent from 1e6 up as Go does).
//! The two formats differ in where `_created` samples go (the text format
//! gathers them into a separate gauge family printed after their family's other
//! samples; OpenMetrics keeps them with their series), in the family name of a
//! counter's `# HELP` and `# TYPE` lines (with `_total` in the text format),
//! and in the `# EOF` line that ends an OpenMetrics exposition, which the
//! caller writes once every collector has written its families.

use std::fmt::Write as _;

use crate::family::{FamilyDesc, FamilyKind};
use crate::store::Store;
use crate::visit::SampleVisitor;

/// Content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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
    let go_uses_exponent = value > 0.0 && exponent >= 6;
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

/// Appends a label value with `\`, newline and `"` escaped.
pub fn write_label_value(out: &mut String, value: &str) {
    let mut start = 0;
    for (index, byte) in value.bytes().enumerate() {
        let escaped = match byte {
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'"' => "\\\"",
            _ => continue,
        };
        out.push_str(&value[start..index]);
        out.push_str(escaped);
        start = index + 1;
    }
    out.push_str(&value[start..]);
}

/// Appends a `# HELP` line, escaping the help text as `format` requires.
fn write_help(out: &mut String, format: Format, name: &str, suffix: &str, help: &str) {
    let _ = write!(out, "# HELP {name}{suffix} ");
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if format == Format::OpenMetrics => out.push_str("\\\""),
            _ => out.push(c),
        }
    }
    out.push('\n');
}

/// Appends `name="value",...` for the labels of one series.
fn write_labels(out: &mut String, desc: &FamilyDesc, labels: &[&str]) {
    for (index, (name, label)) in desc.label_names.iter().zip(labels).enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        write_label_value(out, label);
        out.push('"');
    }
}

fn write_sample(
    out: &mut String,
    desc: &FamilyDesc,
    suffix: &str,
    le: Option<&str>,
    rendered_labels: &str,
    value: f64,
) {
    out.push_str(desc.name);
    out.push_str(suffix);
    out.push('{');
    if let Some(le) = le {
        out.push_str("le=\"");
        out.push_str(le);
        out.push('"');
        if !rendered_labels.is_empty() {
            out.push(',');
        }
    }
    out.push_str(rendered_labels);
    out.push_str("} ");
    write_value(out, value);
    out.push('\n');
}

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4.
    #[default]
    Text,
    /// OpenMetrics 1.0 text, without the final `# EOF` line.
    OpenMetrics,
}

/// Builds an exposition while a [`Store`] is visited.
#[derive(Default)]
pub struct TextEncoder {
    format: Format,
    out: String,
    created: String,
    /// The escaped labels of the series being visited, rendered once for all its samples.
    series_labels: String,
    series: Option<usize>,
}

impl SampleVisitor for TextEncoder {
    fn family(&mut self, desc: &FamilyDesc) {
        let suffix = match (self.format, desc.kind) {
            (Format::Text, FamilyKind::Counter) => "_total",
            _ => "",
        };
        write_help(&mut self.out, self.format, desc.name, suffix, desc.help);
        let _ = writeln!(
            self.out,
            "# TYPE {}{suffix} {}",
            desc.name,
            desc.kind.type_name()
        );
    }

    fn sample(
        &mut self,
        desc: &FamilyDesc,
        suffix: &'static str,
        le: Option<&'static str>,
        series: usize,
        labels: &[&str],
        value: f64,
    ) {
        if self.series != Some(series) {
            self.series = Some(series);
            self.series_labels.clear();
            write_labels(&mut self.series_labels, desc, labels);
        }
        let out = if suffix == "_created" && self.format == Format::Text {
            &mut self.created
        } else {
            &mut self.out
        };
        write_sample(out, desc, suffix, le, &self.series_labels, value);
    }

    fn end_family(&mut self, desc: &FamilyDesc) {
        self.series = None;
        if self.created.is_empty() {
            return;
        }
        write_help(&mut self.out, self.format, desc.name, "_created", desc.help);
        let _ = writeln!(self.out, "# TYPE {}_created gauge", desc.name);
        self.out.push_str(&self.created);
        self.created.clear();
    }
}

impl TextEncoder {
    /// An encoder writing `format`.
    pub fn new(format: Format) -> Self {
        TextEncoder {
            format,
            out: String::with_capacity(4096),
            ..TextEncoder::default()
        }
    }

    /// The text written so far.
    pub fn into_text(self) -> String {
        self.out
    }
}

/// Renders every family of `store` in `format`.
pub fn render(store: &Store, format: Format, include_created: bool) -> String {
    let mut encoder = TextEncoder::new(format);
    store.visit(include_created, &mut encoder);
    encoder.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::PriceTable;
    use crate::store::{CacheOutcome, RequestLabels, RequestValues};

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
    fn label_values_are_escaped() {
        let mut out = String::new();
        write_label_value(&mut out, "we\"ird\\mo\ndel é");
        assert_eq!(out, "we\\\"ird\\\\mo\\ndel é");
    }

    #[test]
    fn renders_the_reference_layout() {
        let store = Store::new(PriceTable::default());
        let labels = RequestLabels {
            provider: "anthropic",
            model: "we\"ird\\mo\ndel",
            operation: "stream",
            status: "error",
        };
        let values = RequestValues {
            latency_s: 61.0,
            input_tokens: 0,
            output_tokens: 0,
        };
        store.record_request(&labels, &values);
        store.record_cache(CacheOutcome::Hit, "exact");
        let text = render(&store, Format::Text, false);
        assert!(text.starts_with(
            "# HELP ractogateway_requests_total Total LLM requests by provider / model / operation / status.\n\
             # TYPE ractogateway_requests_total counter\n\
             ractogateway_requests_total{model=\"we\\\"ird\\\\mo\\ndel\",operation=\"stream\",provider=\"anthropic\",status=\"error\"} 1.0\n\
             # HELP ractogateway_request_duration_seconds LLM request wall-clock latency in seconds.\n\
             # TYPE ractogateway_request_duration_seconds histogram\n\
             ractogateway_request_duration_seconds_bucket{le=\"0.05\",model="
        ));
        assert!(text.contains(
            "ractogateway_request_duration_seconds_bucket{le=\"+Inf\",model=\"we\\\"ird\\\\mo\\ndel\",operation=\"stream\",provider=\"anthropic\"} 1.0\n\
             ractogateway_request_duration_seconds_count{model=\"we\\\"ird\\\\mo\\ndel\",operation=\"stream\",provider=\"anthropic\"} 1.0\n\
             ractogateway_request_duration_seconds_sum{model=\"we\\\"ird\\\\mo\\ndel\",operation=\"stream\",provider=\"anthropic\"} 61.0\n"
        ));
        assert!(text.ends_with(
            "# HELP ractogateway_cache_hits_total Total cache hits by cache type (exact / semantic).\n\
             # TYPE ractogateway_cache_hits_total counter\n\
             ractogateway_cache_hits_total{cache_type=\"exact\"} 1.0\n\
             # HELP ractogateway_cache_misses_total Total cache misses by cache type (exact / semantic).\n\
             # TYPE ractogateway_cache_misses_total counter\n\
             # HELP ractogateway_tool_calls_total Total tool calls executed, labelled by tool name.\n\
             # TYPE ractogateway_tool_calls_total counter\n"
        ));
    }

    #[test]
    fn created_samples_form_a_gauge_family_after_their_family() {
        let store = Store::new(PriceTable::default());
        store.record_cache(CacheOutcome::Miss, "semantic");
        let text = render(&store, Format::Text, true);
        let block = "# TYPE ractogateway_cache_misses_total counter\n\
             ractogateway_cache_misses_total{cache_type=\"semantic\"} 1.0\n\
             # HELP ractogateway_cache_misses_created Total cache misses by cache type (exact / semantic).\n\
             # TYPE ractogateway_cache_misses_created gauge\n\
             ractogateway_cache_misses_created{cache_type=\"semantic\"} ";
        assert!(text.contains(block), "{text}");
    }
}
