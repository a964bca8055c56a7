//! The gateway's seven metric families and what each recording call adds to them.
//!
//! One `record_request` makes a single lock-free lookup: the requests series,
//! keyed by all four request labels, holds the model's price and direct
//! references to the duration histogram and to the token and cost series it
//! feeds, so the other families are only searched the first time a label set
//! appears. Token and cost series are created on their first positive amount,
//! exactly when the reference middleware would create them, so samples come out
//! in the same order. Label values are stored, and declared, in the alphabetical
//! order in which the exposition prints them.

use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use smallvec::SmallVec;

use crate::counter::{Counter, FloatCounter, Recording};
use crate::family::{
    FamilyDesc, BUCKET_LABELS, CACHE_HITS, CACHE_MISSES, COST, DURATION, REQUESTS, TOKENS,
    TOOL_CALLS,
};
use crate::histogram::{bucket_index, Histogram, HistogramSnapshot, BUCKET_COUNT};
use crate::label_map::{Entry, LabelMap};
use crate::pricing::{Price, PriceTable};
use crate::shared_file::SeriesDescription;
use crate::slots::{Slot, SlotArena};

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

/// A reference from one series to another series of the same [`Store`].
///
/// Series live in insert-only [`LabelMap`]s that never move or free an entry
/// before the map is dropped, and every map belongs to the same `Store` as the
/// series holding the reference; references are only followed through `&Store`.
/// Plain references would need a self-referential lifetime; this is that
/// reference, minus the reference count an `Arc` would add to every label set.
struct SeriesRef<T>(NonNull<T>);

// SAFETY: the target is shared immutably (all mutation is through atomics) and
// outlives every holder, as explained on the type.
unsafe impl<T: Sync> Send for SeriesRef<T> {}
unsafe impl<T: Sync> Sync for SeriesRef<T> {}

impl<T> SeriesRef<T> {
    fn new(target: &T) -> Self {
        SeriesRef(NonNull::from(target))
    }

    #[inline]
    fn get(&self) -> &T {
        // SAFETY: see the type's documentation.
        unsafe { self.0.as_ref() }
    }
}

/// A counter series and the time it was created (its `_created` sample).
pub struct CounterSeries {
    /// The count.
    pub value: Slot<Counter>,
    /// Unix time of creation in seconds.
    pub created: f64,
}

impl CounterSeries {
    fn new(arena: &SlotArena, family: &FamilyDesc, labels: &[&str]) -> Self {
        let created = unix_now();
        CounterSeries {
            value: arena.allocate(&SeriesDescription {
                family: family.id,
                labels,
                created,
            }),
            created,
        }
    }
}

/// The USD cost series of one provider and model.
pub struct CostSeries {
    /// The accumulated cost.
    pub value: Slot<FloatCounter>,
    /// Unix time of creation in seconds.
    pub created: f64,
}

/// The latency histogram of one provider, model and operation.
pub struct HistogramSeries {
    /// The buckets and sum.
    pub histogram: Histogram,
    /// Unix time of creation in seconds.
    pub created: f64,
}

/// The requests counter of one label set, its model's price and the series it feeds.
pub struct RequestSeries {
    requests: CounterSeries,
    price: Option<Price>,
    duration: SeriesRef<HistogramSeries>,
    input_tokens: OnceLock<SeriesRef<CounterSeries>>,
    output_tokens: OnceLock<SeriesRef<CounterSeries>>,
    cost: OnceLock<SeriesRef<CostSeries>>,
}

/// The position of each request label in a requests entry (alphabetical order).
const MODEL: usize = 0;
const PROVIDER: usize = 2;

/// Whether a cache lookup found its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// `ractogateway_cache_hits_total`.
    Hit,
    /// `ractogateway_cache_misses_total`.
    Miss,
}

/// Label values of one request; `&str` borrowed from the caller.
#[derive(Debug, Clone, Copy)]
pub struct RequestLabels<'a> {
    /// Provider, e.g. `"openai"`.
    pub provider: &'a str,
    /// Model, e.g. `"gpt-4o"`.
    pub model: &'a str,
    /// Operation, e.g. `"chat"`.
    pub operation: &'a str,
    /// Status, e.g. `"ok"`.
    pub status: &'a str,
}

/// The measured values of one request, already validated.
#[derive(Debug, Clone, Copy)]
pub struct RequestValues {
    /// Latency in seconds: finite and not negative.
    pub latency_s: f64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
}

/// One label set of the requests family, as returned by [`Store::request_entry`].
pub type RequestEntry = Entry<RequestSeries>;

/// Receives the samples of a scrape, family by family.
pub trait SampleVisitor {
    /// A family starts.
    fn family(&mut self, desc: &FamilyDesc);
    /// One sample of the current family. `suffix` completes the family name
    /// (`_total`, `_bucket`, `_count`, `_sum`, `_created`); `le` is set for
    /// buckets; `series` is the same for every sample of one series.
    fn sample(
        &mut self,
        desc: &FamilyDesc,
        suffix: &'static str,
        le: Option<&'static str>,
        series: usize,
        labels: &[&str],
        value: f64,
    );
    /// The current family ends.
    fn end_family(&mut self, desc: &FamilyDesc);
}

/// All metric state of one middleware.
pub struct Store {
    prices: PriceTable,
    /// How recording calls are coordinated, and how counts are encoded.
    recording: Recording,
    /// Where every value lives; dropped after the maps (field order), which
    /// hold the only references into it.
    arena: SlotArena,
    /// Keyed by model, operation, provider, status.
    requests: LabelMap<RequestSeries>,
    /// Keyed by model, operation, provider.
    durations: LabelMap<HistogramSeries>,
    /// Keyed by model, provider, token_type.
    tokens: LabelMap<CounterSeries>,
    /// Keyed by model, provider.
    costs: LabelMap<CostSeries>,
    cache_hits: LabelMap<CounterSeries>,
    cache_misses: LabelMap<CounterSeries>,
    tool_calls: LabelMap<CounterSeries>,
}

impl Store {
    /// An empty store that prices requests with `prices`, its values on the heap,
    /// for any number of concurrent writers.
    pub fn new(prices: PriceTable) -> Self {
        Self::with_arena(prices, SlotArena::heap(), Recording::CONCURRENT)
    }

    /// An empty store whose values live in `arena` (a shared file in
    /// multi-process mode), recorded into as `recording` says.
    pub fn with_arena(prices: PriceTable, arena: SlotArena, recording: Recording) -> Self {
        Store {
            prices,
            recording,
            arena,
            requests: LabelMap::new(),
            durations: LabelMap::new(),
            tokens: LabelMap::new(),
            costs: LabelMap::new(),
            cache_hits: LabelMap::new(),
            cache_misses: LabelMap::new(),
            tool_calls: LabelMap::new(),
        }
    }

    /// The requests entry of `labels`, created (with its histogram) on first use.
    #[inline]
    pub fn request_entry(&self, labels: &RequestLabels<'_>) -> &RequestEntry {
        let RequestLabels {
            provider,
            model,
            operation,
            status,
        } = *labels;
        self.requests
            .get_or_insert_with(&[model, operation, provider, status], || {
                let key = [model, operation, provider];
                let duration = self.durations.get_or_insert_with(&key, || {
                    let created = unix_now();
                    HistogramSeries {
                        histogram: self.arena.histogram(&SeriesDescription {
                            family: DURATION.id,
                            labels: &key,
                            created,
                        }),
                        created,
                    }
                });
                RequestSeries {
                    requests: CounterSeries::new(
                        &self.arena,
                        &REQUESTS,
                        &[model, operation, provider, status],
                    ),
                    price: self.prices.get(model),
                    duration: SeriesRef::new(&duration.value),
                    input_tokens: OnceLock::new(),
                    output_tokens: OnceLock::new(),
                    cost: OnceLock::new(),
                }
            })
    }

    /// Records one completed request: its count, latency, tokens and cost.
    ///
    /// Tool calls are recorded separately with [`Store::record_tool_call`], after
    /// the caller has validated every name.
    #[inline]
    pub fn record_request(&self, labels: &RequestLabels<'_>, values: &RequestValues) {
        self.record_request_on(self.request_entry(labels), values);
    }

    /// Records one request on an entry obtained from [`Store::request_entry`] of this store.
    #[inline]
    pub fn record_request_on(&self, entry: &RequestEntry, values: &RequestValues) {
        let series = &entry.value;
        let writers = self.recording;
        series.requests.value.inc(writers);
        series
            .duration
            .get()
            .histogram
            .observe(values.latency_s, writers);
        if values.input_tokens > 0 {
            self.token_series(&series.input_tokens, entry, "input")
                .value
                .add(values.input_tokens, writers);
        }
        if values.output_tokens > 0 {
            self.token_series(&series.output_tokens, entry, "output")
                .value
                .add(values.output_tokens, writers);
        }
        if let Some(price) = series.price {
            let cost = price.cost(values.input_tokens, values.output_tokens);
            if cost > 0.0 {
                self.cost_series(&series.cost, entry)
                    .value
                    .add(cost, writers);
            }
        }
    }

    fn cost_series<'s>(
        &'s self,
        slot: &'s OnceLock<SeriesRef<CostSeries>>,
        entry: &RequestEntry,
    ) -> &'s CostSeries {
        slot.get_or_init(|| {
            let key = [entry.label(MODEL), entry.label(PROVIDER)];
            let created = self.costs.get_or_insert_with(&key, || {
                let created = unix_now();
                CostSeries {
                    value: self.arena.allocate(&SeriesDescription {
                        family: COST.id,
                        labels: &key,
                        created,
                    }),
                    created,
                }
            });
            SeriesRef::new(&created.value)
        })
        .get()
    }

    fn token_series<'s>(
        &'s self,
        slot: &'s OnceLock<SeriesRef<CounterSeries>>,
        entry: &RequestEntry,
        token_type: &str,
    ) -> &'s CounterSeries {
        slot.get_or_init(|| {
            let key = [entry.label(MODEL), entry.label(PROVIDER), token_type];
            SeriesRef::new(
                &self
                    .tokens
                    .get_or_insert_with(&key, || CounterSeries::new(&self.arena, &TOKENS, &key))
                    .value,
            )
        })
        .get()
    }

    /// The tool-call series of `tool_name`, created on first use.
    #[inline]
    pub fn tool_call_series(&self, tool_name: &str) -> &CounterSeries {
        &self
            .tool_calls
            .get_or_insert_with(&[tool_name], || {
                CounterSeries::new(&self.arena, &TOOL_CALLS, &[tool_name])
            })
            .value
    }

    /// Adds one tool call named `tool_name`.
    #[inline]
    pub fn record_tool_call(&self, tool_name: &str) {
        self.count(self.tool_call_series(tool_name));
    }

    /// The cache-hit or cache-miss series of `cache_type`, created on first use.
    #[inline]
    pub fn cache_series(&self, outcome: CacheOutcome, cache_type: &str) -> &CounterSeries {
        let (map, family) = match outcome {
            CacheOutcome::Hit => (&self.cache_hits, &CACHE_HITS),
            CacheOutcome::Miss => (&self.cache_misses, &CACHE_MISSES),
        };
        &map.get_or_insert_with(&[cache_type], || {
            CounterSeries::new(&self.arena, family, &[cache_type])
        })
        .value
    }

    /// Starts a batch of requests to be recorded together (see [`Batch`]).
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            store: self,
            totals: Vec::new(),
            index: HashMap::default(),
        }
    }

    /// Adds one to a counter series of this store.
    #[inline]
    pub fn count(&self, series: &CounterSeries) {
        series.value.inc(self.recording);
    }

    /// Adds one cache hit or miss of `cache_type`.
    #[inline]
    pub fn record_cache(&self, outcome: CacheOutcome, cache_type: &str) {
        self.count(self.cache_series(outcome, cache_type));
    }

    /// The path of the shared file the values live in, if any.
    pub fn arena_file_path(&self) -> Option<std::path::PathBuf> {
        self.arena.file_path()
    }

    /// Why the shared file stopped taking new series (they live on the heap instead), if it did.
    pub fn file_error(&self) -> Option<String> {
        self.arena.file_error()
    }

    /// Walks every family and sample in exposition order, reading each series once.
    pub fn visit(&self, include_created: bool, visitor: &mut impl SampleVisitor) {
        fn views<'m, V>(
            map: &'m LabelMap<V>,
            read: impl Fn(&V) -> (Reading, f64) + 'm,
        ) -> impl Iterator<Item = SeriesView<'m>> + 'm {
            map.snapshot().into_iter().map(move |entry| {
                let (reading, created) = read(&entry.value);
                SeriesView {
                    id: entry as *const Entry<V> as usize,
                    labels: entry.label_values().collect(),
                    reading,
                    created,
                }
            })
        }
        let coding = self.recording.coding;
        let count = |series: &CounterSeries| {
            (
                Reading::Value(series.value.get(coding) as f64),
                series.created,
            )
        };
        let requests = views(&self.requests, |series: &RequestSeries| {
            count(&series.requests)
        });
        visit_family(&REQUESTS, requests, include_created, visitor);
        let durations = views(&self.durations, |series: &HistogramSeries| {
            (
                Reading::Histogram(series.histogram.snapshot(coding)),
                series.created,
            )
        });
        visit_family(&DURATION, durations, include_created, visitor);
        visit_family(
            &TOKENS,
            views(&self.tokens, count),
            include_created,
            visitor,
        );
        let costs = views(&self.costs, |series: &CostSeries| {
            (Reading::Value(series.value.get()), series.created)
        });
        visit_family(&COST, costs, include_created, visitor);
        for (desc, map) in [
            (&CACHE_HITS, &self.cache_hits),
            (&CACHE_MISSES, &self.cache_misses),
            (&TOOL_CALLS, &self.tool_calls),
        ] {
            visit_family(desc, views(map, count), include_created, visitor);
        }
    }
}

/// What a scrape read from one series.
#[derive(Debug, Clone, Copy)]
pub enum Reading {
    /// A counter's value.
    Value(f64),
    /// A histogram's buckets and sum.
    Histogram(HistogramSnapshot),
}

/// One series as a scrape sees it.
pub struct SeriesView<'a> {
    /// The same for every sample of the series, different between series of a family.
    pub id: usize,
    /// Label values in the family's label order.
    pub labels: SmallVec<[&'a str; 4]>,
    /// The values read.
    pub reading: Reading,
    /// Unix time of creation in seconds.
    pub created: f64,
}

/// Hands the samples of one family's series to `visitor`, in exposition order.
pub fn visit_family<'a>(
    desc: &FamilyDesc,
    series: impl IntoIterator<Item = SeriesView<'a>>,
    include_created: bool,
    visitor: &mut impl SampleVisitor,
) {
    visitor.family(desc);
    for view in series {
        let (id, labels) = (view.id, &view.labels[..]);
        match view.reading {
            Reading::Value(value) => visitor.sample(desc, "_total", None, id, labels, value),
            Reading::Histogram(snapshot) => {
                for (bucket, le) in snapshot.cumulative.iter().zip(BUCKET_LABELS) {
                    visitor.sample(desc, "_bucket", Some(le), id, labels, *bucket as f64);
                }
                let count = snapshot.count() as f64;
                visitor.sample(desc, "_count", None, id, labels, count);
                visitor.sample(desc, "_sum", None, id, labels, snapshot.sum);
            }
        }
        if include_created {
            visitor.sample(desc, "_created", None, id, labels, view.created);
        }
    }
    visitor.end_family(desc);
}

/// What the rows of one batch add to one requests entry.
struct EntryTotals<'s> {
    entry: &'s RequestEntry,
    requests: u64,
    buckets: [u64; BUCKET_COUNT],
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
                buckets: [0; BUCKET_COUNT],
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
        totals.buckets[bucket_index(values.latency_s)] += 1;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects `(family, suffix, le, labels, value)` for assertions.
    #[derive(Default)]
    struct Recorder(Vec<(String, Option<&'static str>, Vec<String>, f64)>);

    impl SampleVisitor for Recorder {
        fn family(&mut self, _desc: &FamilyDesc) {}
        fn sample(
            &mut self,
            desc: &FamilyDesc,
            suffix: &'static str,
            le: Option<&'static str>,
            _series: usize,
            labels: &[&str],
            value: f64,
        ) {
            let labels = labels.iter().map(|l| l.to_string()).collect();
            self.0
                .push((format!("{}{}", desc.name, suffix), le, labels, value));
        }
        fn end_family(&mut self, _desc: &FamilyDesc) {}
    }

    fn gpt_4o_store() -> Store {
        Store::new(PriceTable::new([(
            "gpt-4o",
            Price {
                input_per_million: 2.5,
                output_per_million: 10.0,
            },
        )]))
    }

    const OPENAI_CHAT: RequestLabels<'static> = RequestLabels {
        provider: "openai",
        model: "gpt-4o",
        operation: "chat",
        status: "ok",
    };

    #[test]
    fn a_request_feeds_every_family_it_touches() {
        let store = gpt_4o_store();
        let values = RequestValues {
            latency_s: 0.3,
            input_tokens: 1000,
            output_tokens: 200,
        };
        store.record_request(&OPENAI_CHAT, &values);
        store.record_tool_call("search");
        let mut recorder = Recorder::default();
        store.visit(false, &mut recorder);
        let find = |name: &str, le: Option<&str>, labels: &[&str]| {
            recorder
                .0
                .iter()
                .find(|(n, l, v, _)| n == name && *l == le && v == labels)
                .map(|sample| sample.3)
        };
        let four = ["gpt-4o", "chat", "openai", "ok"];
        assert_eq!(find("ractogateway_requests_total", None, &four), Some(1.0));
        let three = ["gpt-4o", "chat", "openai"];
        let duration = "ractogateway_request_duration_seconds";
        assert_eq!(
            find(&format!("{duration}_bucket"), Some("0.25"), &three),
            Some(0.0)
        );
        assert_eq!(
            find(&format!("{duration}_bucket"), Some("0.5"), &three),
            Some(1.0)
        );
        assert_eq!(find(&format!("{duration}_count"), None, &three), Some(1.0));
        assert_eq!(find(&format!("{duration}_sum"), None, &three), Some(0.3));
        let tokens = "ractogateway_tokens_total";
        assert_eq!(
            find(tokens, None, &["gpt-4o", "openai", "input"]),
            Some(1000.0)
        );
        assert_eq!(
            find(tokens, None, &["gpt-4o", "openai", "output"]),
            Some(200.0)
        );
        let cost = find("ractogateway_cost_usd_total", None, &["gpt-4o", "openai"]);
        assert_eq!(cost, Some(0.0045000000000000005));
        assert_eq!(
            find("ractogateway_tool_calls_total", None, &["search"]),
            Some(1.0)
        );
    }

    #[test]
    fn a_batch_records_what_single_calls_record() {
        let single = gpt_4o_store();
        let batched = gpt_4o_store();
        let rows = [
            ("gpt-4o", 0.3, 10, 0),
            ("mystery", 61.0, 0, 5),
            ("gpt-4o", 0.05, 0, 7),
            ("mystery", 0.2, 3, 0),
        ];
        let mut batch = batched.batch();
        for (model, latency_s, input_tokens, output_tokens) in rows {
            let labels = RequestLabels {
                model,
                ..OPENAI_CHAT
            };
            let values = RequestValues {
                latency_s,
                input_tokens,
                output_tokens,
            };
            single.record_request(&labels, &values);
            batch.add(batched.request_entry(&labels), &values);
        }
        batch.finish();
        let (mut expected, mut actual) = (Recorder::default(), Recorder::default());
        single.visit(false, &mut expected);
        batched.visit(false, &mut actual);
        assert_eq!(actual.0, expected.0);
    }

    #[test]
    fn zero_tokens_and_unknown_models_create_no_series() {
        let store = gpt_4o_store();
        let unknown = RequestLabels {
            model: "mystery",
            ..OPENAI_CHAT
        };
        let values = RequestValues {
            latency_s: 1.0,
            input_tokens: 5,
            output_tokens: 0,
        };
        store.record_request(&unknown, &values);
        let mut recorder = Recorder::default();
        store.visit(false, &mut recorder);
        let names: Vec<&str> = recorder.0.iter().map(|s| s.0.as_str()).collect();
        assert!(names.contains(&"ractogateway_tokens_total"));
        assert!(!names.contains(&"ractogateway_cost_usd_total"));
        assert_eq!(
            recorder
                .0
                .iter()
                .filter(|s| s.0 == "ractogateway_tokens_total")
                .count(),
            1
        );
    }

    #[test]
    fn created_samples_follow_each_series_when_asked() {
        let store = gpt_4o_store();
        store.record_cache(CacheOutcome::Hit, "exact");
        let mut recorder = Recorder::default();
        store.visit(true, &mut recorder);
        let hits: Vec<&str> = recorder
            .0
            .iter()
            .filter(|s| s.0.starts_with("ractogateway_cache_hits"))
            .map(|s| s.0.as_str())
            .collect();
        assert_eq!(
            hits,
            [
                "ractogateway_cache_hits_total",
                "ractogateway_cache_hits_created"
            ]
        );
        let created = recorder
            .0
            .iter()
            .find(|s| s.0 == "ractogateway_cache_hits_created");
        let age = unix_now() - created.map_or(0.0, |s| s.3);
        assert!((0.0..60.0).contains(&age), "created {age} s ago");
    }
}
