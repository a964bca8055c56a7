//! Where series values live: atomics handed out by a per-store arena.
//!
//! Every value of a series (a counter, a float sum, a histogram's buckets and
//! sum) is a run of `AtomicU64` slots allocated once, when the series is
//! created, and never moved or freed before the store. In a single process the
//! slots come from heap slabs; in multi-process mode they come from the
//! process's memory-mapped file (see [`crate::shared_file`]), so other processes
//! read them and a killed process loses nothing it recorded.

use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use crate::family::Buckets;
use crate::histogram::Histogram;
use crate::prometheus_file::PrometheusFiles;
use crate::shared_file::{SeriesDescription, SharedFile};

/// Values made only of `AtomicU64`s, so they can be laid over allocated slots.
///
/// # Safety
/// The type must be `#[repr(C)]` or `#[repr(transparent)]`, consist of exactly
/// `SLOTS` `AtomicU64`s, and be valid when every slot is zero.
pub unsafe trait SlotValue {
    /// Number of `AtomicU64` slots the value occupies.
    const SLOTS: usize;
}

/// A value living in an arena's slots.
pub struct Slot<T>(NonNull<T>);

// SAFETY: the target is made of atomics and outlives every `Slot` (the arena
// frees nothing before the store that holds both is dropped).
unsafe impl<T: Sync> Send for Slot<T> {}
// SAFETY: the target's atomics are its only state, and it outlives every `Slot`
// (the arena frees nothing before the store holding both is dropped).
unsafe impl<T: Sync> Sync for Slot<T> {}

impl<T> Deref for Slot<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the arena keeps the target allocated until the store that holds
        // this slot is dropped, and the target is made of atomics only.
        unsafe { self.0.as_ref() }
    }
}

/// Slots per heap slab; a slab holds the values of a few hundred series.
const SLAB_SLOTS: usize = 4096;
/// The stride of cells next to each other.
const CELL: usize = std::mem::size_of::<AtomicU64>();

enum Backing {
    Heap,
    File(SharedFile),
    Prometheus(PrometheusFiles),
}

struct ArenaState {
    backing: Backing,
    /// Heap slabs (also the fallback when the file cannot grow), freed on drop.
    slabs: Vec<NonNull<[AtomicU64]>>,
    slab_used: usize,
    /// The first error met while writing the shared file, for the caller to report.
    file_error: Option<String>,
}

// SAFETY: the slabs are owned by the arena and only handed out as shared
// references to atomics; the file is only touched under the mutex.
unsafe impl Send for ArenaState {}

/// Hands out zeroed slots for new series.
pub struct SlotArena {
    state: Mutex<ArenaState>,
}

impl SlotArena {
    /// An arena of heap slabs, for a single process.
    pub fn heap() -> Self {
        Self::with_backing(Backing::Heap)
    }

    /// An arena inside a shared file, for multi-process mode.
    pub fn file(file: SharedFile) -> Self {
        Self::with_backing(Backing::File(file))
    }

    /// An arena inside `prometheus_client`'s multi-process files; counts in it
    /// must be coded as floats ([`crate::counter::Coding::Float`]).
    pub fn prometheus(files: PrometheusFiles) -> Self {
        Self::with_backing(Backing::Prometheus(files))
    }

    fn with_backing(backing: Backing) -> Self {
        SlotArena {
            state: Mutex::new(ArenaState {
                backing,
                slabs: Vec::new(),
                slab_used: SLAB_SLOTS,
                file_error: None,
            }),
        }
    }

    /// Zeroed slots for a new value of type `T`.
    ///
    /// Should the shared file fail to grow (a full disk), the value lives on the
    /// heap instead, unseen by other processes, and [`SlotArena::file_error`]
    /// tells why: a metrics problem must not stop the recording process.
    pub fn allocate<T: SlotValue>(&self, series: &SeriesDescription<'_>) -> Slot<T> {
        let (first, _) = self.allocate_cells(series, T::SLOTS);
        // A value of several slots needs them next to each other: only a heap or
        // shared-file arena hands out those, and values of one slot have no stride.
        Slot(first.cast())
    }

    /// Zeroed cells for a new histogram series of `buckets`.
    pub fn histogram(&self, series: &SeriesDescription<'_>, buckets: &Buckets) -> Histogram {
        let (first, stride) = self.allocate_cells(series, buckets.count() + 1);
        // SAFETY: one zeroed cell per bucket and one for the sum, `stride` apart,
        // that live as long as the arena, which outlives the store's series;
        // the store uses the histogram with these buckets only.
        unsafe { Histogram::from_cells(first, stride) }
    }

    /// `count` zeroed cells and the stride between them in bytes.
    fn allocate_cells(
        &self,
        series: &SeriesDescription<'_>,
        count: usize,
    ) -> (NonNull<AtomicU64>, usize) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let shared = match &mut state.backing {
            Backing::Heap => None,
            Backing::File(file) => Some(file.append_series(series, count).map(|at| (at, CELL))),
            Backing::Prometheus(files) => Some(files.append_series(series)),
        };
        match shared {
            Some(Ok(cells)) => return cells,
            Some(Err(error)) => {
                state.file_error.get_or_insert(error.to_string());
            }
            None => {}
        }
        if state.slab_used + count > SLAB_SLOTS {
            let slab: Box<[AtomicU64]> = (0..SLAB_SLOTS).map(|_| AtomicU64::new(0)).collect();
            state.slabs.push(NonNull::from(Box::leak(slab)));
            state.slab_used = 0;
        }
        let used = state.slab_used;
        state.slab_used += count;
        let slab = state.slabs[state.slabs.len() - 1];
        // SAFETY: `used + count <= SLAB_SLOTS`: zeroed atomics of a slab the arena
        // owns until it is dropped.
        (unsafe { slab.cast::<AtomicU64>().add(used) }, CELL)
    }

    /// The path of the shared file, if the arena has one.
    pub fn file_path(&self) -> Option<std::path::PathBuf> {
        let state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &state.backing {
            Backing::File(file) => Some(file.path().to_path_buf()),
            Backing::Prometheus(files) => Some(files.counter_path().to_path_buf()),
            Backing::Heap => None,
        }
    }

    /// The first error met writing the shared file, if any.
    pub fn file_error(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .file_error
            .clone()
    }
}

impl Drop for SlotArena {
    fn drop(&mut self) {
        let state = self
            .state
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for slab in state.slabs.drain(..) {
            // SAFETY: each slab came from `Box::leak` and is freed once, after
            // every `Slot` into it is gone (they live in the same store).
            drop(unsafe { Box::from_raw(slab.as_ptr()) });
        }
    }
}
