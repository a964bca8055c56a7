//! What each recording call adds to a store: a request's count, latency,
//! tokens, cost and optional observations (as the recording rules say, through
//! an [`AtomicSink`] over the request's entry), tool calls and cache outcomes;
//! and the series a requests entry feeds, found or created on first use.

use crate::cells::histogram::Histogram;
use crate::schema::buckets::Buckets;
use crate::schema::family::{
    FamilyId, CACHE_HITS, CACHE_MISSES, CACHE_SAVED_TOKENS, CACHE_SAVED_USD, COST, ERRORS,
    OPTIONAL_OBSERVED, OVERFLOW, OVERFLOW_VALUE, TOKENS, TOOL_CALLS, UNPRICED,
};
use crate::schema::native::NativeConfig;
use crate::schema::request::{
    ErrorType, Observed, RequestValues, ERROR_TYPES, INPUT, OUTPUT, REFERENCE_TOKEN_TYPES,
    TOKEN_TYPES, TOKEN_TYPE_COUNT,
};
use crate::store::rules::{self, Sink};
use crate::store::series::{CostSeries, CounterSeries, HistogramSeries, SeriesRef};
use crate::store::{CacheOutcome, RequestEntry, RequestLabels, Store};

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
    fn keeps_semconv_histograms(&self) -> bool {
        self.store.semconv_histograms
    }

    #[inline]
    fn error(&mut self, error_type: ErrorType) {
        let store = self.store;
        store
            .error_series(self.entry, error_type)
            .value
            .inc(store.recording);
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

impl Store {
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
                let model = entry.label(self.schema.model_position());
                if model != OVERFLOW_VALUE {
                    let provider = entry.label(self.schema.request_positions()[0]);
                    self.notices.model_unpriced(provider, model);
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

    /// Counts one recording folded into `family`'s overflow series.
    pub(super) fn note_overflow(&self, family: FamilyId) {
        let name = self.schema.family(family).name.as_ref();
        let series = &self
            .counters(OVERFLOW)
            .get_or_insert_with(&[name], || {
                CounterSeries::new(&self.arena, OVERFLOW, &[name])
            })
            .value;
        series.value.inc(self.recording);
        self.notices.family_folded(family);
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
        values.has_more() || self.semconv_histograms
    }

    /// [`Store::record_request_on`] for a caller that knows whether the rules
    /// of the values beyond the reference's must run (see [`rules::record`]):
    /// `values` has some, or [`Store::keeps_semconv_histograms`].
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
            let derived = match observed {
                Observed::TokenCount(token_type) => TOKEN_TYPES[token_type].name,
                Observed::Outcome(Some(error_type)) => ERROR_TYPES[usize::from(error_type)],
                _ => "",
            };
            let key = self
                .schema
                .derived_key(family, |at| entry.label(at), derived);
            let (created, _) = self.capped(self.histograms(family), family, &key, |key| {
                HistogramSeries::new(&self.arena, family, key, buckets, native.as_ref())
            });
            &created.value
        });
        (series, buckets, self.schema.family(family).native.as_ref())
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

    /// The series counting a requests entry's failures of `error_type` (see
    /// [`crate::schema::request::ERROR_TYPES`]), created on first use. Found by
    /// its labels each time rather than kept on the entry: failures are
    /// rare, and eleven more references would grow every label set.
    pub(crate) fn error_series<'s>(
        &'s self,
        entry: &'s RequestEntry,
        error_type: ErrorType,
    ) -> &'s CounterSeries {
        let name = ERROR_TYPES[usize::from(error_type)];
        let key = self.schema.derived_key(ERRORS, |at| entry.label(at), name);
        let (created, _) = self.capped(self.counters(ERRORS), ERRORS, &key, |key| {
            CounterSeries::new(&self.arena, ERRORS, key)
        });
        &created.value
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

    /// Records what a response served from the gateway's cache saved: the
    /// `input_tokens` and `output_tokens` a call of `model` of `provider`
    /// would have spent, and their cost, priced as a request of that model
    /// with those tokens would have been (a per-request fee included). A
    /// model without a price saves tokens and no cost, and is noted as a
    /// request's would be.
    pub fn record_cache_savings(
        &self,
        provider: &str,
        model: &str,
        input_tokens: u64,
        output_tokens: u64,
    ) {
        let mut tokens = [0; TOKEN_TYPE_COUNT];
        tokens[INPUT] = input_tokens;
        tokens[OUTPUT] = output_tokens;
        for (token_type, count) in tokens.iter().enumerate() {
            if *count > 0 {
                let key = [model, provider, TOKEN_TYPES[token_type].name];
                let (series, _) = self.capped(
                    self.counters(CACHE_SAVED_TOKENS),
                    CACHE_SAVED_TOKENS,
                    &key,
                    |key| CounterSeries::new(&self.arena, CACHE_SAVED_TOKENS, key),
                );
                series.value.value.add(*count, self.recording);
            }
        }
        match self.saved_price(provider, model) {
            Some(price) => {
                let usd = price.cost(&tokens);
                if usd > 0.0 {
                    let (series, _) = self.capped(
                        self.sums(CACHE_SAVED_USD),
                        CACHE_SAVED_USD,
                        &[model, provider],
                        |key| CostSeries::new(&self.arena, CACHE_SAVED_USD, key),
                    );
                    series.value.value.add(usd, self.recording);
                }
            }
            None if input_tokens | output_tokens != 0 && model != OVERFLOW_VALUE => {
                self.notices.model_unpriced(provider, model);
            }
            None => {}
        }
    }
}
