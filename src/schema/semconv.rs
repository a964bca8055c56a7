//! Whose names the families go by outside the store: ours, or the
//! OpenTelemetry GenAI semantic conventions', and how each output spells them.
//!
//! The conventions are pinned to v1.41.0, `docs/gen-ai/gen-ai-metrics.md` (they
//! are in development and have renamed metrics and attributes between
//! releases: `gen_ai.system` became `gen_ai.provider.name` in 1.37.0). Where
//! they define a metric for one of our families, the family takes its name;
//! every label they name becomes their attribute. Families they do not define
//! (the request, token, cost, cache and tool call counters, queue, upstream
//! and overhead times) keep our names. Two of theirs are histograms a store
//! keeps only when asked (a middleware of these names): their
//! `gen_ai.client.token.usage` is the tokens-per-request histogram, not the
//! token counter's running totals; their `gen_ai.client.operation.duration`
//! is the latency by error type, whose failed operations carry `error.type`
//! (our duration histogram has no such label, as the reference's has none).
//! A store without them shows our duration histogram under that name,
//! without `error.type`.
//!
//! The store, its files and snapshots always use our names: a convention is
//! how an exposition or a push presents them, so processes named differently
//! still share a directory and merge.
//!
//! A Prometheus exposition spells a convention's dotted names in one of two
//! character sets. Prometheus 3 asks for UTF-8 names (`escaping=allow-utf-8`
//! in `Accept`); they get the unit suffix Prometheus adds to OTLP metrics
//! (`gen_ai.client.operation.duration_seconds`, Prometheus's
//! `NoUTF8EscapingWithSuffixes` translation). Every other scraper, remote
//! write and `prometheus_client`'s multi-process files get the same names with
//! each character outside the legacy set as `_`
//! (`gen_ai_client_operation_duration_seconds`, `gen_ai_provider_name`): the
//! `underscores` escaping of Prometheus and `prometheus_client`, and the
//! default `UnderscoreEscapingWithSuffixes` translation of OTLP metrics.

use std::borrow::Cow;

use crate::schema::family::{
    FamilyDesc, FamilyId, DURATION, OPERATION_DURATION, TIME_PER_OUTPUT_TOKEN, TIME_TO_FIRST_TOKEN,
    TOKEN_USAGE,
};

/// The version of the GenAI conventions these names are from.
pub const VERSION: &str = "1.41.0";

/// The schema URL of that version, which an OTLP export names.
pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.41.0";

/// Our families the GenAI conventions define, and their names there.
pub const METRICS: [(FamilyId, &str); 4] = [
    (TOKEN_USAGE, "gen_ai.client.token.usage"),
    (OPERATION_DURATION, "gen_ai.client.operation.duration"),
    (
        TIME_TO_FIRST_TOKEN,
        "gen_ai.client.operation.time_to_first_chunk",
    ),
    (
        TIME_PER_OUTPUT_TOKEN,
        "gen_ai.client.operation.time_per_output_chunk",
    ),
];

/// Our family that stands in for one of [`METRICS`] in a store that does not
/// keep the conventions' histograms: the duration histogram, without `error.type`.
pub const STAND_INS: [(FamilyId, FamilyId); 1] = [(DURATION, OPERATION_DURATION)];

/// Our labels the GenAI conventions name, and their attribute names.
pub const ATTRIBUTES: [(&str, &str); 5] = [
    ("provider", "gen_ai.provider.name"),
    ("model", "gen_ai.request.model"),
    ("operation", "gen_ai.operation.name"),
    ("token_type", "gen_ai.token.type"),
    ("error_type", "error.type"),
];

/// Our labels whose empty value means the attribute is absent: a request
/// that did not fail has no `error.type`. OTLP leaves such an attribute
/// out; Prometheus reads an empty label as an absent one.
pub const ABSENT_WHEN_EMPTY: [&str; 1] = ["error_type"];

/// Prometheus's suffix for an OTLP unit: seconds; an annotation in braces
/// (`{token}`) adds none.
const UNIT_SUFFIXES: [(&str, &str); 1] = [("s", "_seconds")];

/// Whose names the families go by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Convention {
    /// Ours, the reference's.
    #[default]
    Ours,
    /// The OpenTelemetry GenAI semantic conventions' ([`VERSION`]).
    GenAi {
        /// Whether the store keeps the conventions' histograms (see
        /// [`crate::schema::family::Schema::keeping_semconv_histograms`]);
        /// when not, [`STAND_INS`] take their names.
        histograms: bool,
    },
}

/// The characters a Prometheus exposition's names may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Charset {
    /// `[a-zA-Z_:][a-zA-Z0-9_:]*` names and `[a-zA-Z_][a-zA-Z0-9_]*` labels;
    /// any other character becomes `_`.
    #[default]
    Legacy,
    /// Any UTF-8 (quoted in the text formats when outside the legacy set).
    Utf8,
}

/// A family's names in a Prometheus exposition: its own (a counter's without
/// `_total`) and its labels', in the family's label order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrometheusNames {
    /// The family name.
    pub name: String,
    /// The label names.
    pub labels: Vec<String>,
}

impl Convention {
    /// The convention named `name` in the Python API (`None` for ours), as
    /// a store of that convention presents itself (keeping the histograms
    /// the convention shows).
    pub fn named(name: Option<&str>) -> Result<Self, String> {
        match name {
            None => Ok(Convention::Ours),
            Some("gen_ai") => Ok(Convention::GenAi { histograms: true }),
            Some(other) => Err(format!("must be None or 'gen_ai', got {other:?}")),
        }
    }

    /// The convention, for a store that keeps the conventions' histograms
    /// (`histograms`) or not.
    #[must_use]
    pub fn for_store(self, histograms: bool) -> Self {
        match self {
            Convention::Ours => Convention::Ours,
            Convention::GenAi { .. } => Convention::GenAi { histograms },
        }
    }

    /// The conventions' metric for `family`, if they define it.
    fn defined(self, family: &FamilyDesc) -> Option<&'static str> {
        let Convention::GenAi { histograms } = self else {
            return None;
        };
        let stands_in = STAND_INS.iter().find_map(|(stand_in, theirs)| {
            (*stand_in == family.id || *theirs == family.id).then_some((*stand_in, *theirs))
        });
        // A stand-in takes the name of the histogram it stands in for when
        // that one is not kept, which then keeps ours.
        let id = match stands_in {
            Some((stand_in, theirs)) if family.id == stand_in => (!histograms).then_some(theirs)?,
            Some(_) if !histograms => return None,
            _ => family.id,
        };
        METRICS
            .iter()
            .find(|(known, _)| *known == id)
            .map(|(_, name)| *name)
    }

    /// Whether the value `value` of our label `label` stands for an absent
    /// attribute (see [`ABSENT_WHEN_EMPTY`]).
    pub fn absent(self, label: &str, value: &str) -> bool {
        value.is_empty() && self != Convention::Ours && ABSENT_WHEN_EMPTY.contains(&label)
    }

    /// The name of our label `label`.
    pub fn attribute(self, label: &str) -> &str {
        match self {
            Convention::Ours => label,
            Convention::GenAi { .. } => ATTRIBUTES
                .iter()
                .find(|(ours, _)| *ours == label)
                .map_or(label, |(_, theirs)| theirs),
        }
    }

    /// The OTLP metric name and unit of `family`.
    pub fn otlp_metric(self, family: &FamilyDesc) -> (&str, &'static str) {
        (self.defined(family).unwrap_or(&family.name), family.unit)
    }

    /// The schema URL an OTLP export of these names gives (empty: none).
    pub fn schema_url(self) -> &'static str {
        match self {
            Convention::Ours => "",
            Convention::GenAi { .. } => SCHEMA_URL,
        }
    }

    /// The names of `family` in a Prometheus exposition of `charset`.
    pub fn prometheus(self, family: &FamilyDesc, charset: Charset) -> PrometheusNames {
        let name = match self.defined(family) {
            None => Cow::Borrowed(family.name.as_ref()),
            Some(metric) => {
                let suffix = UNIT_SUFFIXES
                    .iter()
                    .find(|(known, _)| *known == family.unit)
                    .map_or("", |(_, suffix)| suffix);
                Cow::Owned(format!("{metric}{suffix}"))
            }
        };
        let spelt = |text: &str, metric: bool| match charset {
            Charset::Utf8 => text.to_owned(),
            Charset::Legacy => underscores(text, metric).into_owned(),
        };
        PrometheusNames {
            name: spelt(&name, true),
            labels: family
                .label_names
                .iter()
                .map(|label| spelt(self.attribute(label), false))
                .collect(),
        }
    }
}

/// Whether `c` may stand at `index` of a legacy metric name (`metric`) or
/// label name.
fn legacy_char(c: char, index: usize, metric: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || (metric && c == ':') || (index > 0 && c.is_ascii_digit())
}

/// Whether `name` is a legacy metric name (`metric`) or label name, which the
/// text formats write unquoted.
pub fn is_legacy(name: &str, metric: bool) -> bool {
    !name.is_empty()
        && name
            .chars()
            .enumerate()
            .all(|(index, c)| legacy_char(c, index, metric))
}

/// `name` with every character outside the legacy set as `_`.
pub fn underscores(name: &str, metric: bool) -> Cow<'_, str> {
    if is_legacy(name, metric) {
        return Cow::Borrowed(name);
    }
    Cow::Owned(
        name.chars()
            .enumerate()
            .map(|(index, c)| {
                if legacy_char(c, index, metric) {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::family::{Schema, REQUESTS, TOKENS};

    #[test]
    fn ours_are_the_families_own() {
        let schema = Schema::default();
        for family in schema.families() {
            for charset in [Charset::Legacy, Charset::Utf8] {
                let names = Convention::Ours.prometheus(family, charset);
                assert_eq!(names.name, family.name);
                assert_eq!(names.labels, family.label_names);
            }
        }
    }

    /// The conventions' names for a store without their histograms, where
    /// our duration histogram stands in for theirs.
    const GENAI: Convention = Convention::GenAi { histograms: false };

    #[test]
    fn gen_ai_names_in_each_charset() {
        let schema = Schema::default();
        let duration = schema.family(DURATION);
        assert_eq!(
            GENAI.prometheus(duration, Charset::Utf8),
            PrometheusNames {
                name: "gen_ai.client.operation.duration_seconds".to_owned(),
                labels: vec![
                    "gen_ai.request.model".to_owned(),
                    "gen_ai.operation.name".to_owned(),
                    "gen_ai.provider.name".to_owned(),
                ],
            }
        );
        assert_eq!(
            GENAI.prometheus(duration, Charset::Legacy),
            PrometheusNames {
                name: "gen_ai_client_operation_duration_seconds".to_owned(),
                labels: vec![
                    "gen_ai_request_model".to_owned(),
                    "gen_ai_operation_name".to_owned(),
                    "gen_ai_provider_name".to_owned(),
                ],
            }
        );
        let tokens = GENAI.prometheus(schema.family(TOKENS), Charset::Utf8);
        assert_eq!(tokens.name, "ractogateway_tokens");
        assert!(tokens.labels.contains(&"gen_ai.token.type".to_owned()));
        assert_eq!(
            GENAI.otlp_metric(schema.family(REQUESTS)),
            ("ractogateway_requests", "")
        );
        assert_eq!(
            GENAI.otlp_metric(duration),
            ("gen_ai.client.operation.duration", "s")
        );
        let usage = schema.family(TOKEN_USAGE);
        assert_eq!(
            GENAI.otlp_metric(usage),
            ("gen_ai.client.token.usage", "{token}")
        );
        assert_eq!(
            GENAI.prometheus(usage, Charset::Legacy).name,
            "gen_ai_client_token_usage"
        );
        assert_eq!(
            GENAI.otlp_metric(schema.family(TIME_PER_OUTPUT_TOKEN)),
            ("gen_ai.client.operation.time_per_output_chunk", "s")
        );
    }

    #[test]
    fn the_duration_by_error_type_takes_the_name_where_it_is_kept() {
        let schema = Schema::default();
        let (ours, by_outcome) = (schema.family(DURATION), schema.family(OPERATION_DURATION));
        let kept = Convention::named(Some("gen_ai")).unwrap();
        assert_eq!(kept, GENAI.for_store(true));
        assert_eq!(
            kept.otlp_metric(by_outcome),
            ("gen_ai.client.operation.duration", "s")
        );
        assert_eq!(
            kept.otlp_metric(ours),
            ("ractogateway_request_duration_seconds", "s")
        );
        let names = kept.prometheus(by_outcome, Charset::Utf8);
        assert_eq!(names.name, "gen_ai.client.operation.duration_seconds");
        assert_eq!(names.labels[0], "error.type");
        // Without it, ours stands in and the unkept one keeps our name.
        assert_eq!(
            GENAI.otlp_metric(by_outcome).0,
            "ractogateway_operation_duration_seconds"
        );
        assert_eq!(Convention::Ours.for_store(true), Convention::Ours);
        assert!(kept.absent("error_type", ""));
        assert!(!kept.absent("error_type", "timeout"));
        assert!(!kept.absent("model", ""));
        assert!(!Convention::Ours.absent("error_type", ""));
    }

    #[test]
    fn underscores_escape_as_prometheus_does() {
        assert_eq!(underscores("a.b-c", true), "a_b_c");
        assert_eq!(underscores("0ab", true), "_ab");
        assert_eq!(underscores("a:b", true), "a:b");
        assert_eq!(underscores("a:b", false), "a_b");
        assert_eq!(underscores("é", false), "_");
        assert!(matches!(underscores("ok_1", false), Cow::Borrowed(_)));
        assert!(!is_legacy("", true));
        assert!(!is_legacy("gen_ai.provider.name", false));
    }

    #[test]
    fn conventions_are_named_as_python_names_them() {
        assert_eq!(Convention::named(None), Ok(Convention::Ours));
        assert_eq!(
            Convention::named(Some("gen_ai")),
            Ok(Convention::GenAi { histograms: true })
        );
        assert!(Convention::named(Some("otel")).is_err());
    }
}
