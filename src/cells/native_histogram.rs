//! A native histogram (Prometheus's sparse exponential buckets) over cells.
//!
//! A bucket of index `i` at schema `s` holds the observations in
//! `(2^((i-1)/2^s), 2^(i/2^s)]`; observations at most the zero threshold go to
//! the zero bucket. A series keeps at most `max_buckets` buckets: an
//! observation outside them moves the window of buckets when the buckets in
//! use and the new one fit in it, and otherwise halves the resolution (schema
//! minus one, every two buckets merged into one), as `client_golang` does, so
//! memory stays bounded whatever is observed.
//!
//! The cells hold two windows of buckets: observations add to the active one
//! with one atomic add; moving or merging buckets writes the other window,
//! then makes it active with one atomic store of the generation cell. A reader
//! (a scrape, possibly in another process) reads the generation, the active
//! window, then the generation again, and retries if a writer switched windows
//! meanwhile. A process killed while rewriting leaves the last active window
//! whole: nothing is lost or counted twice. Rewrites need one writer at a time
//! (the binding records under the GIL); concurrent writers take [`REWRITE`].
//!
//! Layout, in cells after the classic buckets and sum: the generation (even:
//! window A is active, odd: B), the zero count, then per window its schema
//! reduction, its first bucket index and whether it holds buckets, then
//! window A's counts and window B's.

use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::cells::counter::Writers;
use crate::schema::native::NativeConfig;
use crate::schema::native_buckets::{bucket_index, upper_bound, MIN_SCHEMA};

/// Cells before the windows' counts ([`NativeConfig::cells`] counts them).
const HEADER: usize = 8;
const GENERATION: usize = 0;
const ZERO_COUNT: usize = 1;
/// Per window (A at 2, B at 5): schema reduction, first index, whether used.
const WINDOW_HEADER: [usize; 2] = [2, 5];

/// Serializes the rewrites of concurrent writers (a pure-Rust use; the
/// binding's writers are serialized by the GIL).
pub static REWRITE: Mutex<()> = Mutex::new(());

/// Native buckets: `(index, count)`.
type Buckets = Vec<(i32, u64)>;

/// What a reader took from a native histogram.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NativeSnapshot {
    /// The resolution.
    pub schema: i8,
    /// The zero bucket's width.
    pub zero_threshold: f64,
    /// Observations in the zero bucket.
    pub zero_count: u64,
    /// Buckets with observations: `(index, count)`, by increasing index.
    pub buckets: Vec<(i32, u64)>,
}

impl NativeSnapshot {
    /// The buckets as the wire formats carry them: spans `(offset, length)` of
    /// consecutive indexes (the first offset from 0, the others from the end of
    /// the span before), and each bucket's count as the change from the one before.
    pub fn spans_and_deltas(&self) -> (Vec<(i32, u32)>, Vec<i64>) {
        let mut spans: Vec<(i32, u32)> = Vec::new();
        let mut deltas = Vec::with_capacity(self.buckets.len());
        let mut previous: Option<(i32, u64)> = None;
        for &(index, count) in &self.buckets {
            match previous {
                Some((last, _)) if index == last + 1 => {
                    if let Some(span) = spans.last_mut() {
                        span.1 += 1;
                    }
                }
                Some((last, _)) => spans.push((index - last - 1, 1)),
                None => spans.push((index, 1)),
            }
            let before = previous.map_or(0, |(_, count)| count);
            #[allow(clippy::cast_possible_wrap)] // Counts stay far below 2^63.
            deltas.push(count as i64 - before as i64);
            previous = Some((index, count));
        }
        (spans, deltas)
    }

    /// Every observation: the zero bucket's and the others'.
    pub fn count(&self) -> u64 {
        self.buckets
            .iter()
            .fold(self.zero_count, |sum, (_, count)| {
                sum.saturating_add(*count)
            })
    }

    /// This snapshot at the coarser `schema` (every `2^(self.schema - schema)`
    /// buckets merged).
    #[must_use]
    pub fn reduced_to(&self, schema: i8) -> NativeSnapshot {
        let mut buckets: Vec<(i32, u64)> = Vec::with_capacity(self.buckets.len());
        for (index, count) in &self.buckets {
            let merged = reduce_index(*index, self.schema - schema);
            match buckets.last_mut() {
                Some((last, total)) if *last == merged => *total = total.saturating_add(*count),
                _ => buckets.push((merged, *count)),
            }
        }
        NativeSnapshot {
            schema,
            buckets,
            ..*self
        }
    }

    /// The sum of two snapshots, at the coarser of their schemas, with the
    /// wider zero bucket (the other's buckets inside it move into it).
    #[must_use]
    pub fn merged(&self, other: &NativeSnapshot) -> NativeSnapshot {
        let schema = self.schema.min(other.schema);
        let zero_threshold = self.zero_threshold.max(other.zero_threshold);
        let (a, b) = (self.reduced_to(schema), other.reduced_to(schema));
        let mut zero_count = a.zero_count.saturating_add(b.zero_count);
        let mut sums: BTreeMap<i32, u64> = BTreeMap::new();
        for (index, count) in a.buckets.iter().chain(&b.buckets) {
            let total = sums.entry(*index).or_default();
            *total = total.saturating_add(*count);
        }
        let mut buckets = Vec::with_capacity(sums.len());
        for (index, count) in sums {
            if upper_bound(index, schema) <= zero_threshold {
                zero_count = zero_count.saturating_add(count);
            } else {
                buckets.push((index, count));
            }
        }
        NativeSnapshot {
            schema,
            zero_threshold,
            zero_count,
            buckets,
        }
    }
}

impl NativeSnapshot {
    /// This snapshot with its resolution halved until its buckets fit in
    /// `max_buckets` (or the coarsest schema is reached).
    #[must_use]
    pub fn fitted(self, max_buckets: usize) -> NativeSnapshot {
        let mut fitted = self;
        while span(&fitted.buckets) > max_buckets && fitted.schema > MIN_SCHEMA {
            fitted = fitted.reduced_to(fitted.schema - 1);
        }
        fitted
    }

    /// The cells of a native histogram holding this snapshot in window A, as
    /// [`NativeCells`] lays them out (a snapshot's or a summed file's cells).
    pub fn to_cells(&self, config: &NativeConfig) -> Vec<u64> {
        let fitted = self.clone().fitted(config.max_buckets);
        let mut cells = vec![0; config.cells()];
        cells[ZERO_COUNT] = fitted.zero_count;
        let header = WINDOW_HEADER[0];
        cells[header] = u64::try_from(config.schema - fitted.schema).unwrap_or(0);
        let start = fitted.buckets.first().map_or(0, |(index, _)| *index);
        cells[header + 1] = i64::from(start) as u64;
        cells[header + 2] = u64::from(!fitted.buckets.is_empty());
        for (index, count) in &fitted.buckets {
            if let Ok(position) = usize::try_from(index - start) {
                if position < config.max_buckets {
                    cells[HEADER + position] = *count;
                }
            }
        }
        cells
    }

    /// The snapshot the `cells` of a native histogram hold (their active window).
    pub fn from_cells(cells: &[u64], config: &NativeConfig) -> NativeSnapshot {
        let storage: Vec<AtomicU64> = cells.iter().map(|cell| AtomicU64::new(*cell)).collect();
        if storage.len() < config.cells() {
            return NativeSnapshot {
                schema: config.schema,
                zero_threshold: config.zero_threshold,
                ..NativeSnapshot::default()
            };
        }
        // SAFETY: `storage` holds the configuration's cells, next to each
        // other, and outlives `native`.
        let native =
            unsafe { NativeCells::new(NonNull::from(storage.as_slice()).cast::<AtomicU64>(), 8) };
        native.snapshot(config)
    }
}

/// Why `cells` are not a native histogram as a snapshot carries it, or the
/// observations they hold.
///
/// A snapshot holds what [`NativeSnapshot::to_cells`] writes: window A
/// active, window B and its header zero, a schema reduction that stays within
/// the schemas, a window that starts at its first bucket with observations,
/// and buckets a finite observation above the zero threshold can reach. The
/// count is at most `i64::MAX`, what the protobuf exposition's signed bucket
/// counts carry.
pub fn check_snapshot_cells(cells: &[u64], config: &NativeConfig) -> Result<u64, String> {
    if cells.len() != config.cells() {
        return Err(format!(
            "{} native cells, not {}",
            cells.len(),
            config.cells()
        ));
    }
    let window_b = HEADER + config.max_buckets;
    let header = WINDOW_HEADER[0];
    let (reduction, start, used) = (cells[header], cells[header + 1], cells[header + 2]);
    if cells[GENERATION] != 0
        || cells[WINDOW_HEADER[1]..WINDOW_HEADER[1] + 3] != [0, 0, 0]
        || cells[window_b..].iter().any(|cell| *cell != 0)
    {
        return Err("native cells outside the active window are set".to_owned());
    }
    let finest_reduction = i64::from(config.schema) - i64::from(MIN_SCHEMA);
    if i64::try_from(reduction).map_or(true, |steps| steps > finest_reduction) {
        return Err(format!("a native schema reduction of {reduction}"));
    }
    let schema = schema_after(config.schema, reduction);
    let counts = &cells[HEADER..window_b];
    let mut total = cells[ZERO_COUNT];
    for count in counts {
        total = total
            .checked_add(*count)
            .filter(|total| i64::try_from(*total).is_ok())
            .ok_or("native counts beyond 2^63 - 1")?;
    }
    let empty = counts.iter().all(|count| *count == 0);
    match used {
        0 if empty && start == 0 => return Ok(total),
        1 if counts[0] != 0 => {}
        _ => {
            return Err(format!(
                "a native window marked {used} from {}",
                start as i64
            ))
        }
    }
    let last = counts.iter().rposition(|count| *count != 0).unwrap_or(0);
    let lowest = i64::from(bucket_index(config.zero_threshold.next_up(), schema));
    let highest = i64::from(bucket_index(f64::MAX, schema));
    let first = start as i64;
    if first < lowest || first.saturating_add(last as i64) > highest {
        return Err(format!(
            "native buckets {first} to {} at schema {schema}, outside {lowest} to {highest}",
            first.saturating_add(last as i64)
        ));
    }
    Ok(total)
}

/// The index at `steps` coarser schemas of bucket `index`.
fn reduce_index(index: i32, steps: i8) -> i32 {
    let mut index = index;
    for _ in 0..steps {
        // Bucket i at schema s lies in bucket ceil(i / 2) at schema s - 1.
        index = (index + 1) >> 1;
    }
    index
}

/// A native histogram's cells: `HEADER + 2 * max_buckets` of them, a stride apart.
#[derive(Debug)]
pub struct NativeCells {
    first: NonNull<AtomicU64>,
    stride: usize,
}

// SAFETY: the cells are atomics that outlive the value (the contract of `new`).
unsafe impl Send for NativeCells {}
// SAFETY: every access to the cells is atomic.
unsafe impl Sync for NativeCells {}

impl NativeCells {
    /// The native histogram whose cells start at `first`, `stride` bytes apart.
    ///
    /// # Safety
    /// `first` and the cells after it ([`NativeConfig::cells`] of the
    /// configuration every method is given, 8-aligned, `stride` bytes apart)
    /// must be zeroed or hold a native histogram of that configuration, and
    /// stay valid as long as the value.
    pub unsafe fn new(first: NonNull<AtomicU64>, stride: usize) -> Self {
        NativeCells { first, stride }
    }

    #[inline]
    fn cell(&self, index: usize) -> &AtomicU64 {
        // SAFETY: `new` guarantees the cells of the configuration, `stride`
        // apart; callers stay below their count.
        unsafe { &*self.first.as_ptr().byte_add(index * self.stride) }
    }

    fn count_cell(&self, window: usize, position: usize, config: &NativeConfig) -> &AtomicU64 {
        self.cell(HEADER + window * config.max_buckets + position)
    }

    /// Records one observation (finite, not negative).
    #[inline]
    pub fn observe(&self, value: f64, config: &NativeConfig, writers: Writers) {
        if value <= config.zero_threshold {
            self.cell(ZERO_COUNT).fetch_add(1, Ordering::Relaxed);
            return;
        }
        let window = (self.cell(GENERATION).load(Ordering::Acquire) & 1) as usize;
        let header = WINDOW_HEADER[window];
        let reduction = self.cell(header).load(Ordering::Relaxed);
        let schema = schema_after(config.schema, reduction);
        let index = bucket_index(value, schema);
        if self.cell(header + 2).load(Ordering::Relaxed) == 1 {
            let start = self.cell(header + 1).load(Ordering::Relaxed) as i64;
            let offset = i64::from(index) - start;
            if (0..config.max_buckets as i64).contains(&offset) {
                #[allow(clippy::cast_sign_loss)] // In range, checked above.
                let position = offset as usize;
                self.count_cell(window, position, config)
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.rewrite_with(&[(index, 1)], schema, config, writers);
    }

    /// Adds `snapshot`'s observations (a snapshot's or another process's).
    pub fn merge(&self, snapshot: &NativeSnapshot, config: &NativeConfig, writers: Writers) {
        let current = self.read_window(config);
        let schema = current.schema.min(snapshot.schema);
        let added = snapshot.reduced_to(schema);
        // Buckets inside our zero bucket count there.
        let (inside, outside): (Buckets, Buckets) = added
            .buckets
            .iter()
            .partition(|(index, _)| upper_bound(*index, schema) <= config.zero_threshold);
        let zero = inside.iter().fold(snapshot.zero_count, |sum, (_, count)| {
            sum.saturating_add(*count)
        });
        self.cell(ZERO_COUNT).fetch_add(zero, Ordering::Relaxed);
        if !outside.is_empty() {
            self.rewrite_with(&outside, schema, config, writers);
        }
    }

    /// Writes the active window's buckets and `added` (at `schema`, no finer
    /// than the window's) into the other window, halving the resolution until
    /// they fit, then makes it the active one.
    #[cold]
    fn rewrite_with(
        &self,
        added: &[(i32, u64)],
        schema: i8,
        config: &NativeConfig,
        writers: Writers,
    ) {
        let _serialized = match writers {
            Writers::Concurrent => Some(
                REWRITE
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            ),
            Writers::Serialized => None,
        };
        let current = self.read_window(config).reduced_to(schema);
        let merged = current
            .merged(&NativeSnapshot {
                schema,
                zero_threshold: current.zero_threshold,
                zero_count: 0,
                buckets: added.to_vec(),
            })
            .fitted(config.max_buckets);
        let generation = self.cell(GENERATION).load(Ordering::Acquire);
        let target = ((generation + 1) & 1) as usize;
        let header = WINDOW_HEADER[target];
        for position in 0..config.max_buckets {
            self.count_cell(target, position, config)
                .store(0, Ordering::Relaxed);
        }
        let start = merged.buckets.first().map_or(0, |(index, _)| *index);
        for (index, count) in &merged.buckets {
            #[allow(clippy::cast_sign_loss)] // The window starts at the first index.
            let position = (index - start) as usize;
            if position < config.max_buckets {
                self.count_cell(target, position, config)
                    .store(*count, Ordering::Relaxed);
            }
        }
        let reduction = u64::try_from(config.schema - merged.schema).unwrap_or(0);
        self.cell(header).store(reduction, Ordering::Relaxed);
        self.cell(header + 1)
            .store(i64::from(start) as u64, Ordering::Relaxed);
        self.cell(header + 2)
            .store(u64::from(!merged.buckets.is_empty()), Ordering::Relaxed);
        // Publishes the window: readers that see the new generation see it whole.
        self.cell(GENERATION)
            .store(generation.wrapping_add(1), Ordering::Release);
    }

    /// The active window's buckets as they are now (no retry: for the writer).
    fn read_window(&self, config: &NativeConfig) -> NativeSnapshot {
        let generation = self.cell(GENERATION).load(Ordering::Acquire);
        self.window_snapshot((generation & 1) as usize, config)
    }

    fn window_snapshot(&self, window: usize, config: &NativeConfig) -> NativeSnapshot {
        let header = WINDOW_HEADER[window];
        let schema = schema_after(config.schema, self.cell(header).load(Ordering::Relaxed));
        let mut buckets = Vec::new();
        if self.cell(header + 2).load(Ordering::Relaxed) == 1 {
            let start = self.cell(header + 1).load(Ordering::Relaxed) as i64;
            for position in 0..config.max_buckets {
                let count = self
                    .count_cell(window, position, config)
                    .load(Ordering::Relaxed);
                if count > 0 {
                    let index = start.saturating_add(position as i64);
                    buckets.push((i32::try_from(index).unwrap_or(i32::MAX), count));
                }
            }
        }
        NativeSnapshot {
            schema,
            zero_threshold: config.zero_threshold,
            zero_count: self.cell(ZERO_COUNT).load(Ordering::Relaxed),
            buckets,
        }
    }

    /// A consistent copy: the window that was active from the start to the
    /// end of the read (retried, a bounded number of times, if a writer
    /// switched windows meanwhile).
    pub fn snapshot(&self, config: &NativeConfig) -> NativeSnapshot {
        let mut attempts = 0;
        loop {
            let before = self.cell(GENERATION).load(Ordering::Acquire);
            let snapshot = self.window_snapshot((before & 1) as usize, config);
            let after = self.cell(GENERATION).load(Ordering::Acquire);
            attempts += 1;
            // A switch per attempt would need a writer rewriting non-stop; the
            // last read is still a whole window's, only maybe a newer one's.
            if before == after || attempts >= 64 {
                return snapshot;
            }
        }
    }

    /// Takes the observations, leaving an empty histogram at the configured
    /// schema (a snapshot that resets; one writer at a time).
    pub fn take(&self, config: &NativeConfig) -> NativeSnapshot {
        let snapshot = self.snapshot(config);
        let generation = self.cell(GENERATION).load(Ordering::Acquire);
        let target = ((generation + 1) & 1) as usize;
        let header = WINDOW_HEADER[target];
        for position in 0..config.max_buckets {
            self.count_cell(target, position, config)
                .store(0, Ordering::Relaxed);
        }
        self.cell(header).store(0, Ordering::Relaxed);
        self.cell(header + 2).store(0, Ordering::Relaxed);
        self.cell(GENERATION)
            .store(generation.wrapping_add(1), Ordering::Release);
        let zero = self.cell(ZERO_COUNT).swap(0, Ordering::Relaxed);
        NativeSnapshot {
            zero_count: zero,
            ..snapshot
        }
    }
}

/// The schema after `reduction` halvings of `schema` (a damaged cell clamps).
fn schema_after(schema: i8, reduction: u64) -> i8 {
    let reduction = i8::try_from(reduction.min(12)).unwrap_or(12);
    (schema - reduction).max(MIN_SCHEMA)
}

/// How many buckets a window must hold for `buckets` (sorted by index).
fn span(buckets: &[(i32, u64)]) -> usize {
    match (buckets.first(), buckets.last()) {
        (Some(first), Some(last)) => usize::try_from(last.0 - first.0 + 1).unwrap_or(usize::MAX),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::native::MIN_BUCKETS;

    #[test]
    fn spans_cover_runs_and_deltas_follow_counts() {
        let snapshot = NativeSnapshot {
            schema: 0,
            zero_threshold: 0.0,
            zero_count: 0,
            buckets: vec![(-2, 1), (-1, 3), (2, 2), (3, 2), (10, 1)],
        };
        let (spans, deltas) = snapshot.spans_and_deltas();
        assert_eq!(spans, [(-2, 2), (2, 2), (6, 1)]);
        assert_eq!(deltas, [1, 2, -1, 0, -1]);
    }

    fn cells(config: &NativeConfig) -> (Vec<AtomicU64>, NativeCells) {
        let storage: Vec<AtomicU64> = (0..config.cells()).map(|_| AtomicU64::new(0)).collect();
        let first = NonNull::from(storage.as_slice()).cast::<AtomicU64>();
        // SAFETY: the storage holds the configuration's zeroed cells, next to
        // each other, and outlives the histogram in each test.
        let native = unsafe { NativeCells::new(first, 8) };
        (storage, native)
    }

    #[test]
    fn observations_land_in_their_buckets_and_the_zero_bucket() {
        let config = NativeConfig::DEFAULT;
        let (_storage, native) = cells(&config);
        for value in [0.0, 1.0, 1.05, 2.0, 2.0] {
            native.observe(value, &config, Writers::Serialized);
        }
        let snapshot = native.snapshot(&config);
        assert_eq!(snapshot.zero_count, 1);
        assert_eq!(snapshot.schema, 3);
        assert_eq!(snapshot.buckets, [(0, 1), (1, 1), (8, 2)]);
        assert_eq!(snapshot.count(), 5);
    }

    #[test]
    fn too_wide_a_range_halves_the_resolution_until_it_fits() {
        let config = NativeConfig::new(3, 0.0, MIN_BUCKETS).unwrap();
        let (_storage, native) = cells(&config);
        // 2^-10 to 2^10 is 160 buckets at schema 3: more than 132.
        native.observe(1.0, &config, Writers::Serialized);
        native.observe(0.001, &config, Writers::Serialized);
        native.observe(1000.0, &config, Writers::Serialized);
        let snapshot = native.snapshot(&config);
        assert_eq!(snapshot.schema, 2);
        assert!(span(&snapshot.buckets) <= MIN_BUCKETS);
        assert_eq!(snapshot.count(), 3);
        for (value, (index, count)) in [0.001, 1.0, 1000.0].iter().zip(&snapshot.buckets) {
            assert_eq!((*index, *count), (bucket_index(*value, 2), 1));
        }
        // Every positive float fits at the coarsest schema.
        let (_storage, native) = cells(&config);
        for value in [f64::MIN_POSITIVE / 1e10, 1.0, f64::MAX] {
            native.observe(value, &config, Writers::Concurrent);
        }
        let extremes = native.snapshot(&config);
        assert_eq!((extremes.schema, extremes.count()), (MIN_SCHEMA, 3));
    }

    #[test]
    fn merging_reduces_to_the_coarser_schema() {
        let fine = NativeSnapshot {
            schema: 2,
            zero_threshold: 0.0,
            zero_count: 1,
            buckets: vec![(1, 1), (2, 2), (7, 1)],
        };
        let coarse = NativeSnapshot {
            schema: 1,
            zero_threshold: 0.0,
            zero_count: 0,
            buckets: vec![(1, 5)],
        };
        let merged = fine.merged(&coarse);
        assert_eq!(merged.schema, 1);
        assert_eq!(merged.buckets, [(1, 8), (4, 1)]);
        assert_eq!(merged.zero_count, 1);
        let config = NativeConfig::new(2, 0.0, MIN_BUCKETS).unwrap();
        let (_storage, native) = cells(&config);
        native.merge(&fine, &config, Writers::Serialized);
        native.merge(&coarse, &config, Writers::Serialized);
        assert_eq!(native.snapshot(&config), merged);
        let cells = merged.to_cells(&config);
        assert_eq!(NativeSnapshot::from_cells(&cells, &config), merged);
        let taken = native.take(&config);
        assert_eq!(taken, merged);
        assert_eq!(native.snapshot(&config).count(), 0);
    }
}
