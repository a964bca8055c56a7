//! The Prometheus protobuf exposition format: `MetricFamily` messages, each
//! prefixed by its length (`application/vnd.google.protobuf;
//! proto=io.prometheus.client.MetricFamily; encoding=delimited`).
//!
//! It is the format a Prometheus server asks for to scrape native histograms:
//! a histogram's message carries its classic buckets and, when the family
//! keeps one, its native histogram (schema, zero bucket, spans and deltas of
//! the buckets in use), as
//! <https://prometheus.io/docs/specs/native_histograms/#exposition-formats>
//! describes. Families, labels and values are the text formats'; `_created`
//! samples become the messages' created timestamps.

use prost::Message;

use crate::cells::exemplar::Exemplar;
use crate::cells::histogram::HistogramSnapshot;
use crate::schema::family::{FamilyDesc, FamilyKind};
use crate::schema::semconv::{Charset, Convention};
use crate::store::visit::{Reading, SeriesView, SeriesVisitor};

/// The `Content-Type` of this format.
pub const CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// `io.prometheus.client.LabelPair`.
#[derive(Clone, PartialEq, Message)]
pub struct LabelPair {
    /// The label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, Message)]
pub struct Timestamp {
    /// Whole seconds since the Unix epoch.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds past `seconds`.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `io.prometheus.client.Counter`.
#[derive(Clone, PartialEq, Message)]
pub struct Counter {
    /// The count or sum.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// When the series was created.
    #[prost(message, optional, tag = "3")]
    pub created_timestamp: Option<Timestamp>,
}

/// `io.prometheus.client.Exemplar`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoExemplar {
    /// Its labels.
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    /// The observed value.
    #[prost(double, tag = "2")]
    pub value: f64,
    /// When it was observed.
    #[prost(message, optional, tag = "3")]
    pub timestamp: Option<Timestamp>,
}

/// `io.prometheus.client.Bucket`: a classic bucket.
#[derive(Clone, PartialEq, Message)]
pub struct Bucket {
    /// Observations at most `upper_bound`.
    #[prost(uint64, tag = "1")]
    pub cumulative_count: u64,
    /// The bucket's bound.
    #[prost(double, tag = "2")]
    pub upper_bound: f64,
    /// The last exemplar of the bucket.
    #[prost(message, optional, tag = "3")]
    pub exemplar: Option<ProtoExemplar>,
}

/// `io.prometheus.client.BucketSpan`: consecutive native buckets.
#[derive(Clone, PartialEq, Message)]
pub struct BucketSpan {
    /// The first bucket's index, or its gap from the previous span's end.
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    /// How many buckets.
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

/// `io.prometheus.client.Histogram`: classic buckets, and a native histogram.
#[derive(Clone, PartialEq, Message)]
pub struct Histogram {
    /// Every observation.
    #[prost(uint64, tag = "1")]
    pub sample_count: u64,
    /// Their sum.
    #[prost(double, tag = "2")]
    pub sample_sum: f64,
    /// The classic buckets, `+Inf` left out (it is `sample_count`).
    #[prost(message, repeated, tag = "3")]
    pub bucket: Vec<Bucket>,
    /// The native histogram's schema.
    #[prost(sint32, tag = "5")]
    pub schema: i32,
    /// The zero bucket's width.
    #[prost(double, tag = "6")]
    pub zero_threshold: f64,
    /// Observations in the zero bucket.
    #[prost(uint64, tag = "7")]
    pub zero_count: u64,
    /// The native buckets in use, as spans.
    #[prost(message, repeated, tag = "12")]
    pub positive_span: Vec<BucketSpan>,
    /// Each native bucket's count less the previous one's.
    #[prost(sint64, repeated, tag = "13")]
    pub positive_delta: Vec<i64>,
    /// When the series was created.
    #[prost(message, optional, tag = "15")]
    pub created_timestamp: Option<Timestamp>,
    /// The native histogram's exemplars (each with its timestamp).
    #[prost(message, repeated, tag = "16")]
    pub exemplars: Vec<ProtoExemplar>,
}

/// `io.prometheus.client.Metric`: one series.
#[derive(Clone, PartialEq, Message)]
pub struct Metric {
    /// Its labels.
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    /// A counter's value.
    #[prost(message, optional, tag = "3")]
    pub counter: Option<Counter>,
    /// A histogram's values.
    #[prost(message, optional, tag = "7")]
    pub histogram: Option<Histogram>,
}

/// `io.prometheus.client.MetricFamily`.
#[derive(Clone, PartialEq, Message)]
pub struct MetricFamily {
    /// The metric name (a counter's with `_total`).
    #[prost(string, tag = "1")]
    pub name: String,
    /// The help text.
    #[prost(string, tag = "2")]
    pub help: String,
    /// `MetricType`: 0 counter, 4 histogram.
    #[prost(int32, tag = "3")]
    pub metric_type: i32,
    /// Its series.
    #[prost(message, repeated, tag = "4")]
    pub metric: Vec<Metric>,
}

/// `MetricType.COUNTER`.
const COUNTER: i32 = 0;
/// `MetricType.HISTOGRAM`.
const HISTOGRAM: i32 = 4;

/// A Unix time in seconds as a `Timestamp`.
fn timestamp(seconds: f64) -> Timestamp {
    let whole = seconds.floor();
    #[allow(clippy::cast_possible_truncation)] // Times of this century fit.
    Timestamp {
        seconds: whole as i64,
        nanos: ((seconds - whole) * 1e9).round().min(999_999_999.0) as i32,
    }
}

/// An exemplar as the format carries it.
fn proto_exemplar(exemplar: &Exemplar) -> ProtoExemplar {
    ProtoExemplar {
        label: exemplar
            .labels
            .iter()
            .map(|(name, value)| LabelPair {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        value: exemplar.value,
        timestamp: Some(timestamp(exemplar.timestamp)),
    }
}

/// The spans and deltas of native buckets (by increasing index).
pub fn spans_and_deltas(buckets: &[(i32, u64)]) -> (Vec<BucketSpan>, Vec<i64>) {
    let mut spans: Vec<BucketSpan> = Vec::new();
    let mut deltas = Vec::with_capacity(buckets.len());
    let mut previous: Option<(i32, u64)> = None;
    for (index, count) in buckets {
        match previous {
            Some((last, _)) if *index == last + 1 => {
                if let Some(span) = spans.last_mut() {
                    span.length += 1;
                }
            }
            Some((last, _)) => spans.push(BucketSpan {
                offset: index - last - 1,
                length: 1,
            }),
            None => spans.push(BucketSpan {
                offset: *index,
                length: 1,
            }),
        }
        let before = previous.map_or(0, |(_, count)| count);
        #[allow(clippy::cast_possible_wrap)] // Counts stay far below 2^63.
        deltas.push(*count as i64 - before as i64);
        previous = Some((*index, *count));
    }
    (spans, deltas)
}

/// Builds the delimited `MetricFamily` messages of a scrape.
pub struct ProtobufEncoder {
    body: Vec<u8>,
    include_created: bool,
    convention: Convention,
    charset: Charset,
}

impl ProtobufEncoder {
    /// An empty body; `include_created` adds the series' created timestamps.
    pub fn new(include_created: bool) -> Self {
        ProtobufEncoder {
            body: Vec::new(),
            include_created,
            convention: Convention::Ours,
            charset: Charset::Legacy,
        }
    }

    /// The encoder, naming families as `convention` does in `charset`.
    #[must_use]
    pub fn named(mut self, convention: Convention, charset: Charset) -> Self {
        self.convention = convention;
        self.charset = charset;
        self
    }

    /// The body: every family's message, each prefixed by its length.
    pub fn finish(self) -> Vec<u8> {
        self.body
    }

    fn histogram(
        &self,
        desc: &FamilyDesc,
        snapshot: &HistogramSnapshot,
        created: f64,
    ) -> Histogram {
        let cumulative = &snapshot.cumulative;
        let bounds = desc.buckets.as_ref().map_or(&[][..], |b| b.bounds());
        let exemplar_of = |index: usize| {
            snapshot
                .exemplars
                .get(index)
                .and_then(Option::as_ref)
                .map(|exemplar| proto_exemplar(exemplar))
        };
        let mut bucket: Vec<Bucket> = bounds
            .iter()
            .zip(cumulative)
            .enumerate()
            .map(|(index, (bound, count))| Bucket {
                cumulative_count: *count,
                upper_bound: *bound,
                exemplar: exemplar_of(index),
            })
            .collect();
        // The `+Inf` bucket is left out, unless it has an exemplar to carry.
        if let Some(exemplar) = exemplar_of(bounds.len()) {
            bucket.push(Bucket {
                cumulative_count: cumulative.last().copied().unwrap_or(0),
                upper_bound: f64::INFINITY,
                exemplar: Some(exemplar),
            });
        }
        let native = snapshot.native.as_ref();
        let mut histogram = Histogram {
            sample_count: cumulative.last().copied().unwrap_or(0),
            sample_sum: snapshot.sum,
            bucket,
            created_timestamp: self.include_created.then(|| timestamp(created)),
            ..Histogram::default()
        };
        if let Some(native) = native {
            let (spans, deltas) = spans_and_deltas(&native.buckets);
            histogram.schema = i32::from(native.schema);
            histogram.zero_threshold = native.zero_threshold;
            histogram.zero_count = native.zero_count;
            // A native histogram without buckets still needs a span, or it
            // reads as a classic one.
            histogram.positive_span = if spans.is_empty() {
                vec![BucketSpan::default()]
            } else {
                spans
            };
            histogram.positive_delta = deltas;
            histogram.exemplars = snapshot
                .exemplars
                .iter()
                .flatten()
                .map(|exemplar| proto_exemplar(exemplar))
                .collect();
        }
        histogram
    }
}

impl SeriesVisitor for ProtobufEncoder {
    fn family_series<'a>(
        &mut self,
        desc: &FamilyDesc,
        series: impl Iterator<Item = SeriesView<'a>>,
    ) {
        let mut series = series.peekable();
        if !desc.shown_when_empty && series.peek().is_none() {
            return;
        }
        let names = self.convention.prometheus(desc, self.charset);
        let (name, metric_type) = match desc.kind {
            FamilyKind::Counter => (format!("{}_total", names.name), COUNTER),
            FamilyKind::Histogram => (names.name, HISTOGRAM),
        };
        let mut family = MetricFamily {
            name,
            help: desc.help.to_owned(),
            metric_type,
            metric: Vec::new(),
        };
        for view in series {
            let label = names
                .labels
                .iter()
                .zip(view.labels.iter())
                .map(|(name, value)| LabelPair {
                    name: name.clone(),
                    value: (*value).to_owned(),
                })
                .collect();
            let created = self.include_created.then(|| timestamp(view.created));
            let mut metric = Metric {
                label,
                ..Metric::default()
            };
            match view.reading {
                Reading::Count(count) => {
                    metric.counter = Some(Counter {
                        value: count as f64,
                        created_timestamp: created,
                    });
                }
                Reading::Sum(sum) => {
                    metric.counter = Some(Counter {
                        value: sum,
                        created_timestamp: created,
                    });
                }
                Reading::Histogram(snapshot) => {
                    metric.histogram = Some(self.histogram(desc, &snapshot, view.created));
                }
            }
            family.metric.push(metric);
        }
        family.encode_length_delimited(&mut self.body).unwrap_or(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cover_runs_and_deltas_follow_counts() {
        let (spans, deltas) = spans_and_deltas(&[(-2, 1), (-1, 3), (2, 2), (3, 2), (10, 1)]);
        assert_eq!(
            spans,
            [
                BucketSpan {
                    offset: -2,
                    length: 2
                },
                BucketSpan {
                    offset: 2,
                    length: 2
                },
                BucketSpan {
                    offset: 6,
                    length: 1
                },
            ]
        );
        assert_eq!(deltas, [1, 2, -1, 0, -1]);
    }

    #[test]
    fn timestamps_split_seconds_and_nanoseconds() {
        assert_eq!(
            timestamp(1_700_000_000.25),
            Timestamp {
                seconds: 1_700_000_000,
                nanos: 250_000_000
            }
        );
    }
}
