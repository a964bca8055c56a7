//! Whose names the families go by outside the store: ours, or the
//! OpenTelemetry GenAI semantic conventions', and how each output spells them.
//!
//! The conventions are pinned to v1.41.0, `docs/gen-ai/gen-ai-metrics.md` (they
//! are in development and have renamed metrics and attributes between
//! releases: `gen_ai.system` became `gen_ai.provider.name` in 1.37.0). Where
//! they define a metric for one of our families, the family takes its name;
//! every label they name becomes their attribute. Families they do not define
//! (the request, token, cost, cache and tool call counters, time per output
//! token, queue, upstream and overhead times) keep our names. Their
//! `gen_ai.client.token.usage` is the tokens-per-request histogram, which a
//! store keeps only when asked (a middleware of these names), not the token
//! counter's running totals.
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

use crate::schema::family::{FamilyDesc, FamilyId, DURATION, TIME_TO_FIRST_TOKEN, TOKEN_USAGE};

/// The version of the GenAI conventions these names are from.
pub const VERSION: &str = "1.41.0";

/// The schema URL of that version, which an OTLP export names.
pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.41.0";

/// Our families the GenAI conventions define, and their names there.
pub const METRICS: [(FamilyId, &str); 3] = [
    (TOKEN_USAGE, "gen_ai.client.token.usage"),
    (DURATION, "gen_ai.client.operation.duration"),
    (
        TIME_TO_FIRST_TOKEN,
        "gen_ai.client.operation.time_to_first_chunk",
    ),
];

/// Our labels the GenAI conventions name, and their attribute names.
pub const ATTRIBUTES: [(&str, &str); 4] = [
    ("provider", "gen_ai.provider.name"),
    ("model", "gen_ai.request.model"),
    ("operation", "gen_ai.operation.name"),
    ("token_type", "gen_ai.token.type"),
];

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
    GenAi,
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
    /// The convention named `name` in the Python API (`None` for ours).
    pub fn named(name: Option<&str>) -> Result<Self, String> {
        match name {
            None => Ok(Convention::Ours),
            Some("gen_ai") => Ok(Convention::GenAi),
            Some(other) => Err(format!("must be None or 'gen_ai', got {other:?}")),
        }
    }

    /// The conventions' metric for `family`, if they define it.
    fn defined(self, family: &FamilyDesc) -> Option<&'static str> {
        match self {
            Convention::Ours => None,
            Convention::GenAi => METRICS
                .iter()
                .find(|(id, _)| *id == family.id)
                .map(|(_, name)| *name),
        }
    }

    /// The name of our label `label`.
    pub fn attribute(self, label: &str) -> &str {
        match self {
            Convention::Ours => label,
            Convention::GenAi => ATTRIBUTES
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
            Convention::GenAi => SCHEMA_URL,
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

    #[test]
    fn gen_ai_names_in_each_charset() {
        let schema = Schema::default();
        let duration = schema.family(DURATION);
        assert_eq!(
            Convention::GenAi.prometheus(duration, Charset::Utf8),
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
            Convention::GenAi.prometheus(duration, Charset::Legacy),
            PrometheusNames {
                name: "gen_ai_client_operation_duration_seconds".to_owned(),
                labels: vec![
                    "gen_ai_request_model".to_owned(),
                    "gen_ai_operation_name".to_owned(),
                    "gen_ai_provider_name".to_owned(),
                ],
            }
        );
        let tokens = Convention::GenAi.prometheus(schema.family(TOKENS), Charset::Utf8);
        assert_eq!(tokens.name, "ractogateway_tokens");
        assert!(tokens.labels.contains(&"gen_ai.token.type".to_owned()));
        assert_eq!(
            Convention::GenAi.otlp_metric(schema.family(REQUESTS)),
            ("ractogateway_requests", "")
        );
        assert_eq!(
            Convention::GenAi.otlp_metric(duration),
            ("gen_ai.client.operation.duration", "s")
        );
        let usage = schema.family(TOKEN_USAGE);
        assert_eq!(
            Convention::GenAi.otlp_metric(usage),
            ("gen_ai.client.token.usage", "{token}")
        );
        assert_eq!(
            Convention::GenAi.prometheus(usage, Charset::Legacy).name,
            "gen_ai_client_token_usage"
        );
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
        assert_eq!(Convention::named(Some("gen_ai")), Ok(Convention::GenAi));
        assert!(Convention::named(Some("otel")).is_err());
    }
}
