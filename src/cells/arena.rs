//! Where series values live: atomics handed out by a per-store arena.
//!
//! Every value of a series (a counter, a float sum, a histogram's buckets and
//! sum) is a run of `AtomicU64` cells allocated once, when the series is
//! created, and never moved or freed before the store. In a single process the
//! cells come from heap slabs; in multi-process mode they come from the
//! process's memory-mapped file (see [`crate::multiprocess::own_file`]), so other processes
//! read them and a killed process loses nothing it recorded.

use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use crate::cells::exemplar::{SharedSlot, SHARED_HEAD_CELLS};

/// What a new series is, for the record that describes it in a shared file.
#[derive(Debug, Clone, Copy)]
pub struct SeriesDescription<'a> {
    /// The family's identifier (see [`crate::schema::family::FamilyDesc::id`]).
    pub family: u8,
    /// Label values in the family's label order.
    pub labels: &'a [&'a str],
    /// Unix time of creation in seconds.
    pub created: f64,
}

/// A file other processes read, whose cells an arena hands out: our own
/// multi-process file, or `prometheus_client`'s.
pub trait SharedCells: Send {
    /// Appends a new series of `count` cells; returns its first cell and the
    /// stride between its cells in bytes. The cells stay mapped, zeroed, until
    /// the value is dropped.
    fn append_series(
        &mut self,
        series: &SeriesDescription<'_>,
        count: usize,
    ) -> std::io::Result<(NonNull<AtomicU64>, usize)>;

    /// The file's path.
    fn path(&self) -> std::path::PathBuf;

    /// Whether the file keeps exemplars (see [`SharedCells::append_exemplar`]).
    fn keeps_exemplars(&self) -> bool {
        false
    }

    /// Appends a zeroed exemplar slot of `cells` cells for bucket `bucket` of
    /// the histogram whose first cell is `series`; returns its first cell.
    fn append_exemplar(
        &mut self,
        _series: NonNull<AtomicU64>,
        _bucket: usize,
        _cells: usize,
    ) -> std::io::Result<NonNull<AtomicU64>> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

/// Values made only of `AtomicU64`s, so they can be laid over allocated cells.
///
/// # Safety
/// The type must be `#[repr(C)]` or `#[repr(transparent)]`, consist of exactly
/// `CELLS` `AtomicU64`s, and be valid when every cell is zero.
pub unsafe trait CellValue {
    /// Number of `AtomicU64` cells the value occupies.
    const CELLS: usize;
}

/// A value living in an arena's cells.
pub struct Cells<T>(NonNull<T>);

// SAFETY: the target is made of atomics and outlives every `Cells` (the arena
// frees nothing before the store that holds both is dropped).
unsafe impl<T: Sync> Send for Cells<T> {}
// SAFETY: the target's atomics are its only state, and it outlives every `Cells`
// (the arena frees nothing before the store holding both is dropped).
unsafe impl<T: Sync> Sync for Cells<T> {}

impl<T> Deref for Cells<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the arena keeps the target allocated until the store that holds
        // this cell is dropped, and the target is made of atomics only.
        unsafe { self.0.as_ref() }
    }
}

/// Cells per heap slab; a slab holds the values of a few hundred series.
const SLAB_CELLS: usize = 4096;
/// The stride of cells next to each other.
const CELL: usize = std::mem::size_of::<AtomicU64>();

enum Backing {
    Heap,
    Shared(Box<dyn SharedCells>),
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

/// Hands out zeroed cells for new series.
pub struct CellArena {
    state: Mutex<ArenaState>,
    /// Whether the shared file keeps exemplars, known without the lock.
    keeps_exemplars: bool,
}

impl CellArena {
    /// An arena of heap slabs, for a single process.
    pub fn heap() -> Self {
        Self::with_backing(Backing::Heap)
    }

    /// An arena inside a shared file, for multi-process mode (in
    /// `prometheus_client`'s files, counts must be coded as floats:
    /// [`crate::cells::counter::Coding::Float`]).
    pub fn shared(file: Box<dyn SharedCells>) -> Self {
        Self::with_backing(Backing::Shared(file))
    }

    fn with_backing(backing: Backing) -> Self {
        let keeps_exemplars = matches!(&backing, Backing::Shared(file) if file.keeps_exemplars());
        CellArena {
            keeps_exemplars,
            state: Mutex::new(ArenaState {
                backing,
                slabs: Vec::new(),
                slab_used: 0,
                file_error: None,
            }),
        }
    }

    /// Zeroed cells for a new value of type `T`.
    ///
    /// Should the shared file fail to grow (a full disk), the value lives on the
    /// heap instead, unseen by other processes, and [`CellArena::file_error`]
    /// tells why: a metrics problem must not stop the recording process.
    pub fn allocate<T: CellValue>(&self, series: &SeriesDescription<'_>) -> Cells<T> {
        let (first, _) = self.allocate_cells(series, T::CELLS);
        // A value of several cells needs them next to each other: only a heap or
        // shared-file arena hands out those, and values of one cell have no stride.
        Cells(first.cast())
    }

    /// `count` zeroed cells and the stride between them in bytes.
    pub fn allocate_cells(
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
            Backing::Shared(file) => Some(file.append_series(series, count)),
        };
        match shared {
            Some(Ok(cells)) => return cells,
            Some(Err(error)) => {
                state.file_error.get_or_insert(error.to_string());
            }
            None => {}
        }
        let slab_len = state.slabs.last().map_or(0, |slab| slab.len());
        if state.slab_used + count > slab_len {
            // A series of more cells than a slab holds (a native histogram of
            // thousands of buckets, thousands of latency buckets) gets a slab of
            // its own size.
            let len = count.max(SLAB_CELLS);
            let slab: Box<[AtomicU64]> = (0..len).map(|_| AtomicU64::new(0)).collect();
            state.slabs.push(NonNull::from(Box::leak(slab)));
            state.slab_used = 0;
        }
        let used = state.slab_used;
        state.slab_used += count;
        let slab = state.slabs[state.slabs.len() - 1];
        assert!(used + count <= slab.len(), "a slab too small for its cells");
        // SAFETY: `used + count <= slab.len()` (asserted): zeroed atomics of a
        // slab the arena owns until it is dropped.
        (unsafe { slab.cast::<AtomicU64>().add(used) }, CELL)
    }

    /// Whether exemplars go to the shared file too (see [`CellArena::exemplar_slot`]).
    pub fn keeps_exemplars(&self) -> bool {
        self.keeps_exemplars
    }

    /// A new slot in the shared file for the exemplar of bucket `bucket` of
    /// the histogram whose first cell is `series`, with `label_cells` cells
    /// of label bytes; None when the file keeps no exemplars or cannot grow
    /// (the exemplar is then kept in memory only, and the error noted).
    pub fn exemplar_slot(
        &self,
        series: NonNull<AtomicU64>,
        bucket: usize,
        label_cells: usize,
    ) -> Option<SharedSlot> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Backing::Shared(file) = &mut state.backing else {
            return None;
        };
        match file.append_exemplar(series, bucket, SHARED_HEAD_CELLS + label_cells) {
            // SAFETY: the file handed out that many zeroed cells next to each
            // other, mapped until the arena (and so the store) is dropped.
            Ok(first) => Some(unsafe { SharedSlot::new(first, label_cells) }),
            Err(error) => {
                state.file_error.get_or_insert(error.to_string());
                None
            }
        }
    }

    /// The path of the shared file, if the arena has one.
    pub fn file_path(&self) -> Option<std::path::PathBuf> {
        let state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &state.backing {
            Backing::Shared(file) => Some(file.path()),
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

impl Drop for CellArena {
    fn drop(&mut self) {
        let state = self
            .state
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for slab in state.slabs.drain(..) {
            // SAFETY: each slab came from `Box::leak` and is freed once, after
            // every `Cells` into it is gone (they live in the same store).
            drop(unsafe { Box::from_raw(slab.as_ptr()) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    /// Every cell of every series is its own: values written through one are
    /// read back through it, whatever the series' sizes (larger than a slab
    /// too: such a series wrote past its slab once).
    #[test]
    fn series_of_any_size_get_cells_of_their_own() {
        let arena = CellArena::heap();
        let description = SeriesDescription {
            family: 0,
            labels: &[],
            created: 0.0,
        };
        let sizes = [3, SLAB_CELLS - 1, 2, SLAB_CELLS + 7, 1, 3 * SLAB_CELLS, 5];
        let series: Vec<(NonNull<AtomicU64>, usize)> = sizes
            .iter()
            .map(|&count| (arena.allocate_cells(&description, count).0, count))
            .collect();
        for (index, (first, count)) in series.iter().enumerate() {
            for cell in 0..*count {
                // SAFETY: within the `count` cells the arena handed out.
                let value = unsafe { first.add(cell).as_ref() };
                assert_eq!(value.load(Ordering::Relaxed), 0, "a fresh cell is zero");
                value.store((index * 1_000_000 + cell) as u64, Ordering::Relaxed);
            }
        }
        for (index, (first, count)) in series.iter().enumerate() {
            for cell in 0..*count {
                // SAFETY: as above.
                let value = unsafe { first.add(cell).as_ref() };
                assert_eq!(
                    value.load(Ordering::Relaxed),
                    (index * 1_000_000 + cell) as u64
                );
            }
        }
    }
}
