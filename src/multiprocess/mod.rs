//! Multi-process mode: a scrape sums the files of every process in a directory.
//!
//! Every process that records writes its own [`SharedFile`]; a scrape in any of
//! them reads all the files of the directory, live and dead processes alike,
//! and adds them up series by series. Compaction folds the files of processes
//! that are gone (nobody holds their lock) into one, so a scrape does not slow
//! down as workers come and go.
//!
//! Compaction is atomic however it ends. The folded file is written whole under
//! a hidden name, lists the files it absorbs, and is published by one rename;
//! only then are the absorbed files removed. A reader skips every file that a
//! published file lists, so whether a compaction is killed before, during or
//! after the removals (or a removal fails), each value is counted once. The
//! directory lock, shared by scrapes and held exclusively by compaction and
//! cleanup, keeps a scrape from listing the directory halfway through a
//! compaction; a scrape that cannot get it within a few seconds reads without it
//! and says so.

pub mod files;
// Unsafe: `pthread_atfork` and the descriptors a child must not share.
#[allow(unsafe_code)]
pub mod fork_guard;
// Unsafe: `flock`.
#[allow(unsafe_code)]
pub mod lock;
pub mod own_file;
// Unsafe: memory-mapped `prometheus_client` files.
#[allow(unsafe_code)]
pub mod prometheus_file;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use smallvec::SmallVec;

use crate::cells::arena::SeriesDescription;
use crate::cells::exemplar::Exemplar;
use crate::cells::histogram::HistogramSnapshot;
use crate::cells::native_histogram::NativeSnapshot;
use crate::multiprocess::lock::{Access, DirectoryLock};
use crate::schema::family::{Schema, ValueKind};

use crate::multiprocess::files::{
    held_by_this_process, is_dead, list_files, list_temporary_files, FileSeries, ReadError,
};
use crate::multiprocess::own_file::{
    declared_schema, read_file, FileContents, FileExemplar, SharedFile,
};
use crate::store::visit::{Reading, SampleVisitor, Samples, SeriesView, SeriesVisitor};

/// How long a scrape waits for a compaction before reading without the lock.
const SCRAPE_LOCK_WAIT: Duration = Duration::from_secs(5);
/// Times a scrape reads the directory again when a listed file vanished meanwhile.
const READ_ATTEMPTS: usize = 3;

fn file_name(path: &Path) -> &str {
    path.file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("")
}

/// What one reading of a directory found.
struct DirectoryReading {
    /// Files read whole, by name.
    files: Vec<(PathBuf, FileContents)>,
    /// Files that could not be read, and why.
    unreadable: Vec<(PathBuf, ReadError)>,
    /// Every name listed, read or not.
    listed: HashSet<String>,
}

impl DirectoryReading {
    fn read(directory: &Path, schema: &Schema) -> io::Result<Self> {
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
    fn absorbed(&self) -> HashSet<&str> {
        self.files
            .iter()
            .flat_map(|(_, contents)| contents.absorbed.iter().map(String::as_str))
            .collect()
    }

    fn vanished(&self) -> bool {
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
}

impl Aggregate {
    fn new(schema: Arc<Schema>) -> Self {
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
        }
    }

    /// The sum of a directory reading: every file no other file absorbed.
    fn of(reading: &DirectoryReading, schema: Arc<Schema>) -> Self {
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
    fn add_file(&mut self, path: &Path, series: &[FileSeries], exemplars: &[FileExemplar]) {
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
        let positions: Vec<usize> = series.iter().map(|one| self.add_series(one)).collect();
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
    fn add_series(&mut self, series: &FileSeries) -> usize {
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
                },
                created: series.created,
            });
            visitor.family_series(family, views);
        }
    }

    /// Writes the sum, and the names of the files it absorbs, into a new file
    /// of `directory`, published whole.
    fn write_to<'n>(
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
    for path in prometheus_file::list_files(directory)? {
        match prometheus_file::read_file(&path, schema) {
            Ok(series) => sum.add_file(&path, &series, &[]),
            Err(error) => sum.skipped.push((path, error.to_string())),
        }
    }
    Ok(sum)
}

/// The schemas the directory's files were written with, each once (the
/// reference's when no file has one this reader can build).
fn directory_schemas(directory: &Path) -> io::Result<Vec<Schema>> {
    let mut schemas: Vec<Schema> = Vec::new();
    for path in list_files(directory)? {
        if let Ok(schema) = declared_schema(&path) {
            if !schemas.contains(&schema) {
                schemas.push(schema);
            }
        }
    }
    if schemas.is_empty() {
        schemas.push(Schema::default());
    }
    Ok(schemas)
}

/// What a compaction did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Compaction {
    /// Files of processes that were gone, now folded.
    pub folded: usize,
    /// Damaged files of processes that were gone, removed without being folded.
    pub discarded: usize,
    /// The file they were folded into, if any.
    pub into: Option<PathBuf>,
    /// Files that could not be removed, and why. Their values are still counted
    /// once: a published file lists them, and the next compaction retries.
    pub not_removed: Vec<(PathBuf, String)>,
}

/// Removes each of `paths`, noting the ones that stay.
fn remove_all<'p>(
    paths: impl IntoIterator<Item = &'p PathBuf>,
    remove: &mut impl FnMut(&Path) -> io::Result<()>,
    not_removed: &mut Vec<(PathBuf, String)>,
) -> usize {
    let mut removed = 0;
    for path in paths {
        match remove(path) {
            Ok(()) => removed += 1,
            Err(error) if error.kind() == io::ErrorKind::NotFound => removed += 1,
            Err(error) => not_removed.push((path.clone(), error.to_string())),
        }
    }
    removed
}

/// Removes hidden files left by writers that were killed before publishing.
fn remove_abandoned(
    directory: &Path,
    remove: &mut impl FnMut(&Path) -> io::Result<()>,
    not_removed: &mut Vec<(PathBuf, String)>,
) -> io::Result<()> {
    let abandoned: Vec<PathBuf> = list_temporary_files(directory)?
        .into_iter()
        .filter(|path| is_dead(path) == Ok(true))
        .collect();
    remove_all(&abandoned, remove, not_removed);
    Ok(())
}

/// Folds the files of processes that are gone into one new file.
///
/// Safe while workers write (their files are locked, so they are left alone),
/// while other processes scrape (they wait for the directory lock), and if it
/// is killed at any point (see the module documentation). Waits at most `wait`
/// for the directory lock.
pub fn compact(directory: &Path, wait: Duration) -> io::Result<Compaction> {
    compact_with(directory, wait, |path| fs::remove_file(path))
}

/// [`compact`] with the file removal given, so that its failures can be tested.
pub fn compact_with(
    directory: &Path,
    wait: Duration,
    mut remove: impl FnMut(&Path) -> io::Result<()>,
) -> io::Result<Compaction> {
    let _exclusive = DirectoryLock::take(directory, Access::Exclusive, wait)?;
    let mut done = Compaction::default();
    remove_abandoned(directory, &mut remove, &mut done.not_removed)?;
    // Files of one schema fold together; a directory normally holds one.
    for schema in directory_schemas(directory)? {
        compact_schema(directory, &Arc::new(schema), &mut remove, &mut done)?;
    }
    Ok(done)
}

/// Folds the dead files of `schema` (files of other schemas are left alone).
fn compact_schema(
    directory: &Path,
    schema: &Arc<Schema>,
    remove: &mut impl FnMut(&Path) -> io::Result<()>,
    done: &mut Compaction,
) -> io::Result<()> {
    let reading = DirectoryReading::read(directory, schema)?;
    let absorbed = reading.absorbed();
    let dead = |path: &Path| is_dead(path) == Ok(true);
    // Files a published file already holds: only their removal is left to do.
    let mut redundant = Vec::new();
    let mut foldable = Vec::new();
    for (path, contents) in &reading.files {
        if !dead(path) {
            continue;
        }
        if absorbed.contains(file_name(path)) {
            redundant.push(path.clone());
        } else {
            foldable.push((path, contents));
        }
    }
    let damaged: Vec<PathBuf> = reading
        .unreadable
        .iter()
        .filter(|(path, error)| matches!(error, ReadError::Damaged(_)) && dead(path))
        .map(|(path, _)| path.clone())
        .collect();
    if foldable.len() >= 2 {
        let mut sum = Aggregate::new(Arc::clone(schema));
        for (path, contents) in &foldable {
            sum.add_file(path, &contents.series, &contents.exemplars);
        }
        // Every name the folded files absorbed themselves, should one still be
        // there, passes to the new file: it alone will list them.
        let mut names: Vec<&str> = Vec::new();
        for (path, contents) in &foldable {
            names.push(file_name(path));
            let still_listed = contents.absorbed.iter().map(String::as_str);
            names.extend(still_listed.filter(|name| reading.listed.contains(*name)));
        }
        done.into = Some(sum.write_to(directory, names)?);
        done.folded += foldable.len();
        let folded: Vec<PathBuf> = foldable.iter().map(|(path, _)| (*path).clone()).collect();
        remove_all(&folded, remove, &mut done.not_removed);
    }
    remove_all(&redundant, remove, &mut done.not_removed);
    done.discarded += remove_all(&damaged, remove, &mut done.not_removed);
    Ok(())
}

/// A live process still holds a file of the directory.
#[derive(Debug)]
pub struct LiveFile {
    /// The process that wrote the file, when the file says.
    pub pid: Option<u64>,
    /// The file.
    pub path: PathBuf,
}

/// What [`cleanup`] found.
#[derive(Debug)]
pub enum Cleanup {
    /// The number of files removed.
    Removed(usize),
    /// Nothing was removed: a live process holds this file.
    Refused(LiveFile),
}

/// Removes the files of every process that is gone: the start of a new job.
///
/// Unless `force` is set, removes nothing when another live process still
/// holds a file of the directory: removing the files of dead workers under a
/// running server makes its totals fall. The calling process's own files are
/// kept, never in the way. Waits at most `wait` for the directory lock.
pub fn cleanup(directory: &Path, force: bool, wait: Duration) -> io::Result<Cleanup> {
    let _exclusive = DirectoryLock::take(directory, Access::Exclusive, wait)?;
    let mut not_removed = Vec::new();
    let mut remove = |path: &Path| fs::remove_file(path);
    // Which files absorbed which is read in the first schema; every dead file
    // goes, whatever its schema.
    let schemas = directory_schemas(directory)?;
    let reading = DirectoryReading::read(directory, &schemas[0])?;
    if !force {
        let readable = reading
            .files
            .iter()
            .map(|(path, contents)| (path, Some(contents.pid)));
        let unreadable = reading.unreadable.iter().filter_map(|(path, error)| {
            // The pid in the name of a file of another schema or a damaged one.
            let from_name = || {
                let name = file_name(path).strip_prefix("gwm-")?;
                name.split('-').next()?.parse().ok()
            };
            matches!(error, ReadError::Damaged(_) | ReadError::OtherSchema(_))
                .then(|| (path, from_name()))
        });
        // This process's own file is live but never in the way: cleanup keeps
        // it and removes the rest.
        let live = readable
            .chain(unreadable)
            .find(|(path, pid)| is_dead(path) == Ok(false) && !held_by_this_process(path, *pid));
        if let Some((path, pid)) = live {
            return Ok(Cleanup::Refused(LiveFile {
                pid,
                path: path.clone(),
            }));
        }
    }
    remove_abandoned(directory, &mut remove, &mut not_removed)?;
    let absorbed = reading.absorbed();
    let damaged = reading
        .unreadable
        .iter()
        .filter(|(_, error)| matches!(error, ReadError::Damaged(_) | ReadError::OtherSchema(_)))
        .map(|(path, _)| path);
    let dead: Vec<&PathBuf> = reading
        .files
        .iter()
        .map(|(path, _)| path)
        .chain(damaged)
        .filter(|path| is_dead(path) == Ok(true))
        .collect();
    // Absorbed files go first: should a removal fail or the process be killed
    // midway, the files left never count a value twice.
    let (first, then): (Vec<&PathBuf>, Vec<&PathBuf>) = dead
        .into_iter()
        .partition(|path| absorbed.contains(file_name(path)));
    let removed = remove_all(first.into_iter().chain(then), &mut remove, &mut not_removed);
    match not_removed.first() {
        None => Ok(Cleanup::Removed(removed)),
        Some((path, error)) => Err(io::Error::other(format!(
            "removed {removed} files but not {}: {error}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cells::arena::CellArena;
    use crate::cells::counter::Recording;
    use crate::formats::text::{Format, TextEncoder};
    use crate::schema::request::RequestValues;
    use crate::store::pricing::{Price, PriceTable};
    use crate::store::{CacheOutcome, RequestLabels, Store};

    const WAIT: Duration = Duration::from_secs(10);

    /// The labels of the exemplar tests' requests.
    const GPT_4O: RequestLabels<'static> = RequestLabels {
        provider: "openai",
        model: "gpt-4o",
        operation: "chat",
        status: "ok",
        extra: &[],
    };

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::default())
    }

    fn prices() -> PriceTable {
        PriceTable::new([("gpt-4o", Price::new(2.5, 10.0))])
    }

    fn file_store(directory: &Path) -> Store {
        Store::with_arena(
            prices(),
            CellArena::shared(Box::new(SharedFile::create(directory, &schema()).unwrap())),
            Recording::CONCURRENT,
            schema(),
        )
    }

    fn record(store: &Store, model: &str, latency_s: f64) {
        let labels = RequestLabels {
            provider: "openai",
            model,
            operation: "chat",
            status: "ok",
            extra: &[],
        };
        let values = RequestValues::new(latency_s, 1000, 200);
        store.record_request(&labels, &values);
        store.record_cache(CacheOutcome::Hit, "exact");
    }

    /// The exposition's lines, sorted: files are summed in name order, which is random.
    fn lines(text: String) -> Vec<String> {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    }

    fn text(aggregate: &Aggregate) -> Vec<String> {
        let mut encoder = TextEncoder::new(Format::Text);
        aggregate.visit(false, &mut encoder);
        lines(encoder.into_text())
    }

    fn directory(name: &str) -> PathBuf {
        let directory = std::env::temp_dir().join(format!(
            "gwm-mp-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        fs::create_dir_all(&directory).unwrap();
        directory
    }

    #[test]
    fn a_scrape_sums_every_file_and_compaction_keeps_the_sum() {
        let directory = directory("sum");
        let single = Store::new(prices());
        for (index, model) in ["gpt-4o", "mystery", "gpt-4o"].iter().enumerate() {
            let store = file_store(&directory);
            record(&store, model, 0.25 * (index + 1) as f64);
            record(&single, model, 0.25 * (index + 1) as f64);
        }
        let live = file_store(&directory);
        record(&live, "gpt-4o", 3.0);
        record(&single, "gpt-4o", 3.0);
        let before = aggregate(&directory, &schema()).unwrap();
        assert_eq!((before.files, before.skipped.len()), (4, 0));
        let mut expected = TextEncoder::new(Format::Text);
        single.visit(false, &mut expected);
        assert_eq!(text(&before), lines(expected.into_text()));

        let compaction = compact(&directory, WAIT).unwrap();
        assert_eq!((compaction.folded, compaction.discarded), (3, 0));
        let after = aggregate(&directory, &schema()).unwrap();
        assert_eq!(after.files, 2);
        assert_eq!(text(&after), text(&before));
        // The live file is this process's own: cleanup keeps it, removes the
        // folded one and refuses nothing (another process's live file is
        // refused: tests/test_multiprocess.py).
        assert!(matches!(
            cleanup(&directory, false, WAIT).unwrap(),
            Cleanup::Removed(1)
        ));
        assert_eq!(aggregate(&directory, &schema()).unwrap().files, 1);
        assert!(matches!(
            cleanup(&directory, true, WAIT).unwrap(),
            Cleanup::Removed(0)
        ));
        assert_eq!(aggregate(&directory, &schema()).unwrap().files, 1);
        drop(live);
        fs::remove_dir_all(directory).unwrap();
    }

    /// The exemplar lines of an OpenMetrics exposition, sorted.
    fn exemplar_lines(aggregate: &Aggregate) -> Vec<String> {
        let mut encoder = TextEncoder::new(Format::OpenMetrics);
        aggregate.visit(false, &mut encoder);
        let text = encoder.into_text();
        lines(text)
            .into_iter()
            .filter(|line| line.contains(" # {"))
            .collect()
    }

    #[test]
    fn exemplars_in_files_reach_every_scrape_and_survive_compaction() {
        let directory = directory("exemplars");
        let labels = GPT_4O;
        let trace = |id: &str| vec![("trace_id".to_owned(), id.to_owned())];
        let exemplify = |store: &Store, latency_s: f64, id: &str, at: f64| {
            let values = RequestValues::new(latency_s, 10, 2);
            let entry = store.request_entry(&labels);
            store.record_request_on(entry, &values);
            store.attach_exemplar(entry, &values, &trace(id), at);
        };
        // Two processes: the newer exemplar of a bucket wins, whichever file it is in.
        let first = file_store(&directory);
        exemplify(&first, 0.3, "a1", 100.0);
        exemplify(&first, 2.0, "a2", 300.0);
        let second = file_store(&directory);
        exemplify(&second, 0.4, "b1", 200.0);
        exemplify(&second, 1.5, "b2", 150.0);
        // Longer labels move the bucket to a larger slot of the same file.
        let long = "f".repeat(120);
        exemplify(&second, 20.0, "short", 50.0);
        exemplify(&second, 20.0, &long, 60.0);
        let before = exemplar_lines(&aggregate(&directory, &schema()).unwrap());
        let expected = [
            r#"ractogateway_request_duration_seconds_bucket{le="0.5",model="gpt-4o",operation="chat",provider="openai"} 2.0 # {trace_id="b1"} 0.4 200.0"#.to_owned(),
            r#"ractogateway_request_duration_seconds_bucket{le="2.0",model="gpt-4o",operation="chat",provider="openai"} 4.0 # {trace_id="a2"} 2.0 300.0"#.to_owned(),
            format!(r#"ractogateway_request_duration_seconds_bucket{{le="30.0",model="gpt-4o",operation="chat",provider="openai"}} 6.0 # {{trace_id="{long}"}} 20.0 60.0"#),
        ];
        assert_eq!(before, expected);
        // Compaction folds dead files with their exemplars.
        drop((first, second));
        let compaction = compact(&directory, WAIT).unwrap();
        assert_eq!(compaction.folded, 2);
        let after = aggregate(&directory, &schema()).unwrap();
        assert_eq!((after.files, exemplar_lines(&after)), (1, before));
        fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn a_scrape_never_sees_an_exemplar_half_written() {
        let directory = directory("exemplar-race");
        let store = Arc::new(file_store(&directory));
        let labels = GPT_4O;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
            std::thread::spawn(move || {
                let entry = store.request_entry(&labels);
                let mut written = 0_u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && written < 5_000_000 {
                    written += 1;
                    // The trace id says the value; its length varies too.
                    let value = 0.001 * f64::from(written % 400);
                    let values = RequestValues::new(value, 1, 1);
                    let id = format!("{value}-{}", "x".repeat((written % 90) as usize));
                    let trace = [("trace_id".to_owned(), id)];
                    store.attach_exemplar(entry, &values, &trace, f64::from(written));
                }
            })
        };
        let started = std::time::Instant::now();
        let mut seen = 0;
        for _ in 0..300 {
            if started.elapsed() > Duration::from_secs(20) {
                break;
            }
            let sum = aggregate(&directory, &schema()).unwrap();
            assert!(sum.skipped.is_empty(), "{:?}", sum.skipped);
            for line in exemplar_lines(&sum) {
                let (_, exemplar) = line.split_once(" # {trace_id=\"").unwrap();
                let (id, rest) = exemplar.split_once('"').unwrap();
                let value = rest.split_whitespace().nth(1).unwrap();
                let named: f64 = id.split('-').next().unwrap().parse().unwrap();
                assert_eq!(named, value.parse::<f64>().unwrap(), "{line}");
                seen += 1;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
        assert!(seen > 0);
        drop(store);
        fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn an_exemplar_record_that_points_nowhere_makes_its_file_damaged() {
        let directory = directory("exemplar-damaged");
        let store = file_store(&directory);
        let labels = GPT_4O;
        let values = RequestValues::new(0.3, 1, 1);
        let entry = store.request_entry(&labels);
        store.record_request_on(entry, &values);
        store.attach_exemplar(
            entry,
            &values,
            &[("trace_id".to_owned(), "a".to_owned())],
            1.0,
        );
        let path = store.arena_file_path().unwrap();
        let mut bytes = fs::read(&path).unwrap();
        // Walk the records to the exemplar's (family byte 0xfc) and aim it elsewhere.
        let mut at = 64;
        while bytes[at + 4] != 0xfc {
            at += u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        }
        bytes[at + 16..at + 24].copy_from_slice(&8_u64.to_le_bytes());
        drop(store);
        fs::write(&path, bytes).unwrap();
        let sum = aggregate(&directory, &schema()).unwrap();
        assert_eq!(sum.files, 0);
        assert!(
            sum.skipped[0].1.starts_with("torn record"),
            "{:?}",
            sum.skipped
        );
        fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn a_torn_file_is_skipped_and_reported() {
        let directory = directory("torn");
        record(&file_store(&directory), "gpt-4o", 0.5);
        fs::write(
            directory.join("gwm-1-bad.gwm"),
            b"GWMFILE1 but nothing after",
        )
        .unwrap();
        let sum = aggregate(&directory, &schema()).unwrap();
        assert_eq!(sum.files, 1);
        assert_eq!(sum.skipped.len(), 1);
        let hits = "ractogateway_cache_hits_total{cache_type=\"exact\"} 1.0".to_owned();
        assert!(text(&sum).contains(&hits));
        fs::remove_dir_all(directory).unwrap();
    }

    fn requests(directory: &Path) -> f64 {
        let mut total = 0.0;
        for line in text(&aggregate(directory, &schema()).unwrap()) {
            if let Some(rest) = line.strip_prefix("ractogateway_requests_total{") {
                total += rest.rsplit(' ').next().unwrap().parse::<f64>().unwrap();
            }
        }
        total
    }

    fn dead_files(directory: &Path, count: usize) {
        for index in 0..count {
            record(&file_store(directory), "gpt-4o", 0.1 * index as f64);
        }
    }

    #[test]
    fn a_compaction_whose_removals_fail_still_counts_every_file_once() {
        let directory = directory("removal");
        dead_files(&directory, 4);
        assert_eq!(requests(&directory), 4.0);
        let failing = |_: &Path| Err(io::Error::other("refused"));
        let first = compact_with(&directory, WAIT, failing).unwrap();
        assert_eq!((first.folded, first.not_removed.len()), (4, 4));
        assert_eq!(requests(&directory), 4.0);
        // The next compaction (again refused) folds the folded file once more,
        // taking over the names it absorbed.
        dead_files(&directory, 2);
        let second = compact_with(&directory, WAIT, failing).unwrap();
        assert_eq!(second.folded, 3);
        assert_eq!(requests(&directory), 6.0);
        // Once removals work, what was absorbed goes and the sum stays.
        let third = compact(&directory, WAIT).unwrap();
        assert!(third.not_removed.is_empty());
        assert_eq!(requests(&directory), 6.0);
        assert_eq!(list_files(&directory).unwrap().len(), 1);
        fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn files_left_by_a_killed_compaction_are_counted_once_and_tidied() {
        let directory = directory("killed");
        dead_files(&directory, 3);
        let sources = list_files(&directory).unwrap();
        // A compaction killed after publishing: the folded file and its sources.
        let mut sum = Aggregate::new(schema());
        for path in &sources {
            let contents = read_file(path, &schema()).unwrap();
            sum.add_file(path, &contents.series, &contents.exemplars);
        }
        sum.write_to(&directory, sources.iter().map(|path| file_name(path)))
            .unwrap();
        // And one killed while writing: a hidden file nobody holds.
        let abandoned = SharedFile::create_unpublished(&directory, &schema()).unwrap();
        drop(abandoned);
        assert_eq!(requests(&directory), 3.0);
        let done = compact(&directory, WAIT).unwrap();
        assert_eq!(done.folded, 0);
        assert_eq!(requests(&directory), 3.0);
        assert_eq!(list_files(&directory).unwrap().len(), 1);
        assert!(list_temporary_files(&directory).unwrap().is_empty());
        fs::remove_dir_all(directory).unwrap();
    }
}
