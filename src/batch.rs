//! Many requests recorded as one: totals per label set, applied once.

use std::collections::HashMap;

use smallvec::{smallvec, SmallVec};

use crate::family::{Buckets, TIME_PER_OUTPUT_TOKEN, TIME_TO_FIRST_TOKEN};
use crate::store::{RequestEntry, RequestValues, Store, TokenType, TOKEN_TYPES};

/// What the rows of one batch add to one histogram.
struct HistogramTotals {
    buckets: SmallVec<[u64; 24]>,
    sum: f64,
}

impl HistogramTotals {
    fn new(buckets: &Buckets) -> Self {
        HistogramTotals {
            buckets: smallvec![0; buckets.count()],
            sum: 0.0,
        }
    }

    #[inline]
    fn observe(&mut self, value: f64, buckets: &Buckets) {
        self.buckets[buckets.index(value)] += 1;
        self.sum += value;
    }

    fn is_empty(&self) -> bool {
        self.buckets.iter().all(|count| *count == 0)
    }
}

/// What the rows of one batch add to one requests entry.
struct EntryTotals<'s> {
    entry: &'s RequestEntry,
    requests: u64,
    duration: HistogramTotals,
    tokens: [u64; TOKEN_TYPES],
    cost: f64,
    /// Rows with tokens but no price.
    unpriced: u64,
    first_token: HistogramTotals,
    per_token: HistogramTotals,
}

/// Many requests recorded as one: totals per label set, applied once at the end.
///
/// The result equals one `record_request_on` per row, in row order: the same
/// counts, and sums equal up to the order of float additions. Series that a row
/// creates (token, cost and streaming series) are created while the rows are
/// added, so they appear in the exposition in the same order as with single calls.
pub struct Batch<'s> {
    store: &'s Store,
    totals: Vec<EntryTotals<'s>>,
    index: HashMap<usize, usize, foldhash::fast::RandomState>,
}

impl<'s> Batch<'s> {
    /// An empty batch for `store`.
    pub fn new(store: &'s Store) -> Self {
        Batch {
            store,
            totals: Vec::new(),
            index: HashMap::default(),
        }
    }

    /// The position of `entry` (an entry of this batch's store) in the batch.
    pub fn slot(&mut self, entry: &'s RequestEntry) -> usize {
        let next = self.totals.len();
        let slot = *self
            .index
            .entry(std::ptr::from_ref::<RequestEntry>(entry) as usize)
            .or_insert(next);
        if slot == next {
            let store = self.store;
            self.totals.push(EntryTotals {
                entry,
                requests: 0,
                duration: HistogramTotals::new(store.latency_buckets()),
                tokens: [0; TOKEN_TYPES],
                cost: 0.0,
                unpriced: 0,
                first_token: HistogramTotals::new(store.stream_buckets(TIME_TO_FIRST_TOKEN)),
                per_token: HistogramTotals::new(store.stream_buckets(TIME_PER_OUTPUT_TOKEN)),
            });
        }
        slot
    }

    /// Adds one row for `entry`, an entry of this batch's store.
    pub fn add(&mut self, entry: &'s RequestEntry, values: &RequestValues) {
        let slot = self.slot(entry);
        self.add_to(slot, values);
    }

    /// Adds one row to the entry at `slot`, a position returned by [`Batch::slot`].
    #[inline]
    pub fn add_to(&mut self, slot: usize, values: &RequestValues) {
        let store = self.store;
        let totals = &mut self.totals[slot];
        let entry = totals.entry;
        let series = &entry.value;
        totals.requests += 1;
        totals
            .duration
            .observe(values.latency_s, store.latency_buckets());
        // A series is created by the first row that needs it, as with single calls.
        for (token_type, count) in values.tokens.iter().enumerate() {
            if *count > 0 {
                if totals.tokens[token_type] == 0 {
                    store.token_series(series, entry, token_type);
                }
                totals.tokens[token_type] = totals.tokens[token_type].saturating_add(*count);
            }
        }
        if let Some(price) = &series.price {
            let cost = price.cost_with_cache(
                values.tokens(TokenType::Input),
                values.tokens(TokenType::Output),
                values.tokens(TokenType::CacheRead),
                values.tokens(TokenType::CacheWrite),
            );
            if cost > 0.0 {
                if totals.cost == 0.0 {
                    store.cost_series(&series.cost, entry);
                }
                totals.cost += cost;
            }
        } else if values.tokens(TokenType::Input) | values.tokens(TokenType::Output) != 0 {
            if totals.unpriced == 0 {
                store.unpriced_series(series, entry);
            }
            totals.unpriced += 1;
        }
        if let Some(first) = values.time_to_first_token_s {
            store.stream_series(series, entry, TIME_TO_FIRST_TOKEN);
            let buckets = store.stream_buckets(TIME_TO_FIRST_TOKEN);
            totals.first_token.observe(first, buckets);
        }
        if let Some(per_token) = values.time_per_output_token_s() {
            store.stream_series(series, entry, TIME_PER_OUTPUT_TOKEN);
            let buckets = store.stream_buckets(TIME_PER_OUTPUT_TOKEN);
            totals.per_token.observe(per_token, buckets);
        }
    }

    /// Applies the totals to the store.
    pub fn finish(self) {
        let store = self.store;
        let writers = store.recording;
        for totals in self.totals {
            let entry = totals.entry;
            let series = &entry.value;
            series.requests.value.add(totals.requests, writers);
            series.duration.get().histogram.merge(
                &totals.duration.buckets,
                totals.duration.sum,
                writers,
            );
            for (token_type, count) in totals.tokens.iter().enumerate() {
                if *count > 0 {
                    store
                        .token_series(series, entry, token_type)
                        .value
                        .add(*count, writers);
                }
            }
            if let Some(cost) = series.cost.get() {
                cost.get().value.add(totals.cost, writers);
            }
            if totals.unpriced > 0 {
                if let Some(unpriced) = store.unpriced_series(series, entry) {
                    unpriced.value.add(totals.unpriced, writers);
                }
            }
            for (family, histogram) in [
                (TIME_TO_FIRST_TOKEN, &totals.first_token),
                (TIME_PER_OUTPUT_TOKEN, &totals.per_token),
            ] {
                if !histogram.is_empty() {
                    store.stream_series(series, entry, family).histogram.merge(
                        &histogram.buckets,
                        histogram.sum,
                        writers,
                    );
                }
            }
        }
    }
}
