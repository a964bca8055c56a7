//! The series of each family, as a store holds them: where their values live,
//! when they were created, and (for a requests series) the series it feeds.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cells::arena::{CellArena, Cells, SeriesDescription};
use crate::cells::counter::{Counter, FloatCounter};
use crate::cells::exemplar::ExemplarSlots;
use crate::cells::histogram::Histogram;
use crate::schema::buckets::Buckets;
use crate::schema::family::{FamilyId, OPTIONAL_OBSERVATIONS};
use crate::schema::native::NativeConfig;
use crate::schema::request::{REFERENCE_TOKEN_TYPES, TOKEN_TYPE_COUNT};
use crate::store::pricing::Price;

/// Now, in seconds since the Unix epoch.
pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

/// A reference from one series to another series of the same [`crate::store::Store`].
///
/// Series live in insert-only [`crate::store::label_map::LabelMap`]s that never move or free an entry
/// before the map is dropped, and every map belongs to the same `Store` as the
/// series holding the reference; references are only followed through `&Store`.
/// Plain references would need a self-referential lifetime; this is that
/// reference, minus the reference count an `Arc` would add to every label set.
pub(crate) struct SeriesRef<T>(NonNull<T>);

// SAFETY: the target is shared immutably (all mutation is through atomics) and
// outlives every holder, as explained on the type.
unsafe impl<T: Sync> Send for SeriesRef<T> {}
// SAFETY: holders only read the target, whose every mutation is atomic, and it
// outlives them.
unsafe impl<T: Sync> Sync for SeriesRef<T> {}

impl<T> SeriesRef<T> {
    pub(crate) fn new(target: &T) -> Self {
        SeriesRef(NonNull::from(target))
    }

    #[inline]
    pub(crate) fn get(&self) -> &T {
        // SAFETY: the target lives in the store's arena or maps, which outlive
        // every `SeriesRef` into them, and is only mutated through atomics.
        unsafe { self.0.as_ref() }
    }
}

/// A [`SeriesRef`] that starts empty and is set once, on first use, in one
/// pointer (a `OnceLock` of one takes two words): a requests series holds a
/// dozen, one per series it may feed.
pub(crate) struct LazySeriesRef<T>(AtomicPtr<T>);

// SAFETY: only a pointer to a series shared immutably (every mutation is
// atomic), which outlives the holder, as for `SeriesRef`.
unsafe impl<T: Sync> Send for LazySeriesRef<T> {}
// SAFETY: as for `Send`; the pointer itself is an atomic.
unsafe impl<T: Sync> Sync for LazySeriesRef<T> {}

impl<T> Default for LazySeriesRef<T> {
    fn default() -> Self {
        LazySeriesRef(AtomicPtr::new(std::ptr::null_mut()))
    }
}

impl<T> LazySeriesRef<T> {
    /// The series, once set.
    #[inline]
    pub(crate) fn get(&self) -> Option<&T> {
        // SAFETY: null, or set by `get_or_init` to a series of the store that
        // holds this reference, which outlives it (see `SeriesRef`).
        unsafe { self.0.load(Ordering::Acquire).as_ref() }
    }

    /// The series, found or made by `init` on first use. The first use holds
    /// `first_use`, so that one caller makes the series and racing callers
    /// find it, as with a `OnceLock` (two could otherwise pick different series
    /// at the `max_series` cap).
    #[inline]
    pub(crate) fn get_or_init<'s>(
        &'s self,
        first_use: &Mutex<()>,
        init: impl FnOnce() -> &'s T,
    ) -> &'s T {
        match self.get() {
            Some(found) => found,
            None => self.initialize(first_use, init),
        }
    }

    /// The first use: out of line, so that the hot path stays a load and a test.
    #[cold]
    #[inline(never)]
    fn initialize<'s>(&'s self, first_use: &Mutex<()>, init: impl FnOnce() -> &'s T) -> &'s T {
        let _only = first_use
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(found) = self.get() {
            return found;
        }
        let made = init();
        self.0
            .store(std::ptr::from_ref(made).cast_mut(), Ordering::Release);
        made
    }
}

/// An owned value made on first use, in one pointer: what most label sets
/// never need costs them eight bytes.
pub(crate) struct LazyBox<T>(AtomicPtr<T>);

// SAFETY: it owns its value as a `Box` would, set once and then only shared.
unsafe impl<T: Send> Send for LazyBox<T> {}
// SAFETY: as for `Send`; the value is shared immutably once set, the pointer
// itself is an atomic.
unsafe impl<T: Sync> Sync for LazyBox<T> {}

impl<T> Default for LazyBox<T> {
    fn default() -> Self {
        LazyBox(AtomicPtr::new(std::ptr::null_mut()))
    }
}

impl<T: Default> LazyBox<T> {
    /// The value, once made.
    #[inline]
    fn get(&self) -> Option<&T> {
        // SAFETY: null, or set once in `initialize` to a leaked `Box` this
        // owns until drop.
        unsafe { self.0.load(Ordering::Acquire).as_ref() }
    }

    /// The value, made on first use while `first_use` is held (see
    /// [`LazySeriesRef::get_or_init`]).
    #[inline]
    pub(crate) fn get_or_default(&self, first_use: &Mutex<()>) -> &T {
        match self.get() {
            Some(found) => found,
            None => self.initialize(first_use),
        }
    }

    #[cold]
    #[inline(never)]
    fn initialize(&self, first_use: &Mutex<()>) -> &T {
        let _only = first_use
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Racing callers wait on the lock, then find the value made.
        if let Some(found) = self.get() {
            return found;
        }
        let made = Box::into_raw(Box::<T>::default());
        self.0.store(made, Ordering::Release);
        // SAFETY: just made from a `Box`, freed only on drop.
        unsafe { &*made }
    }
}

impl<T> Drop for LazyBox<T> {
    fn drop(&mut self) {
        let pointer = *self.0.get_mut();
        if !pointer.is_null() {
            // SAFETY: made by `Box::into_raw` in `initialize`, freed once, here.
            drop(unsafe { Box::from_raw(pointer) });
        }
    }
}

/// A counter series and the time it was created (its `_created` sample).
pub struct CounterSeries {
    /// The count.
    pub value: Cells<Counter>,
    /// Unix time of creation in seconds.
    pub created: f64,
}

impl CounterSeries {
    pub(crate) fn new(arena: &CellArena, family: FamilyId, labels: &[&str]) -> Self {
        let created = unix_now();
        CounterSeries {
            value: arena.allocate(&SeriesDescription {
                family,
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
    pub value: Cells<FloatCounter>,
    /// Unix time of creation in seconds.
    pub created: f64,
}

impl CostSeries {
    pub(crate) fn new(arena: &CellArena, family: FamilyId, labels: &[&str]) -> Self {
        let created = unix_now();
        CostSeries {
            value: arena.allocate(&SeriesDescription {
                family,
                labels,
                created,
            }),
            created,
        }
    }
}

/// A histogram series of one label set.
pub struct HistogramSeries {
    /// The buckets and sum.
    pub histogram: Histogram,
    /// The last exemplar of each bucket, once one is given.
    pub exemplars: ExemplarSlots,
    /// Unix time of creation in seconds.
    pub created: f64,
}

impl HistogramSeries {
    pub(crate) fn new(
        arena: &CellArena,
        family: FamilyId,
        labels: &[&str],
        buckets: &Buckets,
        native: Option<&NativeConfig>,
    ) -> Self {
        let created = unix_now();
        let series = SeriesDescription {
            family,
            labels,
            created,
        };
        HistogramSeries {
            histogram: Histogram::allocate(arena, &series, buckets, native),
            exemplars: ExemplarSlots::default(),
            created,
        }
    }
}

/// The requests counter of one label set, its model's price and the series it
/// feeds: the duration histogram from the start, the others from the first
/// request that needs them.
pub struct RequestSeries {
    pub(crate) requests: CounterSeries,
    pub(crate) price: Option<Price>,
    pub(crate) duration: SeriesRef<HistogramSeries>,
    /// The reference's token types', in the order of
    /// [`crate::schema::request::TOKEN_TYPES`].
    pub(crate) tokens: [LazySeriesRef<CounterSeries>; REFERENCE_TOKEN_TYPES],
    pub(crate) cost: LazySeriesRef<CostSeries>,
    /// The series of the values beyond the reference's, which most label sets
    /// never see: kept apart, made on first use.
    pub(crate) more: LazyBox<MoreSeries>,
    pub(crate) unpriced: OnceLock<Option<SeriesRef<CounterSeries>>>,
}

/// The series a requests series feeds with values beyond the reference's.
#[derive(Default)]
pub(crate) struct MoreSeries {
    /// One per token type past the reference's, in the order of
    /// [`crate::schema::request::TOKEN_TYPES`].
    pub(crate) tokens: [LazySeriesRef<CounterSeries>; TOKEN_TYPE_COUNT - REFERENCE_TOKEN_TYPES],
    /// One per optional histogram, in the order of
    /// [`crate::schema::family::OPTIONAL_OBSERVED`].
    pub(crate) observed: [LazySeriesRef<HistogramSeries>; OPTIONAL_OBSERVATIONS],
}
