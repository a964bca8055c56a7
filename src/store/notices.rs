//! What a store has to tell its owner: families that folded label sets past
//! the cap, and models found without a price. A word of bits, one per family
//! and one for the models, says at a glance (on every recording call) whether
//! there is news; the names wait here until taken.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::schema::family::{FamilyDesc, FamilyId, FAMILY_COUNT};

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

/// The bit of the notices word that says unpriced models wait to be reported;
/// the others are families that folded label sets.
const UNPRICED_NOTICE: u32 = 1 << 31;

// A family's notice is bit `1 << id` of the same word: a 32nd family would
// need a wider one.
const _: () = assert!(
    FAMILY_COUNT < 31,
    "the notices word has a bit per family below 31"
);

/// The news a store keeps for its owner, and the models it found unpriced.
#[derive(Default)]
pub struct Notices {
    /// A bit per family that folded a label set since the owner last looked,
    /// and [`UNPRICED_NOTICE`].
    word: AtomicU32,
    /// A bit per family that ever folded a label set: each is told once.
    overflowed: AtomicU32,
    /// The models found without a price.
    unpriced: Mutex<UnpricedModels>,
}

impl Notices {
    /// Whether there is news (read on every recording call).
    #[inline]
    pub fn any(&self) -> bool {
        self.word.load(Ordering::Relaxed) != 0
    }

    /// Notes that `family` folded a label set: news the first time.
    pub fn family_folded(&self, family: FamilyId) {
        let bit = 1 << family;
        if self.overflowed.fetch_or(bit, Ordering::Relaxed) & bit == 0 {
            self.word.fetch_or(bit, Ordering::Release);
        }
    }

    /// Notes that `model` of `provider` had no price: news the first time.
    pub fn model_unpriced(&self, provider: &str, model: &str) {
        if self.unpriced().note(provider, model) {
            self.word.fetch_or(UNPRICED_NOTICE, Ordering::Release);
        }
    }

    /// The names of `families` that folded a label set for the first time
    /// since the last call.
    pub fn take_overflowed_families<'f>(&self, families: &'f [FamilyDesc]) -> Vec<&'f str> {
        let bits = self.word.fetch_and(UNPRICED_NOTICE, Ordering::Acquire) & !UNPRICED_NOTICE;
        families
            .iter()
            .filter(|family| bits & (1 << family.id) != 0)
            .map(|family| family.name.as_ref())
            .collect()
    }

    /// The `(provider, model)` pairs found without a price since the last
    /// call, and whether the first model past the [`NAMED_UNPRICED_MODELS`]
    /// was found since then.
    pub fn take_unpriced_models(&self) -> (Vec<(String, String)>, bool) {
        self.word.fetch_and(!UNPRICED_NOTICE, Ordering::Acquire);
        let mut models = self.unpriced();
        let past_named = std::mem::take(&mut models.past_named_unreported);
        (std::mem::take(&mut models.unreported), past_named)
    }

    fn unpriced(&self) -> MutexGuard<'_, UnpricedModels> {
        self.unpriced.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
