//! A fixed-bucket latency histogram updated with atomics only.
//!
//! Buckets are stored non-cumulatively (one atomic per bucket, so an observation
//! touches a single bucket) and made cumulative when a snapshot is taken. The
//! count is not stored: it is the sum of the bucket snapshot, so a scrape always
//! shows `_count` equal to the `+Inf` bucket even while writers are busy.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::counter::{FloatCounter, Writers};
use crate::slots::SlotValue;

/// Upper bounds of the latency buckets in seconds, as the reference middleware declares them.
pub const LATENCY_BOUNDS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0];

/// Number of buckets including the implicit `+Inf` one.
pub const BUCKET_COUNT: usize = LATENCY_BOUNDS.len() + 1;

/// Observations per bucket plus their sum.
#[derive(Debug, Default)]
#[repr(C)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKET_COUNT],
    sum: FloatCounter,
}

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
    /// Records one observation; `value` must already be validated as finite and non-negative.
    #[inline]
    pub fn observe(&self, value: f64, writers: Writers) {
        let bucket = &self.buckets[bucket_index(value)];
        match writers {
            Writers::Concurrent => {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
            Writers::Serialized => {
                bucket.store(bucket.load(Ordering::Relaxed) + 1, Ordering::Relaxed)
            }
        }
        self.sum.add(value, writers);
    }

    /// Adds observations counted elsewhere: `counts` per bucket (not cumulative) and their sum.
    pub fn merge(&self, counts: &[u64; BUCKET_COUNT], sum: f64, writers: Writers) {
        for (bucket, count) in self.buckets.iter().zip(counts) {
            if *count > 0 {
                match writers {
                    Writers::Concurrent => {
                        bucket.fetch_add(*count, Ordering::Relaxed);
                    }
                    Writers::Serialized => {
                        let total = bucket.load(Ordering::Relaxed).saturating_add(*count);
                        bucket.store(total, Ordering::Relaxed);
                    }
                }
            }
        }
        self.sum.add(sum, writers);
    }

    /// Copies the buckets (made cumulative) and the sum.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = [0_u64; BUCKET_COUNT];
        let mut running = 0_u64;
        for (slot, bucket) in cumulative.iter_mut().zip(&self.buckets) {
            running = running.saturating_add(bucket.load(Ordering::Relaxed));
            *slot = running;
        }
        HistogramSnapshot {
            cumulative,
            sum: self.sum.get(),
        }
    }
}

// SAFETY: `repr(C)`: `BUCKET_COUNT` `AtomicU64`s then one `FloatCounter`
// (a transparent `AtomicU64`); all zero is the empty histogram.
unsafe impl SlotValue for Histogram {
    const SLOTS: usize = BUCKET_COUNT + 1;
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

    #[test]
    fn merged_counts_equal_single_observations() {
        let one_by_one = Histogram::default();
        let merged = Histogram::default();
        let mut counts = [0; BUCKET_COUNT];
        let mut sum = 0.0;
        for value in [0.01, 0.3, 0.3, 7.0, 100.0] {
            one_by_one.observe(value, Writers::Concurrent);
            counts[bucket_index(value)] += 1;
            sum += value;
        }
        merged.merge(&counts, sum, Writers::Serialized);
        assert_eq!(merged.snapshot(), one_by_one.snapshot());
    }

    #[test]
    fn snapshot_is_cumulative_and_counts_match() {
        let histogram = Histogram::default();
        for value in [0.3, 61.0, 0.05, 0.3] {
            histogram.observe(value, Writers::Concurrent);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.cumulative, [1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 4]);
        assert_eq!(snapshot.count(), 4);
        assert_eq!(snapshot.sum, ((0.3 + 61.0) + 0.05) + 0.3);
    }
}
