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

use crate::cells::exemplar::Exemplar;
use crate::cells::native_histogram::NativeSnapshot;
use crate::schema::family::FamilyDesc;
use crate::schema::semconv::Convention;
use crate::store::visit::{Reading, SeriesView, SeriesVisitor};

/// `opentelemetry.proto.common.v1.AnyValue`, as strings only.
#[derive(Clone, PartialEq, Message)]
pub struct AnyValue {
    /// The value.
    #[prost(string, tag = "1")]
    pub string_value: String,
}

/// `opentelemetry.proto.common.v1.KeyValue`.
#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    /// The attribute's name.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Its value.
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

impl KeyValue {
    /// A string attribute.
    pub fn new(key: &str, value: &str) -> Self {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                string_value: value.to_owned(),
            }),
        }
    }
}

/// `opentelemetry.proto.resource.v1.Resource`.
#[derive(Clone, PartialEq, Message)]
pub struct Resource {
    /// What produced the metrics: `service.name` and the like.
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

/// `opentelemetry.proto.common.v1.InstrumentationScope`.
#[derive(Clone, PartialEq, Message)]
pub struct InstrumentationScope {
    /// The library that recorded them.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its version.
    #[prost(string, tag = "2")]
    pub version: String,
}

/// `opentelemetry.proto.metrics.v1.Exemplar`.
#[derive(Clone, PartialEq, Message)]
pub struct OtlpExemplar {
    /// Its labels besides the trace and span ids.
    #[prost(message, repeated, tag = "7")]
    pub filtered_attributes: Vec<KeyValue>,
    /// When it was observed, in nanoseconds since the Unix epoch.
    #[prost(fixed64, tag = "2")]
    pub time_unix_nano: u64,
    /// The observed value.
    #[prost(double, tag = "3")]
    pub as_double: f64,
    /// The span's id, 8 bytes (empty when none).
    #[prost(bytes = "vec", tag = "4")]
    pub span_id: Vec<u8>,
    /// The trace's id, 16 bytes (empty when none).
    #[prost(bytes = "vec", tag = "5")]
    pub trace_id: Vec<u8>,
}

/// `opentelemetry.proto.metrics.v1.NumberDataPoint`.
#[derive(Clone, PartialEq, Message)]
pub struct NumberDataPoint {
    /// The series' labels.
    #[prost(message, repeated, tag = "7")]
    pub attributes: Vec<KeyValue>,
    /// When the series was created.
    #[prost(fixed64, tag = "2")]
    pub start_time_unix_nano: u64,
    /// Now.
    #[prost(fixed64, tag = "3")]
    pub time_unix_nano: u64,
    /// A float sum's value.
    #[prost(double, optional, tag = "4")]
    pub as_double: Option<f64>,
    /// A count's value.
    #[prost(sfixed64, optional, tag = "6")]
    pub as_int: Option<i64>,
}

/// `opentelemetry.proto.metrics.v1.Sum`.
#[derive(Clone, PartialEq, Message)]
pub struct Sum {
    /// One point per series.
    #[prost(message, repeated, tag = "1")]
    pub data_points: Vec<NumberDataPoint>,
    /// Always cumulative (2).
    #[prost(int32, tag = "2")]
    pub aggregation_temporality: i32,
    /// Always: counters only go up.
    #[prost(bool, tag = "3")]
    pub is_monotonic: bool,
}

/// `opentelemetry.proto.metrics.v1.HistogramDataPoint`.
#[derive(Clone, PartialEq, Message)]
pub struct HistogramDataPoint {
    /// The series' labels.
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    /// When the series was created.
    #[prost(fixed64, tag = "2")]
    pub start_time_unix_nano: u64,
    /// Now.
    #[prost(fixed64, tag = "3")]
    pub time_unix_nano: u64,
    /// Every observation.
    #[prost(fixed64, tag = "4")]
    pub count: u64,
    /// Their sum.
    #[prost(double, optional, tag = "5")]
    pub sum: Option<f64>,
    /// Observations per bucket (not cumulative), one more than the bounds.
    #[prost(fixed64, repeated, tag = "6")]
    pub bucket_counts: Vec<u64>,
    /// The buckets' upper bounds, `+Inf` implied.
    #[prost(double, repeated, tag = "7")]
    pub explicit_bounds: Vec<f64>,
    /// The buckets' last exemplars.
    #[prost(message, repeated, tag = "8")]
    pub exemplars: Vec<OtlpExemplar>,
}

/// `opentelemetry.proto.metrics.v1.Histogram`.
#[derive(Clone, PartialEq, Message)]
pub struct Histogram {
    /// One point per series.
    #[prost(message, repeated, tag = "1")]
    pub data_points: Vec<HistogramDataPoint>,
    /// Always cumulative (2).
    #[prost(int32, tag = "2")]
    pub aggregation_temporality: i32,
}

/// `ExponentialHistogramDataPoint.Buckets`: consecutive buckets from an offset.
#[derive(Clone, PartialEq, Message)]
pub struct ExponentialBuckets {
    /// The first bucket's index.
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    /// Each bucket's count, from `offset` on.
    #[prost(uint64, repeated, tag = "2")]
    pub bucket_counts: Vec<u64>,
}

/// `opentelemetry.proto.metrics.v1.ExponentialHistogramDataPoint`.
#[derive(Clone, PartialEq, Message)]
pub struct ExponentialHistogramDataPoint {
    /// The series' labels.
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
    /// When the series was created.
    #[prost(fixed64, tag = "2")]
    pub start_time_unix_nano: u64,
    /// Now.
    #[prost(fixed64, tag = "3")]
    pub time_unix_nano: u64,
    /// Every observation.
    #[prost(fixed64, tag = "4")]
    pub count: u64,
    /// Their sum.
    #[prost(double, optional, tag = "5")]
    pub sum: Option<f64>,
    /// The resolution: bucket bounds a factor `2^(2^-scale)` apart.
    #[prost(sint32, tag = "6")]
    pub scale: i32,
    /// Observations in the zero bucket.
    #[prost(fixed64, tag = "7")]
    pub zero_count: u64,
    /// The positive buckets.
    #[prost(message, optional, tag = "8")]
    pub positive: Option<ExponentialBuckets>,
    /// The buckets' last exemplars.
    #[prost(message, repeated, tag = "11")]
    pub exemplars: Vec<OtlpExemplar>,
    /// The zero bucket's width.
    #[prost(double, tag = "14")]
    pub zero_threshold: f64,
}

/// `opentelemetry.proto.metrics.v1.ExponentialHistogram`.
#[derive(Clone, PartialEq, Message)]
pub struct ExponentialHistogram {
    /// One point per series.
    #[prost(message, repeated, tag = "1")]
    pub data_points: Vec<ExponentialHistogramDataPoint>,
    /// Always cumulative (2).
    #[prost(int32, tag = "2")]
    pub aggregation_temporality: i32,
}

/// `opentelemetry.proto.metrics.v1.Metric`, of the kinds this encoder writes.
#[derive(Clone, PartialEq, Message)]
pub struct Metric {
    /// The metric's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its help text.
    #[prost(string, tag = "2")]
    pub description: String,
    /// Its unit (UCUM): `s` for durations.
    #[prost(string, tag = "3")]
    pub unit: String,
    /// A counter's points.
    #[prost(message, optional, tag = "7")]
    pub sum: Option<Sum>,
    /// A histogram's points.
    #[prost(message, optional, tag = "9")]
    pub histogram: Option<Histogram>,
    /// A histogram's points, when it keeps native histograms.
    #[prost(message, optional, tag = "10")]
    pub exponential_histogram: Option<ExponentialHistogram>,
}

/// `opentelemetry.proto.metrics.v1.ScopeMetrics`.
#[derive(Clone, PartialEq, Message)]
pub struct ScopeMetrics {
    /// The library that recorded them.
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    /// One per family with series.
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    /// The semantic conventions the names follow, if any.
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

/// `opentelemetry.proto.metrics.v1.ResourceMetrics`.
#[derive(Clone, PartialEq, Message)]
pub struct ResourceMetrics {
    /// What produced them.
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    /// Its one scope.
    #[prost(message, repeated, tag = "2")]
    pub scope_metrics: Vec<ScopeMetrics>,
}

/// `opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct ExportMetricsServiceRequest {
    /// The one resource.
    #[prost(message, repeated, tag = "1")]
    pub resource_metrics: Vec<ResourceMetrics>,
}

/// `AGGREGATION_TEMPORALITY_CUMULATIVE`.
const CUMULATIVE: i32 = 2;

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
        filtered_attributes: Vec::new(),
        time_unix_nano: nanos(exemplar.timestamp),
        as_double: exemplar.value,
        span_id: Vec::new(),
        trace_id: Vec::new(),
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
            converted
                .filtered_attributes
                .push(KeyValue::new(name, value));
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
                .map(|(key, value)| KeyValue::new(key, value))
                .collect(),
            scope: InstrumentationScope {
                name: scope.0.to_owned(),
                version: scope.1.to_owned(),
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
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(self.scope),
                    metrics: self.metrics,
                    schema_url: self.convention.schema_url().to_owned(),
                }],
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
        metric: &mut Metric,
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
            let points = metric
                .exponential_histogram
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
        let points = metric.histogram.get_or_insert_with(|| Histogram {
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
        let mut metric = Metric {
            name: name.to_owned(),
            description: desc.help.to_owned(),
            unit: unit.to_owned(),
            sum: None,
            histogram: None,
            exponential_histogram: None,
        };
        for view in series {
            let attributes = desc
                .label_names
                .iter()
                .zip(view.labels.iter())
                .map(|(label, value)| KeyValue::new(self.convention.attribute(label), value))
                .collect();
            let (as_int, as_double) = match view.reading {
                #[allow(clippy::cast_possible_wrap)] // Counts stay far below 2^63.
                Reading::Count(count) => (Some(count as i64), None),
                Reading::Sum(sum) => (None, Some(sum)),
                Reading::Histogram(_) => {
                    self.histogram_point(desc, &view, attributes, &mut metric);
                    continue;
                }
            };
            let point = NumberDataPoint {
                attributes,
                start_time_unix_nano: nanos(view.created),
                time_unix_nano: self.now,
                as_double,
                as_int,
            };
            metric
                .sum
                .get_or_insert_with(|| Sum {
                    data_points: Vec::new(),
                    aggregation_temporality: CUMULATIVE,
                    is_monotonic: true,
                })
                .data_points
                .push(point);
        }
        if metric.sum.is_some()
            || metric.histogram.is_some()
            || metric.exponential_histogram.is_some()
        {
            self.metrics.push(metric);
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
        assert_eq!(converted.filtered_attributes, [KeyValue::new("user", "u1")]);
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
            [KeyValue::new("trace_id", "abc")]
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
