//! The seven metric families: names, help texts, kinds, label names and bucket labels.
//!
//! The store, the exposition, the multi-process files and `prometheus_client`'s
//! file format all read these descriptions.

use crate::histogram::BUCKET_COUNT;

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
    /// Label names in alphabetical (exposition) order.
    pub label_names: &'static [&'static str],
}

/// `ractogateway_requests_total{model,operation,provider,status}`.
pub const REQUESTS: FamilyDesc = FamilyDesc {
    id: 0,
    name: "ractogateway_requests",
    help: "Total LLM requests by provider / model / operation / status.",
    kind: FamilyKind::Counter,
    label_names: &["model", "operation", "provider", "status"],
};
/// `ractogateway_request_duration_seconds{model,operation,provider}`.
pub const DURATION: FamilyDesc = FamilyDesc {
    id: 1,
    name: "ractogateway_request_duration_seconds",
    help: "LLM request wall-clock latency in seconds.",
    kind: FamilyKind::Histogram,
    label_names: &["model", "operation", "provider"],
};
/// `ractogateway_tokens_total{model,provider,token_type}`.
pub const TOKENS: FamilyDesc = FamilyDesc {
    id: 2,
    name: "ractogateway_tokens",
    help: "Total tokens consumed \u{2014} labelled by token_type (input / output).",
    kind: FamilyKind::Counter,
    label_names: &["model", "provider", "token_type"],
};
/// `ractogateway_cost_usd_total{model,provider}`.
pub const COST: FamilyDesc = FamilyDesc {
    id: 3,
    name: "ractogateway_cost_usd",
    help: "Total estimated cost in USD.",
    kind: FamilyKind::Counter,
    label_names: &["model", "provider"],
};
/// `ractogateway_cache_hits_total{cache_type}`.
pub const CACHE_HITS: FamilyDesc = FamilyDesc {
    id: 4,
    name: "ractogateway_cache_hits",
    help: "Total cache hits by cache type (exact / semantic).",
    kind: FamilyKind::Counter,
    label_names: &["cache_type"],
};
/// `ractogateway_cache_misses_total{cache_type}`.
pub const CACHE_MISSES: FamilyDesc = FamilyDesc {
    id: 5,
    name: "ractogateway_cache_misses",
    help: "Total cache misses by cache type (exact / semantic).",
    kind: FamilyKind::Counter,
    label_names: &["cache_type"],
};
/// `ractogateway_tool_calls_total{tool_name}`.
pub const TOOL_CALLS: FamilyDesc = FamilyDesc {
    id: 6,
    name: "ractogateway_tool_calls",
    help: "Total tool calls executed, labelled by tool name.",
    kind: FamilyKind::Counter,
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

/// The `le` label of each bucket, formatted as `prometheus_client` formats bounds.
pub const BUCKET_LABELS: [&str; BUCKET_COUNT] = [
    "0.05", "0.1", "0.25", "0.5", "1.0", "2.0", "5.0", "10.0", "30.0", "60.0", "+Inf",
];
