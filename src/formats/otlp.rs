//! OpenTelemetry's OTLP: the body of one metrics export carrying every series.
//!
//! The body is a protobuf `ExportMetricsServiceRequest`
//! (<https://opentelemetry.io/docs/specs/otlp/>, `opentelemetry-proto`'s
//! `metrics/v1`), one resource and one instrumentation scope holding a metric
//! per family that has series. Every point is cumulative, starting when its
//! series was created (its `_created` sample) and ending now: counters are
//! monotonic sums (integer points for counts, floating ones for the cost),
//! histograms explicit-bucket histograms with per-bucket counts, or, when the
//! family keeps native histograms, exponential histograms (a native
//! histogram's schema is OTLP's scale, its bucket `i` OTLP's `i - 1`). A
//! bucket's exemplar goes with its point, its `trace_id` and `span_id` as the
//! bytes their hex spells when they spell a valid id.
//!
//! A metric's name is its family's (a counter's without `_total`, which a
//! Prometheus-compatible receiver adds back to monotonic sums), or the
//! OpenTelemetry GenAI conventions' (see [`Convention`]), with its help text
//! as description.

use prost::Message;

use crate::formats::wire::opentelemetry::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use crate::formats::wire::opentelemetry::proto::common::v1::{
    any_value, AnyValue, InstrumentationScope, KeyValue,
};
use crate::formats::wire::opentelemetry::proto::metrics::v1::exponential_histogram_data_point::Buckets as ExponentialBuckets;
use crate::formats::wire::opentelemetry::proto::metrics::v1::{
    exemplar, metric, number_data_point, AggregationTemporality, Exemplar as OtlpExemplar,
    ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use crate::formats::wire::opentelemetry::proto::resource::v1::Resource;

use crate::cells::exemplar::Exemplar;
use crate::cells::native_histogram::NativeSnapshot;
use crate::schema::family::FamilyDesc;
use crate::schema::semconv::Convention;
use crate::store::visit::{Reading, SeriesView, SeriesVisitor};

/// `AGGREGATION_TEMPORALITY_CUMULATIVE`.
const CUMULATIVE: i32 = AggregationTemporality::Cumulative as i32;

/// A string attribute.
fn key_value(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..KeyValue::default()
    }
}

/// One family's points, of the one kind its series have.
#[derive(Default)]
struct Points {
    sum: Option<Sum>,
    gauge: Option<Gauge>,
    histogram: Option<Histogram>,
    exponential: Option<ExponentialHistogram>,
}

impl Points {
    /// The metric's data, if it has points.
    fn data(self) -> Option<metric::Data> {
        self.sum
            .map(metric::Data::Sum)
            .or(self.gauge.map(metric::Data::Gauge))
            .or(self.histogram.map(metric::Data::Histogram))
            .or(self.exponential.map(metric::Data::ExponentialHistogram))
    }
}

/// Nanoseconds since the Unix epoch of `seconds` (0 before it).
fn nanos(seconds: f64) -> u64 {
    // Saturating: a time past 2554 or before 1970 is not one of ours.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let nanos = (seconds * 1e9).round() as u64;
    nanos
}

/// The bytes `hex` spells, if it is `length` bytes of hex digits (not all zero,
/// which OTLP reads as no id).
fn id_bytes(hex: &str, length: usize) -> Option<Vec<u8>> {
    if hex.len() != 2 * length || !hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Vec<u8> = (0..length)
        .map(|at| u8::from_str_radix(&hex[2 * at..2 * at + 2], 16).unwrap_or(0))
        .collect();
    bytes.iter().any(|byte| *byte != 0).then_some(bytes)
}

/// An exemplar as OTLP carries it.
fn otlp_exemplar(exemplar: &Exemplar) -> OtlpExemplar {
    let mut converted = OtlpExemplar {
        time_unix_nano: nanos(exemplar.timestamp),
        value: Some(exemplar::Value::AsDouble(exemplar.value)),
        ..OtlpExemplar::default()
    };
    for (name, value) in &exemplar.labels {
        let id = match name.as_str() {
            "trace_id" if converted.trace_id.is_empty() => {
                id_bytes(value, 16).map(|id| converted.trace_id = id)
            }
            "span_id" if converted.span_id.is_empty() => {
                id_bytes(value, 8).map(|id| converted.span_id = id)
            }
            _ => None,
        };
        if id.is_none() {
            converted.filtered_attributes.push(key_value(name, value));
        }
    }
    converted
}

/// A native histogram's buckets as OTLP's: consecutive from the first in use.
fn exponential_buckets(native: &NativeSnapshot) -> Option<ExponentialBuckets> {
    let (first, _) = native.buckets.first()?;
    let (last, _) = native.buckets.last()?;
    let mut counts = vec![0; usize::try_from(last - first).unwrap_or(0) + 1];
    for (index, count) in &native.buckets {
        if let Some(slot) = usize::try_from(index - first)
            .ok()
            .and_then(|at| counts.get_mut(at))
        {
            *slot = *count;
        }
    }
    Some(ExponentialBuckets {
        // Prometheus's bucket i is (b^(i-1), b^i]; OTLP's is (b^i, b^(i+1)].
        offset: first - 1,
        bucket_counts: counts,
    })
}

/// Builds the body of one OTLP export.
pub struct OtlpEncoder {
    convention: Convention,
    resource: Vec<KeyValue>,
    scope: InstrumentationScope,
    now: u64,
    metrics: Vec<Metric>,
}

impl OtlpEncoder {
    /// An export by scope `scope` (name, version) of resource `resource`, at
    /// Unix time `now` in seconds, naming families as `convention` does.
    pub fn new(
        convention: Convention,
        resource: &[(&str, &str)],
        scope: (&str, &str),
        now: f64,
    ) -> Self {
        OtlpEncoder {
            convention,
            resource: resource
                .iter()
                .map(|(key, value)| key_value(key, value))
                .collect(),
            scope: InstrumentationScope {
                name: scope.0.to_owned(),
                version: scope.1.to_owned(),
                ..InstrumentationScope::default()
            },
            now: nanos(now),
            metrics: Vec::new(),
        }
    }

    /// The encoded `ExportMetricsServiceRequest` (not compressed).
    pub fn finish(self) -> Vec<u8> {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: self.resource,
                    ..Resource::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(self.scope),
                    metrics: self.metrics,
                    schema_url: self.convention.schema_url().to_owned(),
                }],
                ..ResourceMetrics::default()
            }],
        }
        .encode_to_vec()
    }

    /// One series' histogram point: explicit buckets, or exponential ones
    /// when it has a native histogram.
    fn histogram_point(
        &self,
        family: &FamilyDesc,
        view: &SeriesView<'_>,
        attributes: Vec<KeyValue>,
        points: &mut Points,
    ) {
        let Reading::Histogram(snapshot) = &view.reading else {
            return;
        };
        let exemplars = snapshot
            .exemplars
            .iter()
            .flatten()
            .map(|exemplar| otlp_exemplar(exemplar))
            .collect();
        let start = nanos(view.created);
        if let Some(native) = &snapshot.native {
            let points = points
                .exponential
                .get_or_insert_with(|| ExponentialHistogram {
                    data_points: Vec::new(),
                    aggregation_temporality: CUMULATIVE,
                });
            points.data_points.push(ExponentialHistogramDataPoint {
                attributes,
                start_time_unix_nano: start,
                time_unix_nano: self.now,
                count: native.count(),
                sum: Some(snapshot.sum),
                scale: i32::from(native.schema),
                zero_count: native.zero_count,
                positive: exponential_buckets(native),
                exemplars,
                zero_threshold: native.zero_threshold,
                ..ExponentialHistogramDataPoint::default()
            });
            return;
        }
        let mut previous = 0;
        let bucket_counts = snapshot
            .cumulative
            .iter()
            .map(|cumulative| {
                let count = cumulative.saturating_sub(previous);
                previous = *cumulative;
                count
            })
            .collect();
        let points = points.histogram.get_or_insert_with(|| Histogram {
            data_points: Vec::new(),
            aggregation_temporality: CUMULATIVE,
        });
        points.data_points.push(HistogramDataPoint {
            attributes,
            start_time_unix_nano: start,
            time_unix_nano: self.now,
            count: snapshot.count(),
            sum: Some(snapshot.sum),
            bucket_counts,
            explicit_bounds: family
                .buckets
                .as_ref()
                .map_or_else(Vec::new, |buckets| buckets.bounds().to_vec()),
            exemplars,
            ..HistogramDataPoint::default()
        });
    }
}

impl SeriesVisitor for OtlpEncoder {
    fn family_series<'a>(
        &mut self,
        desc: &FamilyDesc,
        series: impl Iterator<Item = SeriesView<'a>>,
    ) {
        let (name, unit) = self.convention.otlp_metric(desc);
        let mut points = Points::default();
        for view in series {
            let attributes = desc
                .label_names
                .iter()
                .zip(view.labels.iter())
                .filter(|(label, value)| !self.convention.absent(label, value))
                .map(|(label, value)| key_value(self.convention.attribute(label), value))
                .collect();
            let value = match view.reading {
                #[allow(clippy::cast_possible_wrap)] // Counts stay far below 2^63.
                Reading::Count(count) => number_data_point::Value::AsInt(count as i64),
                Reading::Sum(sum) => number_data_point::Value::AsDouble(sum),
                Reading::Level(level) => {
                    // A gauge's point has no start: it is the level now.
                    points
                        .gauge
                        .get_or_insert_with(Gauge::default)
                        .data_points
                        .push(NumberDataPoint {
                            attributes,
                            time_unix_nano: self.now,
                            value: Some(number_data_point::Value::AsInt(level)),
                            ..NumberDataPoint::default()
                        });
                    continue;
                }
                Reading::Histogram(_) => {
                    self.histogram_point(desc, &view, attributes, &mut points);
                    continue;
                }
            };
            let point = NumberDataPoint {
                attributes,
                start_time_unix_nano: nanos(view.created),
                time_unix_nano: self.now,
                value: Some(value),
                ..NumberDataPoint::default()
            };
            points
                .sum
                .get_or_insert_with(|| Sum {
                    data_points: Vec::new(),
                    aggregation_temporality: CUMULATIVE,
                    is_monotonic: true,
                })
                .data_points
                .push(point);
        }
        if let Some(data) = points.data() {
            self.metrics.push(Metric {
                name: name.to_owned(),
                description: desc.help.to_owned(),
                unit: unit.to_owned(),
                data: Some(data),
                ..Metric::default()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_bytes_their_hex_spells_and_other_labels_stay_attributes() {
        let exemplar = Exemplar {
            labels: vec![
                (
                    "trace_id".to_owned(),
                    "4bf92f3577b34da6a3ce929d0e0e4736".to_owned(),
                ),
                ("span_id".to_owned(), "00f067aa0ba902b7".to_owned()),
                ("user".to_owned(), "u1".to_owned()),
            ],
            value: 0.25,
            timestamp: 1.5,
        };
        let converted = otlp_exemplar(&exemplar);
        assert_eq!(converted.trace_id[..3], [0x4b, 0xf9, 0x2f]);
        assert_eq!(
            converted.span_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(converted.filtered_attributes, [key_value("user", "u1")]);
        assert_eq!(converted.time_unix_nano, 1_500_000_000);
        // Not an id: kept as an attribute.
        let odd = Exemplar {
            labels: vec![("trace_id".to_owned(), "abc".to_owned())],
            value: 1.0,
            timestamp: 0.0,
        };
        let converted = otlp_exemplar(&odd);
        assert!(converted.trace_id.is_empty());
        assert_eq!(
            converted.filtered_attributes,
            [key_value("trace_id", "abc")]
        );
    }

    #[test]
    fn native_buckets_become_consecutive_buckets_one_index_lower() {
        let native = NativeSnapshot {
            schema: 3,
            zero_threshold: 0.0,
            zero_count: 0,
            buckets: vec![(-2, 5), (1, 2), (2, 7)],
        };
        let buckets = exponential_buckets(&native).unwrap();
        assert_eq!(buckets.offset, -3);
        assert_eq!(buckets.bucket_counts, [5, 0, 0, 2, 7]);
    }
}
