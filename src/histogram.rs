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

use crate::counter::{add_count, add_float, read_count, Coding, Recording};

/// Upper bounds of the latency buckets in seconds, as the reference middleware declares them.
pub const LATENCY_BOUNDS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0];

/// Number of buckets including the implicit `+Inf` one.
pub const BUCKET_COUNT: usize = LATENCY_BOUNDS.len() + 1;

/// Observations per bucket plus their sum, in `BUCKET_COUNT + 1` cells.
#[derive(Debug)]
pub struct Histogram {
    first: NonNull<AtomicU64>,
    /// Bytes from one cell to the next.
    stride: usize,
}

// SAFETY: the cells are atomics that outlive the histogram (see `from_cells`).
unsafe impl Send for Histogram {}
// SAFETY: as above; every access goes through the atomics.
unsafe impl Sync for Histogram {}

/// A consistent-enough copy of a histogram taken for one scrape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HistogramSnapshot {
    /// Cumulative counts, one per bound of [`LATENCY_BOUNDS`] and a final `+Inf` one.
    pub cumulative: [u64; BUCKET_COUNT],
    /// Sum of the observed values.
    pub sum: f64,
}

impl HistogramSnapshot {
    /// Total number of observations (the `+Inf` bucket).
    pub fn count(&self) -> u64 {
        self.cumulative[BUCKET_COUNT - 1]
    }
}

/// Index of the bucket whose bound is the first one `>= value` (`+Inf` when none is).
///
/// Counting the bounds below `value` has no data-dependent branch, so a stream of
/// varied latencies costs no branch mispredictions.
#[inline]
pub fn bucket_index(value: f64) -> usize {
    LATENCY_BOUNDS
        .iter()
        .map(|bound| usize::from(value > *bound))
        .sum()
}

impl Histogram {
    /// The histogram whose cells start at `first`, `stride` bytes apart.
    ///
    /// # Safety
    /// `first` and the `BUCKET_COUNT` cells after it (`BUCKET_COUNT + 1` atomics,
    /// each 8-aligned, `stride` bytes apart) must be zeroed or hold a histogram
    /// of the same coding, and stay valid as long as the histogram.
    pub unsafe fn from_cells(first: NonNull<AtomicU64>, stride: usize) -> Self {
        Histogram { first, stride }
    }

    #[inline]
    fn cell(&self, index: usize) -> &AtomicU64 {
        debug_assert!(index <= BUCKET_COUNT);
        // SAFETY: `from_cells` guarantees `BUCKET_COUNT + 1` live cells `stride` apart.
        unsafe { &*self.first.as_ptr().byte_add(index * self.stride) }
    }

    /// Records one observation; `value` must already be validated as finite and non-negative.
    #[inline]
    pub fn observe(&self, value: f64, recording: Recording) {
        add_count(self.cell(bucket_index(value)), 1, recording);
        add_float(self.cell(BUCKET_COUNT), value, recording.writers);
    }

    /// Adds observations counted elsewhere: `counts` per bucket (not cumulative) and their sum.
    pub fn merge(&self, counts: &[u64; BUCKET_COUNT], sum: f64, recording: Recording) {
        for (index, count) in counts.iter().enumerate() {
            if *count > 0 {
                add_count(self.cell(index), *count, recording);
            }
        }
        add_float(self.cell(BUCKET_COUNT), sum, recording.writers);
    }

    /// Copies the buckets (made cumulative) and the sum.
    pub fn snapshot(&self, coding: Coding) -> HistogramSnapshot {
        let mut cumulative = [0_u64; BUCKET_COUNT];
        let mut running = 0_u64;
        for (index, slot) in cumulative.iter_mut().enumerate() {
            running = running.saturating_add(read_count(self.cell(index), coding));
            *slot = running;
        }
        HistogramSnapshot {
            cumulative,
            sum: f64::from_bits(self.cell(BUCKET_COUNT).load(Ordering::Relaxed)),
        }
    }
}

impl HistogramSnapshot {
    /// A snapshot from raw slot values: the bucket counts (not cumulative), then
    /// the bits of the sum; `None` when the slot count is wrong.
    pub fn from_slots(slots: &[u64]) -> Option<HistogramSnapshot> {
        if slots.len() != BUCKET_COUNT + 1 {
            return None;
        }
        let mut cumulative = [0_u64; BUCKET_COUNT];
        let mut running = 0_u64;
        for (slot, count) in cumulative.iter_mut().zip(slots) {
            running = running.saturating_add(*count);
            *slot = running;
        }
        Some(HistogramSnapshot {
            cumulative,
            sum: f64::from_bits(slots[BUCKET_COUNT]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_on_a_bound_fall_in_that_bucket() {
        assert_eq!(bucket_index(0.0), 0);
        assert_eq!(bucket_index(0.05), 0);
        assert_eq!(bucket_index(0.050_000_000_000_001), 1);
        assert_eq!(bucket_index(60.0), 9);
        assert_eq!(bucket_index(60.1), 10);
    }

    /// Zeroed cells for one histogram, next to each other.
    fn cells() -> Vec<AtomicU64> {
        (0..=BUCKET_COUNT).map(|_| AtomicU64::new(0)).collect()
    }

    fn over(cells: &[AtomicU64]) -> Histogram {
        // SAFETY: `BUCKET_COUNT + 1` zeroed atomics, 8 bytes apart, outliving the histogram.
        unsafe { Histogram::from_cells(NonNull::from(&cells[0]), 8) }
    }

    #[test]
    fn merged_counts_equal_single_observations() {
        let (first, second) = (cells(), cells());
        let (one_by_one, merged) = (over(&first), over(&second));
        let mut counts = [0; BUCKET_COUNT];
        let mut sum = 0.0;
        for value in [0.01, 0.3, 0.3, 7.0, 100.0] {
            one_by_one.observe(value, Recording::CONCURRENT);
            counts[bucket_index(value)] += 1;
            sum += value;
        }
        let serialized = Recording {
            writers: crate::counter::Writers::Serialized,
            ..Recording::CONCURRENT
        };
        merged.merge(&counts, sum, serialized);
        assert_eq!(
            merged.snapshot(Coding::Integer),
            one_by_one.snapshot(Coding::Integer)
        );
    }

    #[test]
    fn snapshot_is_cumulative_and_counts_match() {
        let owned = cells();
        let histogram = over(&owned);
        for value in [0.3, 61.0, 0.05, 0.3] {
            histogram.observe(value, Recording::CONCURRENT);
        }
        let snapshot = histogram.snapshot(Coding::Integer);
        assert_eq!(snapshot.cumulative, [1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 4]);
        assert_eq!(snapshot.count(), 4);
        assert_eq!(snapshot.sum, ((0.3 + 61.0) + 0.05) + 0.3);
    }
}
