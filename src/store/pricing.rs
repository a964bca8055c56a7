//! Per-model token prices and the cost formula of the reference middleware.
//!
//! The Python package owns the pricing table (its defaults and the caller's
//! overrides); it hands the core one [`Price`] per model so that computing the
//! cost of a request needs no call back into Python.

use std::collections::HashMap;

use crate::schema::request::{Rate, INPUT, OUTPUT, TOKEN_TYPES, TOKEN_TYPE_COUNT};

/// The rates that apply to a whole request once its input tokens exceed a
/// threshold (a long-prompt tier): every token of the request pays them.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTier {
    /// The tier applies when the request's input tokens exceed this many.
    pub above_input_tokens: u64,
    /// USD per 1M input, output, cache-read and cache-write tokens.
    pub rates: [f64; 4],
}

/// USD per one million tokens of each kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    /// USD per 1M input (prompt) tokens not served from or written to the cache.
    pub input_per_million: f64,
    /// USD per 1M output (completion) tokens.
    pub output_per_million: f64,
    /// USD per 1M prompt tokens read from the provider's cache.
    pub cache_read_per_million: f64,
    /// USD per 1M prompt tokens written to the provider's cache.
    pub cache_write_per_million: f64,
    /// Long-prompt tiers, by ascending threshold; empty for most models.
    pub tiers: Box<[PriceTier]>,
    /// USD charged per request whatever its tokens (a few search models).
    pub per_request: f64,
}

impl Price {
    /// A price whose cached tokens cost what other input tokens cost.
    pub fn new(input_per_million: f64, output_per_million: f64) -> Self {
        Price {
            input_per_million,
            output_per_million,
            cache_read_per_million: input_per_million,
            cache_write_per_million: input_per_million,
            tiers: Box::new([]),
            per_request: 0.0,
        }
    }

    /// Cost of a request of `input_tokens` and `output_tokens` alone, evaluated
    /// in the reference's order of operations (`in * p_in / 1e6 + out * p_out /
    /// 1e6`) so the result has the same bits.
    #[inline]
    pub fn reference_cost(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        input_tokens as f64 * self.input_per_million / 1_000_000.0
            + output_tokens as f64 * self.output_per_million / 1_000_000.0
    }

    /// Cost of one request with `tokens` (by token type), each type billed at
    /// its [`Rate`]: the cache parts of the input at the cache prices and the
    /// rest of the input at the input price, the whole request at a long-prompt
    /// tier's rates when its input passes the tier's threshold, plus the fee
    /// per request. With only input and output tokens, no tier and no fee,
    /// exactly [`Price::reference_cost`].
    #[inline]
    pub fn cost(&self, tokens: &[u64; TOKEN_TYPE_COUNT]) -> f64 {
        let apart = TOKEN_TYPES
            .iter()
            .zip(tokens)
            .filter(|(desc, _)| matches!(desc.rate, Rate::CacheRead | Rate::CacheWrite))
            .fold(0, |any, (_, count)| any | count);
        // One branch for the common case: no cached tokens, no tiers, no fee.
        if (apart == 0) & self.tiers.is_empty() && (self.per_request == 0.0) {
            return self.reference_cost(tokens[INPUT], tokens[OUTPUT]);
        }
        self.itemised_cost(*tokens)
    }

    // The counts by value: the caller's array then never needs an address,
    // and a batch's loop keeps a row's counts in registers.
    #[cold]
    fn itemised_cost(&self, tokens: [u64; TOKEN_TYPE_COUNT]) -> f64 {
        let input_tokens = tokens[INPUT];
        let tier = self
            .tiers
            .iter()
            .rev()
            .find(|tier| input_tokens > tier.above_input_tokens);
        let [input, output, read, write] = tier.map_or(
            [
                self.input_per_million,
                self.output_per_million,
                self.cache_read_per_million,
                self.cache_write_per_million,
            ],
            |tier| tier.rates,
        );
        let taken = TOKEN_TYPES
            .iter()
            .zip(&tokens)
            .filter(|(desc, _)| matches!(desc.rate, Rate::CacheRead | Rate::CacheWrite))
            .fold(0_u64, |sum, (_, count)| sum.saturating_add(*count));
        let mut cost = input_tokens.saturating_sub(taken) as f64 * input / 1_000_000.0;
        for (token_type, (desc, count)) in TOKEN_TYPES.iter().zip(&tokens).enumerate() {
            let rate = match desc.rate {
                Rate::Input if token_type == INPUT => continue,
                Rate::Input => input,
                Rate::Output => output,
                Rate::CacheRead => read,
                Rate::CacheWrite => write,
                Rate::Whole => continue,
            };
            cost += *count as f64 * rate / 1_000_000.0;
        }
        cost + self.per_request
    }
}

/// Prices by model name; a model that is absent costs nothing.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    prices: HashMap<Box<str>, Price>,
}

impl PriceTable {
    /// Builds a table from `(model, price)` pairs; a later pair for the same model wins.
    pub fn new<'a>(entries: impl IntoIterator<Item = (&'a str, Price)>) -> Self {
        PriceTable {
            prices: entries
                .into_iter()
                .map(|(model, price)| (Box::from(model), price))
                .collect(),
        }
    }

    /// The price of `model`, if it has one: under its own name, else under one
    /// of the shorter names of [`price_names`].
    pub fn get(&self, model: &str) -> Option<Price> {
        price_names(model).find_map(|name| self.prices.get(name).cloned())
    }
}

/// The names a model's price is looked up under, in order: the name as given,
/// then without each leading `provider/` part, so that LiteLLM's
/// `openai/gpt-4o`, OpenRouter's `openrouter/openai/gpt-4o` and Google's
/// `models/gemini-2.5-flash` find the price of `gpt-4o` and
/// `gemini-2.5-flash`. A table entry under the longer name wins.
pub fn price_names(model: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(model), |name| {
        name.split_once('/')
            .map(|(_, rest)| rest)
            .filter(|rest| !rest.is_empty())
    })
}

#[cfg(test)]
// Floats are written as the exposition prints them, digit for digit.
#[allow(clippy::unreadable_literal)]
mod tests {
    use super::*;

    #[test]
    fn cost_has_the_reference_bits() {
        let gpt_4o = Price::new(2.5, 10.0);
        // The reference prints 0.0045000000000000005 for 1000 in / 200 out.
        assert_eq!(gpt_4o.reference_cost(1000, 200), 0.0045000000000000005);
        assert_eq!(gpt_4o.reference_cost(0, 0), 0.0);
    }

    #[test]
    fn later_entries_win_and_unknown_models_have_no_price() {
        let cheap = Price::new(0.1, 0.4);
        let dear = Price::new(9.0, 9.0);
        let table = PriceTable::new([("m", cheap), ("m", dear.clone())]);
        assert_eq!(table.get("m"), Some(dear.clone()));
        assert_eq!(table.get("unknown"), None);
        assert_eq!(table.get("openai/m"), Some(dear.clone()));
        assert_eq!(table.get("openrouter/openai/m"), Some(dear));
        assert_eq!(table.get("m/"), None);
        assert_eq!(table.get("openai/unknown"), None);
        assert_eq!(
            price_names("a/b/c").collect::<Vec<_>>(),
            ["a/b/c", "b/c", "c"]
        );
    }

    /// Token counts by type: input, output, cache read, cache write.
    fn counts(input: u64, output: u64, read: u64, write: u64) -> [u64; TOKEN_TYPE_COUNT] {
        let mut tokens = [0; TOKEN_TYPE_COUNT];
        tokens[..4].copy_from_slice(&[input, output, read, write]);
        tokens
    }

    #[test]
    fn cached_tokens_and_long_prompt_tiers_are_priced_apart() {
        let price = Price {
            input_per_million: 2.0,
            output_per_million: 8.0,
            cache_read_per_million: 0.5,
            cache_write_per_million: 2.5,
            tiers: Box::new([PriceTier {
                above_input_tokens: 200_000,
                rates: [4.0, 12.0, 1.0, 5.0],
            }]),
            per_request: 0.0,
        };
        assert_eq!(
            price.cost(&counts(1000, 100, 0, 0)),
            price.reference_cost(1000, 100)
        );
        let cached = price.cost(&counts(1000, 100, 600, 100));
        assert_eq!(
            cached,
            (300.0 * 2.0 + 100.0 * 8.0 + 600.0 * 0.5 + 100.0 * 2.5) / 1e6
        );
        let long = price.cost(&counts(300_000, 100, 0, 0));
        assert_eq!(long, 300_000.0 * 4.0 / 1e6 + 100.0 * 12.0 / 1e6);
        // The tier starts above its threshold, as genai-prices counts it.
        assert_eq!(price.cost(&counts(200_000, 0, 0, 0)), 200_000.0 * 2.0 / 1e6);
    }
}
