//! The recording rules: what one request adds to each family, written once.
//!
//! [`record`] applies the rules to a [`Sink`]. A single call's sink adds to
//! the series' atomics at once ([`crate::store::Store::record_request_on`]); a
//! batch's sink adds to per-label-set totals that are applied once at the end
//! ([`crate::store::batch::Batch`]). Both follow these rules, so a batch and
//! one call per row can never disagree.

use crate::schema::family::{CONVENTIONS_OBSERVED, OPTIONAL_OBSERVATIONS, OPTIONAL_OBSERVED};
use crate::schema::request::{ErrorType, RequestValues, INPUT, OUTPUT, REFERENCE_TOKEN_TYPES};
use crate::store::pricing::Price;

/// Where the rules put what a request adds.
pub trait Sink {
    /// One more request.
    fn request(&mut self);
    /// The latency, observed in the duration histogram.
    fn latency(&mut self, seconds: f64);
    /// `count` (above zero) tokens of `token_type`.
    fn tokens(&mut self, token_type: usize, count: u64);
    /// A priced cost above zero.
    fn cost(&mut self, usd: f64);
    /// One request with tokens but no price.
    fn unpriced(&mut self);
    /// `seconds` observed in the optional histogram at `index` of
    /// [`OPTIONAL_OBSERVED`].
    fn observe(&mut self, index: usize, seconds: f64);
    /// Whether the conventions' histograms are observed (see
    /// [`crate::schema::family::Schema::keeping_semconv_histograms`]).
    fn keeps_semconv_histograms(&self) -> bool;
    /// One failed request of `error_type` (see [`crate::schema::request::ERROR_TYPES`]).
    fn error(&mut self, error_type: ErrorType);
}

/// Applies one request's values to `sink`, its model priced at `price`.
///
/// The reference's values come first, in the reference's order; the others
/// are rarely given, so one test of them all skips them: `more` says whether
/// the rules of the others run, because `values` has some
/// ([`RequestValues::has_more`], or what a caller that parsed the arguments
/// knows already) or because the sink keeps the conventions' histograms
/// ([`Sink::keeps_semconv_histograms`]); true when unsure is only slower.
// Inlined into each sink's caller: the single call's hot path is this function.
#[allow(clippy::inline_always)]
#[inline(always)]
pub fn record(values: &RequestValues, more: bool, price: Option<&Price>, sink: &mut impl Sink) {
    sink.request();
    sink.latency(values.latency_s);
    for token_type in 0..REFERENCE_TOKEN_TYPES {
        let count = values.tokens[token_type];
        if count > 0 {
            sink.tokens(token_type, count);
        }
    }
    if more {
        record_more_tokens(values, sink);
    }
    if let Some(price) = price {
        let cost = price.cost(&values.tokens);
        if cost > 0.0 {
            sink.cost(cost);
        }
    } else if values.tokens[INPUT] | values.tokens[OUTPUT] != 0 {
        sink.unpriced();
    }
    if more {
        record_observations(values, sink);
        if let Some(error_type) = values.error {
            sink.error(error_type);
        }
    }
}

/// The token types past the reference's two.
#[inline]
fn record_more_tokens(values: &RequestValues, sink: &mut impl Sink) {
    for (token_type, count) in values.tokens.iter().enumerate().skip(REFERENCE_TOKEN_TYPES) {
        if *count > 0 {
            sink.tokens(token_type, *count);
        }
    }
}

/// The optional histograms, each observing the value its family's row names
/// (the conventions' ones, which come last, only when the sink keeps them).
#[inline]
fn record_observations(values: &RequestValues, sink: &mut impl Sink) {
    let end = if sink.keeps_semconv_histograms() {
        OPTIONAL_OBSERVATIONS
    } else {
        CONVENTIONS_OBSERVED
    };
    for (index, (_, observed)) in OPTIONAL_OBSERVED[..end].iter().enumerate() {
        if let Some(value) = observed.value(values) {
            sink.observe(index, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::request::{Observed, ERROR_TYPES, TIME_TO_FIRST_TOKEN};

    /// Writes down what the rules add; keeps the conventions' histograms when its flag is set.
    #[derive(Default)]
    struct Log(Vec<String>, bool);

    impl Sink for Log {
        fn request(&mut self) {
            self.0.push("request".into());
        }
        fn latency(&mut self, seconds: f64) {
            self.0.push(format!("latency {seconds}"));
        }
        fn tokens(&mut self, token_type: usize, count: u64) {
            self.0.push(format!("tokens {token_type} {count}"));
        }
        fn cost(&mut self, usd: f64) {
            self.0.push(format!("cost {usd}"));
        }
        fn unpriced(&mut self) {
            self.0.push("unpriced".into());
        }
        fn observe(&mut self, index: usize, seconds: f64) {
            self.0.push(format!("observe {index} {seconds}"));
        }
        fn keeps_semconv_histograms(&self) -> bool {
            self.1
        }
        fn error(&mut self, error_type: ErrorType) {
            self.0.push(format!("error {error_type}"));
        }
    }

    #[test]
    fn a_reference_request_adds_what_the_reference_adds() {
        let mut log = Log::default();
        record(
            &RequestValues::new(0.3, 1000, 0),
            false,
            Some(&Price::new(2.5, 10.0)),
            &mut log,
        );
        assert_eq!(
            log.0,
            ["request", "latency 0.3", "tokens 0 1000", "cost 0.0025"]
        );
        let mut log = Log::default();
        record(&RequestValues::new(0.3, 0, 5), false, None, &mut log);
        assert_eq!(log.0, ["request", "latency 0.3", "tokens 1 5", "unpriced"]);
    }

    #[test]
    fn optional_values_feed_their_families() {
        let mut values = RequestValues::new(2.0, 10, 5);
        values.tokens[4] = 3;
        values.seconds[TIME_TO_FIRST_TOKEN] = Some(1.0);
        let mut log = Log::default();
        record(&values, values.has_more(), None, &mut log);
        assert_eq!(
            log.0,
            [
                "request",
                "latency 2",
                "tokens 0 10",
                "tokens 1 5",
                "tokens 4 3",
                "unpriced",
                "observe 0 1",
                "observe 1 0.25",
            ]
        );
    }

    #[test]
    fn an_error_type_is_counted_after_the_rest() {
        let mut values = RequestValues::new(0.5, 0, 0);
        values.error = Some(1);
        let mut log = Log::default();
        record(&values, values.has_more(), None, &mut log);
        assert_eq!(log.0, ["request", "latency 0.5", "error 1"]);
    }

    /// The positions of the optional observations that `which` picks.
    fn observations(which: impl Fn(Observed) -> bool) -> Vec<usize> {
        OPTIONAL_OBSERVED
            .iter()
            .enumerate()
            .filter(|(_, (_, observed))| which(*observed))
            .map(|(index, _)| index)
            .collect()
    }

    #[test]
    fn token_counts_are_observed_only_when_kept() {
        let usage = observations(|observed| matches!(observed, Observed::TokenCount(_)));
        assert_eq!(usage.len(), 2);
        let succeeded = observations(|observed| observed == Observed::Outcome(None));
        let mut kept = Log(Vec::new(), true);
        record(&RequestValues::new(0.3, 1000, 0), true, None, &mut kept);
        // Input only: a count of zero is not observed, as it adds no tokens.
        assert_eq!(
            kept.0,
            [
                "request".to_owned(),
                "latency 0.3".to_owned(),
                "tokens 0 1000".to_owned(),
                "unpriced".to_owned(),
                format!("observe {} 1000", usage[0]),
                format!("observe {} 0.3", succeeded[0]),
            ]
        );
        let mut values = RequestValues::new(2.5, 7, 9);
        values.seconds[TIME_TO_FIRST_TOKEN] = Some(0.5);
        let mut not_kept = Log::default();
        record(&values, values.has_more(), None, &mut not_kept);
        let observed: Vec<&String> = not_kept
            .0
            .iter()
            .filter(|line| line.starts_with("observe"))
            .collect();
        // The time to first token and per output token, not the token counts.
        assert_eq!(observed, ["observe 0 0.5", "observe 1 0.25"]);
    }

    #[test]
    fn the_latency_is_observed_once_in_its_outcomes_series_when_kept() {
        let outcomes = observations(|observed| matches!(observed, Observed::Outcome(_)));
        assert_eq!(outcomes.len(), ERROR_TYPES.len() + 1);
        // The conventions' observations come last, so that a store without
        // them stops before them.
        assert_eq!(
            CONVENTIONS_OBSERVED,
            OPTIONAL_OBSERVATIONS - outcomes.len() - 2
        );
        for error in [None, Some(0), Some(3), Some(10)] {
            let mut values = RequestValues::new(1.5, 0, 0);
            values.error = error;
            let mut kept = Log(Vec::new(), true);
            record(&values, true, None, &mut kept);
            let observed: Vec<&String> = kept
                .0
                .iter()
                .filter(|line| line.starts_with("observe"))
                .collect();
            let at = OPTIONAL_OBSERVED
                .iter()
                .position(|(_, observed)| *observed == Observed::Outcome(error))
                .unwrap();
            assert_eq!(observed, [&format!("observe {at} 1.5")]);
            let mut not_kept = Log::default();
            record(&values, true, None, &mut not_kept);
            assert!(!not_kept.0.iter().any(|line| line.starts_with("observe")));
        }
    }
}
