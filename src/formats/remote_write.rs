//! Prometheus remote write 1.0: the body of one request carrying every sample.
//!
//! The body is a protobuf `prometheus.WriteRequest` compressed with snappy's
//! block format, as the remote-write 1.0 specification requires
//! (<https://prometheus.io/docs/specs/prw/remote_write_spec/>). Histograms go as
//! classic `_bucket`/`_count`/`_sum` series, each bucket series with its
//! exemplar; a native histogram goes too, as a series named as its family
//! holding a `prometheus.Histogram`. `_created` samples stay home, since a
//! receiver would store them as series of their own. Every sample of one
//! request carries the same timestamp, and each series' labels are sorted by
//! name, `__name__` among them, as the specification asks.

use prost::Message;

use crate::cells::exemplar::Exemplar;
use crate::cells::native_histogram::NativeSnapshot;
use crate::formats::protobuf::spans_and_deltas;
use crate::schema::family::{FamilyDesc, FamilyKind};
use crate::schema::semconv::{Charset, Convention, PrometheusNames};
use crate::store::visit::SampleVisitor;

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Message)]
pub struct Label {
    /// The label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    /// The value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `prometheus.Exemplar`.
#[derive(Clone, PartialEq, Message)]
pub struct WriteExemplar {
    /// Its labels.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// The observed value.
    #[prost(double, tag = "2")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

/// `prometheus.BucketSpan`: consecutive native buckets.
#[derive(Clone, PartialEq, Message)]
pub struct WriteBucketSpan {
    /// The first bucket's index, or its gap from the previous span's end.
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    /// How many buckets.
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

/// `prometheus.Histogram`: a native histogram (integer counts).
#[derive(Clone, PartialEq, Message)]
pub struct WriteHistogram {
    /// Every observation (`count_int`).
    #[prost(uint64, tag = "1")]
    pub count_int: u64,
    /// Their sum.
    #[prost(double, tag = "3")]
    pub sum: f64,
    /// The resolution.
    #[prost(sint32, tag = "4")]
    pub schema: i32,
    /// The zero bucket's width.
    #[prost(double, tag = "5")]
    pub zero_threshold: f64,
    /// Observations in the zero bucket (`zero_count_int`).
    #[prost(uint64, tag = "6")]
    pub zero_count_int: u64,
    /// The buckets in use, as spans.
    #[prost(message, repeated, tag = "11")]
    pub positive_spans: Vec<WriteBucketSpan>,
    /// Each bucket's count less the previous one's.
    #[prost(sint64, repeated, tag = "12")]
    pub positive_deltas: Vec<i64>,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "15")]
    pub timestamp: i64,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    /// Sorted by name.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// One sample per request.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    /// A bucket series' exemplar.
    #[prost(message, repeated, tag = "3")]
    pub exemplars: Vec<WriteExemplar>,
    /// A native histogram series' value.
    #[prost(message, repeated, tag = "4")]
    pub histograms: Vec<WriteHistogram>,
}

/// `prometheus.MetricMetadata`.
#[derive(Clone, PartialEq, Message)]
pub struct MetricMetadata {
    /// `MetricType`: 1 counter, 3 histogram.
    #[prost(int32, tag = "1")]
    pub metric_type: i32,
    /// The family name as the text format's `# TYPE` line gives it.
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    /// The help text.
    #[prost(string, tag = "4")]
    pub help: String,
    /// The unit (none here).
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    /// Every series.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    /// Type and help of every family.
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// `MetricType.COUNTER`.
const COUNTER: i32 = 1;
/// `MetricType.HISTOGRAM`.
const HISTOGRAM: i32 = 3;

/// Builds a [`WriteRequest`] from a scrape's samples.
pub struct RemoteWriteEncoder {
    request: WriteRequest,
    /// Labels every series gets unless it has a label of that name: `job`, `instance`.
    target_labels: Vec<Label>,
    timestamp_ms: i64,
    convention: Convention,
    /// The current family's names, legacy-spelt as remote write 1.0 requires.
    names: PrometheusNames,
}

impl RemoteWriteEncoder {
    /// An encoder stamping every sample with `timestamp_ms` and adding
    /// `target_labels` to every series that lacks them.
    pub fn new(target_labels: &[(&str, &str)], timestamp_ms: i64) -> Self {
        RemoteWriteEncoder {
            request: WriteRequest::default(),
            target_labels: target_labels
                .iter()
                .map(|(name, value)| Label {
                    name: (*name).to_owned(),
                    value: (*value).to_owned(),
                })
                .collect(),
            timestamp_ms,
            convention: Convention::Ours,
            names: PrometheusNames {
                name: String::new(),
                labels: Vec::new(),
            },
        }
    }

    /// The encoder, naming families as `convention` does.
    #[must_use]
    pub fn named(mut self, convention: Convention) -> Self {
        self.convention = convention;
        self
    }

    /// The request's body: the protobuf, snappy-compressed.
    pub fn finish(self) -> Vec<u8> {
        let protobuf = self.request.encode_to_vec();
        snap::raw::Encoder::new()
            .compress_vec(&protobuf)
            // Only an input above ~4 GiB fails; a `WriteRequest` of one store is far smaller.
            .unwrap_or_default()
    }
}

impl RemoteWriteEncoder {
    /// A series' labels, sorted by name: its name, the family's labels, `le`,
    /// and the target labels it lacks.
    fn series_labels(&self, suffix: &str, le: Option<&str>, labels: &[&str]) -> Vec<Label> {
        let mut series_labels = Vec::with_capacity(labels.len() + 4);
        series_labels.push(Label {
            name: "__name__".to_owned(),
            value: format!("{}{suffix}", self.names.name),
        });
        for (name, value) in self.names.labels.iter().zip(labels) {
            series_labels.push(Label {
                name: name.clone(),
                value: (*value).to_owned(),
            });
        }
        if let Some(le) = le {
            series_labels.push(Label {
                name: "le".to_owned(),
                value: le.to_owned(),
            });
        }
        for target in &self.target_labels {
            if !self.names.labels.contains(&target.name) {
                series_labels.push(target.clone());
            }
        }
        series_labels.sort_by(|a, b| a.name.cmp(&b.name));
        series_labels
    }
}

impl SampleVisitor for RemoteWriteEncoder {
    fn wants_native(&self) -> bool {
        true
    }

    fn family(&mut self, desc: &FamilyDesc) {
        let (metric_type, suffix) = match desc.kind {
            FamilyKind::Counter => (COUNTER, "_total"),
            FamilyKind::Histogram => (HISTOGRAM, ""),
        };
        self.names = self.convention.prometheus(desc, Charset::Legacy);
        self.request.metadata.push(MetricMetadata {
            metric_type,
            metric_family_name: format!("{}{suffix}", self.names.name),
            help: desc.help.to_owned(),
            unit: String::new(),
        });
    }

    fn sample(
        &mut self,
        _desc: &FamilyDesc,
        suffix: &'static str,
        le: Option<&str>,
        _series: usize,
        labels: &[&str],
        value: f64,
    ) {
        if suffix == "_created" {
            return;
        }
        let series_labels = self.series_labels(suffix, le, labels);
        self.request.timeseries.push(TimeSeries {
            labels: series_labels,
            samples: vec![Sample {
                value,
                timestamp: self.timestamp_ms,
            }],
            exemplars: Vec::new(),
            histograms: Vec::new(),
        });
    }

    fn exemplar(&mut self, _desc: &FamilyDesc, exemplar: &Exemplar) {
        // It belongs to the bucket series just added.
        if let Some(series) = self.request.timeseries.last_mut() {
            #[allow(clippy::cast_possible_truncation)] // Milliseconds of this era fit.
            series.exemplars.push(WriteExemplar {
                labels: exemplar
                    .labels
                    .iter()
                    .map(|(name, value)| Label {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                value: exemplar.value,
                timestamp: (exemplar.timestamp * 1000.0).round() as i64,
            });
        }
    }

    fn native_histogram(
        &mut self,
        _desc: &FamilyDesc,
        labels: &[&str],
        native: &NativeSnapshot,
        sum: f64,
    ) {
        // A series of its own, named as the family, holding the histogram.
        let series_labels = self.series_labels("", None, labels);
        let (spans, deltas) = spans_and_deltas(&native.buckets);
        self.request.timeseries.push(TimeSeries {
            labels: series_labels,
            samples: Vec::new(),
            exemplars: Vec::new(),
            histograms: vec![WriteHistogram {
                count_int: native.count(),
                sum,
                schema: i32::from(native.schema),
                zero_threshold: native.zero_threshold,
                zero_count_int: native.zero_count,
                positive_spans: spans
                    .into_iter()
                    .map(|span| WriteBucketSpan {
                        offset: span.offset,
                        length: span.length,
                    })
                    .collect(),
                positive_deltas: deltas,
                timestamp: self.timestamp_ms,
            }],
        });
    }

    fn end_family(&mut self, _desc: &FamilyDesc) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::request::RequestValues;
    use crate::store::pricing::{Price, PriceTable};
    use crate::store::{RequestLabels, Store};

    fn decoded(body: &[u8]) -> WriteRequest {
        let protobuf = snap::raw::Decoder::new().decompress_vec(body).unwrap();
        WriteRequest::decode(protobuf.as_slice()).unwrap()
    }

    fn labels(series: &TimeSeries) -> Vec<(&str, &str)> {
        series
            .labels
            .iter()
            .map(|label| (label.name.as_str(), label.value.as_str()))
            .collect()
    }

    #[test]
    fn a_store_becomes_sorted_series_with_one_timestamp_and_no_created() {
        let store = Store::new(PriceTable::new([("gpt-4o", Price::new(2.5, 10.0))]));
        let request = RequestLabels {
            provider: "openai",
            model: "gpt-4o",
            operation: "chat",
            status: "ok",
            extra: &[],
        };
        store.record_request(&request, &RequestValues::new(0.3, 1000, 200));
        let mut encoder = RemoteWriteEncoder::new(&[("job", "batch"), ("instance", "a:1")], 1234);
        store.visit(true, &mut encoder);
        let request = decoded(&encoder.finish());
        let first = &request.timeseries[0];
        assert_eq!(
            labels(first),
            [
                ("__name__", "ractogateway_requests_total"),
                ("instance", "a:1"),
                ("job", "batch"),
                ("model", "gpt-4o"),
                ("operation", "chat"),
                ("provider", "openai"),
                ("status", "ok"),
            ]
        );
        assert_eq!(
            first.samples,
            [Sample {
                value: 1.0,
                timestamp: 1234
            }]
        );
        assert!(request
            .timeseries
            .iter()
            .all(|series| series.samples[0].timestamp == 1234));
        let names: Vec<&str> = request
            .timeseries
            .iter()
            .map(|series| series.labels[0].value.as_str())
            .collect();
        assert!(!names.iter().any(|name| name.ends_with("_created")));
        // 1 request + 11 buckets, count and sum + 2 token types + 1 cost.
        assert_eq!(names.len(), 1 + 13 + 2 + 1);
        let inf = request
            .timeseries
            .iter()
            .find(|series| labels(series).contains(&("le", "+Inf")))
            .unwrap();
        assert_eq!(inf.samples[0].value, 1.0);
        assert_eq!(
            request.metadata[0].metric_family_name,
            "ractogateway_requests_total"
        );
        assert_eq!(request.metadata[0].metric_type, COUNTER);
    }
}
