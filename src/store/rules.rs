//! The recording rules: what one request adds to each family, written once.
//!
//! [`record`] applies the rules to a [`Sink`]. A single call's sink adds to
//! the series' atomics at once ([`crate::store::Store::record_request_on`]); a
//! batch's sink adds to per-label-set totals that are applied once at the end
//! ([`crate::store::batch::Batch`]). Both follow these rules, so a batch and
//! one call per row can never disagree.

use crate::schema::family::OPTIONAL_OBSERVED;
use crate::schema::request::{RequestValues, INPUT, OUTPUT, REFERENCE_TOKEN_TYPES};
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
}

/// Applies one request's values to `sink`, its model priced at `price`.
///
/// The reference's values come first, in the reference's order; the others
/// are rarely given, so one test of them all skips them.
// Inlined into each sink's caller: the single call's hot path is this function.
#[allow(clippy::inline_always)]
#[inline(always)]
pub fn record(values: &RequestValues, price: Option<&Price>, sink: &mut impl Sink) {
    sink.request();
    sink.latency(values.latency_s);
    for token_type in 0..REFERENCE_TOKEN_TYPES {
        let count = values.tokens[token_type];
        if count > 0 {
            sink.tokens(token_type, count);
        }
    }
    let more = values.has_more();
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

/// The optional histograms, each observing the value its family's row names.
#[inline]
fn record_observations(values: &RequestValues, sink: &mut impl Sink) {
    for (index, (_, observed)) in OPTIONAL_OBSERVED.iter().enumerate() {
        if let Some(seconds) = observed.value(values) {
            sink.observe(index, seconds);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::request::TIME_TO_FIRST_TOKEN;

    /// Writes down what the rules add.
    #[derive(Default)]
    struct Log(Vec<String>);

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
    }

    #[test]
    fn a_reference_request_adds_what_the_reference_adds() {
        let mut log = Log::default();
        record(
            &RequestValues::new(0.3, 1000, 0),
            Some(&Price::new(2.5, 10.0)),
            &mut log,
        );
        assert_eq!(
            log.0,
            ["request", "latency 0.3", "tokens 0 1000", "cost 0.0025"]
        );
        let mut log = Log::default();
        record(&RequestValues::new(0.3, 0, 5), None, &mut log);
        assert_eq!(log.0, ["request", "latency 0.3", "tokens 1 5", "unpriced"]);
    }

    #[test]
    fn optional_values_feed_their_families() {
        let mut values = RequestValues::new(2.0, 10, 5);
        values.tokens[4] = 3;
        values.seconds[TIME_TO_FIRST_TOKEN] = Some(1.0);
        let mut log = Log::default();
        record(&values, None, &mut log);
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
}
