//! The seven metric families: names, help texts, kinds, label names, how
//! their values are kept, and the latency buckets' labels.
//!
//! The store, the exposition, the multi-process files and `prometheus_client`'s
//! file format all read these descriptions.

use std::sync::LazyLock;

use crate::float_text::write_value;
use crate::histogram::{BUCKET_COUNT, LATENCY_BOUNDS};

/// Whether a family is a counter or a histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyKind {
    /// A monotonic counter, exposed with the `_total` suffix.
    Counter,
    /// A bucketed histogram, exposed as `_bucket`, `_count` and `_sum`.
    Histogram,
}

impl FamilyKind {
    /// The type name used in `# TYPE` lines.
    pub fn type_name(self) -> &'static str {
        match self {
            FamilyKind::Counter => "counter",
            FamilyKind::Histogram => "histogram",
        }
    }
}

/// How a family's series keep their values, in cells of 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// One count.
    Count,
    /// One float sum (a cost).
    Sum,
    /// A count per bucket, then the float sum of the observations.
    Buckets,
}

impl ValueKind {
    /// The number of cells of one series.
    pub fn cells(self) -> usize {
        match self {
            ValueKind::Count | ValueKind::Sum => 1,
            ValueKind::Buckets => BUCKET_COUNT + 1,
        }
    }

    /// Whether the cell at `index` holds the bits of a float sum (the others hold counts).
    pub fn is_sum(self, index: usize) -> bool {
        match self {
            ValueKind::Count => false,
            ValueKind::Sum => true,
            ValueKind::Buckets => index == BUCKET_COUNT,
        }
    }
}

/// Name, help text and label names of one family.
#[derive(Debug)]
pub struct FamilyDesc {
    /// The family's identifier in multi-process files; its index in [`FAMILIES`].
    pub id: u8,
    /// The family name as `prometheus_client` knows it (a counter's without `_total`).
    pub name: &'static str,
    /// The help text, byte for byte the reference's.
    pub help: &'static str,
    /// Counter or histogram.
    pub kind: FamilyKind,
    /// How its series keep their values.
    pub value: ValueKind,
    /// Label names in alphabetical (exposition) order.
    pub label_names: &'static [&'static str],
}

/// `ractogateway_requests_total{model,operation,provider,status}`.
pub const REQUESTS: FamilyDesc = FamilyDesc {
    id: 0,
    name: "ractogateway_requests",
    help: "Total LLM requests by provider / model / operation / status.",
    kind: FamilyKind::Counter,
    value: ValueKind::Count,
    label_names: &["model", "operation", "provider", "status"],
};
/// `ractogateway_request_duration_seconds{model,operation,provider}`.
pub const DURATION: FamilyDesc = FamilyDesc {
    id: 1,
    name: "ractogateway_request_duration_seconds",
    help: "LLM request wall-clock latency in seconds.",
    kind: FamilyKind::Histogram,
    value: ValueKind::Buckets,
    label_names: &["model", "operation", "provider"],
};
/// `ractogateway_tokens_total{model,provider,token_type}`.
pub const TOKENS: FamilyDesc = FamilyDesc {
    id: 2,
    name: "ractogateway_tokens",
    help: "Total tokens consumed \u{2014} labelled by token_type (input / output).",
    kind: FamilyKind::Counter,
    value: ValueKind::Count,
    label_names: &["model", "provider", "token_type"],
};
/// `ractogateway_cost_usd_total{model,provider}`.
pub const COST: FamilyDesc = FamilyDesc {
    id: 3,
    name: "ractogateway_cost_usd",
    help: "Total estimated cost in USD.",
    kind: FamilyKind::Counter,
    value: ValueKind::Sum,
    label_names: &["model", "provider"],
};
/// `ractogateway_cache_hits_total{cache_type}`.
pub const CACHE_HITS: FamilyDesc = FamilyDesc {
    id: 4,
    name: "ractogateway_cache_hits",
    help: "Total cache hits by cache type (exact / semantic).",
    kind: FamilyKind::Counter,
    value: ValueKind::Count,
    label_names: &["cache_type"],
};
/// `ractogateway_cache_misses_total{cache_type}`.
pub const CACHE_MISSES: FamilyDesc = FamilyDesc {
    id: 5,
    name: "ractogateway_cache_misses",
    help: "Total cache misses by cache type (exact / semantic).",
    kind: FamilyKind::Counter,
    value: ValueKind::Count,
    label_names: &["cache_type"],
};
/// `ractogateway_tool_calls_total{tool_name}`.
pub const TOOL_CALLS: FamilyDesc = FamilyDesc {
    id: 6,
    name: "ractogateway_tool_calls",
    help: "Total tool calls executed, labelled by tool name.",
    kind: FamilyKind::Counter,
    value: ValueKind::Count,
    label_names: &["tool_name"],
};

/// Every family in the order the reference registers (and prints) them.
pub const FAMILIES: [&FamilyDesc; 7] = [
    &REQUESTS,
    &DURATION,
    &TOKENS,
    &COST,
    &CACHE_HITS,
    &CACHE_MISSES,
    &TOOL_CALLS,
];

/// The `le` label of each bound, then `+Inf`, formatted as `prometheus_client`
/// formats bounds (`floatToGoString`).
pub fn bucket_labels(bounds: &[f64]) -> Vec<String> {
    let mut labels: Vec<String> = bounds
        .iter()
        .map(|bound| {
            let mut label = String::new();
            write_value(&mut label, *bound);
            label
        })
        .collect();
    labels.push("+Inf".to_owned());
    labels
}

/// The `le` label of each latency bucket.
pub static BUCKET_LABELS: LazyLock<Vec<String>> = LazyLock::new(|| bucket_labels(&LATENCY_BOUNDS));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_labels_are_formatted_as_prometheus_client_formats_bounds() {
        assert_eq!(
            bucket_labels(&[0.001, 0.05, 1.0, 7.5, 60.0, 1e6, 2.5e-7]),
            ["0.001", "0.05", "1.0", "7.5", "60.0", "1e+06", "2.5e-07", "+Inf"]
        );
        assert_eq!(
            *BUCKET_LABELS,
            ["0.05", "0.1", "0.25", "0.5", "1.0", "2.0", "5.0", "10.0", "30.0", "60.0", "+Inf"]
        );
    }

    #[test]
    fn each_family_keeps_the_cells_its_kind_needs() {
        for family in FAMILIES {
            let histogram = family.kind == FamilyKind::Histogram;
            assert_eq!(
                histogram,
                family.value == ValueKind::Buckets,
                "{}",
                family.name
            );
        }
        assert_eq!(DURATION.value.cells(), BUCKET_COUNT + 1);
        assert!(COST.value.is_sum(0) && !TOKENS.value.is_sum(0));
    }
}
