//! The fields of a request and the token types, as data.
//!
//! [`REQUEST_FIELDS`] describes each keyword of `record_request` and
//! `record_batch` once: what it feeds, its default, the whole it is part of,
//! and its doc line. [`TOKEN_TYPES`] describes each token type once: its
//! `token_type` label and the price it is billed at. Argument parsing (single
//! calls and batch columns), validation, the recording rules, pricing, the
//! `_core.pyi` stub and the docs' field list all read these tables, so adding a
//! field is a row here (and a family row in [`crate::schema::family`] when it
//! feeds a new histogram).

/// A token type: an index into [`TOKEN_TYPES`] and [`RequestValues::tokens`].
pub type TokenType = usize;
/// Every prompt token.
pub const INPUT: TokenType = 0;
/// Every output token.
pub const OUTPUT: TokenType = 1;
/// The token types the reference counts: the first ones, by design, so that the
/// recording rules can test the others with one comparison.
pub const REFERENCE_TOKEN_TYPES: usize = 2;

/// Which of a model's prices a token type is billed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// The input price, for the prompt tokens no other rate bills.
    Input,
    /// The output price.
    Output,
    /// The cache-read price; these tokens are taken out of the input price's.
    CacheRead,
    /// The cache-write price; these tokens are taken out of the input price's.
    CacheWrite,
    /// The price of the whole this type is part of: billed there already.
    Whole,
}

/// One token type.
#[derive(Debug, Clone, Copy)]
pub struct TokenTypeDesc {
    /// The `token_type` label value.
    pub name: &'static str,
    /// The price it is billed at.
    pub rate: Rate,
}

/// The token types, in the order of [`RequestValues::tokens`] (the reference's
/// two first).
pub const TOKEN_TYPES: [TokenTypeDesc; 7] = [
    TokenTypeDesc {
        name: "input",
        rate: Rate::Input,
    },
    TokenTypeDesc {
        name: "output",
        rate: Rate::Output,
    },
    TokenTypeDesc {
        name: "cache_read",
        rate: Rate::CacheRead,
    },
    TokenTypeDesc {
        name: "cache_write",
        rate: Rate::CacheWrite,
    },
    TokenTypeDesc {
        name: "reasoning",
        rate: Rate::Whole,
    },
    TokenTypeDesc {
        name: "audio_input",
        rate: Rate::Whole,
    },
    TokenTypeDesc {
        name: "audio_output",
        rate: Rate::Whole,
    },
];
/// How many token types a request counts.
pub const TOKEN_TYPE_COUNT: usize = TOKEN_TYPES.len();

/// Why a request failed: an index into [`ERROR_TYPES`].
pub type ErrorType = u8;

/// The `error_type` label values, a closed vocabulary: what a gateway
/// operator tells apart (retry later, fix the request, fix the key, ...),
/// the same for every provider.
pub const ERROR_TYPES: [&str; 11] = [
    "rate_limit",
    "timeout",
    "connection",
    "server_error",
    "bad_request",
    "auth",
    "not_found",
    "context_length",
    "content_filter",
    "cancelled",
    "other",
];

/// The error type called `name`, if the vocabulary has it.
pub fn error_type_named(name: &str) -> Option<ErrorType> {
    ERROR_TYPES
        .iter()
        .position(|known| *known == name)
        .and_then(|at| ErrorType::try_from(at).ok())
}

/// The status a request that did not fail is recorded with: the one status an
/// error type is refused with.
pub const OK_STATUS: &str = "ok";

/// An optional duration of a request besides its latency: an index into
/// [`RequestValues::seconds`].
pub type SecondsField = usize;
/// Seconds to the first token of a streamed response.
pub const TIME_TO_FIRST_TOKEN: SecondsField = 0;
/// Seconds before the upstream call (queued in the gateway).
pub const QUEUE: SecondsField = 1;
/// Seconds spent waiting on the provider.
pub const UPSTREAM_LATENCY: SecondsField = 2;
/// How many optional durations a request carries.
pub const SECONDS_FIELDS: usize = 3;

/// A value a request gives or implies, that a histogram family observes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// The latency.
    Latency,
    /// An optional duration, when given.
    Seconds(SecondsField),
    /// The latency less some optional durations (those absent count 0), when
    /// the first of them is given: `latency - minus[0] - minus[1] ...`.
    Remainder {
        /// The durations taken off; the first must be given.
        minus: &'static [SecondsField],
    },
    /// The time per token of a type after the first, when an optional duration
    /// (the time to that first token) is given and the type counts at least two:
    /// `(latency - after) / (tokens - 1)`.
    PerToken {
        /// The time to the first token.
        after: SecondsField,
        /// The token type.
        tokens: TokenType,
    },
    /// The counts of some token types, each in its own series (the family's
    /// `token_type` label), when above zero and the store keeps them (see
    /// [`crate::store::rules::Sink::keeps_semconv_histograms`]). A family row's; the
    /// optional observations list one [`Observed::TokenCount`] per type.
    TokenCounts(&'static [TokenType]),
    /// The count of one token type, when above zero (see [`Observed::TokenCounts`]).
    TokenCount(TokenType),
    /// The latency, in the series of the request's outcome (the family's
    /// `error_type` label: empty when the request did not fail), when the
    /// store keeps the conventions' histograms. A family row's; the optional
    /// observations list one [`Observed::Outcome`] per outcome.
    Outcomes,
    /// The latency of a request of one outcome: `None`, it did not fail;
    /// else its error type (see [`Observed::Outcomes`]).
    Outcome(Option<ErrorType>),
}

impl Observed {
    /// The value `values` gives this observation, if any.
    #[inline]
    pub fn value(self, values: &RequestValues) -> Option<f64> {
        match self {
            Observed::Latency => Some(values.latency_s),
            Observed::Seconds(field) => values.seconds[field],
            Observed::Remainder { minus } => {
                values.seconds[*minus.first()?]?;
                Some(
                    minus
                        .iter()
                        .fold(values.latency_s, |rest, field| {
                            rest - values.seconds[*field].unwrap_or(0.0)
                        })
                        .max(0.0),
                )
            }
            Observed::PerToken { after, tokens } => {
                let first = values.seconds[after]?;
                let count = values.tokens[tokens];
                (count >= 2).then(|| (values.latency_s - first) / (count - 1) as f64)
            }
            #[allow(clippy::cast_precision_loss)] // Counts stay far below 2^53.
            Observed::TokenCount(token_type) => {
                let count = values.tokens[token_type];
                (count > 0).then_some(count as f64)
            }
            Observed::Outcome(outcome) => (values.error == outcome).then_some(values.latency_s),
            Observed::TokenCounts(_) | Observed::Outcomes => None,
        }
    }

    /// Whether it is one of the conventions' histograms (token counts, the
    /// latency by outcome), which a store keeps only when asked.
    pub const fn for_conventions(self) -> bool {
        matches!(
            self,
            Observed::TokenCount(_)
                | Observed::TokenCounts(_)
                | Observed::Outcome(_)
                | Observed::Outcomes
        )
    }
}

impl Observed {
    /// What is observed, in words, for the docs.
    pub fn describe(self) -> String {
        let name = |field: SecondsField| REQUEST_FIELDS[SECONDS_POSITIONS[field]].name;
        match self {
            Observed::Latency => "`latency_s`".to_owned(),
            Observed::Seconds(field) => format!("`{}` when given", name(field)),
            Observed::Remainder { minus } => {
                let names: Vec<String> = minus.iter().map(|f| format!(" - {}", name(*f))).collect();
                format!(
                    "`latency_s{}` when `{}` is given (an absent one counts 0)",
                    names.concat(),
                    minus.first().map_or("", |f| name(*f))
                )
            }
            Observed::PerToken { after, tokens } => {
                let count = REQUEST_FIELDS[TOKEN_FIELDS[tokens]].name;
                format!(
                    "`(latency_s - {after}) / ({count} - 1)` when `{after}` is given and \
                     `{count} >= 2`",
                    after = name(after)
                )
            }
            Observed::TokenCounts(types) => {
                let names: Vec<String> = types
                    .iter()
                    .map(|t| format!("`{}`", REQUEST_FIELDS[TOKEN_FIELDS[*t]].name))
                    .collect();
                format!(
                    "{}, each when above zero, with `semconv=\"gen_ai\"`",
                    names.join(" and ")
                )
            }
            Observed::TokenCount(token_type) => format!(
                "`{}` when above zero",
                REQUEST_FIELDS[TOKEN_FIELDS[token_type]].name
            ),
            Observed::Outcomes | Observed::Outcome(_) => {
                "`latency_s` by `error_type` (empty when not given), with `semconv=\"gen_ai\"`"
                    .to_owned()
            }
        }
    }
}

/// What a request field feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feeds {
    /// A request label, by position: provider, model, operation, status.
    Label(usize),
    /// The latency, observed in the duration histogram.
    Latency,
    /// An optional duration (see [`RequestValues::seconds`]).
    Seconds(SecondsField),
    /// A token count (see [`TOKEN_TYPES`]).
    Tokens(TokenType),
    /// Tool-call objects, counted by name.
    ToolCalls,
    /// The values of the middleware's extra labels.
    ExtraLabels,
    /// An exemplar's labels (a trace id, say) for the buckets observed.
    Exemplar,
    /// Why the request failed, one of [`ERROR_TYPES`].
    ErrorType,
}

impl Feeds {
    /// The kind of value, as `_core.REQUEST_FIELDS` names it.
    pub fn kind_name(self) -> &'static str {
        match self {
            Feeds::Label(_) => "label",
            Feeds::Latency | Feeds::Seconds(_) => "seconds",
            Feeds::Tokens(_) => "tokens",
            Feeds::ToolCalls => "tool_calls",
            Feeds::ExtraLabels => "extra_labels",
            Feeds::Exemplar => "exemplar",
            Feeds::ErrorType => "error_type",
        }
    }
}

/// The whole a numeric field is part of: the parts of one group add up to at
/// most the whole (the groups of a whole may overlap each other).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartOf {
    /// The whole's field, by position in [`REQUEST_FIELDS`].
    pub whole: usize,
    /// The parts that together fit in the whole.
    pub group: u8,
}

/// One keyword argument of the request-recording methods.
#[derive(Debug, Clone, Copy)]
pub struct RequestField {
    /// The keyword.
    pub name: &'static str,
    /// What it feeds.
    pub feeds: Feeds,
    /// Its default as Python source, or None when it is required.
    pub default: Option<&'static str>,
    /// The whole it is part of, if any.
    pub part_of: Option<PartOf>,
    /// Its type in the stub.
    pub annotation: &'static str,
    /// One line for the stub and the docs.
    pub doc: &'static str,
}

const fn label(name: &'static str, position: usize, doc: &'static str) -> RequestField {
    RequestField {
        name,
        feeds: Feeds::Label(position),
        default: None,
        part_of: None,
        annotation: "str",
        doc,
    }
}

const fn tokens(
    name: &'static str,
    token_type: TokenType,
    part_of: Option<PartOf>,
    doc: &'static str,
) -> RequestField {
    RequestField {
        name,
        feeds: Feeds::Tokens(token_type),
        default: Some("0"),
        part_of,
        annotation: "int",
        doc,
    }
}

const fn seconds(
    name: &'static str,
    field: SecondsField,
    part_of: PartOf,
    doc: &'static str,
) -> RequestField {
    RequestField {
        name,
        feeds: Feeds::Seconds(field),
        default: Some("None"),
        part_of: Some(part_of),
        annotation: "float | None",
        doc,
    }
}

/// The positions of `latency_s`, `input_tokens` and `output_tokens`, the
/// wholes of the parts below (checked against the table by a test).
const LATENCY: usize = 4;
const INPUT_FIELD: usize = 5;
const OUTPUT_FIELD: usize = 6;

/// The keyword arguments of `record_request` and `record_batch`, in signature
/// order (the reference's first).
pub const REQUEST_FIELDS: [RequestField; 19] = [
    label("provider", 0, "The provider, e.g. \"openai\"."),
    label("model", 1, "The model, e.g. \"gpt-4o\"."),
    label("operation", 2, "The operation, e.g. \"chat\"."),
    label("status", 3, "The outcome, e.g. \"ok\" or \"error\"."),
    RequestField {
        name: "latency_s",
        feeds: Feeds::Latency,
        default: None,
        part_of: None,
        annotation: "float",
        doc: "Wall-clock seconds from request to last byte.",
    },
    tokens(
        "input_tokens",
        INPUT,
        None,
        "Every prompt token, cached ones included.",
    ),
    tokens(
        "output_tokens",
        OUTPUT,
        None,
        "Every generated token, reasoning included.",
    ),
    RequestField {
        name: "tool_calls",
        feeds: Feeds::ToolCalls,
        default: Some("None"),
        part_of: None,
        annotation: "Iterable[Any] | None",
        doc: "Tool calls, counted by their .name (or .function.name, or [\"name\"]).",
    },
    seconds(
        "time_to_first_token_s",
        TIME_TO_FIRST_TOKEN,
        PartOf {
            whole: LATENCY,
            group: 0,
        },
        "Seconds to the first token of a streamed response; None when not streamed.",
    ),
    tokens(
        "cache_read_tokens",
        2,
        Some(PartOf {
            whole: INPUT_FIELD,
            group: 0,
        }),
        "Prompt tokens read from the provider's prompt cache (part of input_tokens).",
    ),
    tokens(
        "cache_write_tokens",
        3,
        Some(PartOf {
            whole: INPUT_FIELD,
            group: 0,
        }),
        "Prompt tokens written to the provider's prompt cache (part of input_tokens).",
    ),
    tokens(
        "reasoning_tokens",
        4,
        Some(PartOf {
            whole: OUTPUT_FIELD,
            group: 0,
        }),
        "Output tokens spent on reasoning (part of output_tokens).",
    ),
    seconds(
        "queue_s",
        QUEUE,
        PartOf {
            whole: LATENCY,
            group: 1,
        },
        "Seconds before the upstream call (queued in the gateway), part of latency_s.",
    ),
    seconds(
        "upstream_latency_s",
        UPSTREAM_LATENCY,
        PartOf {
            whole: LATENCY,
            group: 1,
        },
        "Seconds spent waiting on the provider, part of latency_s (with queue_s).",
    ),
    tokens(
        "audio_input_tokens",
        5,
        Some(PartOf {
            whole: INPUT_FIELD,
            group: 1,
        }),
        "Prompt tokens of audio (part of input_tokens).",
    ),
    tokens(
        "audio_output_tokens",
        6,
        Some(PartOf {
            whole: OUTPUT_FIELD,
            group: 1,
        }),
        "Output tokens of audio (part of output_tokens).",
    ),
    RequestField {
        name: "labels",
        feeds: Feeds::ExtraLabels,
        default: Some("None"),
        part_of: None,
        annotation: "Mapping[str, str] | None",
        doc: "Values of the middleware's extra_labels; a missing one is \"\".",
    },
    RequestField {
        name: "exemplar",
        feeds: Feeds::Exemplar,
        default: Some("None"),
        part_of: None,
        annotation: "Mapping[str, str] | None",
        doc: "An exemplar's labels (trace_id, span_id) for the duration and time-to-first-token \
              buckets observed; at most 128 characters in all.",
    },
    RequestField {
        name: "error_type",
        feeds: Feeds::ErrorType,
        default: Some("None"),
        part_of: None,
        annotation: "str | None",
        doc: "Why a failed request failed, one of ERROR_TYPES (\"rate_limit\", \"timeout\", ...); \
              refused with status \"ok\".",
    },
];
/// How many keywords the request-recording methods take.
pub const FIELD_COUNT: usize = REQUEST_FIELDS.len();

/// Whether two [`Feeds`] are the same, in a constant expression.
const fn same_feed(a: Feeds, b: Feeds) -> bool {
    match (a, b) {
        (Feeds::Label(x), Feeds::Label(y))
        | (Feeds::Seconds(x), Feeds::Seconds(y))
        | (Feeds::Tokens(x), Feeds::Tokens(y)) => x == y,
        (Feeds::Latency, Feeds::Latency)
        | (Feeds::ToolCalls, Feeds::ToolCalls)
        | (Feeds::ExtraLabels, Feeds::ExtraLabels)
        | (Feeds::Exemplar, Feeds::Exemplar)
        | (Feeds::ErrorType, Feeds::ErrorType) => true,
        _ => false,
    }
}

/// The position in [`REQUEST_FIELDS`] of the field that feeds `feeds`.
pub const fn position_of(feeds: Feeds) -> usize {
    let mut index = 0;
    while index < FIELD_COUNT {
        if same_feed(REQUEST_FIELDS[index].feeds, feeds) {
            return index;
        }
        index += 1;
    }
    panic!("no field feeds this")
}

/// The positions of the request labels' fields: provider, model, operation, status.
pub const LABEL_FIELDS: [usize; 4] = [
    position_of(Feeds::Label(0)),
    position_of(Feeds::Label(1)),
    position_of(Feeds::Label(2)),
    position_of(Feeds::Label(3)),
];
/// The position of `latency_s`.
pub const LATENCY_FIELD: usize = position_of(Feeds::Latency);
/// The position of `tool_calls`.
pub const TOOL_CALLS_FIELD: usize = position_of(Feeds::ToolCalls);
/// The position of `labels`.
pub const EXTRA_LABELS_FIELD: usize = position_of(Feeds::ExtraLabels);
/// The position of `exemplar`.
pub const EXEMPLAR_FIELD: usize = position_of(Feeds::Exemplar);
/// The position of `error_type`.
pub const ERROR_TYPE_FIELD: usize = position_of(Feeds::ErrorType);
/// The position of each token type's field.
pub const TOKEN_FIELDS: [usize; TOKEN_TYPE_COUNT] = {
    let mut positions = [0; TOKEN_TYPE_COUNT];
    let mut token_type = 0;
    while token_type < TOKEN_TYPE_COUNT {
        positions[token_type] = position_of(Feeds::Tokens(token_type));
        token_type += 1;
    }
    positions
};
/// The position of each optional duration's field.
pub const SECONDS_POSITIONS: [usize; SECONDS_FIELDS] = {
    let mut positions = [0; SECONDS_FIELDS];
    let mut field = 0;
    while field < SECONDS_FIELDS {
        positions[field] = position_of(Feeds::Seconds(field));
        field += 1;
    }
    positions
};

/// The measured values of one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestValues {
    /// Latency in seconds: finite and not negative.
    pub latency_s: f64,
    /// Token counts by token type (see [`TOKEN_TYPES`]).
    pub tokens: [u64; TOKEN_TYPE_COUNT],
    /// The optional durations, by [`SecondsField`]: finite and not negative.
    pub seconds: [Option<f64>; SECONDS_FIELDS],
    /// Why the request failed, if it did and the caller said.
    pub error: Option<ErrorType>,
}

impl RequestValues {
    /// A request of the reference's arguments: latency, prompt and output tokens.
    pub fn new(latency_s: f64, input_tokens: u64, output_tokens: u64) -> Self {
        let mut tokens = [0; TOKEN_TYPE_COUNT];
        tokens[INPUT] = input_tokens;
        tokens[OUTPUT] = output_tokens;
        RequestValues {
            latency_s,
            tokens,
            seconds: [None; SECONDS_FIELDS],
            error: None,
        }
    }

    /// Whether the request carries more than the reference's values: a token
    /// type past the reference's two, an optional duration, or an error type.
    #[inline]
    pub fn has_more(&self) -> bool {
        self.tokens[REFERENCE_TOKEN_TYPES..]
            .iter()
            .fold(0, |any, count| any | count)
            != 0
            || self.seconds.iter().any(Option::is_some)
            || self.error.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_row_is_consistent() {
        for (position, field) in REQUEST_FIELDS.iter().enumerate() {
            if let Some(part_of) = field.part_of {
                let whole = REQUEST_FIELDS[part_of.whole];
                assert_eq!(
                    whole.feeds.kind_name(),
                    field.feeds.kind_name(),
                    "{} is part of {}",
                    field.name,
                    whole.name
                );
                assert!(whole.default.is_none_or(|d| d == "0"), "{}", whole.name);
            }
            if let Feeds::Tokens(token_type) = field.feeds {
                assert_eq!(TOKEN_FIELDS[token_type], position);
                assert_eq!(
                    field.name,
                    format!("{}_tokens", TOKEN_TYPES[token_type].name)
                );
            }
        }
        assert_eq!(REQUEST_FIELDS[ERROR_TYPE_FIELD].name, "error_type");
        assert_eq!(error_type_named("timeout"), Some(1));
        assert_eq!(error_type_named("Timeout"), None);
        for position in SECONDS_POSITIONS {
            assert!(REQUEST_FIELDS[position].name.ends_with("_s"));
        }
        assert_eq!(LATENCY_FIELD, LATENCY);
        assert_eq!(
            [TOKEN_FIELDS[INPUT], TOKEN_FIELDS[OUTPUT]],
            [INPUT_FIELD, OUTPUT_FIELD]
        );
        assert_eq!(
            LABEL_FIELDS.map(|at| REQUEST_FIELDS[at].name),
            ["provider", "model", "operation", "status"]
        );
    }

    #[test]
    fn time_per_output_token_needs_two_tokens_and_a_first_token() {
        let per_token = Observed::PerToken {
            after: TIME_TO_FIRST_TOKEN,
            tokens: OUTPUT,
        };
        let mut values = RequestValues::new(2.0, 1, 5);
        assert_eq!(per_token.value(&values), None);
        values.seconds[TIME_TO_FIRST_TOKEN] = Some(1.0);
        assert_eq!(per_token.value(&values), Some(0.25));
        values.tokens[OUTPUT] = 1;
        assert_eq!(per_token.value(&values), None);
    }
}
