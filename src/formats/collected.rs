//! The protobuf exposition of families the store does not keep: a registry's
//! other collectors (prometheus_client's process and GC metrics, an
//! application's own metrics), from the families and samples they collect.
//!
//! The families are prometheus_client's: a type name, and samples named
//! after the family with their suffix (`_total`, `_bucket`, `_count`, ...).
//! Each becomes `MetricFamily` messages as client_python's text exposition
//! would have it, in the delimited encoding: counters named with `_total`,
//! histograms and summaries one message per label set (`le` and `quantile`
//! gathered into buckets and quantiles), and the types protobuf has no message
//! for (info, state sets) as gauges, one family per sample name. Unlike the
//! store's families, every field is written, zeros included, as client_golang
//! writes them.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

use prost::Message;

use crate::formats::protobuf::timestamp;
use crate::formats::wire::io::prometheus::client::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType, Quantile,
    Summary, Untyped,
};
use crate::schema::semconv::underscores;

/// One sample a collector produced.
#[derive(Debug, Clone)]
pub struct CollectedSample {
    /// Its name: the family's and a suffix.
    pub name: String,
    /// Its labels, in the collector's order.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

/// One family a collector produced.
#[derive(Debug, Clone)]
pub struct CollectedFamily {
    /// Its name, without a counter's `_total`.
    pub name: String,
    /// Its help text.
    pub help: String,
    /// prometheus_client's type name: `counter`, `gauge`, `histogram`, ...
    pub kind: String,
    /// Its samples.
    pub samples: Vec<CollectedSample>,
}

/// The delimited `MetricFamily` messages of `families`, names as they are when
/// `utf8` (the scraper asked for `escaping=allow-utf-8`), else with every
/// character outside the legacy set replaced by `_`.
pub fn encode_collected(families: &[CollectedFamily], utf8: bool) -> Vec<u8> {
    let mut body = Vec::new();
    for family in families {
        for (name, metric_type, metric) in messages(family, utf8) {
            if metric.is_empty() {
                continue;
            }
            let name = if utf8 {
                name
            } else {
                underscores(&name, true).into_owned()
            };
            MetricFamily {
                name: Some(name),
                help: Some(family.help.clone()),
                r#type: Some(metric_type as i32),
                metric,
                unit: None,
            }
            .encode_length_delimited(&mut body)
            .unwrap_or(());
        }
    }
    body
}

/// The family's messages: `(name, type, metrics)`, several for the types
/// protobuf has no message for (one per sample name).
fn messages(family: &CollectedFamily, utf8: bool) -> Vec<(String, MetricType, Vec<Metric>)> {
    let series = |without: &str| -> Vec<Metric> {
        grouped(&family.samples, without)
            .into_iter()
            .map(|(labels, samples)| metric(family, &labels, &samples, utf8))
            .collect()
    };
    match family.kind.as_str() {
        "histogram" => vec![(family.name.clone(), MetricType::Histogram, series("le"))],
        "gaugehistogram" => vec![(
            family.name.clone(),
            MetricType::GaugeHistogram,
            series("le"),
        )],
        "summary" => vec![(family.name.clone(), MetricType::Summary, series("quantile"))],
        "counter" => vec![(
            format!("{}_total", family.name),
            MetricType::Counter,
            series(""),
        )],
        kind => {
            let metric_type = if matches!(kind, "unknown" | "untyped") {
                MetricType::Untyped
            } else {
                MetricType::Gauge
            };
            in_order_of_first(&family.samples, |sample| sample.name.as_str())
                .into_iter()
                .map(|(name, samples)| {
                    let metrics = samples
                        .into_iter()
                        .map(|sample| {
                            metric(family, &sample.labels, std::slice::from_ref(sample), utf8)
                        })
                        .collect();
                    (name.to_owned(), metric_type, metrics)
                })
                .collect()
        }
    }
}

/// `items` gathered by `key`, keys in the order they first appear (as a
/// Python dict of lists keeps them).
fn in_order_of_first<K: Eq + Hash + Clone, T>(
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> K,
) -> Vec<(K, Vec<T>)> {
    let mut groups: Vec<(K, Vec<T>)> = Vec::new();
    let mut found: HashMap<K, usize> = HashMap::new();
    for item in items {
        let key = key(&item);
        if let Some(&at) = found.get(&key) {
            groups[at].1.push(item);
        } else {
            found.insert(key.clone(), groups.len());
            groups.push((key, vec![item]));
        }
    }
    groups
}

/// A label set, sorted by name.
type LabelSet = Vec<(String, String)>;

/// Samples by label set, sorted by label name, `without` (`le` or `quantile`)
/// left out of it; label sets in the order they first appear.
fn grouped<'a>(
    samples: &'a [CollectedSample],
    without: &str,
) -> Vec<(LabelSet, Vec<&'a CollectedSample>)> {
    in_order_of_first(samples, |sample| {
        let mut key: LabelSet = sample
            .labels
            .iter()
            .filter(|(name, _)| name != without)
            .cloned()
            .collect();
        key.sort();
        key
    })
}

/// An integer count as the format carries it: truncated, and wrapped to 64
/// bits as client_python's own integers would be.
fn count(value: f64) -> u64 {
    #[allow(clippy::cast_possible_truncation)] // Counts are integers well inside i64.
    let whole = value.trunc() as i64;
    whole as u64
}

/// One `Metric` of `family`: its labels and the message its type takes.
fn metric<S: std::borrow::Borrow<CollectedSample>>(
    family: &CollectedFamily,
    labels: &[(String, String)],
    samples: &[S],
    utf8: bool,
) -> Metric {
    let suffix = |wanted: &[&str]| -> Option<&CollectedSample> {
        // The last sample of a suffix counts, as in a dict of them.
        wanted.iter().find_map(|wanted| {
            samples
                .iter()
                .map(Borrow::borrow)
                .rev()
                .find(|sample: &&CollectedSample| {
                    sample.name.strip_prefix(family.name.as_str()) == Some(*wanted)
                })
        })
    };
    let value_of = |wanted: &[&str]| suffix(wanted).map_or(0.0, |sample| sample.value);
    let created = suffix(&["_created"]).map(|sample| timestamp(sample.value));
    let mut metric = Metric {
        label: labels
            .iter()
            .map(|(name, value)| LabelPair {
                name: Some(if utf8 {
                    name.clone()
                } else {
                    underscores(name, false).into_owned()
                }),
                value: Some(value.clone()),
            })
            .collect(),
        ..Metric::default()
    };
    let samples = || samples.iter().map(Borrow::borrow);
    match family.kind.as_str() {
        "counter" => {
            metric.counter = Some(Counter {
                value: Some(value_of(&["_total", ""])),
                created_timestamp: created,
                ..Counter::default()
            });
        }
        "histogram" | "gaugehistogram" => {
            let bucket = samples()
                .filter(|sample: &&CollectedSample| sample.name.ends_with("_bucket"))
                .filter_map(|sample| {
                    let le = label(sample, "le")?;
                    let bound = le.parse::<f64>().ok().filter(|_| le != "+Inf")?;
                    Some(Bucket {
                        cumulative_count: Some(count(sample.value)),
                        upper_bound: Some(bound),
                        ..Bucket::default()
                    })
                })
                .collect();
            metric.histogram = Some(Histogram {
                sample_count: Some(count(value_of(&["_count", "_gcount"]))),
                sample_sum: Some(value_of(&["_sum", "_gsum"])),
                bucket,
                created_timestamp: created,
                ..Histogram::default()
            });
        }
        "summary" => {
            let quantile = samples()
                .filter_map(|sample: &CollectedSample| {
                    let quantile = label(sample, "quantile")?.parse::<f64>().ok()?;
                    Some(Quantile {
                        quantile: Some(quantile),
                        value: Some(sample.value),
                    })
                })
                .collect();
            metric.summary = Some(Summary {
                sample_count: Some(count(value_of(&["_count"]))),
                sample_sum: Some(value_of(&["_sum"])),
                quantile,
                ..Summary::default()
            });
        }
        kind => {
            let value = Some(samples().next().map_or(0.0, |sample| sample.value));
            if matches!(kind, "unknown" | "untyped") {
                metric.untyped = Some(Untyped { value });
            } else {
                metric.gauge = Some(Gauge { value });
            }
        }
    }
    metric
}

/// The value of a sample's label `name`.
fn label<'a>(sample: &'a CollectedSample, name: &str) -> Option<&'a str> {
    sample
        .labels
        .iter()
        .find(|(label, _)| label == name)
        .map(|(_, value)| value.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::wire::io::prometheus::client::MetricFamily;

    fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> CollectedSample {
        CollectedSample {
            name: name.to_owned(),
            labels: labels
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            value,
        }
    }

    fn decoded(body: &[u8]) -> Vec<MetricFamily> {
        let mut body = body;
        let mut families = Vec::new();
        while !body.is_empty() {
            families.push(MetricFamily::decode_length_delimited(&mut body).unwrap());
        }
        families
    }

    #[test]
    fn histograms_gather_their_buckets_by_label_set_without_the_inf_bucket() {
        let family = CollectedFamily {
            name: "sizes".to_owned(),
            help: "Sizes.".to_owned(),
            kind: "histogram".to_owned(),
            samples: vec![
                sample("sizes_bucket", &[("route", "/"), ("le", "10.0")], 1.0),
                sample("sizes_bucket", &[("route", "/"), ("le", "+Inf")], 2.0),
                sample("sizes_count", &[("route", "/")], 2.0),
                sample("sizes_sum", &[("route", "/")], 52.0),
                sample("sizes_created", &[("route", "/")], 1.5),
                sample("sizes_count", &[("route", "/x")], 0.0),
            ],
        };
        let families = decoded(&encode_collected(&[family], false));
        assert_eq!(families.len(), 1);
        let metrics = &families[0].metric;
        assert_eq!(metrics.len(), 2);
        let histogram = metrics[0].histogram.as_ref().unwrap();
        assert_eq!(histogram.sample_count, Some(2));
        assert_eq!(histogram.sample_sum, Some(52.0));
        assert_eq!(histogram.bucket.len(), 1);
        assert_eq!(histogram.bucket[0].upper_bound, Some(10.0));
        assert_eq!(histogram.created_timestamp.unwrap().nanos, 500_000_000);
        // Zeros are written, not left out.
        assert_eq!(metrics[1].histogram.as_ref().unwrap().sample_count, Some(0));
    }

    #[test]
    fn gauges_of_several_sample_names_become_a_family_each_and_names_are_escaped() {
        let family = CollectedFamily {
            name: "app.info".to_owned(),
            help: String::new(),
            kind: "info".to_owned(),
            samples: vec![
                sample("app.info_info", &[("ä", "1")], 1.0),
                sample("app.other", &[], 2.0),
                sample("app.info_info", &[("ä", "2")], 1.0),
            ],
        };
        let escaped = decoded(&encode_collected(std::slice::from_ref(&family), false));
        let names: Vec<_> = escaped.iter().map(|f| f.name().to_owned()).collect();
        assert_eq!(names, ["app_info_info", "app_other"]);
        assert_eq!(escaped[0].metric.len(), 2);
        assert_eq!(escaped[0].metric[0].label[0].name(), "_");
        assert_eq!(escaped[0].r#type(), MetricType::Gauge);
        let utf8 = decoded(&encode_collected(&[family], true));
        assert_eq!(utf8[0].name(), "app.info_info");
        assert_eq!(utf8[0].metric[0].label[0].name(), "ä");
    }

    #[test]
    fn a_family_without_samples_has_no_message() {
        let family = CollectedFamily {
            name: "none".to_owned(),
            help: "None.".to_owned(),
            kind: "counter".to_owned(),
            samples: Vec::new(),
        };
        assert!(encode_collected(&[family], false).is_empty());
    }
}
