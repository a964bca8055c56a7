//! A middleware's metric state: the series of every family, and what each
//! recording call adds to them.
//!
//! Each family's series live in one [`FamilySeries`] container, indexed by
//! family id and made from the schema in one loop; visiting and merging are one
//! loop over them too. One `record_request` makes a single lock-free lookup:
//! the requests series, keyed by all request labels, holds the model's price
//! and direct references to the duration histogram and to the token, cost and
//! optional histogram series it feeds, so the other families are only searched
//! the first time a label set needs them. What a request adds is decided by the
//! recording rules ([`rules`]); series are created on their first positive
//! amount, exactly when the reference middleware would create them, so samples
//! come out in the same order. Label values are stored, and declared, in the
//! alphabetical order in which the exposition prints them.

pub mod admission;
pub mod batch;
mod exemplars;
// Unsafe: lock-free publication of label sets.
#[allow(unsafe_code)]
pub mod label_map;
mod merge;
mod notices;
pub mod pricing;
mod read;
mod recording;
pub mod rules;
// Unsafe: series values over arena cells.
#[allow(unsafe_code)]
pub mod series;
pub mod visit;

pub use notices::NAMED_UNPRICED_MODELS;
pub use read::ReadMode;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use smallvec::SmallVec;

use crate::cells::arena::CellArena;
use crate::cells::counter::Recording;
use crate::schema::buckets::Buckets;
use crate::schema::family::{
    FamilyDesc, FamilyId, LabelSource, Schema, ValueKind, DURATION, IN_FLIGHT, OVERFLOW_VALUE,
    REQUESTS,
};
use crate::schema::native::NativeConfig;
use crate::store::admission::Admission;
use crate::store::label_map::{Entry, LabelMap};
use crate::store::notices::Notices;
use crate::store::pricing::{Price, PriceTable};
use crate::store::series::{
    CostSeries, CounterSeries, HistogramSeries, LazyBox, LazySeriesRef, RequestSeries, SeriesRef,
};

/// Whether a cache lookup found its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// `ractogateway_cache_hits_total`.
    Hit,
    /// `ractogateway_cache_misses_total`.
    Miss,
}

/// Prices a model the table lacks: `(provider, model)` to its price, if any.
pub type PriceResolver = Box<dyn Fn(&str, &str) -> Option<Price> + Send + Sync>;

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
    /// The values of the schema's extra labels, in its order (empty without them).
    pub extra: &'a [&'a str],
}

/// One label set of the requests family, as returned by [`Store::request_entry`].
pub type RequestEntry = Entry<RequestSeries>;

/// The series of one family, by label set, kept as the family's values are.
pub enum FamilySeries {
    /// The requests family: a count, and what each label set feeds.
    Requests(LabelMap<RequestSeries>),
    /// A counter.
    Counter(LabelMap<CounterSeries>),
    /// A float sum (the cost).
    Sum(LabelMap<CostSeries>),
    /// A histogram.
    Histogram(LabelMap<HistogramSeries>),
}

impl FamilySeries {
    /// The container a family's values need.
    fn for_family(family: &FamilyDesc) -> Self {
        match family.value {
            ValueKind::Count if family.id == REQUESTS => FamilySeries::Requests(LabelMap::new()),
            // A level lives in a counter's cell (see `Counter::add_level`).
            ValueKind::Count | ValueKind::Level => FamilySeries::Counter(LabelMap::new()),
            ValueKind::Sum => FamilySeries::Sum(LabelMap::new()),
            ValueKind::Buckets => FamilySeries::Histogram(LabelMap::new()),
        }
    }
}

/// All metric state of one middleware.
pub struct Store {
    prices: PriceTable,
    /// How recording calls are coordinated, and how counts are encoded.
    pub(crate) recording: Recording,
    /// The families and their buckets.
    schema: Arc<Schema>,
    /// The duration histogram's buckets, copied out of the schema for the hot path.
    latency_buckets: Buckets,
    /// The duration histogram's native configuration, if it keeps one.
    latency_native: Option<NativeConfig>,
    /// Each family's series, by family id.
    families: Box<[FamilySeries]>,
    /// Where every value lives; dropped after the families (field order),
    /// which hold the only references into it.
    arena: CellArena,
    /// Prices the models the table lacks, by provider and model, once per label set.
    resolver: Option<PriceResolver>,
    /// Decides which new label sets are admitted when the cap on series is
    /// shared with other stores (see [`Store::share_max_series`]).
    admission: Option<Box<dyn Admission>>,
    /// Whether unpriced requests are counted (see [`Store::set_count_unpriced`]).
    count_unpriced: bool,
    /// Whether requests feed the conventions' histograms, as the schema says
    /// (kept here beside the other values the hot path reads).
    semconv_histograms: bool,
    /// The most label sets a family holds before new ones are folded into its
    /// overflow series (`usize::MAX`: no cap).
    max_series: usize,
    /// Held while a requests series' handle to another series is set (its
    /// first use; see [`LazySeriesRef::get_or_init`]).
    first_use: Mutex<()>,
    /// Families that folded label sets, and models found without a price,
    /// not yet told.
    notices: Notices,
    /// The prices of the models cache hits saved calls of, by provider and
    /// model, found once each (the resolver may run other code); at most
    /// `max_series` of them, as their series are.
    saved_prices: Mutex<SavedPrices>,
}

/// The prices of the models cache hits saved calls of, by provider and model.
type SavedPrices = HashMap<(Box<str>, Box<str>), Option<Price>, foldhash::fast::RandomState>;

impl Store {
    /// An empty store of the reference's families that prices requests with
    /// `prices`, its values on the heap, for any number of concurrent writers.
    pub fn new(prices: PriceTable) -> Self {
        Self::with_arena(
            prices,
            CellArena::heap(),
            Recording::CONCURRENT,
            Arc::new(Schema::default()),
        )
    }

    /// An empty store of `schema`'s families whose values live in `arena` (a
    /// shared file in multi-process mode), recorded into as `recording` says.
    pub fn with_arena(
        prices: PriceTable,
        arena: CellArena,
        recording: Recording,
        schema: Arc<Schema>,
    ) -> Self {
        Store {
            prices,
            recording,
            latency_buckets: schema.latency_buckets().clone(),
            latency_native: schema.family(DURATION).native,
            semconv_histograms: schema.keeps_semconv_histograms(),
            families: schema
                .families()
                .iter()
                .map(FamilySeries::for_family)
                .collect(),
            schema,
            arena,
            resolver: None,
            admission: None,
            count_unpriced: false,
            max_series: usize::MAX,
            first_use: Mutex::new(()),
            notices: Notices::default(),
            saved_prices: Mutex::default(),
        }
    }

    /// The requests family's series.
    fn requests(&self) -> &LabelMap<RequestSeries> {
        match &self.families[usize::from(REQUESTS)] {
            FamilySeries::Requests(map) => map,
            FamilySeries::Counter(_) | FamilySeries::Sum(_) | FamilySeries::Histogram(_) => {
                unreachable!("the requests family keeps requests series")
            }
        }
    }

    /// The series of the counter family `family`.
    fn counters(&self, family: FamilyId) -> &LabelMap<CounterSeries> {
        match &self.families[usize::from(family)] {
            FamilySeries::Counter(map) => map,
            FamilySeries::Requests(_) | FamilySeries::Sum(_) | FamilySeries::Histogram(_) => {
                unreachable!(
                    "{} is not a counter family",
                    self.schema.family(family).name
                )
            }
        }
    }

    /// The series of the sum family `family`.
    fn sums(&self, family: FamilyId) -> &LabelMap<CostSeries> {
        match &self.families[usize::from(family)] {
            FamilySeries::Sum(map) => map,
            FamilySeries::Requests(_) | FamilySeries::Counter(_) | FamilySeries::Histogram(_) => {
                unreachable!("{} is not a sum family", self.schema.family(family).name)
            }
        }
    }

    /// The series of the histogram family `family`.
    fn histograms(&self, family: FamilyId) -> &LabelMap<HistogramSeries> {
        match &self.families[usize::from(family)] {
            FamilySeries::Histogram(map) => map,
            FamilySeries::Requests(_) | FamilySeries::Counter(_) | FamilySeries::Sum(_) => {
                unreachable!(
                    "{} is not a histogram family",
                    self.schema.family(family).name
                )
            }
        }
    }

    /// The request label values of `labels`, in [`crate::schema::family::LabelSource::Request`] order.
    fn request_values<'a>(&self, labels: &RequestLabels<'a>) -> SmallVec<[&'a str; 8]> {
        let mut values: SmallVec<[&str; 8]> = SmallVec::new();
        values.extend([
            labels.provider,
            labels.model,
            labels.operation,
            labels.status,
        ]);
        values.extend(labels.extra.iter().copied());
        // Missing extra labels are empty, as `prometheus_client` would show them.
        values.resize(4 + self.schema.extra_labels().len(), "");
        values
    }

    /// Adds `delta` to the requests in flight of `labels` (their status is not
    /// part of it): +1 when a call starts, -1 when it ends.
    pub fn add_in_flight(&self, labels: &RequestLabels<'_>, delta: i64) {
        let values = self.request_values(labels);
        let key = self.schema.key_of(IN_FLIGHT, &values);
        let (entry, _) = self.capped(self.counters(IN_FLIGHT), IN_FLIGHT, &key, |key| {
            CounterSeries::new(&self.arena, IN_FLIGHT, key)
        });
        entry.value.value.add_level(delta, self.recording);
    }

    /// The requests entry of `labels`, created (with its histogram) on first use.
    #[inline]
    pub fn request_entry(&self, labels: &RequestLabels<'_>) -> &RequestEntry {
        self.request_entry_capped(labels).0
    }

    /// Like [`Store::request_entry`]; also says whether the label set was
    /// folded into the overflow entry (a caller must not remember it as the
    /// entry of these labels).
    pub fn request_entry_capped(&self, labels: &RequestLabels<'_>) -> (&RequestEntry, bool) {
        let values = self.request_values(labels);
        let key = self.schema.request_key(&values);
        let requests = self.requests();
        if let Some(entry) = requests.get(&key) {
            return (entry, false);
        }
        // Priced before the map's lock is taken: a resolver may run other code.
        // A label set past the cap is not priced: it will be folded.
        let price = if requests.len() < self.max_series {
            self.price_of(labels.provider, labels.model)
        } else {
            None
        };
        let model_position = self.schema.model_position();
        self.capped(requests, REQUESTS, &key, |key| {
            let duration_key = self.schema.derived_key(DURATION, |at| key[at], "");
            let duration = self
                .capped(self.histograms(DURATION), DURATION, &duration_key, |key| {
                    HistogramSeries::new(
                        &self.arena,
                        DURATION,
                        key,
                        &self.latency_buckets,
                        self.latency_native.as_ref(),
                    )
                })
                .0;
            RequestSeries {
                requests: CounterSeries::new(&self.arena, REQUESTS, key),
                // An overflow entry's model is no model: it is priced as unknown.
                price: (key[model_position] == labels.model)
                    .then_some(price)
                    .flatten(),
                duration: SeriesRef::new(&duration.value),
                tokens: Default::default(),
                cost: LazySeriesRef::default(),
                more: LazyBox::default(),
                unpriced: OnceLock::new(),
            }
        })
    }

    /// The price of `model` of `provider`, as a request's label set of that
    /// model would be priced: from the table, else the resolver.
    fn price_of(&self, provider: &str, model: &str) -> Option<Price> {
        self.prices.get(model).or_else(|| {
            self.resolver
                .as_ref()
                .and_then(|resolve| resolve(provider, model))
        })
    }

    /// The price of `model` of `provider` for a cache hit's saving, found
    /// once per model while fewer than `max_series` are known.
    pub(crate) fn saved_price(&self, provider: &str, model: &str) -> Option<Price> {
        let known = |prices: &SavedPrices| {
            prices
                .get(&(Box::from(provider), Box::from(model)))
                .cloned()
        };
        let lock = || {
            self.saved_prices
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some(price) = known(&lock()) {
            return price;
        }
        // Found without the lock: a resolver may run other code.
        let price = self.price_of(provider, model);
        let mut prices = lock();
        if prices.len() < self.max_series {
            prices.insert((Box::from(provider), Box::from(model)), price.clone());
        }
        price
    }

    /// Sets the resolver that prices models the table lacks (genai-prices, say).
    pub fn set_price_resolver(&mut self, resolver: PriceResolver) {
        self.resolver = Some(resolver);
    }

    /// Shares the cap on series (see [`Store::set_max_series`]) with the other
    /// stores `admission` speaks for: a label set new to this store takes a
    /// series of its own only if `admission` admits it among the family's
    /// first `max_series`, else it goes to the overflow series.
    pub fn share_max_series(&mut self, admission: Box<dyn Admission>) {
        self.admission = Some(admission);
    }

    /// Whether every request feeds the conventions' histograms (see
    /// [`Schema::keeping_semconv_histograms`]).
    #[inline]
    pub fn keeps_semconv_histograms(&self) -> bool {
        self.semconv_histograms
    }

    /// Sets the cap on label sets per family: past it, new label sets are
    /// folded into each family's overflow series.
    pub fn set_max_series(&mut self, max_series: usize) {
        self.max_series = max_series;
    }

    /// The entry of `key` in `map`, the map of `family`, created with `make`
    /// (given the key it is stored under); once the map holds `max_series`
    /// label sets, a new one goes to the family's overflow entry instead, whose
    /// every label value but the token type is [`OVERFLOW_VALUE`], so that totals stay exact while
    /// memory and scrapes stop growing. The flag says whether it was folded.
    fn capped<'m, V>(
        &'m self,
        map: &'m LabelMap<V>,
        family: FamilyId,
        key: &[&str],
        make: impl FnOnce(&[&str]) -> V,
    ) -> (&'m Entry<V>, bool) {
        if let Some(entry) = map.get(key) {
            return (entry, false);
        }
        if map.len() < self.max_series
            && self
                .admission
                .as_ref()
                .is_none_or(|shared| shared.admit(family, key, self.max_series))
        {
            return (map.get_or_insert_with(key, || make(key)), false);
        }
        // A derived label (a token or error type) is one of a fixed few: it is
        // kept, so that the overflow series of the token families still tell
        // input from output, and the errors' a timeout from a rate limit.
        let sources = &self.schema.family(family).sources;
        let overflow: SmallVec<[&str; 8]> = key
            .iter()
            .enumerate()
            .map(|(at, value)| match sources.get(at) {
                Some(LabelSource::Derived) => *value,
                _ => OVERFLOW_VALUE,
            })
            .collect();
        let entry = map.get_or_insert_with(&overflow, || make(&overflow));
        self.note_overflow(family);
        (entry, true)
    }

    /// Counts unpriced requests in `ractogateway_unpriced_requests_total`: off
    /// by default, so that a workload of the reference's arguments prints the
    /// reference's bytes.
    pub fn set_count_unpriced(&mut self, count: bool) {
        self.count_unpriced = count;
    }

    /// Whether a family folded a label set for the first time, or a model was
    /// found without a price, since the owner last took them.
    #[inline]
    pub fn has_notices(&self) -> bool {
        self.notices.any()
    }

    /// The names of the families that folded a label set for the first time
    /// since the last call: each is reported once per store.
    pub fn take_overflowed_families(&self) -> Vec<&str> {
        self.notices
            .take_overflowed_families(self.schema.families())
    }

    /// The `(provider, model)` pairs found without a price since the last
    /// call, and whether the first model past the [`NAMED_UNPRICED_MODELS`]
    /// was found since then.
    pub fn take_unpriced_models(&self) -> (Vec<(String, String)>, bool) {
        self.notices.take_unpriced_models()
    }

    /// The families and their buckets.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// The duration histogram's buckets.
    pub fn latency_buckets(&self) -> &Buckets {
        &self.latency_buckets
    }

    /// The path of the shared file the values live in, if any.
    pub fn arena_file_path(&self) -> Option<std::path::PathBuf> {
        self.arena.file_path()
    }

    /// Why the shared file stopped taking new series (they live on the heap instead), if it did.
    pub fn file_error(&self) -> Option<String> {
        self.arena.file_error()
    }
}

#[cfg(test)]
// Floats are written as the exposition prints them, digit for digit.
#[allow(clippy::unreadable_literal)]
mod tests {
    use super::*;
    use crate::schema::request::RequestValues;
    use crate::store::batch::Batch;
    use crate::store::pricing::Price;
    use crate::store::series::unix_now;
    use crate::store::visit::SampleVisitor;

    /// Collects `(family, suffix, le, labels, value)` for assertions.
    #[derive(Default)]
    struct Recorder(Vec<(String, Option<String>, Vec<String>, f64)>);

    impl SampleVisitor for Recorder {
        fn family(&mut self, _desc: &FamilyDesc) {}
        fn sample(
            &mut self,
            desc: &FamilyDesc,
            suffix: &'static str,
            le: Option<&str>,
            _series: usize,
            labels: &[&str],
            value: f64,
        ) {
            let labels = labels
                .iter()
                .map(std::string::ToString::to_string)
                .collect();
            self.0.push((
                format!("{}{}", desc.name, suffix),
                le.map(str::to_owned),
                labels,
                value,
            ));
        }
        fn end_family(&mut self, _desc: &FamilyDesc) {}
    }

    fn gpt_4o_store() -> Store {
        Store::new(PriceTable::new([("gpt-4o", Price::new(2.5, 10.0))]))
    }

    const OPENAI_CHAT: RequestLabels<'static> = RequestLabels {
        provider: "openai",
        model: "gpt-4o",
        operation: "chat",
        status: "ok",
        extra: &[],
    };

    #[test]
    fn a_request_feeds_every_family_it_touches() {
        let store = gpt_4o_store();
        let values = RequestValues::new(0.3, 1000, 200);
        store.record_request(&OPENAI_CHAT, &values);
        store.record_tool_call("search");
        let mut recorder = Recorder::default();
        store.visit(false, &mut recorder);
        let find = |name: &str, le: Option<&str>, labels: &[&str]| {
            recorder
                .0
                .iter()
                .find(|(n, l, v, _)| n == name && l.as_deref() == le && v == labels)
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
    fn a_cache_hit_saves_what_a_request_of_its_model_would_have_cost() {
        let store = gpt_4o_store();
        store.record_cache(CacheOutcome::Hit, "exact");
        store.record_cache_savings("openai", "gpt-4o", 1000, 200);
        store.record_cache_savings("openai", "gpt-4o", 0, 50);
        store.record_cache_savings("acme", "mystery", 7, 0);
        let request = gpt_4o_store();
        for (input, output) in [(1000, 200), (0, 50)] {
            request.record_request(&OPENAI_CHAT, &RequestValues::new(0.1, input, output));
        }
        let samples = |store: &Store, name: &str| {
            let mut recorder = Recorder::default();
            store.visit(false, &mut recorder);
            recorder
                .0
                .into_iter()
                .filter(|sample| sample.0 == name)
                .map(|sample| (sample.2, sample.3))
                .collect::<Vec<_>>()
        };
        let label_set = |values: &[&str]| values.iter().map(ToString::to_string).collect();
        assert_eq!(
            samples(&store, "ractogateway_cache_saved_tokens_total"),
            [
                (label_set(&["gpt-4o", "openai", "input"]), 1000.0),
                (label_set(&["gpt-4o", "openai", "output"]), 250.0),
                (label_set(&["mystery", "acme", "input"]), 7.0),
            ]
        );
        // Priced as the requests of that model are, to the bit; an unpriced
        // model saves tokens and no cost, and is noted.
        let saved = samples(&store, "ractogateway_cache_saved_usd_total");
        assert_eq!(saved, samples(&request, "ractogateway_cost_usd_total"));
        assert_eq!(saved.len(), 1);
        let (unpriced, _) = store.take_unpriced_models();
        assert_eq!(unpriced, [("acme".to_owned(), "mystery".to_owned())]);
        // The hit itself is counted apart, as before.
        assert_eq!(
            samples(&store, "ractogateway_cache_hits_total"),
            [(label_set(&["exact"]), 1.0)]
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
        let mut batch = Batch::new(&batched);
        for (model, latency_s, input_tokens, output_tokens) in rows {
            let labels = RequestLabels {
                model,
                ..OPENAI_CHAT
            };
            let values = RequestValues::new(latency_s, input_tokens, output_tokens);
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
        let values = RequestValues::new(1.0, 5, 0);
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
