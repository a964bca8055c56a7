//! A small cache from the identity of label `str` objects to their series.
//!
//! Call sites pass the same `str` objects again and again: a kit's provider
//! constant, its configured model name, literal operations and statuses. While
//! the cache holds a strong reference to a `str`, no other object can live at
//! its address, and a `str` never changes, so equal pointers prove equal text:
//! a hit skips UTF-8 decoding, hashing and comparing the label values. The
//! cache is guarded by the GIL rather than a lock (every caller holds the GIL;
//! see [`GilCell`]).
//! Entries are only ever replaced, never invalidated, because series are never
//! removed from the store.
//!
//! Only exact `str` objects are cached (a subclass's label is what `str()` makes
//! of it, on every call, as in `prometheus_client`), and a replaced entry's
//! references are released at once with the GIL: the raw fast-call methods run
//! without `PyO3`'s GIL bookkeeping, where a plain drop would park the references
//! in `PyO3`'s deferred pool until some other call drained it.

use std::cell::RefCell;
use std::ptr::NonNull;

use pyo3::prelude::*;
use pyo3::types::PyString;

/// A value reached only by threads that hold the GIL, which is its lock.
///
/// The recording calls run once per request: a lock of their own would cost
/// every call an atomic read-modify-write for exclusion the GIL already gives.
/// That holds because the module declares it needs the GIL (`gil_used`): a
/// free-threaded CPython turns the GIL on when it imports the module, and
/// where it was forced off (`PYTHON_GIL=0`, `-X gil=0`) the package refuses to
/// import (`gateway_metrics/__init__.py`), so no interpreter runs this code
/// without it. The
/// `RefCell` inside still refuses a reentrant borrow, should a caller ever call
/// back into Python while borrowing.
pub(super) struct GilCell<T>(RefCell<T>);

// SAFETY: the contents are only reached through `get`, which takes a `Python`
// token: the calling thread holds the GIL, which one thread holds at a time in
// every interpreter the module loads into (see above), so no two threads reach
// the `RefCell` at once. `T: Send` because the thread reaching it changes.
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    pub(super) const fn new(value: T) -> Self {
        GilCell(RefCell::new(value))
    }

    /// The contents, for a thread that holds the GIL.
    #[inline]
    pub(super) fn get(&self, _py: Python<'_>) -> &RefCell<T> {
        &self.0
    }
}

/// Number of ways (entries); a power of two. A key may sit in its home way or the next
/// one, so a handful of label sets used in turn rarely evict each other.
const WAYS: usize = 64;

struct Way<T, const N: usize> {
    keys: [Py<PyString>; N],
    value: NonNull<T>,
}

impl<T, const N: usize> Way<T, N> {
    /// Releases the keys now, with the GIL held.
    fn release(self, py: Python<'_>) {
        for key in self.keys {
            key.drop_ref(py);
        }
    }
}

// SAFETY: `value` points to `Sync` data that outlives the cache (see `insert`);
// the way is only reached with the GIL held.
unsafe impl<T: Sync, const N: usize> Send for Way<T, N> {}

/// Maps `N` label objects, by identity, to a `&T` in the store that owns the cache.
pub(super) struct IdentityCache<T, const N: usize> {
    ways: GilCell<[Option<Way<T, N>>; WAYS]>,
}

fn way_index(pointers: impl IntoIterator<Item = usize>) -> usize {
    let mixed = pointers.into_iter().fold(0_u64, |hash, pointer| {
        (hash ^ (pointer as u64 >> 4)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    });
    (mixed >> (64 - WAYS.trailing_zeros())) as usize
}

impl<T, const N: usize> IdentityCache<T, N> {
    pub(super) fn new() -> Self {
        IdentityCache {
            ways: GilCell::new(std::array::from_fn(|_| None)),
        }
    }

    /// The value cached for exactly these objects, if any.
    #[inline]
    pub(super) fn get<'a>(&'a self, py: Python<'_>, keys: [&Bound<'_, PyAny>; N]) -> Option<&'a T> {
        let home = way_index(keys.iter().map(|key| key.as_ptr() as usize));
        let ways = self.ways.get(py).borrow();
        [home, (home + 1) % WAYS].into_iter().find_map(|index| {
            let way = ways[index].as_ref()?;
            let same = way
                .keys
                .iter()
                .zip(keys)
                .all(|(cached, key)| cached.as_ptr() == key.as_ptr());
            // SAFETY: `insert`'s contract keeps the target alive as long as `self`.
            same.then_some(unsafe { way.value.as_ref() })
        })
    }

    /// Forgets every entry (their targets belong to a store no longer recorded into).
    pub(super) fn clear(&self, py: Python<'_>) {
        let emptied = std::mem::replace(
            &mut *self.ways.get(py).borrow_mut(),
            std::array::from_fn(|_| None),
        );
        for way in emptied.into_iter().flatten() {
            way.release(py);
        }
    }

    /// Remembers `value` for these (validated) label objects.
    ///
    /// # Safety
    /// `value` must stay valid, at the same address, for as long as `self` lives.
    pub(super) unsafe fn insert(&self, py: Python<'_>, keys: [&Bound<'_, PyString>; N], value: &T) {
        let home = way_index(keys.iter().map(|key| key.as_ptr() as usize));
        let way = Way {
            keys: keys.map(|key| key.clone().unbind()),
            value: NonNull::from(value),
        };
        let mut ways = self.ways.get(py).borrow_mut();
        // The home way when free, else the next one (evicting its occupant).
        let index = if ways[home].is_none() {
            home
        } else {
            (home + 1) % WAYS
        };
        let replaced = ways[index].replace(way);
        drop(ways);
        // The evicted `str` references are released after the borrow ends.
        if let Some(replaced) = replaced {
            replaced.release(py);
        }
    }
}
