//! What a store has to tell its owner: families that folded label sets past
//! the cap, and models found without a price. A word of bits, one per family
//! and one for the models, says at a glance (on every recording call) whether
//! there is news; the names wait in the store until taken.

use std::sync::atomic::Ordering;

use crate::schema::family::{FamilyId, FAMILY_COUNT, OVERFLOW, OVERFLOW_VALUE, UNPRICED};
use crate::store::series::{CounterSeries, SeriesRef};
use crate::store::{RequestEntry, Store};

/// How many models without a price a store names in warnings. Model names
/// come from callers, and every distinct one would otherwise stay in memory
/// for good (past `max_series` too): past these, one more warning says that
/// further ones go unnamed.
pub const NAMED_UNPRICED_MODELS: usize = 100;

/// The `(provider, model)` pairs a store found without a price (the first
/// [`NAMED_UNPRICED_MODELS`]).
#[derive(Default)]
pub(super) struct UnpricedModels {
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

/// The bit of the notices word that says unpriced models wait to be reported;
/// the others are families that folded label sets.
const UNPRICED_NOTICE: u32 = 1 << 31;

// A family's notice is bit `1 << id` of the same word: a 32nd family would
// need a wider one.
const _: () = assert!(
    FAMILY_COUNT < 31,
    "the notices word has a bit per family below 31"
);

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

    /// Counts one recording folded into `family`'s overflow series.
    pub(super) fn note_overflow(&self, family: FamilyId) {
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
}
