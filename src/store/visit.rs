//! How a scrape walks the families: a visitor receives every sample in
//! exposition order, whatever holds the values (a store, or the sum of many
//! processes' files) and whatever writes them out (text, `OpenMetrics`, or
//! `prometheus_client` samples).

use smallvec::SmallVec;

use crate::cells::exemplar::Exemplar;
use crate::cells::histogram::HistogramSnapshot;
use crate::cells::native_histogram::NativeSnapshot;
use crate::schema::family::FamilyDesc;

/// Receives the samples of a scrape, family by family.
pub trait SampleVisitor {
    /// A family starts.
    fn family(&mut self, desc: &FamilyDesc);
    /// One sample of the current family. `suffix` completes the family name
    /// (`_total`, `_bucket`, `_count`, `_sum`, `_created`); `le` is set for
    /// buckets; `series` is the same for every sample of one series.
    fn sample(
        &mut self,
        desc: &FamilyDesc,
        suffix: &'static str,
        le: Option<&str>,
        series: usize,
        labels: &[&str],
        value: f64,
    );
    /// The current family ends.
    fn end_family(&mut self, desc: &FamilyDesc);
    /// The exemplar of the bucket sample just visited (formats without
    /// exemplars leave it).
    fn exemplar(&mut self, _desc: &FamilyDesc, _exemplar: &Exemplar) {}
    /// The native histogram of the series whose samples were just visited,
    /// with its count and sum (formats without native histograms leave it).
    fn native_histogram(
        &mut self,
        _desc: &FamilyDesc,
        _labels: &[&str],
        _native: &NativeSnapshot,
        _sum: f64,
    ) {
    }
    /// Whether it takes native histograms (see [`SampleVisitor::native_histogram`]):
    /// when not, a reading need not copy them.
    fn wants_native(&self) -> bool {
        false
    }
}

/// What a scrape read from one series.
// A reading lives while its series is visited: a histogram's stays inline
// rather than costing an allocation per series and scrape.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Reading {
    /// A count: requests, tokens, cache lookups, tool calls.
    Count(u64),
    /// A float sum: the cost counter.
    Sum(f64),
    /// A level: the requests in flight.
    Level(i64),
    /// A histogram's buckets and sum.
    Histogram(HistogramSnapshot),
}

/// One series as a scrape sees it.
pub struct SeriesView<'a> {
    /// The same for every sample of the series, different between series of a family.
    pub id: usize,
    /// Label values in the family's label order.
    pub labels: SmallVec<[&'a str; 4]>,
    /// The values read.
    pub reading: Reading,
    /// Unix time of creation in seconds.
    pub created: f64,
}

/// Receives the series of a reading family by family, in exposition order:
/// what a snapshot keeps, and what [`Samples`] turns into a scrape's samples.
pub trait SeriesVisitor {
    /// The series of one family (possibly none).
    fn family_series<'a>(
        &mut self,
        desc: &FamilyDesc,
        series: impl Iterator<Item = SeriesView<'a>>,
    );
    /// Whether its histogram readings need their native histograms: a
    /// reading that keeps the values (a scrape, not a reset) leaves them out
    /// when not, which halves a text scrape's time with native histograms on.
    fn wants_native(&self) -> bool {
        true
    }
}

/// Hands every series' samples to a [`SampleVisitor`], `_created` included when asked.
pub struct Samples<'v, V> {
    /// Whether each series' `_created` sample follows its values.
    pub include_created: bool,
    /// Receives the samples.
    pub visitor: &'v mut V,
}

impl<V: SampleVisitor> SeriesVisitor for Samples<'_, V> {
    fn family_series<'a>(
        &mut self,
        desc: &FamilyDesc,
        series: impl Iterator<Item = SeriesView<'a>>,
    ) {
        visit_family(desc, series, self.include_created, self.visitor);
    }

    fn wants_native(&self) -> bool {
        self.visitor.wants_native()
    }
}

/// Hands the samples of one family's series to `visitor`, in exposition order.
pub fn visit_family<'a>(
    desc: &FamilyDesc,
    series: impl IntoIterator<Item = SeriesView<'a>>,
    include_created: bool,
    visitor: &mut impl SampleVisitor,
) {
    let mut series = series.into_iter().peekable();
    if !desc.shown_when_empty && series.peek().is_none() {
        return;
    }
    visitor.family(desc);
    for view in series {
        let (id, labels) = (view.id, &view.labels[..]);
        match view.reading {
            Reading::Count(count) => visitor.sample(desc, "_total", None, id, labels, count as f64),
            Reading::Sum(sum) => visitor.sample(desc, "_total", None, id, labels, sum),
            Reading::Level(level) => {
                // A gauge, as `prometheus_client` shows one: no `_created`.
                visitor.sample(desc, "", None, id, labels, level as f64);
                continue;
            }
            Reading::Histogram(snapshot) => {
                let les = desc
                    .buckets
                    .as_ref()
                    .map_or(&[][..], |buckets| buckets.labels());
                for (index, (bucket, le)) in snapshot.cumulative.iter().zip(les).enumerate() {
                    visitor.sample(
                        desc,
                        "_bucket",
                        Some(le.as_str()),
                        id,
                        labels,
                        *bucket as f64,
                    );
                    if let Some(Some(exemplar)) = snapshot.exemplars.get(index) {
                        visitor.exemplar(desc, exemplar);
                    }
                }
                let count = snapshot.count() as f64;
                visitor.sample(desc, "_count", None, id, labels, count);
                visitor.sample(desc, "_sum", None, id, labels, snapshot.sum);
                if let Some(native) = &snapshot.native {
                    visitor.native_histogram(desc, labels, native, snapshot.sum);
                }
            }
        }
        if include_created {
            visitor.sample(desc, "_created", None, id, labels, view.created);
        }
    }
    visitor.end_family(desc);
}
