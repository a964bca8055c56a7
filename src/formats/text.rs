//! The Prometheus text exposition format (version 0.0.4) and `OpenMetrics` 1.0,
//! byte for byte as `prometheus_client.generate_latest` and
//! `prometheus_client.openmetrics.exposition.generate_latest` write them.
//!
//! Values are formatted like `prometheus_client.utils.floatToGoString`
//! (Python's shortest `repr`, switched to an exponent from 1e6 up as Go does).
//! The two formats differ in where `_created` samples go (the text format
//! gathers them into a separate gauge family printed after their family's other
//! samples; `OpenMetrics` keeps them with their series), in the family name of a
//! counter's `# HELP` and `# TYPE` lines (with `_total` in the text format),
//! and in the `# EOF` line that ends an `OpenMetrics` exposition, which the
//! caller writes once every collector has written its families.

use smallvec::SmallVec;

use crate::cells::exemplar::Exemplar;
use crate::formats::gzip::Gzip;
use crate::schema::family::{FamilyDesc, FamilyKind};
use crate::schema::float_text::{write_repr, write_value};
use crate::schema::label_text::bytes_equal_to;
use crate::schema::semconv::{is_legacy, Charset, Convention};
use crate::store::visit::SampleVisitor;

/// Content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Appends a label value with `\`, newline and `"` escaped.
pub fn write_label_value(out: &mut String, value: &str) {
    if !needs_escape(value.as_bytes()) {
        out.push_str(value);
        return;
    }
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

/// Whether `bytes` hold a `\\`, a newline or a `"`. Most label values hold
/// none: eight bytes are tested at a time for the three.
#[inline]
fn needs_escape(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(8);
    for chunk in chunks.by_ref() {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let flags =
            bytes_equal_to(word, b'\\') | bytes_equal_to(word, b'\n') | bytes_equal_to(word, b'"');
        if flags != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|byte| matches!(byte, b'\\' | b'\n' | b'"'))
}

/// Appends a metric or label name, quoted when `quoted` (a UTF-8 name outside
/// the legacy set).
fn write_name(out: &mut String, name: &str, suffix: &str, quoted: bool) {
    if quoted {
        out.push('"');
        write_label_value(out, name);
        out.push_str(suffix);
        out.push('"');
    } else {
        out.push_str(name);
        out.push_str(suffix);
    }
}

/// Appends a `# HELP` line, escaping the help text as `format` requires.
fn write_help(out: &mut String, format: Format, name: &FamilyName, suffix: &str, help: &str) {
    out.push_str("# HELP ");
    write_name(out, &name.name, suffix, name.quoted);
    out.push(' ');
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

/// Appends a `# TYPE` line.
fn write_type(out: &mut String, name: &FamilyName, suffix: &str, type_name: &str) {
    out.push_str("# TYPE ");
    write_name(out, &name.name, suffix, name.quoted);
    out.push(' ');
    out.push_str(type_name);
    out.push('\n');
}

/// Appends `name="value",...` for the labels of one series, the names as
/// rendered once for the family.
fn write_labels(out: &mut String, names: &[String], labels: &[&str]) {
    for (index, (name, label)) in names.iter().zip(labels).enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        write_label_value(out, label);
        out.push('"');
    }
}

/// The start of a sample line up to its series' labels: the name and suffix,
/// the bucket's `le` and the comma before the labels. Every series of a family
/// has the same sample lines, so each start is written once per family.
fn line_start(name: &FamilyName, suffix: &str, le: Option<&str>, labelled: bool) -> String {
    let mut out = String::with_capacity(name.name.len() + suffix.len() + 16);
    // A quoted name goes inside the braces, as the first "label".
    let mut first = true;
    if name.quoted {
        out.push('{');
        write_name(&mut out, &name.name, suffix, true);
        first = false;
    } else {
        out.push_str(&name.name);
        out.push_str(suffix);
        out.push('{');
    }
    if let Some(le) = le {
        if !first {
            out.push(',');
        }
        out.push_str("le=\"");
        out.push_str(le);
        out.push('"');
        first = false;
    }
    if labelled && !first {
        out.push(',');
    }
    out
}

/// The start of one sample line of the current family (see [`line_start`]),
/// with what it was written for.
struct LineStart {
    suffix: &'static str,
    le: Option<String>,
    /// Where the `le` it was written for lay: the next series' same bucket
    /// usually brings the same one, known without comparing its text.
    le_at: Option<(usize, usize)>,
    text: String,
}

/// Where a text lies: its address and length.
fn address(text: &str) -> (usize, usize) {
    (text.as_ptr() as usize, text.len())
}

impl LineStart {
    fn written_for(&self, suffix: &'static str, le: Option<&str>) -> bool {
        let same_suffix = std::ptr::eq(self.suffix, suffix) || self.suffix == suffix;
        let same_le = match (le, &self.le) {
            (None, None) => true,
            (Some(le), Some(own)) => self.le_at == Some(address(le)) || le == own,
            _ => false,
        };
        same_suffix && same_le
    }
}

/// The name of the family being written, as the exposition spells it.
#[derive(Default)]
struct FamilyName {
    name: String,
    /// Whether it is quoted (a UTF-8 name outside the legacy set).
    quoted: bool,
}

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4.
    #[default]
    Text,
    /// `OpenMetrics` 1.0 text, without the final `# EOF` line.
    OpenMetrics,
}

/// Builds an exposition while a [`crate::store::Store`] is visited.
#[derive(Default)]
pub struct TextEncoder {
    format: Format,
    convention: Convention,
    charset: Charset,
    out: String,
    /// The current family's name, and its label names as written.
    name: FamilyName,
    label_names: Vec<String>,
    created: String,
    /// The current family's sample line starts, in the order of a series' samples.
    line_starts: Vec<LineStart>,
    /// The escaped labels of the series being visited and the `} ` that ends
    /// them, rendered once for all its samples.
    series_labels: String,
    series: Option<usize>,
    /// Which of its series' samples comes next.
    sample_index: usize,
    /// Where the text goes in chunks as it is written, when it is compressed
    /// (see [`TextEncoder::gzipped`]).
    gzip: Option<Gzip>,
}

/// The text written before a compressing encoder hands it to gzip: small
/// enough to stay in the processor's cache between the two.
const GZIP_CHUNK: usize = 256 * 1024;

impl SampleVisitor for TextEncoder {
    fn family(&mut self, desc: &FamilyDesc) {
        let names = self.convention.prometheus(desc, self.charset);
        let utf8 = self.charset == Charset::Utf8;
        self.name = FamilyName {
            quoted: utf8 && !is_legacy(&names.name, true),
            name: names.name,
        };
        self.label_names = names
            .labels
            .into_iter()
            .map(|label| {
                if utf8 && !is_legacy(&label, false) {
                    let mut quoted = String::with_capacity(label.len() + 2);
                    write_name(&mut quoted, &label, "", true);
                    quoted
                } else {
                    label
                }
            })
            .collect();
        let suffix = match (self.format, desc.kind) {
            (Format::Text, FamilyKind::Counter) => "_total",
            _ => "",
        };
        write_help(&mut self.out, self.format, &self.name, suffix, desc.help);
        write_type(&mut self.out, &self.name, suffix, desc.kind.type_name());
        self.line_starts.clear();
    }

    fn sample(
        &mut self,
        _desc: &FamilyDesc,
        suffix: &'static str,
        le: Option<&str>,
        series: usize,
        labels: &[&str],
        value: f64,
    ) {
        if self.series != Some(series) {
            // Between series, the text so far is whole (a bucket's exemplar
            // follows its line): the place to hand it to gzip.
            if self.gzip.is_some() && self.out.len() >= GZIP_CHUNK {
                self.compress_written();
            }
            self.series = Some(series);
            self.sample_index = 0;
            self.series_labels.clear();
            write_labels(&mut self.series_labels, &self.label_names, labels);
            self.series_labels.push_str("} ");
        }
        let index = self.sample_index;
        self.sample_index += 1;
        let known = self
            .line_starts
            .get(index)
            .is_some_and(|start| start.written_for(suffix, le));
        if !known {
            let start = LineStart {
                suffix,
                le: le.map(str::to_owned),
                le_at: le.map(address),
                text: line_start(&self.name, suffix, le, !self.label_names.is_empty()),
            };
            self.line_starts.truncate(index);
            self.line_starts.push(start);
        }
        let out = if suffix == "_created" && self.format == Format::Text {
            &mut self.created
        } else {
            &mut self.out
        };
        out.push_str(&self.line_starts[index].text);
        out.push_str(&self.series_labels);
        write_value(out, value);
        out.push('\n');
    }

    fn exemplar(&mut self, _desc: &FamilyDesc, exemplar: &Exemplar) {
        // Only OpenMetrics has exemplars: ` # {labels} value timestamp` ends
        // the bucket's line.
        if self.format != Format::OpenMetrics || !self.out.ends_with('\n') {
            return;
        }
        self.out.pop();
        self.out.push_str(" # {");
        // Sorted, and the timestamp as Python prints it, as `prometheus_client` writes them.
        let mut labels: SmallVec<[&(String, String); 4]> = exemplar.labels.iter().collect();
        labels.sort();
        for (index, (name, value)) in labels.into_iter().enumerate() {
            if index > 0 {
                self.out.push(',');
            }
            self.out.push_str(name);
            self.out.push_str("=\"");
            write_label_value(&mut self.out, value);
            self.out.push('"');
        }
        self.out.push_str("} ");
        write_value(&mut self.out, exemplar.value);
        self.out.push(' ');
        write_repr(&mut self.out, exemplar.timestamp);
        self.out.push('\n');
    }

    fn end_family(&mut self, desc: &FamilyDesc) {
        self.series = None;
        if self.created.is_empty() {
            return;
        }
        write_help(
            &mut self.out,
            self.format,
            &self.name,
            "_created",
            desc.help,
        );
        write_type(&mut self.out, &self.name, "_created", "gauge");
        self.out.push_str(&self.created);
        self.created.clear();
    }
}

impl TextEncoder {
    /// An encoder writing `format`.
    pub fn new(format: Format) -> Self {
        Self::reusing(format, String::with_capacity(4096))
    }

    /// An encoder writing `format` into `buffer`, emptied first: a buffer kept
    /// from an earlier exposition spares a large one its allocation and regrowth.
    pub fn reusing(format: Format, mut buffer: String) -> Self {
        buffer.clear();
        TextEncoder {
            format,
            out: buffer,
            ..TextEncoder::default()
        }
    }

    /// The encoder, naming families as `convention` does in `charset`.
    #[must_use]
    pub fn named(mut self, convention: Convention, charset: Charset) -> Self {
        self.convention = convention;
        self.charset = charset;
        self
    }

    /// The text written so far.
    pub fn into_text(self) -> String {
        self.out
    }

    /// The encoder, compressing the text into one gzip member as it goes, a
    /// chunk at a time: the whole text is never held at once.
    #[must_use]
    pub fn gzipped(mut self) -> Self {
        self.gzip = Some(Gzip::new(GZIP_CHUNK));
        self
    }

    /// Hands the text written so far to gzip, when compressing.
    fn compress_written(&mut self) {
        if let Some(gzip) = &mut self.gzip {
            gzip.write(self.out.as_bytes());
            self.out.clear();
        }
    }

    /// The gzip member of the text written, then `others`; None unless the
    /// encoder compresses ([`TextEncoder::gzipped`]).
    pub fn finish_gzip(mut self, others: &[u8]) -> Option<Vec<u8>> {
        self.compress_written();
        let mut gzip = self.gzip?;
        gzip.write(others);
        Some(gzip.finish())
    }
}

/// Every family of `store` in `format`: the tests' view of a store.
#[cfg(test)]
pub(crate) fn render(store: &crate::store::Store, format: Format, include_created: bool) -> String {
    let mut encoder = TextEncoder::new(format);
    store.visit(include_created, &mut encoder);
    encoder.into_text()
}

#[cfg(test)]
mod tests {
    use crate::store::Store;

    #[test]
    fn escapes_are_found_at_every_place() {
        for len in 0..24 {
            for at in 0..=len {
                for special in [b'\\', b'\n', b'"', b'a', 0x5d, 0x21, 0x0b, 0xdc] {
                    let mut bytes = vec![b'x'; len];
                    if at < len {
                        bytes[at] = special;
                    }
                    let expected = bytes.iter().any(|b| matches!(b, b'\\' | b'\n' | b'"'));
                    assert_eq!(needs_escape(&bytes), expected, "{bytes:?}");
                }
            }
        }
    }

    use super::*;
    use crate::schema::request::RequestValues;
    use crate::store::pricing::PriceTable;
    use crate::store::{CacheOutcome, RequestLabels};
    use std::io::Read;

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        write_label_value(&mut out, "we\"ird\\mo\ndel é");
        assert_eq!(out, "we\\\"ird\\\\mo\\ndel é");
    }

    #[test]
    fn a_compressing_encoder_gives_the_text_gzipped() {
        // Enough series for several chunks, in both formats, with `_created`.
        let store = Store::new(PriceTable::default());
        for index in 0..3_000 {
            let model = format!("model-{index}");
            let labels = RequestLabels {
                provider: "openai",
                model: &model,
                operation: "chat",
                status: "ok",
                extra: &[],
            };
            store.record_request(&labels, &RequestValues::new(0.3, 10, 2));
        }
        for format in [Format::Text, Format::OpenMetrics] {
            let text = render(&store, format, true);
            assert!(text.len() > 3 * GZIP_CHUNK, "{} bytes", text.len());
            let mut encoder = TextEncoder::new(format).gzipped();
            store.visit(true, &mut encoder);
            let body = encoder.finish_gzip(b"# EOF\n").unwrap();
            let mut unpacked = String::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_string(&mut unpacked)
                .unwrap();
            assert_eq!(unpacked, text + "# EOF\n");
        }
        assert!(TextEncoder::new(Format::Text).finish_gzip(b"").is_none());
    }

    #[test]
    fn renders_the_reference_layout() {
        let store = Store::new(PriceTable::default());
        let labels = RequestLabels {
            provider: "anthropic",
            model: "we\"ird\\mo\ndel",
            operation: "stream",
            status: "error",
            extra: &[],
        };
        let values = RequestValues::new(61.0, 0, 0);
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

    #[test]
    fn gen_ai_names_are_quoted_in_utf8_and_underscored_otherwise() {
        let store = Store::new(PriceTable::default());
        let labels = RequestLabels {
            provider: "openai",
            model: "gpt-4o",
            operation: "chat",
            status: "ok",
            extra: &[],
        };
        store.record_request(&labels, &RequestValues::new(0.2, 3, 4));
        let text = |format, charset| {
            let mut encoder =
                TextEncoder::new(format).named(Convention::GenAi { histograms: false }, charset);
            store.visit(true, &mut encoder);
            encoder.into_text()
        };
        let utf8 = text(Format::OpenMetrics, Charset::Utf8);
        assert!(utf8.contains(
            "# HELP \"gen_ai.client.operation.duration_seconds\" LLM request wall-clock latency in seconds.\n\
             # TYPE \"gen_ai.client.operation.duration_seconds\" histogram\n\
             {\"gen_ai.client.operation.duration_seconds_bucket\",le=\"0.05\",\"gen_ai.request.model\"=\"gpt-4o\",\"gen_ai.operation.name\"=\"chat\",\"gen_ai.provider.name\"=\"openai\"} 0.0\n"
        ), "{utf8}");
        assert!(utf8.contains(
            "{\"gen_ai.client.operation.duration_seconds_created\",\"gen_ai.request.model\"=\"gpt-4o\""
        ));
        // Names within the legacy set stay unquoted, labels named by the conventions do not.
        assert!(utf8.contains(
            "ractogateway_tokens_total{\"gen_ai.request.model\"=\"gpt-4o\",\"gen_ai.provider.name\"=\"openai\",\"gen_ai.token.type\"=\"input\"} 3.0\n"
        ), "{utf8}");
        let legacy = text(Format::Text, Charset::Legacy);
        assert!(legacy.contains(
            "gen_ai_client_operation_duration_seconds_count{gen_ai_request_model=\"gpt-4o\",gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\"} 1.0\n"
        ), "{legacy}");
        assert!(legacy.contains("# TYPE gen_ai_client_operation_duration_seconds_created gauge\n"));
        assert!(!legacy.contains("{\""));
        // Our names in UTF-8 are the legacy bytes.
        let ours = |charset| {
            let mut encoder =
                TextEncoder::new(Format::OpenMetrics).named(Convention::Ours, charset);
            store.visit(true, &mut encoder);
            encoder.into_text()
        };
        assert_eq!(ours(Charset::Utf8), ours(Charset::Legacy));
    }
}
