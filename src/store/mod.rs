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

pub mod batch;
// Unsafe: lock-free publication of label sets.
#[allow(unsafe_code)]
pub mod label_map;
pub mod pricing;
pub mod rules;
// Unsafe: series values over arena cells.
#[allow(unsafe_code)]
pub mod series;
pub mod visit;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use smallvec::SmallVec;

use crate::cells::arena::CellArena;
use crate::cells::counter::Recording;
use crate::cells::exemplar::{Exemplar, ShareSlot};
use crate::cells::histogram::{Histogram, HistogramSnapshot};
use crate::schema::family::{
    Buckets, FamilyDesc, FamilyId, LabelSource, Schema, ValueKind, CACHE_HITS, CACHE_MISSES, COST,
    DURATION, OPTIONAL_OBSERVED, OVERFLOW, OVERFLOW_VALUE, REQUESTS, TIME_TO_FIRST_TOKEN, TOKENS,
    TOOL_CALLS, UNPRICED,
};
use crate::schema::native::NativeConfig;
use crate::schema::request::{
    Observed, RequestValues, REFERENCE_TOKEN_TYPES, TIME_TO_FIRST_TOKEN as TIME_TO_FIRST_TOKEN_S,
    TOKEN_TYPES,
};
use crate::store::label_map::{prefetch, Entry, LabelMap};
use crate::store::pricing::{Price, PriceTable};
use crate::store::rules::Sink;
use crate::store::series::{
    CostSeries, CounterSeries, HistogramSeries, LazyBox, LazySeriesRef, RequestSeries, SeriesRef,
};
use crate::store::visit::{Reading, SampleVisitor, Samples, SeriesView, SeriesVisitor};

/// Whether a cache lookup found its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// `ractogateway_cache_hits_total`.
    Hit,
    /// `ractogateway_cache_misses_total`.
    Miss,
}

/// How many models without a price a store names in warnings. Model names
/// come from callers, and every distinct one would otherwise stay in memory
/// for good (past `max_series` too): past these, one more warning says that
/// further ones go unnamed.
pub const NAMED_UNPRICED_MODELS: usize = 100;

/// The `(provider, model)` pairs a store found without a price (the first
/// [`NAMED_UNPRICED_MODELS`]).
#[derive(Default)]
struct UnpricedModels {
    seen: std::collections::HashSet<(String, String)>,
    unreported: Vec<(String, String)>,
    /// Whether a model past the named ones was found, and whether that is
    /// yet to be reported.
    past_named: bool,
    past_named_unreported: bool,
}

impl UnpricedModels {
    /// Notes a model found without a price; whether there is news to report.
    fn note(&mut self, provider: &str, model: &str) -> bool {
        let noted = (provider.to_owned(), model.to_owned());
        if self.seen.contains(&noted) {
            return false;
        }
        if self.seen.len() < NAMED_UNPRICED_MODELS {
            self.seen.insert(noted.clone());
            self.unreported.push(noted);
            return true;
        }
        let news = !self.past_named;
        self.past_named = true;
        self.past_named_unreported |= news;
        news
    }
}

/// Prices a model the table lacks: `(provider, model)` to its price, if any.
pub type PriceResolver = Box<dyn Fn(&str, &str) -> Option<Price> + Send + Sync>;

/// The bit of the notices word that says unpriced models wait to be reported;
/// the others are families that folded label sets.
const UNPRICED_NOTICE: u32 = 1 << 31;
/// How many series ahead a scrape fetches the labels of (and twice as many, the entries).
const PREFETCH_AHEAD: usize = 4;

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
            ValueKind::Count => FamilySeries::Counter(LabelMap::new()),
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
    /// Whether unpriced requests are counted (see [`Store::set_count_unpriced`]).
    count_unpriced: bool,
    /// Whether requests observe their token counts, as the schema says (kept
    /// here beside the other values the hot path reads).
    token_usage: bool,
    /// `(provider, model)` pairs found without a price: every one seen, and the
    /// ones not yet reported (see [`Store::take_unpriced_models`]).
    unpriced_models: Mutex<UnpricedModels>,
    /// The most label sets a family holds before new ones are folded into its
    /// overflow series (`usize::MAX`: no cap).
    max_series: usize,
    /// Held while a requests series' handle to another series is set (its
    /// first use; see [`LazySeriesRef::get_or_init`]).
    first_use: Mutex<()>,
    /// Families that folded a label set since [`Store::take_overflowed_families`] last looked.
    notices: AtomicU32,
    /// Families that ever folded a label set.
    overflowed: AtomicU32,
}

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
            token_usage: schema.keeps_token_usage(),
            families: schema
                .families()
                .iter()
                .map(FamilySeries::for_family)
                .collect(),
            schema,
            arena,
            resolver: None,
            count_unpriced: false,
            unpriced_models: Mutex::new(UnpricedModels::default()),
            max_series: usize::MAX,
            first_use: Mutex::new(()),
            notices: AtomicU32::new(0),
            overflowed: AtomicU32::new(0),
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

    /// The requests entry of `labels`, created (with its histogram) on first use.
    #[inline]
    pub fn request_entry(&self, labels: &RequestLabels<'_>) -> &RequestEntry {
        self.request_entry_capped(labels).0
    }

    /// Like [`Store::request_entry`]; also says whether the label set was
    /// folded into the overflow entry (a caller must not remember it as the
    /// entry of these labels).
    pub fn request_entry_capped(&self, labels: &RequestLabels<'_>) -> (&RequestEntry, bool) {
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
        let key = self.schema.request_key(&values);
        let requests = self.requests();
        if let Some(entry) = requests.get(&key) {
            return (entry, false);
        }
        // Priced before the map's lock is taken: a resolver may run other code.
        // A label set past the cap is not priced: it will be folded.
        let price = if requests.len() < self.max_series {
            self.prices.get(labels.model).or_else(|| {
                self.resolver
                    .as_ref()
                    .and_then(|resolve| resolve(labels.provider, labels.model))
            })
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

    /// Sets the resolver that prices models the table lacks (genai-prices, say).
    pub fn set_price_resolver(&mut self, resolver: PriceResolver) {
        self.resolver = Some(resolver);
    }

    /// The series counting a requests entry's requests that had tokens but no
    /// price, created on first use, when the store counts them; its model is
    /// noted for a warning either way (once per provider and model).
    pub(crate) fn unpriced_series<'s>(
        &'s self,
        entry: &'s RequestEntry,
    ) -> Option<&'s CounterSeries> {
        entry
            .value
            .unpriced
            .get_or_init(|| {
                let model_position = self.schema.model_position();
                let model = entry.label(model_position);
                if model != OVERFLOW_VALUE {
                    let provider = entry.label(self.schema.request_positions()[0]);
                    let mut models = self
                        .unpriced_models
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if models.note(provider, model) {
                        self.notices.fetch_or(UNPRICED_NOTICE, Ordering::Release);
                    }
                }
                self.count_unpriced.then(|| {
                    let key = self.schema.derived_key(UNPRICED, |at| entry.label(at), "");
                    let (created, _) =
                        self.capped(self.counters(UNPRICED), UNPRICED, &key, |key| {
                            CounterSeries::new(&self.arena, UNPRICED, key)
                        });
                    SeriesRef::new(&created.value)
                })
            })
            .as_ref()
            .map(SeriesRef::get)
    }

    /// Whether every request's token counts are observed (see
    /// [`Schema::keeping_token_usage`]).
    #[inline]
    pub fn keeps_token_usage(&self) -> bool {
        self.token_usage
    }

    /// Counts unpriced requests in `ractogateway_unpriced_requests_total`: off
    /// by default, so that a workload of the reference's arguments prints the
    /// reference's bytes.
    pub fn set_count_unpriced(&mut self, count: bool) {
        self.count_unpriced = count;
    }

    /// The `(provider, model)` pairs found without a price since the last
    /// call, and whether the first model past the [`NAMED_UNPRICED_MODELS`]
    /// was found since then.
    pub fn take_unpriced_models(&self) -> (Vec<(String, String)>, bool) {
        self.notices.fetch_and(!UNPRICED_NOTICE, Ordering::Acquire);
        let mut models = self
            .unpriced_models
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let past_named = std::mem::take(&mut models.past_named_unreported);
        (std::mem::take(&mut models.unreported), past_named)
    }

    /// Sets the cap on label sets per family (see [`Store::capped`]).
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
        if map.len() < self.max_series {
            return (map.get_or_insert_with(key, || make(key)), false);
        }
        // A token type is one of a fixed few: it is kept, so that the overflow
        // series of the token families still tell input from output.
        let sources = &self.schema.family(family).sources;
        let overflow: SmallVec<[&str; 8]> = key
            .iter()
            .enumerate()
            .map(|(at, value)| match sources.get(at) {
                Some(LabelSource::TokenType) => *value,
                _ => OVERFLOW_VALUE,
            })
            .collect();
        let entry = map.get_or_insert_with(&overflow, || make(&overflow));
        self.note_overflow(family);
        (entry, true)
    }

    /// Counts one recording folded into `family`'s overflow series.
    fn note_overflow(&self, family: FamilyId) {
        let name = self.schema.family(family).name;
        let series = &self
            .counters(OVERFLOW)
            .get_or_insert_with(&[name], || {
                CounterSeries::new(&self.arena, OVERFLOW, &[name])
            })
            .value;
        series.value.inc(self.recording);
        let bit = 1 << family;
        if self.overflowed.fetch_or(bit, Ordering::Relaxed) & bit == 0 {
            self.notices.fetch_or(bit, Ordering::Release);
        }
    }

    /// Whether a family folded a label set for the first time since
    /// [`Store::take_overflowed_families`] last looked.
    #[inline]
    pub fn has_notices(&self) -> bool {
        self.notices.load(Ordering::Relaxed) != 0
    }

    /// The names of the families that folded a label set for the first time
    /// since the last call: each is reported once per store.
    pub fn take_overflowed_families(&self) -> Vec<&'static str> {
        let bits = self.notices.fetch_and(UNPRICED_NOTICE, Ordering::Acquire) & !UNPRICED_NOTICE;
        self.schema
            .families()
            .iter()
            .filter(|family| bits & (1 << family.id) != 0)
            .map(|family| family.name)
            .collect()
    }

    /// Records one completed request: its count, latency, tokens, cost and
    /// optional observations, as the recording rules say.
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
        self.record_known_request_on(entry, values, self.runs_more_rules(values));
    }

    /// Whether the rules of the values beyond the reference's run for
    /// `values` (see [`rules::record`]): it has some, or every request's token
    /// usage is kept.
    #[inline]
    pub fn runs_more_rules(&self, values: &RequestValues) -> bool {
        values.has_more() || self.token_usage
    }

    /// [`Store::record_request_on`] for a caller that knows whether the rules
    /// of the values beyond the reference's must run (see [`rules::record`]):
    /// `values` has some, or [`Store::keeps_token_usage`].
    #[inline]
    pub fn record_known_request_on(
        &self,
        entry: &RequestEntry,
        values: &RequestValues,
        more: bool,
    ) {
        rules::record(
            values,
            more,
            entry.value.price.as_ref(),
            &mut AtomicSink { store: self, entry },
        );
    }

    /// The histogram series at `index` of
    /// [`crate::schema::family::OPTIONAL_OBSERVED`] that a requests entry
    /// feeds, and its buckets, created on first use.
    pub(crate) fn observed_series<'s>(
        &'s self,
        entry: &'s RequestEntry,
        index: usize,
    ) -> (&'s HistogramSeries, &'s Buckets, Option<&'s NativeConfig>) {
        let (family, observed) = OPTIONAL_OBSERVED[index];
        let buckets = self.schema.buckets(family);
        let native = self.schema.family(family).native;
        let more = entry.value.more.get_or_default(&self.first_use);
        let series = more.observed[index].get_or_init(&self.first_use, || {
            let token_type = match observed {
                Observed::TokenCount(token_type) => TOKEN_TYPES[token_type].name,
                _ => "",
            };
            let key = self
                .schema
                .derived_key(family, |at| entry.label(at), token_type);
            let (created, _) = self.capped(self.histograms(family), family, &key, |key| {
                HistogramSeries::new(&self.arena, family, key, buckets, native.as_ref())
            });
            &created.value
        });
        (series, buckets, self.schema.family(family).native.as_ref())
    }

    /// Keeps an exemplar of `labels` (checked with
    /// [`Exemplar::check_labels`]) at `timestamp` for the request `values`
    /// recorded on `entry`: on the duration bucket its latency fell in, and on
    /// the time-to-first-token bucket when it streamed.
    pub fn attach_exemplar(
        &self,
        entry: &RequestEntry,
        values: &RequestValues,
        labels: &[(String, String)],
        timestamp: f64,
    ) {
        let exemplar = |value| Exemplar {
            labels: labels.to_vec(),
            value,
            timestamp,
        };
        let buckets = &self.latency_buckets;
        self.keep_exemplar(
            entry.value.duration.get(),
            buckets.index(values.latency_s),
            buckets.count(),
            exemplar(values.latency_s),
        );
        let first_token = OPTIONAL_OBSERVED
            .iter()
            .position(|(family, _)| *family == TIME_TO_FIRST_TOKEN);
        if let (Some(index), Some(first)) = (first_token, values.seconds[TIME_TO_FIRST_TOKEN_S]) {
            let (series, buckets, _) = self.observed_series(entry, index);
            self.keep_exemplar(
                series,
                buckets.index(first),
                buckets.count(),
                exemplar(first),
            );
        }
    }

    /// Keeps `exemplar` as bucket `bucket`'s (of `buckets`) in `series`, and in
    /// the store's shared file when it keeps exemplars.
    fn keep_exemplar(
        &self,
        series: &HistogramSeries,
        bucket: usize,
        buckets: usize,
        exemplar: Exemplar,
    ) {
        let first = series.histogram.first_cell();
        let share = |label_cells| self.arena.exemplar_slot(first, bucket, label_cells);
        let share: Option<ShareSlot<'_>> = self.arena.keeps_exemplars().then_some(&share);
        series.exemplars.record(bucket, buckets, exemplar, share);
    }

    /// Keeps `exemplar` on bucket `bucket` of the series of histogram `family`
    /// with label values `labels` (in the family's order), if it has that
    /// series (a merged snapshot's, say; a label set folded past the cap
    /// keeps none).
    pub fn add_exemplar(
        &self,
        family: FamilyId,
        labels: &[&str],
        bucket: usize,
        exemplar: Exemplar,
    ) {
        let FamilySeries::Histogram(map) = &self.families[usize::from(family)] else {
            return;
        };
        if let Some(entry) = map.get(labels) {
            let buckets = self.schema.buckets(family).count();
            self.keep_exemplar(&entry.value, bucket, buckets, exemplar);
        }
    }

    /// The cost series a requests entry feeds, created on first use.
    pub(crate) fn cost_series<'s>(&'s self, entry: &'s RequestEntry) -> &'s CostSeries {
        entry.value.cost.get_or_init(&self.first_use, || {
            let key = self.schema.derived_key(COST, |at| entry.label(at), "");
            let (created, _) = self.capped(self.sums(COST), COST, &key, |key| {
                CostSeries::new(&self.arena, COST, key)
            });
            &created.value
        })
    }

    /// The series of a token type (an index into
    /// [`crate::schema::request::TOKEN_TYPES`]) that a requests entry feeds,
    /// created on first use.
    pub(crate) fn token_series<'s>(
        &'s self,
        entry: &'s RequestEntry,
        token_type: usize,
    ) -> &'s CounterSeries {
        let slot = match entry.value.tokens.get(token_type) {
            Some(slot) => slot,
            None => {
                &entry.value.more.get_or_default(&self.first_use).tokens
                    [token_type - REFERENCE_TOKEN_TYPES]
            }
        };
        slot.get_or_init(&self.first_use, || {
            let name = TOKEN_TYPES[token_type].name;
            let key = self.schema.derived_key(TOKENS, |at| entry.label(at), name);
            let (created, _) = self.capped(self.counters(TOKENS), TOKENS, &key, |key| {
                CounterSeries::new(&self.arena, TOKENS, key)
            });
            &created.value
        })
    }

    /// The tool-call series of `tool_name`, created on first use.
    #[inline]
    pub fn tool_call_series(&self, tool_name: &str) -> &CounterSeries {
        self.tool_call_series_capped(tool_name).0
    }

    /// Like [`Store::tool_call_series`]; also says whether the name was folded
    /// into the overflow series.
    pub fn tool_call_series_capped(&self, tool_name: &str) -> (&CounterSeries, bool) {
        self.counter_series_capped(TOOL_CALLS, tool_name)
    }

    /// The series of the one-label counter `family` for `value`, created on
    /// first use, and whether it was folded into the overflow series.
    fn counter_series_capped(&self, family: FamilyId, value: &str) -> (&CounterSeries, bool) {
        let (entry, folded) = self.capped(self.counters(family), family, &[value], |key| {
            CounterSeries::new(&self.arena, family, key)
        });
        (&entry.value, folded)
    }

    /// Adds one tool call named `tool_name`.
    #[inline]
    pub fn record_tool_call(&self, tool_name: &str) {
        self.count(self.tool_call_series(tool_name));
    }

    /// The cache-hit or cache-miss series of `cache_type`, created on first use.
    #[inline]
    pub fn cache_series(&self, outcome: CacheOutcome, cache_type: &str) -> &CounterSeries {
        self.cache_series_capped(outcome, cache_type).0
    }

    /// Like [`Store::cache_series`]; also says whether the cache type was
    /// folded into the overflow series.
    pub fn cache_series_capped(
        &self,
        outcome: CacheOutcome,
        cache_type: &str,
    ) -> (&CounterSeries, bool) {
        let family = match outcome {
            CacheOutcome::Hit => CACHE_HITS,
            CacheOutcome::Miss => CACHE_MISSES,
        };
        self.counter_series_capped(family, cache_type)
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

    /// Walks every family and sample in exposition order, reading each series once.
    pub fn visit(&self, include_created: bool, visitor: &mut impl SampleVisitor) {
        self.visit_series(
            ReadMode::Keep,
            &mut Samples {
                include_created,
                visitor,
            },
        );
    }

    /// Hands every family's series to `visitor` in exposition order, reading
    /// each series once as `mode` says.
    pub fn visit_series(&self, mode: ReadMode, visitor: &mut impl SeriesVisitor) {
        fn views<'m, V>(
            map: &'m LabelMap<V>,
            read: impl Fn(&V) -> (Reading, f64) + 'm,
        ) -> impl Iterator<Item = SeriesView<'m>> + 'm {
            let entries = map.snapshot();
            (0..entries.len()).map(move |at| {
                // Entries and their labels lie scattered over the heap: the
                // entry 2 * PREFETCH_AHEAD series ahead is fetched, and the
                // labels of the one PREFETCH_AHEAD ahead (fetched by then).
                if let Some(ahead) = entries.get(at + 2 * PREFETCH_AHEAD) {
                    prefetch(std::ptr::from_ref(*ahead));
                }
                if let Some(ahead) = entries.get(at + PREFETCH_AHEAD) {
                    ahead.prefetch_labels();
                }
                let entry = entries[at];
                let (reading, created) = read(&entry.value);
                SeriesView {
                    id: std::ptr::from_ref::<Entry<V>>(entry) as usize,
                    labels: entry.label_values().collect(),
                    reading,
                    created,
                }
            })
        }
        let coding = self.recording.coding;
        let reset = mode == ReadMode::Reset;
        let count = |series: &CounterSeries| {
            let count = if reset {
                series.value.take(coding)
            } else {
                series.value.get(coding)
            };
            (Reading::Count(count), series.created)
        };
        for (family, series) in self.schema.families().iter().zip(self.families.iter()) {
            match series {
                FamilySeries::Requests(map) => {
                    let requests = views(map, |series: &RequestSeries| count(&series.requests));
                    visitor.family_series(family, requests);
                }
                FamilySeries::Counter(map) => visitor.family_series(family, views(map, count)),
                FamilySeries::Sum(map) => {
                    let sums = views(map, |series: &CostSeries| {
                        let sum = if reset {
                            series.value.take()
                        } else {
                            series.value.get()
                        };
                        (Reading::Sum(sum), series.created)
                    });
                    visitor.family_series(family, sums);
                }
                FamilySeries::Histogram(map) => {
                    let buckets = self.schema.buckets(family.id);
                    // A reset takes every cell, whatever the visitor shows.
                    let native_config = family.native.filter(|_| reset || visitor.wants_native());
                    let histograms = views(map, |series: &HistogramSeries| {
                        let histogram = &series.histogram;
                        let mut snapshot = if reset {
                            histogram.take(buckets, coding)
                        } else {
                            histogram.snapshot(buckets, coding)
                        };
                        snapshot.exemplars = if reset {
                            series.exemplars.take()
                        } else {
                            series.exemplars.read()
                        };
                        if let (Some(config), Some(native)) =
                            (&native_config, histogram.native_cells(buckets))
                        {
                            snapshot.native = Some(if reset {
                                native.take(config)
                            } else {
                                native.snapshot(config)
                            });
                        }
                        (Reading::Histogram(snapshot), series.created)
                    });
                    visitor.family_series(family, histograms);
                }
            }
        }
    }

    /// Adds the values of one series recorded elsewhere (a snapshot's) to the
    /// series of `family` with label values `labels` (in the family's label
    /// order), created if new and folded past the cap like a recording.
    /// `cells` are laid out as [`crate::schema::family::FamilyDesc::cells`] says:
    /// counts, or the bits of a float sum, or bucket counts then the sum's bits.
    pub fn add_series(&self, family: FamilyId, labels: &[&str], cells: &[u64]) {
        let recording = self.recording;
        match &self.families[usize::from(family)] {
            FamilySeries::Requests(_) => {
                let positions = self.schema.request_positions();
                let extra: SmallVec<[&str; 4]> =
                    positions[4..].iter().map(|at| labels[*at]).collect();
                let request = RequestLabels {
                    provider: labels[positions[0]],
                    model: labels[positions[1]],
                    operation: labels[positions[2]],
                    status: labels[positions[3]],
                    extra: &extra,
                };
                let (entry, _) = self.request_entry_capped(&request);
                entry.value.requests.value.add(cells[0], recording);
            }
            FamilySeries::Histogram(map) => {
                let buckets = self.schema.buckets(family);
                let native = self.schema.family(family).native;
                let (entry, _) = self.capped(map, family, labels, |key| {
                    HistogramSeries::new(&self.arena, family, key, buckets, native.as_ref())
                });
                let snapshot = HistogramSnapshot::from_cells(cells, native.as_ref());
                let histogram = &entry.value.histogram;
                let classic = &cells[..=buckets.count()];
                let (sum, counts) = classic.split_last().unwrap_or((&0, &[]));
                histogram.merge(counts, f64::from_bits(*sum), recording);
                if let (Some(config), Some(cells), Some(added)) =
                    (&native, histogram.native_cells(buckets), &snapshot.native)
                {
                    cells.merge(added, config, recording.writers);
                }
            }
            FamilySeries::Sum(map) => {
                let (entry, _) = self.capped(map, family, labels, |key| {
                    CostSeries::new(&self.arena, family, key)
                });
                entry.value.value.add(f64::from_bits(cells[0]), recording);
            }
            // Overflow counts are not capped: their label set is a family name.
            FamilySeries::Counter(map) if family == OVERFLOW => map
                .get_or_insert_with(labels, || CounterSeries::new(&self.arena, family, labels))
                .value
                .value
                .add(cells[0], recording),
            FamilySeries::Counter(map) => {
                let (entry, _) = self.capped(map, family, labels, |key| {
                    CounterSeries::new(&self.arena, family, key)
                });
                entry.value.value.add(cells[0], recording);
            }
        }
    }
}

/// The recording rules' sink of a single call: adds to the entry's series at once.
struct AtomicSink<'s> {
    store: &'s Store,
    entry: &'s RequestEntry,
}

impl Sink for AtomicSink<'_> {
    #[inline]
    fn request(&mut self) {
        self.entry.value.requests.value.inc(self.store.recording);
    }

    #[inline]
    fn latency(&mut self, seconds: f64) {
        let store = self.store;
        let histogram = &self.entry.value.duration.get().histogram;
        histogram.observe(seconds, &store.latency_buckets, store.recording);
        if let Some(config) = &store.latency_native {
            observe_native(histogram, &store.latency_buckets, config, seconds, store);
        }
    }

    #[inline]
    fn tokens(&mut self, token_type: usize, count: u64) {
        let store = self.store;
        store
            .token_series(self.entry, token_type)
            .value
            .add(count, store.recording);
    }

    #[inline]
    fn cost(&mut self, usd: f64) {
        let store = self.store;
        store
            .cost_series(self.entry)
            .value
            .add(usd, store.recording);
    }

    #[inline]
    fn unpriced(&mut self) {
        if let Some(unpriced) = self.store.unpriced_series(self.entry) {
            unpriced.value.inc(self.store.recording);
        }
    }

    #[inline]
    fn observe(&mut self, index: usize, seconds: f64) {
        let (series, buckets, native) = self.store.observed_series(self.entry, index);
        series
            .histogram
            .observe(seconds, buckets, self.store.recording);
        if let Some(config) = native {
            observe_native(&series.histogram, buckets, config, seconds, self.store);
        }
    }

    #[inline]
    fn keeps_token_usage(&self) -> bool {
        self.store.token_usage
    }
}

/// Records `seconds` in `histogram`'s native histogram too.
#[cold]
fn observe_native(
    histogram: &Histogram,
    buckets: &Buckets,
    config: &NativeConfig,
    seconds: f64,
    store: &Store,
) {
    if let Some(native) = histogram.native_cells(buckets) {
        native.observe(seconds, config, store.recording.writers);
    }
}

/// Whether reading a series leaves its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Values stay: a scrape.
    Keep,
    /// Values are taken, leaving zeros: a snapshot of what was recorded since the last one.
    Reset,
}

#[cfg(test)]
// Floats are written as the exposition prints them, digit for digit.
#[allow(clippy::unreadable_literal)]
mod tests {
    use super::*;
    use crate::schema::family::FamilyDesc;
    use crate::store::batch::Batch;
    use crate::store::pricing::Price;
    use crate::store::series::unix_now;

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
