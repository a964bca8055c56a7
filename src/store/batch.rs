//! Many requests recorded as one: totals per label set, applied once.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use crate::cells::counter::Recording;
use crate::cells::histogram::Histogram;
use crate::cells::native_histogram::NativeSnapshot;
use crate::schema::buckets::Buckets;
use crate::schema::family::{DURATION, OPTIONAL_OBSERVATIONS};
use crate::schema::native::NativeConfig;
use crate::schema::native_buckets::bucket_index;
use crate::schema::request::{
    ErrorType, RequestValues, ERROR_TYPES, INPUT, OUTPUT, TOKEN_TYPE_COUNT,
};
use crate::store::rules::{self, Sink};
use crate::store::{RequestEntry, Store};

/// A numeric argument of a batch: one value for every row, or one per row
/// (converted, or borrowed from the caller's buffer when it holds them as they are).
pub enum Column<'v, T: Clone> {
    /// One value for every row.
    Scalar(T),
    /// One value per row.
    Rows(Cow<'v, [T]>),
}

impl<T: Copy> Column<'_, T> {
    /// The number of rows, or None for a scalar.
    pub fn rows(&self) -> Option<usize> {
        match self {
            Column::Scalar(_) => None,
            Column::Rows(values) => Some(values.len()),
        }
    }

    /// The value of row `row`.
    #[inline]
    pub fn at(&self, row: usize) -> T {
        match self {
            Column::Scalar(value) => *value,
            Column::Rows(values) => values[row],
        }
    }
}

/// A batch's numeric columns, read a row at a time.
pub struct Columns<'c> {
    /// Latencies in seconds.
    pub latency: &'c Column<'c, f64>,
    /// Token counts, by token type.
    pub tokens: &'c [Column<'c, u64>],
    /// The optional durations, by [`crate::schema::request::SecondsField`].
    pub seconds: &'c [Column<'c, Option<f64>>],
    /// The error types.
    pub errors: &'c Column<'c, Option<ErrorType>>,
    /// Whether the rows carry the reference's values alone.
    pub plain: bool,
}

impl Columns<'_> {
    /// Writes row `row`'s values over the previous row's: a plain row sets
    /// its three, the others stay as the first `RequestValues::new` made them.
    // Called once per row from the batch's loop, where it must not cost a call.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    pub fn fill(&self, values: &mut RequestValues, row: usize) {
        if self.plain {
            self.fill_plain(values, row);
        } else {
            values.latency_s = self.latency.at(row);
            for (count, column) in values.tokens.iter_mut().zip(self.tokens) {
                *count = column.at(row);
            }
            for (value, column) in values.seconds.iter_mut().zip(self.seconds) {
                *value = column.at(row);
            }
            values.error = self.errors.at(row);
        }
    }

    /// [`Columns::fill`] of a plain row: the reference's three values only.
    // Fixed fields, where `fill`'s loops index the arrays: a loop that knows
    // its rows are plain keeps the row's values in registers.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn fill_plain(&self, values: &mut RequestValues, row: usize) {
        values.latency_s = self.latency.at(row);
        values.tokens[INPUT] = self.tokens[INPUT].at(row);
        values.tokens[OUTPUT] = self.tokens[OUTPUT].at(row);
    }
}

/// What the rows of one batch add to one native histogram, at its configured schema.
struct NativeTotals {
    config: NativeConfig,
    zero_count: u64,
    buckets: BTreeMap<i32, u64>,
}

impl NativeTotals {
    // Kept out of the row loop's code: without native histograms it never
    // runs, and inlined its registers would cost every row a prologue.
    #[cold]
    #[inline(never)]
    fn observe(&mut self, value: f64) {
        if value <= self.config.zero_threshold {
            self.zero_count += 1;
        } else {
            *self
                .buckets
                .entry(bucket_index(value, self.config.schema))
                .or_default() += 1;
        }
    }

    fn snapshot(&self) -> NativeSnapshot {
        NativeSnapshot {
            schema: self.config.schema,
            zero_threshold: self.config.zero_threshold,
            zero_count: self.zero_count,
            buckets: self
                .buckets
                .iter()
                .map(|(index, count)| (*index, *count))
                .collect(),
        }
    }
}

/// What the rows of one batch add to one histogram.
struct HistogramTotals {
    buckets: Box<[u64]>,
    sum: f64,
    native: Option<NativeTotals>,
}

impl HistogramTotals {
    fn new(buckets: &Buckets, native: Option<&NativeConfig>) -> Self {
        HistogramTotals {
            buckets: vec![0; buckets.count()].into_boxed_slice(),
            sum: 0.0,
            native: native.map(|config| NativeTotals {
                config: *config,
                zero_count: 0,
                buckets: BTreeMap::new(),
            }),
        }
    }

    #[inline]
    fn observe(&mut self, value: f64, buckets: &Buckets) {
        self.buckets[buckets.index(value)] += 1;
        self.sum += value;
        if let Some(native) = &mut self.native {
            native.observe(value);
        }
    }

    /// Adds the totals to `histogram`, whose buckets are `buckets`.
    fn apply(&self, histogram: &Histogram, buckets: &Buckets, recording: Recording) {
        histogram.merge(&self.buckets, self.sum, recording);
        if let (Some(native), Some(cells)) = (&self.native, histogram.native_cells(buckets)) {
            cells.merge(&native.snapshot(), &native.config, recording.writers);
        }
    }
}

/// The counts and sums of one requests entry's rows.
#[derive(Clone, Copy, Default)]
struct Counts {
    requests: u64,
    tokens: [u64; TOKEN_TYPE_COUNT],
    cost: f64,
    /// Rows with tokens but no price.
    unpriced: u64,
    /// Failed rows, by error type.
    errors: [u64; ERROR_TYPES.len()],
}

/// What the rows of one batch add to one requests entry.
struct EntryTotals<'s> {
    entry: &'s RequestEntry,
    counts: Counts,
    duration: HistogramTotals,
    /// One per optional histogram, from the first row that observes it.
    observed: [Option<HistogramTotals>; OPTIONAL_OBSERVATIONS],
}

impl<'s> EntryTotals<'s> {
    /// Nothing yet for `entry`, an entry of `store`.
    fn new(store: &'s Store, entry: &'s RequestEntry) -> Self {
        EntryTotals {
            entry,
            counts: Counts::default(),
            duration: HistogramTotals::new(
                store.latency_buckets(),
                store.schema().family(DURATION).native.as_ref(),
            ),
            observed: Default::default(),
        }
    }
}

/// The recording rules' sink of a batch row: adds to the entry's totals, and
/// creates a series the first time a row needs it, as a single call would.
/// The counts are apart from the rest, so that a loop over many rows can keep
/// them in a local copy and store them once (see [`Batch::add_rows`]).
struct TotalsSink<'t, 's> {
    store: &'s Store,
    entry: &'s RequestEntry,
    counts: &'t mut Counts,
    duration: &'t mut HistogramTotals,
    observed: &'t mut [Option<HistogramTotals>; OPTIONAL_OBSERVATIONS],
}

impl Sink for TotalsSink<'_, '_> {
    #[inline]
    fn request(&mut self) {
        self.counts.requests += 1;
    }

    #[inline]
    fn latency(&mut self, seconds: f64) {
        self.duration.observe(seconds, self.store.latency_buckets());
    }

    #[inline]
    fn tokens(&mut self, token_type: usize, count: u64) {
        let total = &mut self.counts.tokens[token_type];
        if *total == 0 {
            self.store.token_series(self.entry, token_type);
        }
        *total = total.saturating_add(count);
    }

    #[inline]
    fn cost(&mut self, usd: f64) {
        if self.counts.cost == 0.0 {
            self.store.cost_series(self.entry);
        }
        self.counts.cost += usd;
    }

    #[inline]
    fn unpriced(&mut self) {
        if self.counts.unpriced == 0 {
            self.store.unpriced_series(self.entry);
        }
        self.counts.unpriced += 1;
    }

    #[inline]
    fn observe(&mut self, index: usize, seconds: f64) {
        let (_, buckets, native) = self.store.observed_series(self.entry, index);
        self.observed[index]
            .get_or_insert_with(|| HistogramTotals::new(buckets, native))
            .observe(seconds, buckets);
    }

    #[inline]
    fn error(&mut self, error_type: ErrorType) {
        let total = &mut self.counts.errors[usize::from(error_type)];
        if *total == 0 {
            self.store.error_series(self.entry, error_type);
        }
        *total += 1;
    }

    #[inline]
    fn keeps_semconv_histograms(&self) -> bool {
        self.store.keeps_semconv_histograms()
    }
}

/// Many requests recorded as one: totals per label set, applied once at the end.
///
/// The result equals one `record_request_on` per row, in row order: the rows
/// follow the same recording rules, so the counts are the same and the sums
/// equal up to the order of float additions. Series that a row creates (token,
/// cost and optional histogram series) are created while the rows are added,
/// so they appear in the exposition in the same order as with single calls.
pub struct Batch<'s> {
    store: &'s Store,
    totals: Vec<EntryTotals<'s>>,
    index: HashMap<usize, usize, foldhash::fast::RandomState>,
}

impl<'s> Batch<'s> {
    /// An empty batch for `store`.
    pub fn new(store: &'s Store) -> Self {
        Batch {
            store,
            totals: Vec::new(),
            index: HashMap::default(),
        }
    }

    /// The position of `entry` (an entry of this batch's store) in the batch.
    pub fn position(&mut self, entry: &'s RequestEntry) -> usize {
        let next = self.totals.len();
        let position = *self
            .index
            .entry(std::ptr::from_ref::<RequestEntry>(entry) as usize)
            .or_insert(next);
        if position == next {
            self.totals.push(EntryTotals::new(self.store, entry));
        }
        position
    }

    /// Adds one row for `entry`, an entry of this batch's store.
    pub fn add(&mut self, entry: &'s RequestEntry, values: &RequestValues) {
        let position = self.position(entry);
        self.add_to(position, values, self.store.runs_more_rules(values));
    }

    /// Adds one row to the entry at `position`, as returned by
    /// [`Batch::position`]; `more` as [`rules::record`] takes it.
    #[inline]
    pub fn add_to(&mut self, position: usize, values: &RequestValues, more: bool) {
        let totals = &mut self.totals[position];
        let price = totals.entry.value.price.as_ref();
        rules::record(
            values,
            more,
            price,
            &mut TotalsSink {
                store: self.store,
                entry: totals.entry,
                counts: &mut totals.counts,
                duration: &mut totals.duration,
                observed: &mut totals.observed,
            },
        );
    }

    /// Adds rows `0..rows` of `columns`, row `row` to the entry at position
    /// `positions[row_positions[row]]` (positions as [`Batch::position`]
    /// returns them; a single position needs no `row_positions`); `more` as
    /// [`rules::record`] takes it. The same as [`Batch::add_to`] for each row,
    /// in a loop compiled once with the rules of the values beyond the
    /// reference's and once without them, for plain rows.
    #[inline]
    pub fn add_rows(
        &mut self,
        positions: &[usize],
        row_positions: &[u32],
        rows: usize,
        more: bool,
        columns: &Columns<'_>,
    ) {
        match (positions, more || !columns.plain) {
            ([position], true) => self.add_rows_to::<true>(*position, rows, columns),
            ([position], false) => self.add_rows_to::<false>(*position, rows, columns),
            (_, true) => self.add_rows_among::<true>(positions, row_positions, rows, columns),
            (_, false) => self.add_rows_among::<false>(positions, row_positions, rows, columns),
        }
    }

    /// Writes row `row` of `columns` over `values`: only the reference's
    /// three values when not `MORE` (the rows are then plain).
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn fill<const MORE: bool>(columns: &Columns<'_>, values: &mut RequestValues, row: usize) {
        if MORE {
            columns.fill(values, row);
        } else {
            columns.fill_plain(values, row);
        }
    }

    /// [`Batch::add_rows`] of one entry with `more` known when compiling:
    /// without it, a row's values and counts are known fields of local
    /// copies, which stay in registers.
    fn add_rows_to<const MORE: bool>(
        &mut self,
        position: usize,
        rows: usize,
        columns: &Columns<'_>,
    ) {
        let store = self.store;
        let totals = &mut self.totals[position];
        let entry = totals.entry;
        let price = entry.value.price.as_ref();
        let mut counts = totals.counts;
        let mut values = RequestValues::new(0.0, 0, 0);
        for row in 0..rows {
            Self::fill::<MORE>(columns, &mut values, row);
            rules::record(
                &values,
                MORE,
                price,
                &mut TotalsSink {
                    store,
                    entry,
                    counts: &mut counts,
                    duration: &mut totals.duration,
                    observed: &mut totals.observed,
                },
            );
        }
        totals.counts = counts;
    }

    /// [`Batch::add_rows`] of several entries with `more` known when compiling.
    // The row's body is `add_to`'s, written out: called from here, `add_to`
    // is not inlined, and a row cost 40 instructions more (callgrind).
    fn add_rows_among<const MORE: bool>(
        &mut self,
        positions: &[usize],
        row_positions: &[u32],
        rows: usize,
        columns: &Columns<'_>,
    ) {
        let store = self.store;
        let mut values = RequestValues::new(0.0, 0, 0);
        for row in 0..rows {
            Self::fill::<MORE>(columns, &mut values, row);
            let position = row_positions.get(row).map_or(0, |at| *at as usize);
            let totals = &mut self.totals[positions[position]];
            rules::record(
                &values,
                MORE,
                totals.entry.value.price.as_ref(),
                &mut TotalsSink {
                    store,
                    entry: totals.entry,
                    counts: &mut totals.counts,
                    duration: &mut totals.duration,
                    observed: &mut totals.observed,
                },
            );
        }
    }

    /// Applies the totals to the store.
    pub fn finish(self) {
        let store = self.store;
        let writers = store.recording;
        for totals in self.totals {
            let entry = totals.entry;
            let series = &entry.value;
            series.requests.value.add(totals.counts.requests, writers);
            totals.duration.apply(
                &series.duration.get().histogram,
                store.latency_buckets(),
                writers,
            );
            for (token_type, count) in totals.counts.tokens.iter().enumerate() {
                if *count > 0 {
                    store
                        .token_series(entry, token_type)
                        .value
                        .add(*count, writers);
                }
            }
            if let Some(cost) = series.cost.get() {
                cost.value.add(totals.counts.cost, writers);
            }
            if totals.counts.unpriced > 0 {
                if let Some(unpriced) = store.unpriced_series(entry) {
                    unpriced.value.add(totals.counts.unpriced, writers);
                }
            }
            for (error_type, count) in (0..).zip(totals.counts.errors) {
                if count > 0 {
                    store
                        .error_series(entry, error_type)
                        .value
                        .add(count, writers);
                }
            }
            for (index, observed) in totals.observed.iter().enumerate() {
                if let Some(totals) = observed {
                    let (series, buckets, _) = store.observed_series(entry, index);
                    totals.apply(&series.histogram, buckets, writers);
                }
            }
        }
    }
}
