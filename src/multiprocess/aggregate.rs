//! A scrape of a multi-process directory: every file read (live and dead
//! processes alike, under the shared directory lock when it can be had),
//! files that a compacted file absorbed skipped, and the rest added up series
//! by series into an [`Aggregate`] the formats visit like a store.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use smallvec::SmallVec;

use crate::cells::arena::SeriesDescription;
use crate::cells::exemplar::Exemplar;
use crate::cells::histogram::HistogramSnapshot;
use crate::cells::native_histogram::NativeSnapshot;
use crate::multiprocess::files::{file_name, is_dead, list_files, FileSeries, ReadError};
use crate::multiprocess::lock::{Access, DirectoryLock};
use crate::multiprocess::own_file::{read_file, FileContents, FileExemplar, SharedFile};
use crate::multiprocess::prometheus_file;
use crate::schema::family::{Schema, ValueKind};
use crate::store::visit::{Reading, SampleVisitor, Samples, SeriesView, SeriesVisitor};

/// How long a scrape waits for a compaction before reading without the lock.
const SCRAPE_LOCK_WAIT: Duration = Duration::from_secs(5);

/// Times a scrape reads the directory again when a listed file vanished meanwhile.
const READ_ATTEMPTS: usize = 3;

/// What one reading of a directory found.
pub(super) struct DirectoryReading {
    /// Files read whole, by name.
    pub(super) files: Vec<(PathBuf, FileContents)>,
    /// Files that could not be read, and why.
    pub(super) unreadable: Vec<(PathBuf, ReadError)>,
    /// Every name listed, read or not.
    pub(super) listed: HashSet<String>,
}

impl DirectoryReading {
    pub(super) fn read(directory: &Path, schema: &Schema) -> io::Result<Self> {
        let mut reading = DirectoryReading {
            files: Vec::new(),
            unreadable: Vec::new(),
            listed: HashSet::new(),
        };
        let mut seen: HashMap<(u64, u64), PathBuf> = HashMap::new();
        for path in list_files(directory)? {
            reading.listed.insert(file_name(&path).to_owned());
            match read_file(&path, schema) {
                Ok(contents) => {
                    // A hard link: the same values under a second name.
                    if let Some(first) = seen.get(&contents.identity) {
                        let reason = format!("the same file as {}", first.display());
                        reading
                            .unreadable
                            .push((path, ReadError::NotRegular(reason)));
                    } else {
                        seen.insert(contents.identity, path.clone());
                        reading.files.push((path, contents));
                    }
                }
                Err(error) => reading.unreadable.push((path, error)),
            }
        }
        Ok(reading)
    }

    /// Names of the files whose values a published file holds.
    pub(super) fn absorbed(&self) -> HashSet<&str> {
        self.files
            .iter()
            .flat_map(|(_, contents)| contents.absorbed.iter().map(String::as_str))
            .collect()
    }

    pub(super) fn vanished(&self) -> bool {
        self.unreadable
            .iter()
            .any(|(_, error)| *error == ReadError::Vanished)
    }
}

struct SummedSeries {
    labels: Vec<String>,
    cells: Vec<u64>,
    created: f64,
    /// A histogram's newest exemplar of each bucket (empty when it has none).
    exemplars: Vec<Option<Arc<Exemplar>>>,
}

/// One family's summed series in order of first appearance, and their index by labels.
type SummedFamily = (Vec<SummedSeries>, HashMap<Vec<String>, usize>);

/// The sum of the series of many files, in order of first appearance.
pub struct Aggregate {
    schema: Arc<Schema>,
    families: Vec<SummedFamily>,
    /// Files left out, with the reason (torn, truncated, unreadable, not a file).
    pub skipped: Vec<(PathBuf, String)>,
    /// Number of files summed.
    pub files: usize,
    /// Why this sum may be incomplete although no file was skipped, if it may.
    pub caveat: Option<String>,
    /// Whether a level (requests in flight) counts only while the process that
    /// wrote its file lives, as in our files (whose writers hold a lock);
    /// `prometheus_client`'s files count until removed, as its `livesum` gauges do.
    levels_of_live_processes_only: bool,
}

impl Aggregate {
    pub(super) fn new(schema: Arc<Schema>) -> Self {
        Aggregate {
            families: schema
                .families()
                .iter()
                .map(|_| Default::default())
                .collect(),
            schema,
            skipped: Vec::new(),
            files: 0,
            caveat: None,
            levels_of_live_processes_only: true,
        }
    }

    /// The sum of a directory reading: every file no other file absorbed.
    pub(super) fn of(reading: &DirectoryReading, schema: Arc<Schema>) -> Self {
        let mut sum = Aggregate::new(schema);
        let absorbed = reading.absorbed();
        for (path, contents) in &reading.files {
            if !absorbed.contains(file_name(path)) {
                sum.add_file(path, &contents.series, &contents.exemplars);
            }
        }
        for (path, error) in &reading.unreadable {
            sum.skipped.push((path.clone(), error.to_string()));
        }
        sum
    }

    /// Checks a whole file before adding any of it, so a bad file adds nothing.
    pub(super) fn add_file(
        &mut self,
        path: &Path,
        series: &[FileSeries],
        exemplars: &[FileExemplar],
    ) {
        let matches_family = |one: &FileSeries| {
            self.schema
                .families()
                .get(usize::from(one.family))
                .is_some_and(|family| {
                    one.labels.len() == family.label_names.len()
                        && one.cells.len() == family.cells()
                })
        };
        let matches_bucket = |exemplar: &FileExemplar| {
            series.get(exemplar.series).is_some_and(|one| {
                let family = self.schema.family(one.family);
                family.value == ValueKind::Buckets
                    && exemplar.bucket < self.schema.buckets(family.id).count()
            })
        };
        if !series.iter().all(matches_family) || !exemplars.iter().all(matches_bucket) {
            self.skipped.push((
                path.to_path_buf(),
                "a record does not match its family".to_owned(),
            ));
            return;
        }
        self.files += 1;
        let schema = Arc::clone(&self.schema);
        let is_level = |one: &FileSeries| schema.family(one.family).value == ValueKind::Level;
        // A dead process's calls are not in flight: its levels count zero
        // (the lock is asked only of a file that has a level to count).
        let dead_levels = self.levels_of_live_processes_only
            && series.iter().any(|one| is_level(one) && one.cells[0] != 0)
            && is_dead(path) == Ok(true);
        let positions: Vec<usize> = series
            .iter()
            .map(|one| {
                if dead_levels && is_level(one) {
                    self.add_series(&FileSeries {
                        cells: vec![0],
                        ..one.clone()
                    })
                } else {
                    self.add_series(one)
                }
            })
            .collect();
        for one in exemplars {
            let family = series[one.series].family;
            let buckets = self.schema.buckets(family).count();
            let target = &mut self.families[usize::from(family)].0[positions[one.series]];
            target.exemplars.resize(buckets, None);
            let kept = &mut target.exemplars[one.bucket];
            // Each bucket shows the newest exemplar of any process.
            if kept
                .as_ref()
                .is_none_or(|kept| kept.timestamp <= one.exemplar.timestamp)
            {
                *kept = Some(Arc::new(one.exemplar.clone()));
            }
        }
    }

    /// Adds one series to the sum; returns its position in its family.
    pub(super) fn add_series(&mut self, series: &FileSeries) -> usize {
        let family = self.schema.family(series.family);
        let (summed, index) = &mut self.families[usize::from(series.family)];
        if let Some(&position) = index.get(&series.labels) {
            let target = &mut summed[position];
            let classic = family.classic_cells();
            if let Some(config) = &family.native {
                // Native histograms add up as histograms, at the coarser schema.
                let ours = NativeSnapshot::from_cells(&target.cells[classic..], config);
                let theirs = NativeSnapshot::from_cells(&series.cells[classic..], config);
                let sum = ours.merged(&theirs).to_cells(config);
                target.cells[classic..].copy_from_slice(&sum);
            }
            let cells = target.cells[..classic]
                .iter_mut()
                .zip(&series.cells[..classic]);
            for (cell, (total, value)) in cells.enumerate() {
                *total = if family.is_sum(cell) {
                    (f64::from_bits(*total) + f64::from_bits(*value)).to_bits()
                } else if family.value == ValueKind::Level {
                    // Levels are i64s, and some are negative while others are not.
                    total.wrapping_add(*value)
                } else {
                    total.saturating_add(*value)
                };
            }
            target.created = target.created.min(series.created);
            position
        } else {
            index.insert(series.labels.clone(), summed.len());
            summed.push(SummedSeries {
                labels: series.labels.clone(),
                cells: series.cells.clone(),
                created: series.created,
                exemplars: Vec::new(),
            });
            summed.len() - 1
        }
    }

    /// Walks every family and sample of the sum, as [`crate::store::Store::visit`] does.
    pub fn visit(&self, include_created: bool, visitor: &mut impl SampleVisitor) {
        self.visit_series(&mut Samples {
            include_created,
            visitor,
        });
    }

    /// Hands every family's series to `visitor`, as [`crate::store::Store::visit_series`] does.
    pub fn visit_series(&self, visitor: &mut impl SeriesVisitor) {
        for (family, (summed, _)) in self.schema.families().iter().zip(&self.families) {
            let views = summed.iter().enumerate().map(|(id, series)| SeriesView {
                id,
                labels: series
                    .labels
                    .iter()
                    .map(String::as_str)
                    .collect::<SmallVec<_>>(),
                reading: match family.value {
                    ValueKind::Buckets => Reading::Histogram(HistogramSnapshot {
                        exemplars: series.exemplars.clone(),
                        ..HistogramSnapshot::from_cells(&series.cells, family.native.as_ref())
                    }),
                    ValueKind::Sum => Reading::Sum(f64::from_bits(series.cells[0])),
                    ValueKind::Count => Reading::Count(series.cells[0]),
                    #[allow(clippy::cast_possible_wrap)] // A level's cell holds an i64.
                    ValueKind::Level => Reading::Level(series.cells[0] as i64),
                },
                created: series.created,
            });
            visitor.family_series(family, views);
        }
    }

    /// Writes the sum, and the names of the files it absorbs, into a new file
    /// of `directory`, published whole.
    pub(super) fn write_to<'n>(
        &self,
        directory: &Path,
        absorbed: impl IntoIterator<Item = &'n str>,
    ) -> io::Result<PathBuf> {
        let mut file = SharedFile::create_unpublished(directory, &self.schema)?;
        for (family, (summed, _)) in self.schema.families().iter().zip(&self.families) {
            for series in summed {
                let labels: SmallVec<[&str; 4]> =
                    series.labels.iter().map(String::as_str).collect();
                let description = SeriesDescription {
                    family: family.id,
                    labels: &labels,
                    created: series.created,
                };
                let first = file.append_series_holding(&description, &series.cells)?;
                for (bucket, exemplar) in series.exemplars.iter().enumerate() {
                    if let Some(exemplar) = exemplar {
                        file.append_exemplar_holding(first, bucket, exemplar)?;
                    }
                }
            }
        }
        for name in absorbed {
            file.append_absorbed(name)?;
        }
        file.publish()?;
        Ok(file.path().to_path_buf())
    }
}

/// Sums every metrics file of `directory`.
pub fn aggregate(directory: &Path, schema: &Arc<Schema>) -> io::Result<Aggregate> {
    let lock = DirectoryLock::take(directory, Access::Shared, SCRAPE_LOCK_WAIT);
    let caveat = lock.as_ref().err().map(|error| {
        format!(
            "read {} without its lock ({error}): files a compaction moved meanwhile may be missing",
            directory.display()
        )
    });
    let mut attempt = 1;
    let reading = loop {
        let reading = DirectoryReading::read(directory, schema)?;
        if !reading.vanished() || attempt == READ_ATTEMPTS {
            break reading;
        }
        attempt += 1;
    };
    let mut sum = Aggregate::of(&reading, Arc::clone(schema));
    sum.caveat = caveat;
    Ok(sum)
}

/// Sums this layout's files of a `prometheus_client` multi-process directory
/// (see [`crate::multiprocess::prometheus_file`]); other files there are the application's.
pub fn aggregate_prometheus(directory: &Path, schema: &Arc<Schema>) -> io::Result<Aggregate> {
    let mut sum = Aggregate::new(Arc::clone(schema));
    sum.levels_of_live_processes_only = false;
    for path in prometheus_file::list_files(directory)? {
        match prometheus_file::read_file(&path, schema) {
            Ok(series) => sum.add_file(&path, &series, &[]),
            Err(error) => sum.skipped.push((path, error.to_string())),
        }
    }
    Ok(sum)
}
