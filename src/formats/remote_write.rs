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
use crate::formats::wire::present;
use crate::formats::wire::prometheus::histogram::{Count, ZeroCount};
use crate::formats::wire::prometheus::metric_metadata::MetricType;
use crate::formats::wire::prometheus::{
    BucketSpan, Exemplar as WriteExemplar, Histogram, Label, MetricMetadata, Sample, TimeSeries,
    WriteRequest,
};
use crate::schema::family::{FamilyDesc, FamilyKind};
use crate::schema::semconv::{Charset, Convention, PrometheusNames};
use crate::store::visit::SampleVisitor;

/// `MetricType.COUNTER`.
const COUNTER: i32 = MetricType::Counter as i32;
/// `MetricType.GAUGE`.
const GAUGE: i32 = MetricType::Gauge as i32;
/// `MetricType.HISTOGRAM`.
const HISTOGRAM: i32 = MetricType::Histogram as i32;

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
            FamilyKind::Gauge => (GAUGE, ""),
            FamilyKind::Histogram => (HISTOGRAM, ""),
        };
        self.names = self.convention.prometheus(desc, Charset::Legacy);
        self.request.metadata.push(MetricMetadata {
            r#type: metric_type,
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
        let (spans, deltas) = native.spans_and_deltas();
        self.request.timeseries.push(TimeSeries {
            labels: series_labels,
            samples: Vec::new(),
            exemplars: Vec::new(),
            histograms: vec![Histogram {
                count: present(native.count()).map(Count::CountInt),
                sum,
                schema: i32::from(native.schema),
                zero_threshold: native.zero_threshold,
                zero_count: present(native.zero_count).map(ZeroCount::ZeroCountInt),
                positive_spans: spans
                    .into_iter()
                    .map(|(offset, length)| BucketSpan { offset, length })
                    .collect(),
                positive_deltas: deltas,
                timestamp: self.timestamp_ms,
                ..Histogram::default()
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
        assert_eq!(request.metadata[0].r#type, COUNTER);
    }
}
