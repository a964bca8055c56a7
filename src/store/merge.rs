//! Adding values recorded elsewhere: one series of a snapshot (or of another
//! process's file) added to a store's, created if new and folded past the cap
//! as a recording would be.

use smallvec::SmallVec;

use crate::cells::histogram::HistogramSnapshot;
use crate::schema::family::{FamilyId, OVERFLOW};
use crate::store::series::{CostSeries, CounterSeries, HistogramSeries};
use crate::store::{FamilySeries, RequestLabels, Store};

impl Store {
    /// Adds the values of one series recorded elsewhere (a snapshot's) to the
    /// series of `family` with label values `labels` (in the family's label
    /// order), created if new and folded past the cap like a recording.
    /// `cells` are laid out as [`crate::schema::family::FamilyDesc::cells`] says:
    /// counts, or the bits of a float sum, or bucket counts then the sum's bits.
    pub fn add_series(&self, family: FamilyId, labels: &[&str], cells: &[u64]) {
        let recording = self.recording;
        match &self.families[usize::from(family)] {
            FamilySeries::Requests(_) => {
                let positions = self.schema.request_positions();
                let extra: SmallVec<[&str; 4]> =
                    positions[4..].iter().map(|at| labels[*at]).collect();
                let request = RequestLabels {
                    provider: labels[positions[0]],
                    model: labels[positions[1]],
                    operation: labels[positions[2]],
                    status: labels[positions[3]],
                    extra: &extra,
                };
                let (entry, _) = self.request_entry_capped(&request);
                entry.value.requests.value.add(cells[0], recording);
            }
            FamilySeries::Histogram(map) => {
                let buckets = self.schema.buckets(family);
                let native = self.schema.family(family).native;
                let (entry, _) = self.capped(map, family, labels, |key| {
                    HistogramSeries::new(&self.arena, family, key, buckets, native.as_ref())
                });
                let snapshot = HistogramSnapshot::from_cells(cells, native.as_ref());
                let histogram = &entry.value.histogram;
                let classic = &cells[..=buckets.count()];
                let (sum, counts) = classic.split_last().unwrap_or((&0, &[]));
                histogram.merge(counts, f64::from_bits(*sum), recording);
                if let (Some(config), Some(cells), Some(added)) =
                    (&native, histogram.native_cells(buckets), &snapshot.native)
                {
                    cells.merge(added, config, recording.writers);
                }
            }
            FamilySeries::Sum(map) => {
                let (entry, _) = self.capped(map, family, labels, |key| {
                    CostSeries::new(&self.arena, family, key)
                });
                entry.value.value.add(f64::from_bits(cells[0]), recording);
            }
            // Overflow counts are not capped: their label set is a family name.
            FamilySeries::Counter(map) if family == OVERFLOW => map
                .get_or_insert_with(labels, || CounterSeries::new(&self.arena, family, labels))
                .value
                .value
                .add(cells[0], recording),
            FamilySeries::Counter(map) => {
                let (entry, _) = self.capped(map, family, labels, |key| {
                    CounterSeries::new(&self.arena, family, key)
                });
                entry.value.value.add(cells[0], recording);
            }
        }
    }
}
