//! Exemplars: the trace of one request kept on the histogram bucket its
//! latency (and time to first token) fell in, in the series and in the store's
//! shared file when it keeps them.

use crate::cells::exemplar::{Exemplar, ShareSlot};
use crate::schema::family::{FamilyId, OPTIONAL_OBSERVED, TIME_TO_FIRST_TOKEN};
use crate::schema::request::{RequestValues, TIME_TO_FIRST_TOKEN as TIME_TO_FIRST_TOKEN_S};
use crate::store::series::HistogramSeries;
use crate::store::{FamilySeries, RequestEntry, Store};

impl Store {
    /// Keeps an exemplar of `labels` (checked with
    /// [`Exemplar::check_labels`]) at `timestamp` for the request `values`
    /// recorded on `entry`: on the duration bucket its latency fell in, and on
    /// the time-to-first-token bucket when it streamed.
    pub fn attach_exemplar(
        &self,
        entry: &RequestEntry,
        values: &RequestValues,
        labels: &[(String, String)],
        timestamp: f64,
    ) {
        let exemplar = |value| Exemplar {
            labels: labels.to_vec(),
            value,
            timestamp,
        };
        let buckets = &self.latency_buckets;
        self.keep_exemplar(
            entry.value.duration.get(),
            buckets.index(values.latency_s),
            buckets.count(),
            exemplar(values.latency_s),
        );
        let first_token = OPTIONAL_OBSERVED
            .iter()
            .position(|(family, _)| *family == TIME_TO_FIRST_TOKEN);
        if let (Some(index), Some(first)) = (first_token, values.seconds[TIME_TO_FIRST_TOKEN_S]) {
            let (series, buckets, _) = self.observed_series(entry, index);
            self.keep_exemplar(
                series,
                buckets.index(first),
                buckets.count(),
                exemplar(first),
            );
        }
    }

    /// Keeps `exemplar` as bucket `bucket`'s (of `buckets`) in `series`, and in
    /// the store's shared file when it keeps exemplars.
    fn keep_exemplar(
        &self,
        series: &HistogramSeries,
        bucket: usize,
        buckets: usize,
        exemplar: Exemplar,
    ) {
        let first = series.histogram.first_cell();
        let share = |label_cells| self.arena.exemplar_slot(first, bucket, label_cells);
        let share: Option<ShareSlot<'_>> = self.arena.keeps_exemplars().then_some(&share);
        series.exemplars.record(bucket, buckets, exemplar, share);
    }

    /// Keeps `exemplar` on bucket `bucket` of the series of histogram `family`
    /// with label values `labels` (in the family's order), if it has that
    /// series (a merged snapshot's, say; a label set folded past the cap
    /// keeps none).
    pub fn add_exemplar(
        &self,
        family: FamilyId,
        labels: &[&str],
        bucket: usize,
        exemplar: Exemplar,
    ) {
        let FamilySeries::Histogram(map) = &self.families[usize::from(family)] else {
            return;
        };
        if let Some(entry) = map.get(labels) {
            let buckets = self.schema.buckets(family).count();
            self.keep_exemplar(&entry.value, bucket, buckets, exemplar);
        }
    }
}
