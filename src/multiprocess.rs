//! Multi-process mode: a scrape sums the files of every process in a directory.
//!
//! Every process that records writes its own [`SharedFile`]; a scrape in any of
//! them reads all the files of the directory, live and dead processes alike,
//! and adds them up series by series. Compaction folds the files of processes
//! that are gone (nobody holds their lock) into one, so a scrape does not slow
//! down as workers come and go. A directory lock, shared by scrapes and held
//! exclusively by compaction and cleanup, keeps a scrape from reading a folded
//! file together with the file it was folded into.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use smallvec::SmallVec;

use crate::histogram::{HistogramSnapshot, BUCKET_COUNT};
use crate::shared_file::{list_files, read_file, try_lock, FileSeries, SharedFile};
use crate::slots::{SeriesDescription, SlotArena};
use crate::store::{visit_family, FamilyDesc, Reading, SampleVisitor, SeriesView, FAMILIES};

const DIRECTORY_LOCK: &str = ".gateway_metrics.lock";

/// The directory lock: shared for reading, exclusive for compaction and cleanup.
/// Held until dropped (closing the file releases the `flock`).
struct DirectoryLock {
    _file: File,
}

impl DirectoryLock {
    fn take(directory: &Path, exclusive: bool) -> io::Result<Self> {
        fs::create_dir_all(directory)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(directory.join(DIRECTORY_LOCK))?;
        let operation = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        // SAFETY: a valid descriptor; blocks until the lock is granted.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(DirectoryLock { _file: file })
    }
}

/// How each family's slots add up: which slots hold the bits of an `f64`.
fn float_slot(family: &FamilyDesc, slot: usize) -> bool {
    match family.id {
        3 => true,
        1 => slot == BUCKET_COUNT,
        _ => false,
    }
}

fn slot_count(family: &FamilyDesc) -> usize {
    if family.id == 1 {
        BUCKET_COUNT + 1
    } else {
        1
    }
}

struct SummedSeries {
    labels: Vec<String>,
    slots: Vec<u64>,
    created: f64,
}

/// One family's summed series in order of first appearance, and their index by labels.
type SummedFamily = (Vec<SummedSeries>, HashMap<Vec<String>, usize>);

/// The sum of the series of many files, in order of first appearance.
#[derive(Default)]
pub struct Aggregate {
    families: Vec<SummedFamily>,
    /// Files left out, with the reason (torn, truncated or unreadable).
    pub skipped: Vec<(PathBuf, String)>,
    /// Number of files summed.
    pub files: usize,
}

impl Aggregate {
    fn new() -> Self {
        Aggregate {
            families: FAMILIES.iter().map(|_| Default::default()).collect(),
            skipped: Vec::new(),
            files: 0,
        }
    }

    /// Checks a whole file before adding any of it, so a bad file adds nothing.
    fn add_file(&mut self, path: &Path, series: Vec<FileSeries>) {
        let malformed = series.iter().find_map(|one| {
            let family = FAMILIES.get(usize::from(one.family))?;
            (one.labels.len() != family.label_names.len() || one.slots.len() != slot_count(family))
                .then_some(())
        });
        let unknown = series
            .iter()
            .any(|one| FAMILIES.get(usize::from(one.family)).is_none());
        if malformed.is_some() || unknown {
            self.skipped.push((
                path.to_path_buf(),
                "a record does not match its family".to_owned(),
            ));
            return;
        }
        self.files += 1;
        for one in series {
            self.add_series(one);
        }
    }

    fn add_series(&mut self, series: FileSeries) {
        let family = FAMILIES[usize::from(series.family)];
        let (summed, index) = &mut self.families[usize::from(series.family)];
        match index.get(&series.labels) {
            Some(&position) => {
                let target = &mut summed[position];
                for (slot, (total, value)) in target.slots.iter_mut().zip(&series.slots).enumerate()
                {
                    *total = if float_slot(family, slot) {
                        (f64::from_bits(*total) + f64::from_bits(*value)).to_bits()
                    } else {
                        total.saturating_add(*value)
                    };
                }
                target.created = target.created.min(series.created);
            }
            None => {
                index.insert(series.labels.clone(), summed.len());
                summed.push(SummedSeries {
                    labels: series.labels,
                    slots: series.slots,
                    created: series.created,
                });
            }
        }
    }

    /// Walks every family and sample of the sum, as [`crate::store::Store::visit`] does.
    pub fn visit(&self, include_created: bool, visitor: &mut impl SampleVisitor) {
        for (family, (summed, _)) in FAMILIES.iter().zip(&self.families) {
            let views = summed.iter().enumerate().map(|(id, series)| SeriesView {
                id,
                labels: series
                    .labels
                    .iter()
                    .map(String::as_str)
                    .collect::<SmallVec<_>>(),
                reading: if family.id == 1 {
                    Reading::Histogram(HistogramSnapshot::from_slots(&series.slots).unwrap_or(
                        HistogramSnapshot {
                            cumulative: [0; BUCKET_COUNT],
                            sum: 0.0,
                        },
                    ))
                } else if float_slot(family, 0) {
                    Reading::Value(f64::from_bits(series.slots[0]))
                } else {
                    Reading::Value(series.slots[0] as f64)
                },
                created: series.created,
            });
            visit_family(family, views, include_created, visitor);
        }
    }

    /// Writes the sum into a new file of `directory` (for compaction).
    fn write_to(&self, directory: &Path) -> io::Result<PathBuf> {
        let arena = SlotArena::file(SharedFile::create(directory)?);
        for (family, (summed, _)) in FAMILIES.iter().zip(&self.families) {
            for series in summed {
                let labels: SmallVec<[&str; 4]> =
                    series.labels.iter().map(String::as_str).collect();
                let description = SeriesDescription {
                    family: family.id,
                    labels: &labels,
                    created: series.created,
                };
                let first = arena.allocate_raw(&description, series.slots.len())?;
                for (index, value) in series.slots.iter().enumerate() {
                    // SAFETY: `allocate_raw` returned `slots.len()` slots.
                    unsafe { first.add(index).as_ref() }
                        .store(*value, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        arena.into_file_path()
    }
}

/// Sums every metrics file of `directory`.
pub fn aggregate(directory: &Path) -> io::Result<Aggregate> {
    let _shared = DirectoryLock::take(directory, false)?;
    let mut sum = Aggregate::new();
    for path in list_files(directory)? {
        match read_file(&path) {
            Ok(series) => sum.add_file(&path, series),
            Err(reason) => sum.skipped.push((path, reason)),
        }
    }
    Ok(sum)
}

/// The files of `directory` whose owner is gone, each opened and locked.
fn dead_files(directory: &Path) -> io::Result<Vec<(PathBuf, File)>> {
    let mut dead = Vec::new();
    for path in list_files(directory)? {
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        if try_lock(&file)? {
            dead.push((path, file));
        }
    }
    Ok(dead)
}

/// What a compaction did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Compaction {
    /// Files of processes that were gone, now folded.
    pub folded: usize,
    /// Torn files removed without being folded.
    pub discarded: usize,
    /// The file they were folded into, if any.
    pub into: Option<PathBuf>,
}

/// Folds the files of processes that are gone into one new file.
///
/// Safe while workers write (their files are locked, so they are left alone)
/// and while other processes scrape (they wait for the directory lock).
pub fn compact(directory: &Path) -> io::Result<Compaction> {
    let _exclusive = DirectoryLock::take(directory, true)?;
    let dead = dead_files(directory)?;
    if dead.len() < 2 {
        return Ok(Compaction::default());
    }
    let mut sum = Aggregate::new();
    let mut discarded = Vec::new();
    for (path, _) in &dead {
        match read_file(path) {
            Ok(series) => sum.add_file(path, series),
            Err(_) => discarded.push(path.clone()),
        }
    }
    discarded.extend(sum.skipped.iter().map(|(path, _)| path.clone()));
    let into = sum.write_to(directory)?;
    for (path, _) in &dead {
        fs::remove_file(path)?;
    }
    Ok(Compaction {
        folded: dead.len() - discarded.len(),
        discarded: discarded.len(),
        into: Some(into),
    })
}

/// Removes the files of every process that is gone: the start of a new job.
pub fn cleanup(directory: &Path) -> io::Result<usize> {
    let _exclusive = DirectoryLock::take(directory, true)?;
    let dead = dead_files(directory)?;
    for (path, _) in &dead {
        fs::remove_file(path)?;
    }
    Ok(dead.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counter::Writers;
    use crate::exposition::TextEncoder;
    use crate::pricing::{Price, PriceTable};
    use crate::store::{CacheOutcome, RequestLabels, RequestValues, Store};

    fn prices() -> PriceTable {
        PriceTable::new([(
            "gpt-4o",
            Price {
                input_per_million: 2.5,
                output_per_million: 10.0,
            },
        )])
    }

    fn file_store(directory: &Path) -> Store {
        Store::with_arena(
            prices(),
            SlotArena::file(SharedFile::create(directory).unwrap()),
            Writers::Concurrent,
        )
    }

    fn record(store: &Store, model: &str, latency_s: f64) {
        let labels = RequestLabels {
            provider: "openai",
            model,
            operation: "chat",
            status: "ok",
        };
        let values = RequestValues {
            latency_s,
            input_tokens: 1000,
            output_tokens: 200,
        };
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
        let mut encoder = TextEncoder::default();
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
        let before = aggregate(&directory).unwrap();
        assert_eq!((before.files, before.skipped.len()), (4, 0));
        let mut expected = TextEncoder::default();
        single.visit(false, &mut expected);
        assert_eq!(text(&before), lines(expected.into_text()));

        let compaction = compact(&directory).unwrap();
        assert_eq!((compaction.folded, compaction.discarded), (3, 0));
        let after = aggregate(&directory).unwrap();
        assert_eq!(after.files, 2);
        assert_eq!(text(&after), text(&before));
        assert_eq!(cleanup(&directory).unwrap(), 1);
        assert_eq!(aggregate(&directory).unwrap().files, 1);
        drop(live);
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
        let sum = aggregate(&directory).unwrap();
        assert_eq!(sum.files, 1);
        assert_eq!(sum.skipped.len(), 1);
        let hits = "ractogateway_cache_hits_total{cache_type=\"exact\"} 1.0".to_owned();
        assert!(text(&sum).contains(&hits));
        fs::remove_dir_all(directory).unwrap();
    }
}
