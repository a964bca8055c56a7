//! A process's metrics file for multi-process mode, and the reader of such files.
//!
//! Each process records into its own file, memory-mapped and shared: a series'
//! values are atomics inside the mapping, so recording makes no system call and
//! a process killed with SIGKILL loses nothing it had recorded (the page cache
//! keeps what it wrote). The file is named by the pid and a random identity
//! drawn at creation, so a reused pid can neither merge nor overwrite files.
//! The owner holds an exclusive `flock` on its file for as long as it lives:
//! a file nobody has locked belongs to a process that is gone.
//!
//! Layout, little-endian, every record 8-byte aligned:
//!
//! ```text
//! header (64 bytes): magic "GWMFILE1" | used: u64 (atomic) | pid: u64 | id: u64 | created: f64
//! record: len: u32 | family: u8 | label count: u8 | slot count: u16 | created: f64
//!         | per label: byte length u32, UTF-8 bytes | padding to 8 | slots: u64 each
//! ```
//!
//! A writer appends a record, then publishes it by storing the new end in
//! `used` (release); readers load `used` (acquire) and parse only up to it, so
//! they never see a half-written record. The file grows in separately mapped
//! chunks, so slots handed out earlier never move; a record never straddles two
//! chunks (the rest of a chunk is filled with a padding record).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::slots::SeriesDescription;

/// The first bytes of every metrics file.
pub const MAGIC: [u8; 8] = *b"GWMFILE1";
/// Extension of published metrics files.
pub const EXTENSION: &str = "gwm";
const HEADER_LEN: usize = 64;
const USED_OFFSET: usize = 8;
const RECORD_HEADER_LEN: usize = 16;
const CHUNK_LEN: usize = 1 << 20;
/// Family byte of a padding record.
const PADDING: u8 = 0xff;

fn align8(length: usize) -> usize {
    (length + 7) & !7
}

/// Takes an exclusive `flock` on `file`; `Ok(false)` when another holder has it.
pub fn try_lock(file: &File) -> io::Result<bool> {
    // SAFETY: a valid descriptor for the duration of the call.
    let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if result == 0 {
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(error)
    }
}

/// A shared, read-write or read-only mapping of part of a file.
struct Mapping {
    start: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(file: &File, offset: usize, len: usize, writable: bool) -> io::Result<Self> {
        let protection = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: maps `len` bytes of an open file; the result is checked.
        let start = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                protection,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if start == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(start.cast())
            .map(|start| Mapping { start, len })
            .ok_or_else(|| io::Error::other("mmap returned null"))
    }

    /// The atomic at byte `offset` (8-aligned, inside the mapping).
    fn atomic(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset.is_multiple_of(8) && offset + 8 <= self.len);
        // SAFETY: in bounds and aligned (mappings are page-aligned); the file's
        // bytes are only ever accessed through atomics or before publication.
        unsafe { &*self.start.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` bytes long and lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.start.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped.
        unsafe { libc::munmap(self.start.as_ptr().cast(), self.len) };
    }
}

/// The file this process records into.
pub struct SharedFile {
    path: PathBuf,
    /// Kept open: its `flock` marks the owner as alive.
    file: File,
    chunks: Vec<(usize, Mapping)>,
    /// Bytes allocated on disk.
    capacity: usize,
    /// Bytes published.
    used: usize,
}

// SAFETY: the mappings are plain shared memory; `SharedFile` is only mutated
// through `&mut` (the arena's mutex), and the atomics inside are `Sync`.
unsafe impl Send for SharedFile {}

fn random_identity() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    hasher.write_u128(now);
    hasher.write_u32(std::process::id());
    hasher.finish()
}

impl SharedFile {
    /// Creates, locks and maps a new file for this process in `directory`.
    pub fn create(directory: &Path) -> io::Result<Self> {
        fs::create_dir_all(directory)?;
        let pid = std::process::id();
        let identity = random_identity();
        let name = format!("gwm-{pid}-{identity:016x}.{EXTENSION}");
        let path = directory.join(&name);
        let temporary = directory.join(format!(".{name}.tmp"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temporary)?;
        if !try_lock(&file)? {
            return Err(io::Error::other(
                "a new metrics file is locked by another process",
            ));
        }
        let mut shared = SharedFile {
            path,
            file,
            chunks: Vec::new(),
            capacity: 0,
            used: HEADER_LEN,
        };
        shared.grow(CHUNK_LEN)?;
        let header = shared.chunks[0].1.start.as_ptr();
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |elapsed| elapsed.as_secs_f64());
        // SAFETY: the header lies in the first chunk, which nobody else reads yet.
        unsafe {
            std::ptr::copy_nonoverlapping(MAGIC.as_ptr(), header, MAGIC.len());
            header.add(16).cast::<u64>().write(u64::from(pid));
            header.add(24).cast::<u64>().write(identity);
            header.add(32).cast::<f64>().write(created);
        }
        shared.publish();
        // Published under its final name only once the header is complete.
        fs::rename(&temporary, &shared.path)?;
        Ok(shared)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn publish(&self) {
        self.chunks[0]
            .1
            .atomic(USED_OFFSET)
            .store(self.used as u64, Ordering::Release);
    }

    /// Reserves `len` more bytes on disk and maps them as a new chunk.
    fn grow(&mut self, len: usize) -> io::Result<()> {
        let new_capacity = self.capacity + len;
        // Reserving the blocks now turns a full disk into an error here instead
        // of a SIGBUS when a slot is written later.
        // SAFETY: a valid descriptor; the result is checked.
        let result = unsafe {
            libc::posix_fallocate(
                self.file.as_raw_fd(),
                self.capacity as libc::off_t,
                len as libc::off_t,
            )
        };
        if result != 0 {
            return Err(io::Error::from_raw_os_error(result));
        }
        let mapping = Mapping::new(&self.file, self.capacity, len, true)?;
        self.chunks.push((self.capacity, mapping));
        self.capacity = new_capacity;
        Ok(())
    }

    /// Appends the record of a new series with `slots` zeroed value slots and
    /// returns the first slot; falls back to an error the caller can report.
    pub fn append_series(
        &mut self,
        series: &SeriesDescription<'_>,
        slots: usize,
    ) -> io::Result<NonNull<AtomicU64>> {
        let labels_len: usize = series.labels.iter().map(|label| 4 + label.len()).sum();
        let slots_offset = align8(RECORD_HEADER_LEN + labels_len);
        let record_len = slots_offset + slots * 8;
        let (chunk_start, chunk) = self.chunks.last().map_or((0, 0), |(s, m)| (*s, m.len));
        if self.used + record_len > chunk_start + chunk {
            let rest = chunk_start + chunk - self.used;
            if rest > 0 {
                self.write_record_header(self.used, rest, PADDING, 0, 0, 0.0);
                self.used += rest;
                self.publish();
            }
            let page = 4096;
            self.grow(CHUNK_LEN.max(record_len.div_ceil(page) * page))?;
        }
        let at = self.used;
        let label_count =
            u8::try_from(series.labels.len()).map_err(|_| io::Error::other("too many labels"))?;
        let slot_count = u16::try_from(slots).map_err(|_| io::Error::other("too many slots"))?;
        let record_len32 =
            u32::try_from(record_len).map_err(|_| io::Error::other("label values too long"))?;
        self.write_record_header(
            at,
            record_len32 as usize,
            series.family,
            label_count,
            slot_count,
            series.created,
        );
        let (chunk_start, mapping) = self
            .chunks
            .last()
            .map(|(s, m)| (*s, m))
            .ok_or_else(|| io::Error::other("no mapped chunk"))?;
        let mut cursor = at - chunk_start + RECORD_HEADER_LEN;
        for label in series.labels {
            let length = u32::try_from(label.len()).unwrap_or(u32::MAX).to_le_bytes();
            // SAFETY: the record fits in this chunk (checked above) and is unpublished.
            unsafe {
                let base = mapping.start.as_ptr().add(cursor);
                std::ptr::copy_nonoverlapping(length.as_ptr(), base, 4);
                std::ptr::copy_nonoverlapping(label.as_ptr(), base.add(4), label.len());
            }
            cursor += 4 + label.len();
        }
        let first_slot = NonNull::from(mapping.atomic(at - chunk_start + slots_offset));
        self.used += record_len;
        self.publish();
        Ok(first_slot)
    }

    fn write_record_header(
        &self,
        at: usize,
        len: usize,
        family: u8,
        label_count: u8,
        slot_count: u16,
        created: f64,
    ) {
        let Some((chunk_start, mapping)) = self.chunks.iter().rev().find(|(s, _)| *s <= at) else {
            return;
        };
        // SAFETY: `at` is 8-aligned inside this chunk and not yet published.
        unsafe {
            let base = mapping.start.as_ptr().add(at - chunk_start);
            base.cast::<u32>()
                .write(u32::try_from(len).unwrap_or(u32::MAX));
            base.add(4).write(family);
            base.add(5).write(label_count);
            base.add(6).cast::<u16>().write(slot_count);
            if len >= RECORD_HEADER_LEN {
                base.add(8).cast::<f64>().write(created);
            }
        }
    }
}

/// One series as read from a metrics file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSeries {
    /// The family's identifier.
    pub family: u8,
    /// Label values in the family's label order.
    pub labels: Vec<String>,
    /// Unix time of creation in seconds.
    pub created: f64,
    /// The raw slot values.
    pub slots: Vec<u64>,
}

/// Reads every published series of the file at `path`.
///
/// An error means the file is torn or truncated (or unreadable) and should be skipped.
pub fn read_file(path: &Path) -> Result<Vec<FileSeries>, String> {
    let file = File::open(path).map_err(|error| error.to_string())?;
    let mut size = file.metadata().map_err(|error| error.to_string())?.len() as usize;
    for _ in 0..2 {
        if size < HEADER_LEN {
            return Err(format!("{size} bytes is shorter than a header"));
        }
        let mapping = Mapping::new(&file, 0, size, false).map_err(|error| error.to_string())?;
        if mapping.bytes()[..8] != MAGIC {
            return Err("not a metrics file (bad magic)".to_owned());
        }
        let used = mapping.atomic(USED_OFFSET).load(Ordering::Acquire) as usize;
        if used > size {
            // The file may have grown since it was measured: measure once more.
            size = file.metadata().map_err(|error| error.to_string())?.len() as usize;
            continue;
        }
        return parse_records(&mapping, used);
    }
    Err("published length exceeds the file".to_owned())
}

fn parse_records(mapping: &Mapping, used: usize) -> Result<Vec<FileSeries>, String> {
    let bytes = mapping.bytes();
    let torn = |at: usize| format!("torn record at byte {at}");
    let mut series = Vec::new();
    let mut at = HEADER_LEN;
    while at < used {
        let field = |offset: usize, len: usize| bytes.get(at + offset..at + offset + len);
        let len = field(0, 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| torn(at))? as usize;
        if len < 8 || !len.is_multiple_of(8) || at + len > used {
            return Err(torn(at));
        }
        let family = bytes[at + 4];
        if family == PADDING {
            at += len;
            continue;
        }
        let label_count = usize::from(bytes[at + 5]);
        let slot_count = field(6, 2)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_le_bytes)
            .ok_or_else(|| torn(at))? as usize;
        let created = field(8, 8)
            .and_then(|b| b.try_into().ok())
            .map(f64::from_le_bytes)
            .ok_or_else(|| torn(at))?;
        let mut cursor = at + RECORD_HEADER_LEN;
        let mut labels = Vec::with_capacity(label_count);
        for _ in 0..label_count {
            let length = bytes
                .get(cursor..cursor + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes)
                .ok_or_else(|| torn(at))? as usize;
            let text = bytes
                .get(cursor + 4..cursor + 4 + length)
                .and_then(|b| std::str::from_utf8(b).ok())
                .ok_or_else(|| torn(at))?;
            labels.push(text.to_owned());
            cursor += 4 + length;
        }
        let slots_at = align8(cursor);
        if slots_at + slot_count * 8 != at + len {
            return Err(torn(at));
        }
        let slots = (0..slot_count)
            .map(|index| mapping.atomic(slots_at + index * 8).load(Ordering::Relaxed))
            .collect();
        series.push(FileSeries {
            family,
            labels,
            created,
            slots,
        });
        at += len;
    }
    Ok(series)
}

/// The published metrics files of `directory`, sorted by name.
pub fn list_files(directory: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(directory)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.extension().is_some_and(|ext| ext == EXTENSION)
                && path
                    .file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| !name.starts_with('.'))
        })
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temporary_directory(name: &str) -> PathBuf {
        let directory = std::env::temp_dir().join(format!(
            "gwm-test-{name}-{}-{:x}",
            std::process::id(),
            random_identity()
        ));
        fs::create_dir_all(&directory).unwrap();
        directory
    }

    #[test]
    fn written_series_read_back_with_their_values() {
        let directory = temporary_directory("roundtrip");
        let mut file = SharedFile::create(&directory).unwrap();
        let labels = ["gpt-4o", "openai"];
        let series = SeriesDescription {
            family: 3,
            labels: &labels,
            created: 12.5,
        };
        let slot = file.append_series(&series, 2).unwrap();
        // SAFETY: two slots were allocated.
        unsafe {
            slot.as_ref().store(7, Ordering::Relaxed);
            slot.add(1).as_ref().store(9, Ordering::Relaxed);
        }
        let read = read_file(file.path()).unwrap();
        assert_eq!(
            read,
            vec![FileSeries {
                family: 3,
                labels: vec!["gpt-4o".into(), "openai".into()],
                created: 12.5,
                slots: vec![7, 9],
            }]
        );
        assert_eq!(
            list_files(&directory).unwrap(),
            vec![file.path().to_path_buf()]
        );
        fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn growing_past_a_chunk_keeps_earlier_slots_in_place() {
        let directory = temporary_directory("grow");
        let mut file = SharedFile::create(&directory).unwrap();
        let long = "x".repeat(10_000);
        let mut first = None;
        for index in 0..300_u64 {
            let labels = [long.as_str()];
            let series = SeriesDescription {
                family: 6,
                labels: &labels,
                created: 0.0,
            };
            let slot = file.append_series(&series, 1).unwrap();
            // SAFETY: one slot was allocated.
            unsafe { slot.as_ref().store(index, Ordering::Relaxed) };
            first.get_or_insert(slot);
        }
        // SAFETY: the first slot stays mapped while the file lives.
        unsafe { first.unwrap().as_ref().fetch_add(1000, Ordering::Relaxed) };
        let read = read_file(file.path()).unwrap();
        assert_eq!(read.len(), 300);
        assert_eq!(read[0].slots, vec![1000]);
        assert_eq!(read[299].slots, vec![299]);
        fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn a_truncated_file_is_reported_torn() {
        let directory = temporary_directory("torn");
        let mut file = SharedFile::create(&directory).unwrap();
        let labels = ["a"];
        let series = SeriesDescription {
            family: 4,
            labels: &labels,
            created: 0.0,
        };
        file.append_series(&series, 1).unwrap();
        let copy = directory.join("copy.gwm");
        let bytes = fs::read(file.path()).unwrap();
        fs::write(&copy, &bytes[..HEADER_LEN + 8]).unwrap();
        assert!(read_file(&copy).is_err());
        fs::write(
            &copy,
            b"not a metrics file at all, just some bytes padding it out to 64 b",
        )
        .unwrap();
        assert!(read_file(&copy).is_err());
        fs::remove_dir_all(directory).unwrap();
    }
}
