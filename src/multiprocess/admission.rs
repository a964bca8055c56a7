//! One cap on series for a whole multi-process directory: the label sets each
//! family admitted, in a file every process of the directory appends to and
//! reads, so that every process admits the same first `max_series` label sets
//! of a family and folds the rest into the overflow series.
//!
//! The file (`ADMISSION_FILE`) is a header, the magic and the length of what
//! is committed, then records: a `u32` length, the family id, a `u16` count of
//! label values, and each value as a `u32` length and its UTF-8 bytes. A
//! process appends a record, then commits it by writing the new length into
//! the header, both under the file's lock; readers read up to the committed
//! length without the lock, so a writer killed midway leaves a record nobody
//! reads, which the next writer overwrites. Every length read is checked
//! against the file; a file that does not read (damaged, replaced, locked
//! for too long by another process) makes this process fall back to its own
//! cap, so that recording never fails because of it.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::multiprocess::lock::{Access, DirectoryLock};
use crate::schema::family::FamilyId;
use crate::store::admission::Admission;

/// Name of the file of admitted label sets inside the directory (not a
/// metrics file: compaction and scrapes pass it by).
pub const ADMISSION_FILE: &str = "series-cap.gwm-admitted";
/// The lock its writers take.
const ADMISSION_LOCK: &str = ".series-cap.gwm-admitted.lock";
/// The file's first bytes.
const MAGIC: &[u8; 8] = b"GWMADM01";
/// Magic, then the committed length.
const HEADER_LEN: u64 = 16;
/// The longest record a reader accepts (label values are short; this bounds
/// what a damaged length can make a reader allocate).
const MAX_RECORD_LEN: u64 = 1 << 20;
/// How long a process waits for another's append before it keeps its own cap.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// A family's label set, as the file records it.
type LabelSet = (FamilyId, Vec<String>);

/// What this process has read of the file.
struct Admitted {
    file: File,
    /// Up to where the file has been read.
    read_to: u64,
    sets: HashSet<LabelSet>,
    counts: HashMap<FamilyId, usize>,
    /// Why the file is not used any more, if it is not.
    broken: Option<String>,
}

/// The admissions of one directory, as one process sees them.
pub struct SharedAdmission {
    directory: PathBuf,
    state: Mutex<Admitted>,
}

impl SharedAdmission {
    /// Opens (creating) the directory's file of admitted label sets.
    pub fn open(directory: &Path) -> io::Result<Self> {
        let path = directory.join(ADMISSION_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::other(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        Ok(SharedAdmission {
            directory: directory.to_path_buf(),
            state: Mutex::new(Admitted {
                file,
                read_to: HEADER_LEN,
                sets: HashSet::new(),
                counts: HashMap::new(),
                broken: None,
            }),
        })
    }

    /// Why this process stopped using the file, if it did.
    pub fn broken(&self) -> Option<String> {
        self.lock_state().broken.clone()
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, Admitted> {
        // A panic elsewhere while it was held leaves plain data: still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Admitted {
    fn knows(&self, family: FamilyId, key: &[&str]) -> bool {
        // Built only on this slow path: a label set new to the store.
        self.sets.contains(&(
            family,
            key.iter().map(|value| (*value).to_owned()).collect(),
        ))
    }

    fn count(&self, family: FamilyId) -> usize {
        self.counts.get(&family).copied().unwrap_or(0)
    }

    /// The committed length in the header (0 for a file not yet begun).
    fn committed(&self) -> io::Result<u64> {
        // The header first, the size then: a writer grows the file before it
        // commits, so what a header commits is in the file by the time its
        // size is asked, however the two are interleaved with the writer's.
        let mut header = [0_u8; HEADER_LEN as usize];
        match self.file.read_exact_at(&mut header, 0) {
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
            other => other?,
        }
        if &header[..8] != MAGIC {
            return Err(io::Error::other("not a file of admitted label sets"));
        }
        let committed = u64::from_le_bytes(header[8..].try_into().unwrap_or_default());
        let size = self.file.metadata()?.len();
        if committed < HEADER_LEN || committed > size {
            return Err(io::Error::other(format!(
                "committed length {committed} does not fit the file's {size} bytes"
            )));
        }
        Ok(committed)
    }

    /// Reads the records committed since the last reading; returns the
    /// committed length (0 for a file not yet begun).
    fn refresh(&mut self) -> io::Result<u64> {
        let committed = self.committed()?;
        if committed < self.read_to && committed != 0 {
            return Err(io::Error::other("the file shrank (replaced?)"));
        }
        if committed <= self.read_to {
            return Ok(committed);
        }
        let mut bytes =
            vec![0_u8; usize::try_from(committed - self.read_to).map_err(io::Error::other)?];
        self.file.read_exact_at(&mut bytes, self.read_to)?;
        let mut at = 0;
        while at < bytes.len() {
            let (set, length) = decode(&bytes[at..])?;
            at += length;
            *self.counts.entry(set.0).or_default() += 1;
            self.sets.insert(set);
        }
        self.read_to = committed;
        Ok(committed)
    }

    /// Appends and commits a record of `family`'s `key` at `committed`.
    fn append(&mut self, committed: u64, family: FamilyId, key: &[&str]) -> io::Result<()> {
        let mut record = vec![0_u8; 4];
        record.push(family);
        record.extend_from_slice(
            &u16::try_from(key.len())
                .map_err(io::Error::other)?
                .to_le_bytes(),
        );
        for value in key {
            record.extend_from_slice(
                &u32::try_from(value.len())
                    .map_err(io::Error::other)?
                    .to_le_bytes(),
            );
            record.extend_from_slice(value.as_bytes());
        }
        let length = u32::try_from(record.len()).map_err(io::Error::other)?;
        record[..4].copy_from_slice(&length.to_le_bytes());
        if u64::from(length) > MAX_RECORD_LEN {
            return Err(io::Error::other("a label set too long to share"));
        }
        if committed < HEADER_LEN {
            // The file's first writer writes its header.
            let mut header = MAGIC.to_vec();
            header.extend_from_slice(&HEADER_LEN.to_le_bytes());
            self.file.write_all_at(&header, 0)?;
        }
        let at = committed.max(HEADER_LEN);
        self.file.write_all_at(&record, at)?;
        let end = at + u64::from(length);
        self.file.write_all_at(&end.to_le_bytes(), 8)?;
        self.read_to = end;
        *self.counts.entry(family).or_default() += 1;
        self.sets.insert((
            family,
            key.iter().map(|value| (*value).to_owned()).collect(),
        ));
        Ok(())
    }
}

/// One record at the start of `bytes`: the label set and the record's length.
fn decode(bytes: &[u8]) -> io::Result<(LabelSet, usize)> {
    let damaged = || io::Error::other("a damaged record");
    let take = |at: usize, count: usize| bytes.get(at..at + count).ok_or_else(damaged);
    let length = u32::from_le_bytes(take(0, 4)?.try_into().map_err(|_| damaged())?) as usize;
    if length < 7 || length as u64 > MAX_RECORD_LEN || length > bytes.len() {
        return Err(damaged());
    }
    let record = &bytes[..length];
    let family = record[4];
    let values = u16::from_le_bytes([record[5], record[6]]);
    let mut at = 7;
    let mut labels = Vec::with_capacity(usize::from(values).min(64));
    for _ in 0..values {
        let size = record.get(at..at + 4).ok_or_else(damaged)?;
        let size = u32::from_le_bytes(size.try_into().map_err(|_| damaged())?) as usize;
        at += 4;
        let text = record.get(at..at + size).ok_or_else(damaged)?;
        labels.push(String::from_utf8(text.to_vec()).map_err(|_| damaged())?);
        at += size;
    }
    if at != length {
        return Err(damaged());
    }
    Ok(((family, labels), length))
}

impl Admission for std::sync::Arc<SharedAdmission> {
    fn admit(&self, family: FamilyId, key: &[&str], max_series: usize) -> bool {
        self.as_ref().admit(family, key, max_series)
    }
}

impl Admission for SharedAdmission {
    fn admit(&self, family: FamilyId, key: &[&str], max_series: usize) -> bool {
        let mut state = self.lock_state();
        if state.broken.is_some() {
            return true; // this process's own cap only
        }
        let decided = (|| -> io::Result<bool> {
            if state.knows(family, key) {
                return Ok(true);
            }
            state.refresh()?;
            if state.knows(family, key) {
                return Ok(true);
            }
            if state.count(family) >= max_series {
                return Ok(false);
            }
            // Held too long by another process (stopped, or hostile): this
            // process stops waiting for it, and keeps its own cap from then on,
            // rather than stall each new label set.
            let _held = DirectoryLock::take_file(
                &self.directory.join(ADMISSION_LOCK),
                Access::Exclusive,
                LOCK_WAIT,
            )?;
            let committed = state.refresh()?;
            if state.knows(family, key) {
                return Ok(true);
            }
            if state.count(family) >= max_series {
                return Ok(false);
            }
            state.append(committed, family, key)?;
            Ok(true)
        })();
        decided.unwrap_or_else(|error| {
            state.broken = Some(error.to_string());
            true
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directory(name: &str) -> PathBuf {
        let directory = std::env::temp_dir().join(format!(
            "gwm-admission-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&directory).unwrap();
        directory
    }

    #[test]
    fn sharers_admit_the_same_first_label_sets() {
        let directory = directory("same");
        let first = SharedAdmission::open(&directory).unwrap();
        let second = SharedAdmission::open(&directory).unwrap();
        assert!(first.admit(0, &["a", "x"], 2));
        assert!(second.admit(0, &["b", "é\u{0}"], 2));
        assert_eq!((first.broken(), second.broken()), (None, None));
        // Full: a third label set is folded everywhere, known ones admitted.
        assert!(!first.admit(0, &["c", "x"], 2));
        assert!(!second.admit(0, &["c", "x"], 2));
        assert!(first.admit(0, &["b", "é\u{0}"], 2));
        assert!(second.admit(0, &["a", "x"], 2));
        // Families are counted apart.
        assert!(second.admit(3, &["c"], 2));
        let third = SharedAdmission::open(&directory).unwrap();
        assert!(third.admit(0, &["a", "x"], 2) && !third.admit(0, &["d", "x"], 2));
        assert_eq!(first.broken(), None);
        std::fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn concurrent_sharers_never_pass_the_cap() {
        let directory = directory("concurrent");
        let admitted: Vec<usize> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|sharer| {
                    let directory = &directory;
                    scope.spawn(move || {
                        let admission = SharedAdmission::open(directory).unwrap();
                        let count = (0..3000)
                            .filter(|index| {
                                let model = format!("m{sharer}-{index}");
                                admission.admit(0, &[&model], 1000)
                                    & admission.admit(2, &[&model, "input"], 1000)
                            })
                            .count();
                        assert_eq!(admission.broken(), None);
                        count
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().unwrap())
                .collect()
        });
        assert!(admitted.iter().sum::<usize>() <= 1000, "{admitted:?}");
        std::fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn a_lock_held_too_long_makes_a_process_keep_its_own_cap() {
        let directory = directory("locked");
        let held = DirectoryLock::take_file(
            &directory.join(ADMISSION_LOCK),
            Access::Exclusive,
            LOCK_WAIT,
        )
        .unwrap();
        let sharer = SharedAdmission::open(&directory).unwrap();
        let started = std::time::Instant::now();
        assert!(sharer.admit(0, &["a"], 1));
        assert!(started.elapsed() >= LOCK_WAIT);
        assert!(sharer.broken().unwrap().contains("held by another process"));
        // No second wait: the process keeps its own cap.
        let again = std::time::Instant::now();
        assert!(sharer.admit(0, &["b"], 1));
        assert!(again.elapsed() < LOCK_WAIT);
        drop(held);
        std::fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn a_damaged_file_makes_a_process_keep_its_own_cap() {
        let directory = directory("damaged");
        let sharer = SharedAdmission::open(&directory).unwrap();
        assert!(sharer.admit(0, &["a"], 1));
        let path = directory.join(ADMISSION_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        // A record's length pointing far past the file.
        bytes[HEADER_LEN as usize..HEADER_LEN as usize + 4]
            .copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let later = SharedAdmission::open(&directory).unwrap();
        assert!(later.admit(0, &["b"], 1));
        assert!(later.broken().is_some());
        std::fs::write(&path, b"not a file of ours, and long enough").unwrap();
        let other = SharedAdmission::open(&directory).unwrap();
        assert!(other.admit(0, &["c"], 1));
        assert!(other.broken().unwrap().contains("not a file of admitted"));
        std::fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn a_record_decodes_to_what_was_appended_and_nothing_else() {
        let directory = directory("decode");
        let sharer = SharedAdmission::open(&directory).unwrap();
        assert!(sharer.admit(7, &["", "ä", "x y"], 5));
        let bytes = std::fs::read(directory.join(ADMISSION_FILE)).unwrap();
        let ((family, labels), length) = decode(&bytes[HEADER_LEN as usize..]).unwrap();
        assert_eq!(
            (family, labels.as_slice()),
            (7, &[String::new(), "ä".to_owned(), "x y".to_owned()][..])
        );
        assert_eq!(length + HEADER_LEN as usize, bytes.len());
        for cut in 0..length {
            assert!(decode(&bytes[HEADER_LEN as usize..HEADER_LEN as usize + cut]).is_err());
        }
        std::fs::remove_dir_all(directory).unwrap();
    }
}
