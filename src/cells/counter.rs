//! Monotonic counters shared by many writer threads without locks.
//!
//! Event and token counts are integers, so they live in an `AtomicU64` and stay
//! exact up to 2**64-1 (they saturate there instead of wrapping). Sums of floats
//! (latency seconds, USD cost) are kept as the bits of an `f64`: every writer
//! performs exactly the IEEE-754 addition `total + amount` that
//! `prometheus_client` performs under its mutex, so a single-threaded sequence
//! of calls produces the very same bits.
//!
//! How writers update a value depends on [`Writers`]. Concurrent writers use
//! read-modify-write instructions (`fetch_add`, a compare-and-swap loop for
//! floats), so none is lost. When the caller guarantees that writers never
//! overlap (the Python binding records only while holding the GIL), a plain
//! atomic load and store is enough and avoids the locked instructions, which
//! cost more than the rest of a recording call together. Either way readers,
//! which never take that guarantee, always load whole values.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::cells::arena::CellValue;

/// How the writers of a value are coordinated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writers {
    /// Any number of threads may write at once.
    Concurrent,
    /// Writes never overlap: the caller serializes them (a misuse loses
    /// increments but never tears a value).
    Serialized,
}

/// How counts are encoded in their cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// Exact `u64`s: our own layouts.
    Integer,
    /// The bits of `f64`s, added as `prometheus_client` adds them: its
    /// multi-process files hold every value as a float.
    Float,
}

/// How a store's values are written: by whom, and in which encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recording {
    /// Who writes.
    pub writers: Writers,
    /// How counts are encoded.
    pub coding: Coding,
}

impl Recording {
    /// Integer counts written by any number of threads at once.
    pub const CONCURRENT: Recording = Recording {
        writers: Writers::Concurrent,
        coding: Coding::Integer,
    };
}

/// Adds `amount` to the count in `cell`, encoded as `recording` says.
#[inline]
pub fn add_count(cell: &AtomicU64, amount: u64, recording: Recording) {
    match (recording.coding, recording.writers) {
        (Coding::Float, writers) => add_float(cell, amount as f64, writers),
        (Coding::Integer, Writers::Concurrent) => {
            let previous = cell.fetch_add(amount, Ordering::Relaxed);
            if previous.checked_add(amount).is_none() {
                // Overflow is a 2**64-token event; pinning the value beats a reset.
                cell.store(u64::MAX, Ordering::Relaxed);
            }
        }
        (Coding::Integer, Writers::Serialized) => {
            let total = cell.load(Ordering::Relaxed).saturating_add(amount);
            cell.store(total, Ordering::Relaxed);
        }
    }
}

/// The count in `cell`, encoded as `coding` says.
#[inline]
pub fn read_count(cell: &AtomicU64, coding: Coding) -> u64 {
    let raw = cell.load(Ordering::Relaxed);
    match coding {
        Coding::Integer => raw,
        // Float counts are whole numbers; `as` saturates the impossible rest.
        Coding::Float => f64::from_bits(raw) as u64,
    }
}

/// The count in `cell`, encoded as `coding` says, leaving zero in its place:
/// every addition lands either in the count returned or in the cell.
#[inline]
pub fn take_count(cell: &AtomicU64, coding: Coding) -> u64 {
    let raw = cell.swap(0, Ordering::Relaxed);
    match coding {
        Coding::Integer => raw,
        Coding::Float => f64::from_bits(raw) as u64,
    }
}

/// Adds `amount` to the `f64` whose bits are in `cell`.
#[inline]
pub fn add_float(cell: &AtomicU64, amount: f64, writers: Writers) {
    let mut current = cell.load(Ordering::Relaxed);
    if writers == Writers::Serialized {
        let total = (f64::from_bits(current) + amount).to_bits();
        cell.store(total, Ordering::Relaxed);
        return;
    }
    loop {
        let next = (f64::from_bits(current) + amount).to_bits();
        match cell.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(seen) => current = seen,
        }
    }
}

/// An integer counter that only goes up.
#[derive(Debug, Default)]
#[repr(transparent)]
pub struct Counter {
    value: AtomicU64,
}

impl Counter {
    /// Adds `amount` (saturating at `u64::MAX` rather than wrapping, in the integer coding).
    #[inline]
    pub fn add(&self, amount: u64, recording: Recording) {
        add_count(&self.value, amount, recording);
    }

    /// Adds `delta`, which may be negative: the counter holds a level (a
    /// gauge's), an `i64` in the integer coding that wraps rather than
    /// saturates, so that the levels of many processes add up exactly.
    #[inline]
    pub fn add_level(&self, delta: i64, recording: Recording) {
        let cell = &self.value;
        match (recording.coding, recording.writers) {
            (Coding::Float, writers) => add_float(cell, delta as f64, writers),
            (Coding::Integer, Writers::Concurrent) => {
                cell.fetch_add(delta as u64, Ordering::Relaxed);
            }
            (Coding::Integer, Writers::Serialized) => {
                let level = cell.load(Ordering::Relaxed).wrapping_add(delta as u64);
                cell.store(level, Ordering::Relaxed);
            }
        }
    }

    /// The level it holds (see [`Counter::add_level`]).
    #[inline]
    pub fn level(&self, coding: Coding) -> i64 {
        let raw = self.value.load(Ordering::Relaxed);
        match coding {
            Coding::Integer => raw as i64,
            // Float levels are whole numbers; `as` saturates the impossible rest.
            Coding::Float => f64::from_bits(raw) as i64,
        }
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self, recording: Recording) {
        self.add(1, recording);
    }

    /// The current value.
    #[inline]
    pub fn get(&self, coding: Coding) -> u64 {
        read_count(&self.value, coding)
    }

    /// The current value, leaving zero (see [`take_count`]).
    pub fn take(&self, coding: Coding) -> u64 {
        take_count(&self.value, coding)
    }
}

/// A float accumulator with the same rounding as a Python `float` counter.
#[derive(Debug, Default)]
#[repr(transparent)]
pub struct FloatCounter {
    bits: AtomicU64,
}

impl FloatCounter {
    /// Adds `amount` with one IEEE-754 addition (retried, for concurrent writers,
    /// until no other writer intervened).
    #[inline]
    pub fn add(&self, amount: f64, recording: Recording) {
        add_float(&self.bits, amount, recording.writers);
    }

    /// The current sum.
    #[inline]
    pub fn get(&self) -> f64 {
        f64::from_bits(self.bits.load(Ordering::Relaxed))
    }

    /// The current sum, leaving zero: an addition lands either in the sum
    /// returned or in the next one (the bits of `0.0` are zero).
    pub fn take(&self) -> f64 {
        f64::from_bits(self.bits.swap(0, Ordering::Relaxed))
    }
}

// SAFETY: one `AtomicU64`, `repr(transparent)`, zero is the empty counter.
unsafe impl CellValue for Counter {
    const CELLS: usize = 1;
}

// SAFETY: one `AtomicU64`, `repr(transparent)`, zero bits are 0.0.
unsafe impl CellValue for FloatCounter {
    const CELLS: usize = 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn counter_adds_and_saturates() {
        for writers in [Writers::Concurrent, Writers::Serialized] {
            let recording = Recording {
                writers,
                coding: Coding::Integer,
            };
            let counter = Counter::default();
            counter.inc(recording);
            counter.add(41, recording);
            assert_eq!(counter.get(Coding::Integer), 42);
            counter.add(u64::MAX, recording);
            assert_eq!(counter.get(Coding::Integer), u64::MAX);
        }
    }

    #[test]
    fn float_coded_counts_are_python_float_sums() {
        for writers in [Writers::Concurrent, Writers::Serialized] {
            let recording = Recording {
                writers,
                coding: Coding::Float,
            };
            let counter = Counter::default();
            counter.inc(recording);
            counter.add(41, recording);
            assert_eq!(counter.get(Coding::Float), 42);
            assert_eq!(f64::from_bits(counter.value.load(Ordering::Relaxed)), 42.0);
        }
    }

    #[test]
    fn float_counter_matches_sequential_python_sum() {
        for writers in [Writers::Concurrent, Writers::Serialized] {
            let sum = FloatCounter::default();
            let mut expected = 0.0_f64;
            let recording = Recording {
                writers,
                coding: Coding::Integer,
            };
            for amount in [0.1, 0.2, 0.3, 1e-9, 61.0, 0.05] {
                sum.add(amount, recording);
                expected += amount;
            }
            assert_eq!(sum.get().to_bits(), expected.to_bits());
        }
    }

    #[test]
    fn concurrent_adds_are_not_lost() {
        let counter = Arc::new(Counter::default());
        let sum = Arc::new(FloatCounter::default());
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let counter = Arc::clone(&counter);
                let sum = Arc::clone(&sum);
                thread::spawn(move || {
                    for _ in 0..10_000 {
                        counter.inc(Recording::CONCURRENT);
                        sum.add(1.0, Recording::CONCURRENT);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        assert_eq!(counter.get(Coding::Integer), 40_000);
        assert_eq!(sum.get(), 40_000.0);
    }
}
