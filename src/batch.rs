//! Many requests recorded as one: totals per label set, applied once.

use std::collections::HashMap;

use crate::store::{RequestEntry, RequestValues, Store};
use smallvec::{smallvec, SmallVec};

/// What the rows of one batch add to one requests entry.
struct EntryTotals<'s> {
    entry: &'s RequestEntry,
    requests: u64,
    buckets: SmallVec<[u64; 16]>,
    latency_sum: f64,
    input_tokens: u64,
    output_tokens: u64,
    cost: f64,
}

/// Many requests recorded as one: totals per label set, applied once at the end.
///
/// The result equals one `record_request_on` per row, in row order: the same
/// counts, and sums equal up to the order of float additions. Series that a row
/// creates (token and cost series) are created while the rows are added, so
/// they appear in the exposition in the same order as with single calls.
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
            .entry(entry as *const RequestEntry as usize)
            .or_insert(next);
        if slot == next {
            self.totals.push(EntryTotals {
                entry,
                requests: 0,
                buckets: smallvec![0; self.store.latency_buckets().count()],
                latency_sum: 0.0,
                input_tokens: 0,
                output_tokens: 0,
                cost: 0.0,
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
        totals.buckets[store.latency_buckets().index(values.latency_s)] += 1;
        totals.latency_sum += values.latency_s;
        // A series is created by the first row that needs it, as with single calls.
        if values.input_tokens > 0 {
            if totals.input_tokens == 0 {
                store.token_series(&series.input_tokens, entry, "input");
            }
            totals.input_tokens = totals.input_tokens.saturating_add(values.input_tokens);
        }
        if values.output_tokens > 0 {
            if totals.output_tokens == 0 {
                store.token_series(&series.output_tokens, entry, "output");
            }
            totals.output_tokens = totals.output_tokens.saturating_add(values.output_tokens);
        }
        if let Some(price) = series.price {
            let cost = price.cost(values.input_tokens, values.output_tokens);
            if cost > 0.0 {
                if totals.cost == 0.0 {
                    store.cost_series(&series.cost, entry);
                }
                totals.cost += cost;
            }
        }
    }

    /// Applies the totals to the store.
    pub fn finish(self) {
        for totals in self.totals {
            let series = &totals.entry.value;
            let writers = self.store.recording;
            series.requests.value.add(totals.requests, writers);
            series
                .duration
                .get()
                .histogram
                .merge(&totals.buckets, totals.latency_sum, writers);
            if let Some(input) = series.input_tokens.get() {
                input.get().value.add(totals.input_tokens, writers);
            }
            if let Some(output) = series.output_tokens.get() {
                output.get().value.add(totals.output_tokens, writers);
            }
            if let Some(cost) = series.cost.get() {
                cost.get().value.add(totals.cost, writers);
            }
        }
    }
}
