//! Reading a store: every family's series in exposition order, each read once,
//! kept (a scrape) or taken (a snapshot that resets), for the formats' visitors.

use crate::schema::family::ValueKind;
use crate::store::label_map::{prefetch, Entry, LabelMap};
use crate::store::series::{CostSeries, CounterSeries, HistogramSeries, RequestSeries};
use crate::store::visit::{Reading, SampleVisitor, Samples, SeriesView, SeriesVisitor};
use crate::store::{FamilySeries, Store};

/// How many series ahead a scrape fetches the labels of (and twice as many, the entries).
const PREFETCH_AHEAD: usize = 4;

/// Whether reading a series leaves its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Values stay: a scrape, a push, `snapshot()`.
    Keep,
    /// Values are taken, leaving zeros: `snapshot(reset=True)`, which ships
    /// what was recorded since the last one.
    Reset,
}

impl Store {
    /// Walks every family and sample in exposition order, reading each series once.
    pub fn visit(&self, include_created: bool, visitor: &mut impl SampleVisitor) {
        self.visit_series(
            ReadMode::Keep,
            &mut Samples {
                include_created,
                visitor,
            },
        );
    }

    /// Hands every family's series to `visitor` in exposition order, reading
    /// each series once as `mode` says.
    pub fn visit_series(&self, mode: ReadMode, visitor: &mut impl SeriesVisitor) {
        fn views<'m, V>(
            map: &'m LabelMap<V>,
            read: impl Fn(&V) -> (Reading, f64) + 'm,
        ) -> impl Iterator<Item = SeriesView<'m>> + 'm {
            let entries = map.snapshot();
            (0..entries.len()).map(move |at| {
                // Entries and their labels lie scattered over the heap: the
                // entry 2 * PREFETCH_AHEAD series ahead is fetched, and the
                // labels of the one PREFETCH_AHEAD ahead (fetched by then).
                if let Some(ahead) = entries.get(at + 2 * PREFETCH_AHEAD) {
                    prefetch(std::ptr::from_ref(*ahead));
                }
                if let Some(ahead) = entries.get(at + PREFETCH_AHEAD) {
                    ahead.prefetch_labels();
                }
                let entry = entries[at];
                let (reading, created) = read(&entry.value);
                SeriesView {
                    id: std::ptr::from_ref::<Entry<V>>(entry) as usize,
                    labels: entry.label_values().collect(),
                    reading,
                    created,
                }
            })
        }
        let coding = self.recording.coding;
        let reset = mode == ReadMode::Reset;
        let count = |series: &CounterSeries| {
            let count = if reset {
                series.value.take(coding)
            } else {
                series.value.get(coding)
            };
            (Reading::Count(count), series.created)
        };
        for (family, series) in self.schema.families().iter().zip(self.families.iter()) {
            match series {
                FamilySeries::Requests(map) => {
                    let requests = views(map, |series: &RequestSeries| count(&series.requests));
                    visitor.family_series(family, requests);
                }
                FamilySeries::Counter(map) if family.value == ValueKind::Level => {
                    // A level is read, never taken: it is the process's own.
                    let level = |series: &CounterSeries| {
                        (Reading::Level(series.value.level(coding)), series.created)
                    };
                    visitor.family_series(family, views(map, level));
                }
                FamilySeries::Counter(map) => visitor.family_series(family, views(map, count)),
                FamilySeries::Sum(map) => {
                    let sums = views(map, |series: &CostSeries| {
                        let sum = if reset {
                            series.value.take()
                        } else {
                            series.value.get()
                        };
                        (Reading::Sum(sum), series.created)
                    });
                    visitor.family_series(family, sums);
                }
                FamilySeries::Histogram(map) => {
                    let buckets = self.schema.buckets(family.id);
                    // A reset takes every cell, whatever the visitor shows.
                    let native_config = family.native.filter(|_| reset || visitor.wants_native());
                    let histograms = views(map, |series: &HistogramSeries| {
                        let histogram = &series.histogram;
                        let mut snapshot = if reset {
                            histogram.take(buckets, coding)
                        } else {
                            histogram.snapshot(buckets, coding)
                        };
                        snapshot.exemplars = if reset {
                            series.exemplars.take()
                        } else {
                            series.exemplars.read()
                        };
                        if let (Some(config), Some(native)) =
                            (&native_config, histogram.native_cells(buckets))
                        {
                            snapshot.native = Some(if reset {
                                native.take(config)
                            } else {
                                native.snapshot(config)
                            });
                        }
                        (Reading::Histogram(snapshot), series.created)
                    });
                    visitor.family_series(family, histograms);
                }
            }
        }
    }
}
