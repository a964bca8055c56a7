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
use prost_types::Timestamp;

use crate::cells::exemplar::Exemplar;
use crate::cells::histogram::HistogramSnapshot;
use crate::formats::wire::io::prometheus::client::{
    Bucket, BucketSpan, Counter, Exemplar as ProtoExemplar, Gauge, Histogram, LabelPair, Metric,
    MetricFamily, MetricType,
};
use crate::formats::wire::present;
use crate::schema::family::{FamilyDesc, FamilyKind};
use crate::schema::semconv::{Charset, Convention};
use crate::store::visit::{Reading, SeriesView, SeriesVisitor};

/// The `Content-Type` of this format.
pub const CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// `MetricType.COUNTER`.
const COUNTER: i32 = MetricType::Counter as i32;
/// `MetricType.GAUGE`.
const GAUGE: i32 = MetricType::Gauge as i32;
/// `MetricType.HISTOGRAM`.
const HISTOGRAM: i32 = MetricType::Histogram as i32;

/// A Unix time in seconds as a `Timestamp`.
pub(crate) fn timestamp(seconds: f64) -> Timestamp {
    let whole = seconds.floor();
    #[allow(clippy::cast_possible_truncation)] // Times of this century fit.
    Timestamp {
        seconds: whole as i64,
        nanos: ((seconds - whole) * 1e9).round().min(999_999_999.0) as i32,
    }
}

/// A label as the format carries it.
fn label_pair(name: &str, value: &str) -> LabelPair {
    LabelPair {
        name: present(name.to_owned()),
        value: present(value.to_owned()),
    }
}

/// An exemplar as the format carries it.
fn proto_exemplar(exemplar: &Exemplar) -> ProtoExemplar {
    ProtoExemplar {
        label: exemplar
            .labels
            .iter()
            .map(|(name, value)| label_pair(name, value))
            .collect(),
        value: present(exemplar.value),
        timestamp: Some(timestamp(exemplar.timestamp)),
    }
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
                cumulative_count: present(*count),
                upper_bound: present(*bound),
                exemplar: exemplar_of(index),
                ..Bucket::default()
            })
            .collect();
        // The `+Inf` bucket is left out, unless it has an exemplar to carry.
        if let Some(exemplar) = exemplar_of(bounds.len()) {
            bucket.push(Bucket {
                cumulative_count: present(cumulative.last().copied().unwrap_or(0)),
                upper_bound: Some(f64::INFINITY),
                exemplar: Some(exemplar),
                ..Bucket::default()
            });
        }
        let native = snapshot.native.as_ref();
        let mut histogram = Histogram {
            sample_count: present(cumulative.last().copied().unwrap_or(0)),
            sample_sum: present(snapshot.sum),
            bucket,
            created_timestamp: self.include_created.then(|| timestamp(created)),
            ..Histogram::default()
        };
        if let Some(native) = native {
            let (spans, deltas) = native.spans_and_deltas();
            histogram.schema = present(i32::from(native.schema));
            histogram.zero_threshold = present(native.zero_threshold);
            histogram.zero_count = present(native.zero_count);
            // A native histogram without buckets still needs a span, or it
            // reads as a classic one.
            histogram.positive_span = if spans.is_empty() {
                vec![BucketSpan::default()]
            } else {
                spans
                    .into_iter()
                    .map(|(offset, length)| BucketSpan {
                        offset: present(offset),
                        length: present(length),
                    })
                    .collect()
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
            FamilyKind::Gauge => (names.name, GAUGE),
            FamilyKind::Histogram => (names.name, HISTOGRAM),
        };
        let mut family = MetricFamily {
            name: present(name),
            help: present(desc.help.to_owned()),
            r#type: present(metric_type),
            ..MetricFamily::default()
        };
        for view in series {
            let label = names
                .labels
                .iter()
                .zip(view.labels.iter())
                .map(|(name, value)| label_pair(name, value))
                .collect();
            let created = self.include_created.then(|| timestamp(view.created));
            let mut metric = Metric {
                label,
                ..Metric::default()
            };
            match view.reading {
                Reading::Count(count) => {
                    metric.counter = Some(Counter {
                        value: present(count as f64),
                        created_timestamp: created,
                        ..Counter::default()
                    });
                }
                Reading::Sum(sum) => {
                    metric.counter = Some(Counter {
                        value: present(sum),
                        created_timestamp: created,
                        ..Counter::default()
                    });
                }
                #[allow(clippy::cast_precision_loss)] // Levels stay far below 2^53.
                Reading::Level(level) => {
                    metric.gauge = Some(Gauge {
                        value: present(level as f64),
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
