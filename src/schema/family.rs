//! The metric families as data: names, help texts, kinds, label names, how
//! their values are kept, and a histogram's buckets.
//!
//! A [`Schema`] is the one description every other part reads: the store lays
//! out its series by it, the exposition and the collector print it, the
//! multi-process files declare it, and `prometheus_client`'s file format is
//! written from it. The seven families and their label names are the
//! reference middleware's; the latency buckets can be configured.

use std::borrow::Cow;

use smallvec::SmallVec;

use crate::schema::buckets::Buckets;
use crate::schema::native::NativeConfig;
use crate::schema::request::{self, Observed, ERROR_TYPES};

/// A family's position in its [`Schema`].
pub type FamilyId = u8;

/// `ractogateway_requests_total{model,operation,provider,status}`.
pub const REQUESTS: FamilyId = 0;
/// `ractogateway_request_duration_seconds{model,operation,provider}`.
pub const DURATION: FamilyId = 1;
/// `ractogateway_tokens_total{model,provider,token_type}`.
pub const TOKENS: FamilyId = 2;
/// `ractogateway_cost_usd_total{model,provider}`.
pub const COST: FamilyId = 3;
/// `ractogateway_cache_hits_total{cache_type}`.
pub const CACHE_HITS: FamilyId = 4;
/// `ractogateway_cache_misses_total{cache_type}`.
pub const CACHE_MISSES: FamilyId = 5;
/// `ractogateway_tool_calls_total{tool_name}`.
pub const TOOL_CALLS: FamilyId = 6;
/// `ractogateway_time_to_first_token_seconds{model,operation,provider}`.
pub const TIME_TO_FIRST_TOKEN: FamilyId = 7;
/// `ractogateway_time_per_output_token_seconds{model,operation,provider}`.
pub const TIME_PER_OUTPUT_TOKEN: FamilyId = 8;
/// `ractogateway_overflow_requests_total{family}`.
pub const OVERFLOW: FamilyId = 9;
/// `ractogateway_unpriced_requests_total{model,provider}`.
pub const UNPRICED: FamilyId = 10;
/// `ractogateway_request_tokens{model,operation,provider,token_type}`.
pub const TOKEN_USAGE: FamilyId = 14;
/// `ractogateway_request_errors_total{error_type,model,operation,provider}`.
pub const ERRORS: FamilyId = 15;
/// `ractogateway_requests_in_flight{model,operation,provider}`.
pub const IN_FLIGHT: FamilyId = 16;
/// `ractogateway_operation_duration_seconds{error_type,model,operation,provider}`:
/// the GenAI conventions' `gen_ai.client.operation.duration`, which tells
/// failed operations apart by `error.type`.
pub const OPERATION_DURATION: FamilyId = 17;
/// `ractogateway_cache_saved_tokens_total{model,provider,token_type}`.
pub const CACHE_SAVED_TOKENS: FamilyId = 18;
/// `ractogateway_cache_saved_usd_total{model,provider}`.
pub const CACHE_SAVED_USD: FamilyId = 19;

/// The prefix of every family name unless a middleware is given its own: the
/// reference middleware's.
pub const DEFAULT_NAMESPACE: &str = "ractogateway";

/// Every label value of a family's overflow series, which takes the label sets
/// past the cap on series.
pub const OVERFLOW_VALUE: &str = "__overflow__";

/// Upper bounds of the reference's latency buckets in seconds.
pub const LATENCY_BOUNDS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0];
/// Upper bounds of the time-to-first-token buckets in seconds (vLLM's).
pub const TIME_TO_FIRST_TOKEN_BOUNDS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Upper bounds of the time-per-output-token buckets in seconds (vLLM's).
pub const TIME_PER_OUTPUT_TOKEN_BOUNDS: [f64; 13] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];

/// Upper bounds of the queue-time buckets in seconds: 1 ms to 30 s.
pub const QUEUE_TIME_BOUNDS: [f64; 13] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds of the gateway-overhead buckets in seconds: 0.5 ms to 2.5 s.
pub const GATEWAY_OVERHEAD_BOUNDS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Upper bounds of the tokens-per-request buckets: powers of 4 from 1 to
/// 4^13, the OpenTelemetry GenAI conventions' advice for
/// `gen_ai.client.token.usage`.
pub const TOKEN_USAGE_BOUNDS: [f64; 14] = [
    1.0,
    4.0,
    16.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];

/// The token types the tokens-per-request histogram observes: the ones the
/// GenAI conventions name (`input`, `output`).
const USAGE_TOKEN_TYPES: [request::TokenType; 2] = [request::INPUT, request::OUTPUT];

/// Whether a family is a counter, a gauge or a histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyKind {
    /// A monotonic counter, exposed with the `_total` suffix.
    Counter,
    /// A level that goes up and down, exposed as it is.
    Gauge,
    /// A bucketed histogram, exposed as `_bucket`, `_count` and `_sum`.
    Histogram,
}

impl FamilyKind {
    /// The type name used in `# TYPE` lines.
    pub fn type_name(self) -> &'static str {
        match self {
            FamilyKind::Counter => "counter",
            FamilyKind::Gauge => "gauge",
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
    /// One level that goes up and down (calls started and not yet ended):
    /// a process's own, never summed into another store's (snapshots leave it
    /// out), and in a multi-process directory only while its process lives.
    Level,
}

/// The request label values a family's label takes its value from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelSource {
    /// A request label value by position: provider, model, operation, status,
    /// then the extra labels in the order the schema names them.
    Request(usize),
    /// The label a series derived from a request's adds to the request's
    /// labels: a token series' `token_type`, an error series' `error_type`.
    Derived,
}

/// The label names a request gives every call, in [`LabelSource::Request`] order.
pub const REQUEST_LABELS: [&str; 4] = ["provider", "model", "operation", "status"];

/// Label names no extra label may take: the families' own, and Prometheus's.
const TAKEN_LABELS: [&str; 9] = [
    "provider",
    "model",
    "operation",
    "status",
    "token_type",
    "error_type",
    "cache_type",
    "tool_name",
    "le",
];

/// One family.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyDesc {
    /// The family's position in its schema.
    pub id: FamilyId,
    /// The family name as `prometheus_client` knows it (a counter's without
    /// `_total`), under the schema's namespace.
    pub name: Cow<'static, str>,
    /// The help text, byte for byte the reference's.
    pub help: &'static str,
    /// Counter or histogram.
    pub kind: FamilyKind,
    /// The unit of what it counts or observes, as OTLP (UCUM) writes it (empty: none).
    pub unit: &'static str,
    /// How its series keep their values.
    pub value: ValueKind,
    /// Label names in alphabetical (exposition) order, extra labels included.
    pub label_names: Vec<String>,
    /// Where each label's value comes from, in `label_names` order (empty for
    /// the families a request does not feed).
    pub sources: Vec<LabelSource>,
    /// A histogram's buckets.
    pub buckets: Option<Buckets>,
    /// Whether the exposition shows the family before it has a series, as
    /// `prometheus_client` shows a registered family: the reference's families
    /// are; the ones it does not have appear with their first series, so that
    /// a workload of the reference's arguments prints the reference's bytes.
    pub shown_when_empty: bool,
    /// Whether every request feeds it: it carries the extra labels.
    pub per_request: bool,
    /// What a request gives a histogram family to observe.
    pub observes: Option<Observed>,
    /// How its series keep a native histogram beside the classic buckets, if
    /// they do (opt-in, for the latency-like histograms).
    pub native: Option<NativeConfig>,
}

impl FamilyDesc {
    /// The number of cells of one series: a count, a sum, or a histogram's
    /// bucket counts and sum, then its native histogram's cells.
    pub fn cells(&self) -> usize {
        self.classic_cells() + self.native.as_ref().map_or(0, NativeConfig::cells)
    }

    /// The cells before the native histogram's.
    pub fn classic_cells(&self) -> usize {
        match (&self.value, &self.buckets) {
            (ValueKind::Buckets, Some(buckets)) => buckets.count() + 1,
            _ => 1,
        }
    }

    /// The labels of the record declaring the family in a file or snapshot:
    /// everything a reader must agree on to add these series to its own.
    pub fn declaration(&self) -> [String; 5] {
        // The bucket labels are the bounds in their shortest round-trip form;
        // a native histogram's configuration follows them.
        let mut bounds = self.buckets.as_ref().map_or(String::new(), |buckets| {
            let labels = buckets.labels();
            labels[..labels.len() - 1].join(",")
        });
        if let Some(native) = &self.native {
            bounds.push_str(&native.declaration());
        }
        [
            self.name.to_string(),
            self.kind.type_name().to_owned(),
            format!("{:?}", self.value),
            self.label_names.join(","),
            bounds,
        ]
    }

    /// Whether the cell at `index` holds the bits of a float sum (the others hold counts).
    pub fn is_sum(&self, index: usize) -> bool {
        match self.value {
            ValueKind::Count | ValueKind::Level => false,
            ValueKind::Sum => true,
            ValueKind::Buckets => index + 1 == self.classic_cells(),
        }
    }
}

/// Every family of a middleware, in the order the reference registers (and prints) them.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    families: Vec<FamilyDesc>,
    /// Label names every request family carries besides its own, as configured.
    extra_labels: Vec<String>,
    /// For each request label value ([`LabelSource::Request`] order), its
    /// position among the requests family's labels.
    request_positions: Vec<usize>,
    /// The native histograms' configuration, if they are kept.
    native: Option<NativeConfig>,
    /// Whether requests feed the histograms only the GenAI conventions show
    /// (see [`Schema::keeping_semconv_histograms`]).
    semconv_histograms: bool,
    /// The prefix of every family name.
    namespace: Cow<'static, str>,
}

/// A histogram's bounds, as its row gives them.
#[derive(Debug, Clone, Copy)]
enum Bounds {
    /// Not a histogram.
    None,
    /// The latency buckets the middleware is configured with.
    Latency,
    /// Fixed bounds.
    Fixed(&'static [f64]),
}

/// One family, as the table describes it.
struct FamilyRow {
    name: &'static str,
    help: &'static str,
    value: ValueKind,
    /// Label names in alphabetical order, without the extra labels.
    labels: &'static [&'static str],
    bounds: Bounds,
    shown_when_empty: bool,
    per_request: bool,
    observes: Option<Observed>,
    /// Whether it observes durations spanning orders of magnitude, and so may
    /// keep a native histogram.
    latency_like: bool,
    /// The unit (UCUM), as OTLP writes it.
    unit: &'static str,
}

const fn counter_row(
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    per_request: bool,
    shown_when_empty: bool,
) -> FamilyRow {
    FamilyRow {
        name,
        help,
        value: ValueKind::Count,
        labels,
        bounds: Bounds::None,
        shown_when_empty,
        per_request,
        observes: None,
        latency_like: false,
        unit: "",
    }
}

/// A histogram of a request's `(model, operation, provider)` that observes `observes`.
const fn request_histogram(
    name: &'static str,
    help: &'static str,
    bounds: Bounds,
    observes: Observed,
) -> FamilyRow {
    FamilyRow {
        name,
        help,
        value: ValueKind::Buckets,
        labels: &["model", "operation", "provider"],
        bounds,
        shown_when_empty: false,
        per_request: true,
        observes: Some(observes),
        latency_like: true,
        unit: "s",
    }
}

/// Every family, by [`FamilyId`], in the order the reference registers (and
/// prints) its own; the others follow, shown from their first series.
const FAMILY_ROWS: [FamilyRow; 20] = [
    counter_row(
        "ractogateway_requests",
        "Total LLM requests by provider / model / operation / status.",
        &["model", "operation", "provider", "status"],
        true,
        true,
    ),
    FamilyRow {
        shown_when_empty: true,
        ..request_histogram(
            "ractogateway_request_duration_seconds",
            "LLM request wall-clock latency in seconds.",
            Bounds::Latency,
            Observed::Latency,
        )
    },
    counter_row(
        "ractogateway_tokens",
        "Total tokens consumed \u{2014} labelled by token_type (input / output).",
        &["model", "provider", "token_type"],
        true,
        true,
    ),
    FamilyRow {
        value: ValueKind::Sum,
        ..counter_row(
            "ractogateway_cost_usd",
            "Total estimated cost in USD.",
            &["model", "provider"],
            true,
            true,
        )
    },
    counter_row(
        "ractogateway_cache_hits",
        "Total cache hits by cache type (exact / semantic).",
        &["cache_type"],
        false,
        true,
    ),
    counter_row(
        "ractogateway_cache_misses",
        "Total cache misses by cache type (exact / semantic).",
        &["cache_type"],
        false,
        true,
    ),
    counter_row(
        "ractogateway_tool_calls",
        "Total tool calls executed, labelled by tool name.",
        &["tool_name"],
        false,
        true,
    ),
    request_histogram(
        "ractogateway_time_to_first_token_seconds",
        "Time from an LLM request to the first token of its response, in seconds.",
        Bounds::Fixed(&TIME_TO_FIRST_TOKEN_BOUNDS),
        Observed::Seconds(request::TIME_TO_FIRST_TOKEN),
    ),
    request_histogram(
        "ractogateway_time_per_output_token_seconds",
        "Time per output token after the first of an LLM response, in seconds.",
        Bounds::Fixed(&TIME_PER_OUTPUT_TOKEN_BOUNDS),
        Observed::PerToken {
            after: request::TIME_TO_FIRST_TOKEN,
            tokens: request::OUTPUT,
        },
    ),
    counter_row(
        "ractogateway_overflow_requests",
        "Recordings folded into a family's overflow series, past max_series label sets.",
        &["family"],
        false,
        false,
    ),
    counter_row(
        "ractogateway_unpriced_requests",
        "LLM requests with tokens for which no price was found (their cost is not counted).",
        &["model", "provider"],
        true,
        false,
    ),
    request_histogram(
        "ractogateway_queue_time_seconds",
        "Time an LLM request waited in the gateway before its upstream call, in seconds.",
        Bounds::Fixed(&QUEUE_TIME_BOUNDS),
        Observed::Seconds(request::QUEUE),
    ),
    request_histogram(
        "ractogateway_upstream_latency_seconds",
        "Time an LLM request spent waiting on its provider, in seconds.",
        Bounds::Fixed(&LATENCY_BOUNDS),
        Observed::Seconds(request::UPSTREAM_LATENCY),
    ),
    request_histogram(
        "ractogateway_gateway_overhead_seconds",
        "Time an LLM request spent in the gateway itself (latency less queue and upstream), \
         in seconds.",
        Bounds::Fixed(&GATEWAY_OVERHEAD_BOUNDS),
        Observed::Remainder {
            minus: &[request::UPSTREAM_LATENCY, request::QUEUE],
        },
    ),
    FamilyRow {
        labels: &["model", "operation", "provider", "token_type"],
        latency_like: false,
        unit: "{token}",
        ..request_histogram(
            "ractogateway_request_tokens",
            "Tokens of each LLM request, labelled by token_type (input / output).",
            Bounds::Fixed(&TOKEN_USAGE_BOUNDS),
            Observed::TokenCounts(&USAGE_TOKEN_TYPES),
        )
    },
    counter_row(
        "ractogateway_request_errors",
        "Failed LLM requests by provider / model / operation / error_type.",
        &["error_type", "model", "operation", "provider"],
        true,
        false,
    ),
    FamilyRow {
        value: ValueKind::Level,
        ..counter_row(
            "ractogateway_requests_in_flight",
            "LLM requests started and not yet ended, by provider / model / operation.",
            &["model", "operation", "provider"],
            true,
            false,
        )
    },
    FamilyRow {
        labels: &["error_type", "model", "operation", "provider"],
        ..request_histogram(
            "ractogateway_operation_duration_seconds",
            "LLM request wall-clock latency in seconds, by error_type (empty when the request \
             did not fail).",
            Bounds::Latency,
            Observed::Outcomes,
        )
    },
    counter_row(
        "ractogateway_cache_saved_tokens",
        "Tokens that responses served from the gateway's cache did not spend, by model / \
         provider / token_type.",
        &["model", "provider", "token_type"],
        false,
        false,
    ),
    FamilyRow {
        value: ValueKind::Sum,
        ..counter_row(
            "ractogateway_cache_saved_usd",
            "Estimated USD that responses served from the gateway's cache did not cost, at \
             the model's price.",
            &["model", "provider"],
            false,
            false,
        )
    },
];
/// How many families a schema has.
pub const FAMILY_COUNT: usize = FAMILY_ROWS.len();

/// Whether two names are the same, where `==` is not yet allowed (const).
const fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut at = 0;
    while at < a.len() {
        if a[at] != b[at] {
            return false;
        }
        at += 1;
    }
    true
}

// Each named id is the position of its family's row: a row moved or added in
// the wrong place fails the build, not a scrape.
const _: () = {
    let ids: [(FamilyId, &str); 17] = [
        (REQUESTS, "ractogateway_requests"),
        (DURATION, "ractogateway_request_duration_seconds"),
        (TOKENS, "ractogateway_tokens"),
        (COST, "ractogateway_cost_usd"),
        (CACHE_HITS, "ractogateway_cache_hits"),
        (CACHE_MISSES, "ractogateway_cache_misses"),
        (TOOL_CALLS, "ractogateway_tool_calls"),
        (
            TIME_TO_FIRST_TOKEN,
            "ractogateway_time_to_first_token_seconds",
        ),
        (
            TIME_PER_OUTPUT_TOKEN,
            "ractogateway_time_per_output_token_seconds",
        ),
        (OVERFLOW, "ractogateway_overflow_requests"),
        (UNPRICED, "ractogateway_unpriced_requests"),
        (TOKEN_USAGE, "ractogateway_request_tokens"),
        (ERRORS, "ractogateway_request_errors"),
        (IN_FLIGHT, "ractogateway_requests_in_flight"),
        (
            OPERATION_DURATION,
            "ractogateway_operation_duration_seconds",
        ),
        (CACHE_SAVED_TOKENS, "ractogateway_cache_saved_tokens"),
        (CACHE_SAVED_USD, "ractogateway_cache_saved_usd"),
    ];
    let mut at = 0;
    while at < ids.len() {
        assert!(same_name(FAMILY_ROWS[ids[at].0 as usize].name, ids[at].1));
        at += 1;
    }
};

/// How many histogram series a request may feed besides the duration's: one
/// per family observing an optional value, one per token type for a family
/// observing token counts. The lazily created histograms of a requests series.
pub const OPTIONAL_OBSERVATIONS: usize = {
    let mut count = 0;
    let mut index = 0;
    while index < FAMILY_COUNT {
        match FAMILY_ROWS[index].observes {
            None | Some(Observed::Latency) => {}
            Some(Observed::TokenCounts(types)) => count += types.len(),
            Some(Observed::Outcomes) => count += ERROR_TYPES.len() + 1,
            Some(_) => count += 1,
        }
        index += 1;
    }
    count
};

/// The families of the optional observations and what each observes, in
/// family order (a token-counting family's once per token type).
pub const OPTIONAL_OBSERVED: [(FamilyId, Observed); OPTIONAL_OBSERVATIONS] = {
    let mut found = [(0, Observed::Latency); OPTIONAL_OBSERVATIONS];
    let mut count = 0;
    let mut index = 0;
    while index < FAMILY_COUNT {
        #[allow(clippy::cast_possible_truncation)] // Fewer than 256 families.
        let id = index as FamilyId;
        match FAMILY_ROWS[index].observes {
            None | Some(Observed::Latency) => {}
            Some(Observed::TokenCounts(types)) => {
                let mut at = 0;
                while at < types.len() {
                    found[count] = (id, Observed::TokenCount(types[at]));
                    count += 1;
                    at += 1;
                }
            }
            Some(Observed::Outcomes) => {
                found[count] = (id, Observed::Outcome(None));
                count += 1;
                let mut error_type = 0;
                while error_type < ERROR_TYPES.len() {
                    #[allow(clippy::cast_possible_truncation)] // Fewer than 256 error types.
                    let outcome = Observed::Outcome(Some(error_type as request::ErrorType));
                    found[count] = (id, outcome);
                    count += 1;
                    error_type += 1;
                }
            }
            Some(observed) => {
                found[count] = (id, observed);
                count += 1;
            }
        }
        index += 1;
    }
    found
};

/// The position in [`OPTIONAL_OBSERVED`] of the first of the conventions'
/// histograms' observations (see [`Schema::keeping_semconv_histograms`]):
/// they all come after the others, so that a store without them stops there.
pub const CONVENTIONS_OBSERVED: usize = {
    let mut first = OPTIONAL_OBSERVATIONS;
    while first > 0 && OPTIONAL_OBSERVED[first - 1].1.for_conventions() {
        first -= 1;
    }
    let mut at = 0;
    while at < first {
        assert!(
            !OPTIONAL_OBSERVED[at].1.for_conventions(),
            "the conventions' histograms' rows come after the others"
        );
        at += 1;
    }
    first
};

/// Whether `name` is a label name Prometheus accepts and Prometheus does not reserve.
fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// Adds `extra` labels to a request family and sorts its labels for the
/// exposition, noting where each takes its value from.
fn with_request_labels(mut family: FamilyDesc, extra: &[String]) -> FamilyDesc {
    let mut labels: Vec<(String, LabelSource)> = family
        .label_names
        .iter()
        .map(|name| {
            let source = REQUEST_LABELS
                .iter()
                .position(|known| known == name)
                .map_or(LabelSource::Derived, LabelSource::Request);
            (name.clone(), source)
        })
        .collect();
    labels.extend(extra.iter().enumerate().map(|(index, name)| {
        (
            name.clone(),
            LabelSource::Request(REQUEST_LABELS.len() + index),
        )
    }));
    labels.sort_by(|a, b| a.0.cmp(&b.0));
    family.label_names = labels.iter().map(|(name, _)| name.clone()).collect();
    family.sources = labels.into_iter().map(|(_, source)| source).collect();
    family
}

impl Schema {
    /// The reference's families, the latency histogram with `latency_bounds`.
    pub fn new(latency_bounds: &[f64]) -> Result<Self, String> {
        Self::with_extra_labels(latency_bounds, &[])
    }

    /// The reference's families and the streaming histograms, the latency
    /// histogram with `latency_bounds`, and `extra_labels` on every family a
    /// request feeds (requests, duration, tokens, cost and the streaming ones).
    /// A bad bound or label name is an error that says why.
    pub fn with_extra_labels(
        latency_bounds: &[f64],
        extra_labels: &[String],
    ) -> Result<Self, String> {
        Self::with_options(latency_bounds, extra_labels, None)
    }

    /// Like [`Schema::with_extra_labels`]; with `native`, every latency-like
    /// histogram (the ones a request feeds) keeps a native histogram too.
    pub fn with_options(
        latency_bounds: &[f64],
        extra_labels: &[String],
        native: Option<NativeConfig>,
    ) -> Result<Self, String> {
        for (index, name) in extra_labels.iter().enumerate() {
            if !valid_label_name(name) {
                return Err(format!(
                    "extra_labels: {name:?} is not a Prometheus label name (letters, digits \
                     and _, not starting with a digit or __)"
                ));
            }
            if TAKEN_LABELS.contains(&name.as_str()) {
                return Err(format!(
                    "extra_labels: {name:?} is a label the families already have"
                ));
            }
            if extra_labels[..index].contains(name) {
                return Err(format!("extra_labels: {name:?} is named twice"));
            }
        }
        let families = FAMILY_ROWS
            .iter()
            .enumerate()
            .map(|(index, row)| {
                let buckets = match row.bounds {
                    Bounds::None => None,
                    Bounds::Latency => Some(
                        Buckets::new(latency_bounds)
                            .map_err(|reason| format!("latency_buckets {reason}"))?,
                    ),
                    Bounds::Fixed(bounds) => Some(Buckets::new(bounds)?),
                };
                let family = FamilyDesc {
                    id: FamilyId::try_from(index).map_err(|_| "too many families".to_owned())?,
                    name: Cow::Borrowed(row.name),
                    help: row.help,
                    kind: match row.value {
                        ValueKind::Count | ValueKind::Sum => FamilyKind::Counter,
                        ValueKind::Level => FamilyKind::Gauge,
                        ValueKind::Buckets => FamilyKind::Histogram,
                    },
                    value: row.value,
                    unit: row.unit,
                    label_names: row.labels.iter().map(|name| (*name).to_owned()).collect(),
                    sources: Vec::new(),
                    buckets,
                    shown_when_empty: row.shown_when_empty,
                    per_request: row.per_request,
                    observes: row.observes,
                    native: native.filter(|_| row.latency_like),
                };
                Ok(if row.per_request {
                    with_request_labels(family, extra_labels)
                } else {
                    family
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let requests = &families[usize::from(REQUESTS)];
        let request_positions = (0..REQUEST_LABELS.len() + extra_labels.len())
            .map(|index| {
                requests
                    .sources
                    .iter()
                    .position(|source| *source == LabelSource::Request(index))
                    .unwrap_or_else(|| unreachable!("the requests family has every request label"))
            })
            .collect();
        Ok(Schema {
            families,
            extra_labels: extra_labels.to_vec(),
            request_positions,
            native,
            semconv_histograms: false,
            namespace: Cow::Borrowed(DEFAULT_NAMESPACE),
        })
    }

    /// The schema with every family named under `namespace` instead of
    /// [`DEFAULT_NAMESPACE`] (`myapp_requests_total`); a namespace that would
    /// not make Prometheus metric names is an error that says why.
    pub fn with_namespace(mut self, namespace: &str) -> Result<Self, String> {
        if !valid_label_name(namespace) {
            return Err(format!(
                "namespace: {namespace:?} must be letters, digits and _, not starting with a \
                 digit or __ (it starts every metric name)"
            ));
        }
        if namespace == DEFAULT_NAMESPACE {
            return Ok(self);
        }
        for family in &mut self.families {
            let rest = family
                .name
                .strip_prefix(DEFAULT_NAMESPACE)
                .unwrap_or_else(|| unreachable!("every row is named under the default namespace"));
            family.name = Cow::Owned(format!("{namespace}{rest}"));
        }
        self.namespace = Cow::Owned(namespace.to_owned());
        Ok(self)
    }

    /// The prefix of every family name.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The schema, the histograms only the GenAI conventions show observed:
    /// the tokens per request (their `gen_ai.client.token.usage`) and the
    /// latency by error type (their `gen_ai.client.operation.duration`, whose
    /// failed operations carry `error.type`). Off by default, as they cost
    /// three histogram series per label set that few read; on for a
    /// middleware named as the conventions. The families are in every
    /// schema, so that files and snapshots of either kind match.
    #[must_use]
    pub fn keeping_semconv_histograms(mut self, keep: bool) -> Self {
        self.semconv_histograms = keep;
        self
    }

    /// Whether requests feed the conventions' histograms (see
    /// [`Schema::keeping_semconv_histograms`]).
    pub fn keeps_semconv_histograms(&self) -> bool {
        self.semconv_histograms
    }

    /// For each request label value, its position among the requests family's labels.
    pub fn request_positions(&self) -> &[usize] {
        &self.request_positions
    }

    /// The position of `model` among the requests family's labels.
    pub fn model_position(&self) -> usize {
        self.request_positions[1]
    }

    /// The native histograms' configuration, if the latency-like histograms keep them.
    pub fn native(&self) -> Option<NativeConfig> {
        self.native
    }

    /// The extra label names, in the order they were configured.
    pub fn extra_labels(&self) -> &[String] {
        &self.extra_labels
    }

    /// The label values of `family`'s series that a requests entry feeds:
    /// `label(position)` reads the entry's labels; `derived` fills in the
    /// label the family adds (a token series' type, an error series' type).
    pub fn derived_key<'e>(
        &self,
        family: FamilyId,
        label: impl Fn(usize) -> &'e str,
        derived: &'e str,
    ) -> SmallVec<[&'e str; 8]> {
        self.family(family)
            .sources
            .iter()
            .map(|source| match source {
                LabelSource::Request(index) => label(self.request_positions[*index]),
                LabelSource::Derived => derived,
            })
            .collect()
    }

    /// The requests family's label values of a request whose label values are
    /// `values` (provider, model, operation, status, then the extra labels).
    pub fn request_key<'v>(&self, values: &[&'v str]) -> SmallVec<[&'v str; 8]> {
        self.key_of(REQUESTS, values)
    }

    /// The label values of `family`'s series of a request whose label values
    /// are `values` (as for [`Schema::request_key`]); a derived label is empty.
    pub fn key_of<'v>(&self, family: FamilyId, values: &[&'v str]) -> SmallVec<[&'v str; 8]> {
        self.family(family)
            .sources
            .iter()
            .map(|source| match source {
                LabelSource::Request(index) => values[*index],
                LabelSource::Derived => "",
            })
            .collect()
    }

    /// Every family, by position.
    pub fn families(&self) -> &[FamilyDesc] {
        &self.families
    }

    /// The family at `id`.
    pub fn family(&self, id: FamilyId) -> &FamilyDesc {
        &self.families[usize::from(id)]
    }

    /// The family called `name`, if the schema has one.
    pub fn named(&self, name: &str) -> Option<&FamilyDesc> {
        self.families.iter().find(|family| family.name == name)
    }

    /// The buckets of the histogram family `id`.
    pub fn buckets(&self, id: FamilyId) -> &Buckets {
        self.family(id)
            .buckets
            .as_ref()
            .unwrap_or_else(|| unreachable!("only histogram families are asked for buckets"))
    }

    /// The latency histogram's buckets.
    pub fn latency_buckets(&self) -> &Buckets {
        self.buckets(DURATION)
    }
}

impl Default for Schema {
    /// The reference's families and buckets.
    fn default() -> Self {
        Schema::new(&LATENCY_BOUNDS)
            .unwrap_or_else(|_| unreachable!("the reference's bounds are valid"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_family_keeps_the_cells_its_kind_needs() {
        let schema = Schema::new(&[0.5, 1.0]).unwrap();
        for family in schema.families() {
            let histogram = family.kind == FamilyKind::Histogram;
            assert_eq!(
                histogram,
                family.value == ValueKind::Buckets,
                "{}",
                family.name
            );
            assert_eq!(
                usize::from(family.id),
                schema.families().iter().position(|f| f == family).unwrap()
            );
        }
        let duration = schema.family(DURATION);
        assert_eq!(duration.cells(), 4);
        assert!(duration.is_sum(3) && !duration.is_sum(2));
        assert!(schema.family(COST).is_sum(0) && !schema.family(TOKENS).is_sum(0));
    }
}
