//! A fixed-bucket latency histogram updated with atomics only.
//!
//! Buckets are stored non-cumulatively (one atomic per bucket, so an observation
//! touches a single bucket) and made cumulative when a snapshot is taken. The
//! count is not stored: it is the sum of the bucket snapshot, so a scrape always
//! shows `_count` equal to the `+Inf` bucket even while writers are busy.
//!
//! The bucket cells and the sum's cell lie a fixed stride apart: next to each
//! other in our own layouts, one file entry apart in `prometheus_client`'s.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use smallvec::SmallVec;

use crate::cells::arena::{CellArena, SeriesDescription};
use crate::cells::counter::{add_count, add_float, read_count, take_count, Coding, Recording};
use crate::cells::exemplar::Exemplar;
use crate::cells::native_histogram::{NativeCells, NativeSnapshot};
use crate::schema::buckets::Buckets;
use crate::schema::native::NativeConfig;

/// Observations per bucket plus their sum, in one cell per bucket and one more.
#[derive(Debug)]
pub struct Histogram {
    first: NonNull<AtomicU64>,
    /// Bytes from one cell to the next.
    stride: usize,
    /// Whether a native histogram's cells follow the sum's.
    native: bool,
}

// SAFETY: the cells are atomics that outlive the histogram (the contract of
// `from_cells`); no other state moves with it.
unsafe impl Send for Histogram {}
// SAFETY: every access to the cells, which outlive the histogram, is atomic.
unsafe impl Sync for Histogram {}

/// A consistent-enough copy of a histogram taken for one scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Cumulative counts, one per bucket, `+Inf` last.
    pub cumulative: SmallVec<[u64; 16]>,
    /// Sum of the observed values.
    pub sum: f64,
    /// The native histogram, when the family keeps one.
    pub native: Option<NativeSnapshot>,
    /// Each bucket's last exemplar (empty when the series has none).
    pub exemplars: Vec<Option<Arc<Exemplar>>>,
}

impl HistogramSnapshot {
    /// Total number of observations (the `+Inf` bucket).
    pub fn count(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// A snapshot from raw cell values: the bucket counts (not cumulative), the
    /// bits of the sum, then a native histogram's cells when `native` is given.
    pub fn from_cells(cells: &[u64], native: Option<&NativeConfig>) -> HistogramSnapshot {
        let native_cells = native.map_or(0, NativeConfig::cells);
        let (classic, native_part) = cells.split_at(cells.len().saturating_sub(native_cells));
        let (sum, counts) = classic.split_last().unwrap_or((&0, &[]));
        let mut running = 0_u64;
        let cumulative = counts
            .iter()
            .map(|count| {
                running = running.saturating_add(*count);
                running
            })
            .collect();
        HistogramSnapshot {
            cumulative,
            sum: f64::from_bits(*sum),
            native: native.map(|config| NativeSnapshot::from_cells(native_part, config)),
            exemplars: Vec::new(),
        }
    }

    /// The raw cells of this snapshot, as [`HistogramSnapshot::from_cells`]
    /// reads them.
    pub fn to_cells(&self, native: Option<&NativeConfig>) -> Vec<u64> {
        let mut cells = Vec::with_capacity(self.cumulative.len() + 1);
        let mut below = 0;
        for cumulative in &self.cumulative {
            cells.push(cumulative.saturating_sub(below));
            below = *cumulative;
        }
        cells.push(self.sum.to_bits());
        if let Some(config) = native {
            let empty = NativeSnapshot {
                schema: config.schema,
                zero_threshold: config.zero_threshold,
                ..NativeSnapshot::default()
            };
            cells.extend(self.native.as_ref().unwrap_or(&empty).to_cells(config));
        }
        cells
    }
}

impl Histogram {
    /// The histogram whose cells start at `first`, `stride` bytes apart.
    ///
    /// # Safety
    /// `first` and the cells after it (one per bucket of the histogram's
    /// [`Buckets`] and one for the sum, each 8-aligned, `stride` bytes apart)
    /// must be zeroed or hold a histogram of the same coding, and stay valid as
    /// long as the histogram. Every method must be given those buckets.
    pub unsafe fn from_cells(first: NonNull<AtomicU64>, stride: usize) -> Self {
        Histogram {
            first,
            stride,
            native: false,
        }
    }

    /// A new, zeroed histogram of `buckets` for `series`, its cells from
    /// `arena`, with a native histogram's cells after them when `native` is given.
    pub fn allocate(
        arena: &CellArena,
        series: &SeriesDescription<'_>,
        buckets: &Buckets,
        native: Option<&NativeConfig>,
    ) -> Self {
        let native_cells = native.map_or(0, NativeConfig::cells);
        let (first, stride) = arena.allocate_cells(series, buckets.count() + 1 + native_cells);
        Histogram {
            first,
            stride,
            native: native.is_some(),
        }
    }

    /// The native histogram's cells, if it has them (after the buckets' and
    /// the sum's, of `buckets`).
    #[inline]
    pub fn native_cells(&self, buckets: &Buckets) -> Option<NativeCells> {
        self.native.then(|| {
            // SAFETY: `allocate` made the native cells of the configuration
            // the store passes with them, `stride` apart after the sum's;
            // they live as long as the histogram's.
            unsafe { NativeCells::new(self.cell_pointer(buckets.count() + 1), self.stride) }
        })
    }

    /// The first bucket's cell: where the histogram's record in a shared file
    /// keeps its values, which an exemplar slot there points back to.
    pub fn first_cell(&self) -> NonNull<AtomicU64> {
        self.first
    }

    fn cell_pointer(&self, index: usize) -> NonNull<AtomicU64> {
        NonNull::from(self.cell(index))
    }

    #[inline]
    fn cell(&self, index: usize) -> &AtomicU64 {
        // SAFETY: `from_cells` guarantees one live cell per bucket and one for
        // the sum, `stride` apart; callers pass indexes below that count.
        unsafe { &*self.first.as_ptr().byte_add(index * self.stride) }
    }

    /// Records one observation; `value` must already be validated as finite and non-negative.
    #[inline]
    pub fn observe(&self, value: f64, buckets: &Buckets, recording: Recording) {
        add_count(self.cell(buckets.index(value)), 1, recording);
        add_float(self.cell(buckets.count()), value, recording.writers);
    }

    /// Adds observations counted elsewhere: `counts` per bucket (not cumulative,
    /// one per bucket) and their sum.
    pub fn merge(&self, counts: &[u64], sum: f64, recording: Recording) {
        for (index, count) in counts.iter().enumerate() {
            if *count > 0 {
                add_count(self.cell(index), *count, recording);
            }
        }
        add_float(self.cell(counts.len()), sum, recording.writers);
    }

    /// Copies the buckets (made cumulative) and the sum.
    pub fn snapshot(&self, buckets: &Buckets, coding: Coding) -> HistogramSnapshot {
        self.read(
            buckets,
            |cell| read_count(cell, coding),
            |cell| cell.load(Ordering::Relaxed),
        )
    }

    /// Like [`Histogram::snapshot`], leaving every cell zero. Each cell is
    /// taken whole, so an observation made meanwhile lands either in this
    /// snapshot or in the cells (its bucket and its sum perhaps apart).
    pub fn take(&self, buckets: &Buckets, coding: Coding) -> HistogramSnapshot {
        self.read(
            buckets,
            |cell| take_count(cell, coding),
            |cell| cell.swap(0, Ordering::Relaxed),
        )
    }

    fn read(
        &self,
        buckets: &Buckets,
        count: impl Fn(&AtomicU64) -> u64,
        sum_bits: impl Fn(&AtomicU64) -> u64,
    ) -> HistogramSnapshot {
        let mut running = 0_u64;
        let cumulative = (0..buckets.count())
            .map(|index| {
                running = running.saturating_add(count(self.cell(index)));
                running
            })
            .collect();
        HistogramSnapshot {
            cumulative,
            sum: f64::from_bits(sum_bits(self.cell(buckets.count()))),
            native: None,
            exemplars: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cells::counter::Writers;
    use crate::schema::family::LATENCY_BOUNDS;

    fn buckets() -> Buckets {
        Buckets::new(&LATENCY_BOUNDS).unwrap()
    }

    /// Zeroed cells for one histogram, next to each other.
    fn cells() -> Vec<AtomicU64> {
        (0..=buckets().count()).map(|_| AtomicU64::new(0)).collect()
    }

    fn over(cells: &[AtomicU64]) -> Histogram {
        // SAFETY: one zeroed atomic per bucket and one more, 8 bytes apart,
        // outliving the histogram.
        unsafe { Histogram::from_cells(NonNull::from(cells).cast::<AtomicU64>(), 8) }
    }

    #[test]
    fn merged_counts_equal_single_observations() {
        let buckets = buckets();
        let (first, second) = (cells(), cells());
        let (one_by_one, merged) = (over(&first), over(&second));
        let mut counts = vec![0; buckets.count()];
        let mut sum = 0.0;
        for value in [0.01, 0.3, 0.3, 7.0, 100.0] {
            one_by_one.observe(value, &buckets, Recording::CONCURRENT);
            counts[buckets.index(value)] += 1;
            sum += value;
        }
        let serialized = Recording {
            writers: Writers::Serialized,
            ..Recording::CONCURRENT
        };
        merged.merge(&counts, sum, serialized);
        assert_eq!(
            merged.snapshot(&buckets, Coding::Integer),
            one_by_one.snapshot(&buckets, Coding::Integer)
        );
    }

    #[test]
    fn snapshot_is_cumulative_and_counts_match() {
        let buckets = buckets();
        let owned = cells();
        let histogram = over(&owned);
        for value in [0.3, 61.0, 0.05, 0.3] {
            histogram.observe(value, &buckets, Recording::CONCURRENT);
        }
        let snapshot = histogram.snapshot(&buckets, Coding::Integer);
        assert_eq!(snapshot.cumulative[..], [1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 4]);
        assert_eq!(snapshot.count(), 4);
        assert_eq!(snapshot.sum, ((0.3 + 61.0) + 0.05) + 0.3);
    }
}
