//! The OpenTelemetry GenAI semantic conventions' names for our families.
//!
//! Pinned to semantic-conventions v1.41.0, `docs/gen-ai/gen-ai-metrics.md`
//! (the GenAI conventions are in development and have renamed metrics and
//! attributes between releases: `gen_ai.system` became `gen_ai.provider.name`
//! in 1.37.0). Where the conventions define a metric for one of our families,
//! the family takes its name; every label the conventions name becomes their
//! attribute. Families they do not define (the request, cost, cache and tool
//! call counters, time per output token, queue, upstream and overhead times)
//! keep our names. Token counts keep ours too: `gen_ai.client.token.usage` is a
//! histogram of each request's tokens, which a running total is not.

use crate::formats::otlp::{KeyValue, Naming, OwnNames};
use crate::schema::family::{FamilyDesc, FamilyId, DURATION, TIME_TO_FIRST_TOKEN};

/// The version of the conventions these names are from.
pub const VERSION: &str = "1.41.0";

/// The schema URL of that version, which an export names.
pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.41.0";

/// Our families the conventions define, and their names there.
pub const METRICS: [(FamilyId, &str); 2] = [
    (DURATION, "gen_ai.client.operation.duration"),
    (
        TIME_TO_FIRST_TOKEN,
        "gen_ai.client.operation.time_to_first_chunk",
    ),
];

/// Our labels the conventions name, and their attribute names.
pub const ATTRIBUTES: [(&str, &str); 4] = [
    ("provider", "gen_ai.provider.name"),
    ("model", "gen_ai.request.model"),
    ("operation", "gen_ai.operation.name"),
    ("token_type", "gen_ai.token.type"),
];

/// The conventions' attribute for our label `label`, or the label itself.
pub fn attribute(label: &str) -> &str {
    ATTRIBUTES
        .iter()
        .find(|(ours, _)| *ours == label)
        .map_or(label, |(_, theirs)| theirs)
}

/// Names families and labels as the GenAI conventions do.
pub struct GenAiNames;

impl Naming for GenAiNames {
    fn metric(&self, family: &FamilyDesc) -> Option<(String, &'static str)> {
        let (name, unit) = OwnNames.metric(family)?;
        let conventional = METRICS
            .iter()
            .find(|(id, _)| *id == family.id)
            .map(|(_, theirs)| (*theirs).to_owned());
        Some((conventional.unwrap_or(name), unit))
    }

    fn attributes(&self, family: &FamilyDesc, labels: &[&str]) -> Vec<KeyValue> {
        family
            .label_names
            .iter()
            .zip(labels)
            .map(|(name, value)| KeyValue::new(attribute(name), value))
            .collect()
    }

    fn schema_url(&self) -> &'static str {
        SCHEMA_URL
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::family::{Schema, REQUESTS};

    #[test]
    fn defined_families_take_the_conventions_names_and_others_keep_ours() {
        let schema = Schema::default();
        let duration = schema.family(DURATION);
        assert_eq!(
            GenAiNames.metric(duration),
            Some(("gen_ai.client.operation.duration".to_owned(), "s"))
        );
        let requests = schema.family(REQUESTS);
        assert_eq!(
            GenAiNames.metric(requests),
            Some(("ractogateway_requests".to_owned(), ""))
        );
        let keys: Vec<String> = GenAiNames
            .attributes(requests, &["gpt-4o", "chat", "openai", "ok"])
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        assert_eq!(
            keys,
            [
                "gen_ai.request.model",
                "gen_ai.operation.name",
                "gen_ai.provider.name",
                "status"
            ]
        );
    }
}
