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
//! header (64 bytes): magic "GWMFILE4" | used: u64 (atomic) | pid: u64 | id: u64 | created: f64
//! record: len: u32 | family: u8 | label count: u8 | cell count: u16 | created: f64
//!         | per label: byte length u32, UTF-8 bytes | padding to 8 | cells: u64 each
//! exemplar record (family 0xfc, no labels): cells: the file offset of its
//!         histogram's first cell | bucket | an exemplar slot (see
//!         crate::cells::exemplar: sequence, value, timestamp, label bytes)
//! ```
//!
//! The magic names the format's version (version 3, the same without
//! exemplar records, is still read). The first records declare the
//! families the file's series belong to, by their whole description (name,
//! type, how values are kept, label names, bucket bounds); a series record's
//! family byte is the position of its declaration in this file. A reader
//! matches each declaration to a family it knows by that description, never by
//! number, and skips a file written with a schema it does not know.
//!
//! A writer appends a record, then publishes it by storing the new end in
//! `used` (release); readers load `used` and parse only up to it, so they never
//! see a half-written record. The file grows in separately mapped chunks, so
//! cells handed out earlier never move; a record never straddles two chunks
//! (the rest of a chunk is filled with a padding record). A file made by
//! compaction also lists, in `absorbed` records, the files whose values it
//! holds, so that readers skip those files should they outlive the compaction.
//!
//! Readers never map other processes' files: another process may shrink a file
//! at any moment, and a mapping read past the new end kills the reader with
//! SIGBUS. They copy the published bytes with `pread` instead (each 8-byte
//! value is aligned, so it is copied whole), and only open regular files,
//! without following symbolic links and without blocking.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cells::arena::{SeriesDescription, SharedCells};
use crate::cells::exemplar::{
    read_slot, shared_slot_cells, write_shared, Exemplar, SHARED_HEAD_CELLS,
    SHARED_MAX_LABEL_CELLS, SLOT_READ_ATTEMPTS,
};
use crate::multiprocess::fork_guard::ParentOnlyFile;
use crate::multiprocess::lock::{Access, DirectoryLock};
use crate::schema::family::{FamilyDesc, FamilyId, Schema, DURATION, LATENCY_BOUNDS, REQUESTS};
use crate::schema::native::NativeConfig;

/// The first bytes of every metrics file.
pub const MAGIC: [u8; 8] = *b"GWMFILE4";
/// The first bytes of files of the previous version, still read.
const MAGIC_3: [u8; 8] = *b"GWMFILE3";
/// Extension of published metrics files.
pub const EXTENSION: &str = "gwm";
const HEADER_LEN: usize = 64;
const USED_OFFSET: usize = 8;
const RECORD_HEADER_LEN: usize = 16;
const CHUNK_LEN: usize = 1 << 20;
/// Family byte of a padding record.
const PADDING: u8 = 0xff;
/// Family byte of a record naming a file whose values this file holds.
const ABSORBED: u8 = 0xfe;
/// Family byte of a record declaring a family (see [`declaration`]).
const DECLARATION: u8 = 0xfd;
/// Family byte of an exemplar slot's record.
const EXEMPLAR: u8 = 0xfc;
/// Cells of an exemplar record before its slot: the histogram's first cell's
/// offset, and the bucket.
const EXEMPLAR_TARGET_CELLS: usize = 2;
/// Longest record a reader accepts: far above any real label set, and a bound
/// on what a damaged length field can make a reader allocate.
const MAX_RECORD_LEN: usize = 64 << 20;
/// Bytes copied per `pread` while reading a file.
const READ_WINDOW: usize = 256 << 10;
/// How long a process creating its file waits for a compaction to finish.
const CREATE_WAIT: Duration = Duration::from_secs(5);

/// The schema a set of declarations describes, if it is one this reader can
/// build: the known families, with the latency buckets and the extra labels
/// they declare (the requests family's labels beyond the reference's four), so
/// that the declarations of the rebuilt schema are exactly the ones read.
fn schema_of(declarations: &[Vec<String>]) -> Result<Schema, ReadError> {
    let reference = Schema::default();
    let declared_of = |family| {
        let name = reference.family(family).name;
        declarations
            .iter()
            .find(|declared| declared.first().is_some_and(|first| first == name))
    };
    let duration_bounds = declared_of(DURATION).and_then(|declared| declared.get(4));
    let native = duration_bounds
        .map(|text| NativeConfig::from_declaration(text))
        .transpose()
        .map_err(ReadError::OtherSchema)?
        .flatten();
    let bounds: Vec<f64> = duration_bounds
        .map(|text| text.split(';').next().unwrap_or_default())
        .map(|text| text.split(',').map(str::parse).collect::<Result<_, _>>())
        .transpose()
        .map_err(|_| ReadError::OtherSchema("unreadable latency buckets".to_owned()))?
        .unwrap_or_else(|| LATENCY_BOUNDS.to_vec());
    let own_labels = &reference.family(REQUESTS).label_names;
    let extra: Vec<String> = declared_of(REQUESTS)
        .and_then(|declared| declared.get(3))
        .map(|names| {
            names
                .split(',')
                .filter(|name| !name.is_empty() && !own_labels.iter().any(|own| own == name))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let schema = Schema::with_options(&bounds, &extra, native).map_err(ReadError::OtherSchema)?;
    for declared in declarations {
        known_family(declared, &schema)?;
    }
    Ok(schema)
}

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

/// Opens `path` for reading if it is a regular file: never follows a symbolic
/// link, never blocks (on a FIFO, say).
pub fn open_regular(path: &Path) -> Result<File, ReadError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|error| match error.raw_os_error() {
            Some(libc::ENOENT) => ReadError::Vanished,
            Some(libc::ELOOP) => ReadError::NotRegular("a symbolic link".to_owned()),
            _ => ReadError::Damaged(error.to_string()),
        })?;
    let metadata = file
        .metadata()
        .map_err(|error| ReadError::Damaged(error.to_string()))?;
    if metadata.is_file() {
        Ok(file)
    } else {
        Err(ReadError::NotRegular(format!(
            "not a regular file ({})",
            file_kind(&metadata)
        )))
    }
}

fn file_kind(metadata: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let kind = metadata.file_type();
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "not a file"
    }
}

/// Whether the file at `path` belongs to a process that is gone: nobody holds
/// its lock. The lock is taken and released at once.
pub fn is_dead(path: &Path) -> Result<bool, ReadError> {
    let file = ParentOnlyFile::open(|| open_regular(path))?;
    try_lock(file.file()).map_err(|error| ReadError::Damaged(error.to_string()))
}

/// Whether this very process wrote `path` (its pid is `pid`) and holds it open:
/// the file of a middleware made in this process, as under gunicorn's
/// `--preload`, where the master imports the application (and creates its
/// middleware) before `on_starting` cleans the directory up.
///
/// Both are asked: the pid alone could be another pid namespace's process, and
/// a descriptor alone could be one inherited over `fork` from the writer.
pub fn held_by_this_process(path: &Path, pid: Option<u64>) -> bool {
    if pid != Some(u64::from(std::process::id())) {
        return false;
    }
    let Ok(wanted) = fs::symlink_metadata(path) else {
        return false;
    };
    let Ok(descriptors) = fs::read_dir("/proc/self/fd") else {
        return false;
    };
    descriptors.flatten().any(|entry| {
        fs::metadata(entry.path())
            .is_ok_and(|open| open.dev() == wanted.dev() && open.ino() == wanted.ino())
    })
}

/// A writable shared mapping of part of a file.
struct Mapping {
    start: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(file: &File, offset: usize, len: usize) -> io::Result<Self> {
        // SAFETY: maps `len` bytes of an open file; the result is checked.
        let start = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
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
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped.
        unsafe { libc::munmap(self.start.as_ptr().cast(), self.len) };
    }
}

/// The file this process records into (or a compaction writes).
pub struct SharedFile {
    path: PathBuf,
    /// The name the file is written under until [`SharedFile::publish`].
    temporary: PathBuf,
    /// Where the chunks are allocated and mapped from.
    file: File,
    /// A second opening of the file, kept open: its `flock` marks the owner as
    /// alive. The mappings hold the first opening, which a forked child keeps
    /// with them; the lock lives on this one, which a child gives up.
    _lock: ParentOnlyFile,
    chunks: Vec<(usize, Mapping)>,
    /// Bytes allocated on disk.
    capacity: usize,
    /// Bytes published.
    used: usize,
}

// SAFETY: the mappings are plain shared memory; `SharedFile` is only mutated
// through `&mut` (the arena's mutex), and the atomics inside are `Sync`.
unsafe impl Send for SharedFile {}

impl SharedCells for SharedFile {
    fn append_series(
        &mut self,
        series: &SeriesDescription<'_>,
        count: usize,
    ) -> io::Result<(NonNull<AtomicU64>, usize)> {
        // Our records keep a series' cells next to each other.
        SharedFile::append_series(self, series, count).map(|first| (first, 8))
    }

    fn path(&self) -> PathBuf {
        SharedFile::path(self).to_path_buf()
    }

    fn keeps_exemplars(&self) -> bool {
        true
    }

    fn append_exemplar(
        &mut self,
        series: NonNull<AtomicU64>,
        bucket: usize,
        cells: usize,
    ) -> io::Result<NonNull<AtomicU64>> {
        SharedFile::append_exemplar(self, series, bucket, cells)
    }
}

/// A random 64-bit identity for a new file's name.
pub fn random_identity() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    hasher.write_u128(now);
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Whether `name` is the hidden name of a file still being written.
pub fn is_temporary_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(&format!(".{EXTENSION}.tmp"))
}

impl SharedFile {
    /// Creates, locks, maps and publishes a new file for this process in `directory`.
    ///
    /// Creation holds the directory lock shared, so that a compaction never
    /// mistakes the file, unlocked for an instant under its hidden name, for
    /// the leftover of a process that died; when a compaction holds the lock
    /// longer than a few seconds, the file is created anyway.
    pub fn create(directory: &Path, schema: &Schema) -> io::Result<Self> {
        let creating = DirectoryLock::take(directory, Access::Shared, CREATE_WAIT);
        let mut shared = Self::create_unpublished(directory, schema)?;
        shared.publish()?;
        drop(creating);
        Ok(shared)
    }

    /// Creates, locks and maps a new file under a hidden name: readers see it
    /// only after [`SharedFile::publish`], whole.
    pub fn create_unpublished(directory: &Path, schema: &Schema) -> io::Result<Self> {
        fs::create_dir_all(directory)?;
        let pid = std::process::id();
        let identity = random_identity();
        let name = format!("gwm-{pid}-{identity:016x}.{EXTENSION}");
        let temporary = directory.join(format!(".{name}.tmp"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temporary)?;
        let lock = ParentOnlyFile::open(|| File::open(&temporary))?;
        if !try_lock(lock.file())? {
            return Err(io::Error::other(
                "a new metrics file is locked by another process",
            ));
        }
        let mut shared = SharedFile {
            path: directory.join(&name),
            temporary,
            file,
            _lock: lock,
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
        shared.publish_used();
        // Series records name their family by its position here, which is its
        // position in the schema.
        for family in schema.families() {
            let labels = family.declaration();
            let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
            let record = SeriesDescription {
                family: DECLARATION,
                labels: &labels,
                created: 0.0,
            };
            shared.append_series(&record, 0)?;
        }
        Ok(shared)
    }

    /// Gives the file its final name, where readers find it.
    pub fn publish(&mut self) -> io::Result<()> {
        fs::rename(&self.temporary, &self.path)
    }

    /// The file's path (once published).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn publish_used(&self) {
        self.chunks[0]
            .1
            .atomic(USED_OFFSET)
            .store(self.used as u64, Ordering::Release);
    }

    /// Reserves `len` more bytes on disk and maps them as a new chunk.
    fn grow(&mut self, len: usize) -> io::Result<()> {
        let new_capacity = self.capacity + len;
        let fd = self.file.as_raw_fd();
        // Reserving the blocks now turns a full disk into an error here instead
        // of a SIGBUS when a cell is written later.
        // SAFETY: a valid descriptor; the result is checked.
        let result =
            unsafe { libc::posix_fallocate(fd, self.capacity as libc::off_t, len as libc::off_t) };
        if result != 0 {
            return Err(io::Error::from_raw_os_error(result));
        }
        let mapping = Mapping::new(&self.file, self.capacity, len)?;
        self.chunks.push((self.capacity, mapping));
        self.capacity = new_capacity;
        Ok(())
    }

    /// Records that this file holds the values of the file called `name`.
    pub fn append_absorbed(&mut self, name: &str) -> io::Result<()> {
        let series = SeriesDescription {
            family: ABSORBED,
            labels: &[name],
            created: 0.0,
        };
        self.append_series(&series, 0).map(drop)
    }

    /// Appends the record of a new series with `cells` zeroed value cells and
    /// returns the first cell; falls back to an error the caller can report.
    pub fn append_series(
        &mut self,
        series: &SeriesDescription<'_>,
        cells: usize,
    ) -> io::Result<NonNull<AtomicU64>> {
        self.append_record(series, &[], cells)
    }

    /// Appends a series record holding `values`; returns its first cell.
    pub fn append_series_holding(
        &mut self,
        series: &SeriesDescription<'_>,
        values: &[u64],
    ) -> io::Result<NonNull<AtomicU64>> {
        let first = self.append_series(series, values.len())?;
        for (index, value) in values.iter().enumerate() {
            // SAFETY: `append_series` returned `values.len()` cells, mapped
            // while `self` lives.
            unsafe { first.add(index).as_ref() }.store(*value, Ordering::Relaxed);
        }
        Ok(first)
    }

    /// Appends the exemplar slot of bucket `bucket` of the histogram whose
    /// first cell is `series` (in this file), holding `exemplar`.
    pub fn append_exemplar_holding(
        &mut self,
        series: NonNull<AtomicU64>,
        bucket: usize,
        exemplar: &Exemplar,
    ) -> io::Result<()> {
        let slot = self.append_exemplar(series, bucket, shared_slot_cells(exemplar))?;
        // SAFETY: `append_exemplar` returned that many zeroed cells, mapped
        // while `self` lives.
        unsafe { write_shared(slot, exemplar) };
        Ok(())
    }

    /// Appends an exemplar slot's record of `cells` zeroed cells for bucket
    /// `bucket` of the histogram whose first cell is `series` (in this file);
    /// returns the slot's first cell.
    pub fn append_exemplar(
        &mut self,
        series: NonNull<AtomicU64>,
        bucket: usize,
        cells: usize,
    ) -> io::Result<NonNull<AtomicU64>> {
        let address = series.as_ptr() as usize;
        let offset = self
            .chunks
            .iter()
            .find_map(|(start, mapping)| {
                let base = mapping.start.as_ptr() as usize;
                (base..base + mapping.len)
                    .contains(&address)
                    .then(|| start + (address - base))
            })
            .ok_or_else(|| io::Error::other("the histogram's cells are not in the file"))?;
        let record = SeriesDescription {
            family: EXEMPLAR,
            labels: &[],
            created: 0.0,
        };
        let target = [offset as u64, bucket as u64];
        let first = self.append_record(&record, &target, EXEMPLAR_TARGET_CELLS + cells)?;
        // SAFETY: the record has `EXEMPLAR_TARGET_CELLS + cells` cells.
        Ok(unsafe { first.add(EXEMPLAR_TARGET_CELLS) })
    }

    /// Appends a record of `cells` cells, the first ones set to `initial`
    /// before it is published, the others zeroed; returns its first cell.
    fn append_record(
        &mut self,
        series: &SeriesDescription<'_>,
        initial: &[u64],
        cells: usize,
    ) -> io::Result<NonNull<AtomicU64>> {
        let labels_len: usize = series.labels.iter().map(|label| 4 + label.len()).sum();
        let cells_offset = align8(RECORD_HEADER_LEN + labels_len);
        let record_len = cells_offset + cells * 8;
        if record_len > MAX_RECORD_LEN {
            return Err(io::Error::other("label values too long for a metrics file"));
        }
        let (chunk_start, chunk) = self.chunks.last().map_or((0, 0), |(s, m)| (*s, m.len));
        if self.used + record_len > chunk_start + chunk {
            let rest = chunk_start + chunk - self.used;
            if rest > 0 {
                self.write_record_header(self.used, rest, PADDING, 0, 0, 0.0);
                self.used += rest;
                self.publish_used();
            }
            let page = 4096;
            self.grow(CHUNK_LEN.max(record_len.div_ceil(page) * page))?;
        }
        let at = self.used;
        let label_count =
            u8::try_from(series.labels.len()).map_err(|_| io::Error::other("too many labels"))?;
        let cell_count = u16::try_from(cells).map_err(|_| io::Error::other("too many cells"))?;
        self.write_record_header(
            at,
            record_len,
            series.family,
            label_count,
            cell_count,
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
        let first_slot = NonNull::from(mapping.atomic(at - chunk_start + cells_offset));
        for (index, value) in initial.iter().take(cells).enumerate() {
            mapping
                .atomic(at - chunk_start + cells_offset + index * 8)
                .store(*value, Ordering::Relaxed);
        }
        self.used += record_len;
        self.publish_used();
        Ok(first_slot)
    }

    fn write_record_header(
        &self,
        at: usize,
        len: usize,
        family: u8,
        label_count: u8,
        cell_count: u16,
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
            base.add(6).cast::<u16>().write(cell_count);
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
    /// The raw cell values.
    pub cells: Vec<u64>,
}

/// An exemplar as read from a metrics file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileExemplar {
    /// The position of its histogram series in [`FileContents::series`].
    pub series: usize,
    /// The bucket it fell in.
    pub bucket: usize,
    /// The exemplar.
    pub exemplar: Exemplar,
}

/// Everything a reader takes from one metrics file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileContents {
    /// The process that wrote the file.
    pub pid: u64,
    /// Device and inode: two names of one file are read once.
    pub identity: (u64, u64),
    /// Its series.
    pub series: Vec<FileSeries>,
    /// Names of the files whose values this file holds (it was made by compaction).
    pub absorbed: Vec<String>,
    /// The exemplars of its histogram series, oldest slots first.
    pub exemplars: Vec<FileExemplar>,
}

/// Why a file was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// It was removed before it could be opened.
    Vanished,
    /// Something other than a regular file carries the name: never ours.
    NotRegular(String),
    /// Torn, truncated, of another format, or unreadable.
    Damaged(String),
    /// Written with families this reader does not know, or knows otherwise.
    OtherSchema(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Vanished => f.write_str("removed while the directory was read"),
            ReadError::NotRegular(reason)
            | ReadError::Damaged(reason)
            | ReadError::OtherSchema(reason) => f.write_str(reason),
        }
    }
}

/// Copies a file's bytes window by window with `pread`.
struct FileReader {
    file: File,
    /// Bytes past this offset are never read: the published length.
    end: usize,
    window_start: usize,
    window: Vec<u8>,
}

impl FileReader {
    /// `len` bytes at `at`, which must end by `self.end`.
    fn bytes(&mut self, at: usize, len: usize) -> Result<&[u8], ReadError> {
        let window_end = self.window_start + self.window.len();
        if at < self.window_start || at + len > window_end {
            let size = len.max(READ_WINDOW).min(self.end - at);
            self.window.resize(size, 0);
            self.file
                .read_exact_at(&mut self.window, at as u64)
                .map_err(|error| {
                    ReadError::Damaged(if error.kind() == io::ErrorKind::UnexpectedEof {
                        "the file ends before its published length (shrunk while read?)".to_owned()
                    } else {
                        error.to_string()
                    })
                })?;
            self.window_start = at;
        }
        Ok(&self.window[at - self.window_start..][..len])
    }
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Reads every published series of the file at `path`.
pub fn read_file(path: &Path, schema: &Schema) -> Result<FileContents, ReadError> {
    read_with(path, |declared| {
        known_family(declared, schema).map(|family| family.id)
    })
}

/// The schema the file at `path` was written with, if this reader can build it.
pub fn declared_schema(path: &Path) -> Result<Schema, ReadError> {
    let mut declarations = Vec::new();
    read_with(path, |declared| {
        declarations.push(declared.to_vec());
        FamilyId::try_from(declarations.len() - 1)
            .map_err(|_| ReadError::OtherSchema("too many families".to_owned()))
    })?;
    schema_of(&declarations)
}

/// Reads every published record of the file at `path`; `resolve` turns each
/// family declaration into the family its series are counted as.
fn read_with(
    path: &Path,
    mut resolve: impl FnMut(&[String]) -> Result<FamilyId, ReadError>,
) -> Result<FileContents, ReadError> {
    let file = open_regular(path)?;
    let metadata = file
        .metadata()
        .map_err(|error| ReadError::Damaged(error.to_string()))?;
    let damaged = |reason: String| ReadError::Damaged(reason);
    // The header is read on its own, before the records it publishes.
    let mut header = [0_u8; HEADER_LEN];
    file.read_exact_at(&mut header, 0)
        .map_err(|_| damaged(format!("{} bytes is shorter than a header", metadata.len())))?;
    if header[..8] != MAGIC && header[..8] != MAGIC_3 {
        return Err(damaged(
            "not a metrics file of this version (bad magic)".to_owned(),
        ));
    }
    let used = le_u64(&header, USED_OFFSET);
    if used < HEADER_LEN as u64 || used > metadata.len() {
        return Err(damaged(format!(
            "published length {used} does not fit the file's {} bytes",
            metadata.len()
        )));
    }
    let mut reader = FileReader {
        file,
        end: used as usize,
        window_start: 0,
        window: Vec::new(),
    };
    let mut contents = FileContents {
        pid: le_u64(&header, 16),
        identity: (metadata.dev(), metadata.ino()),
        series: Vec::new(),
        absorbed: Vec::new(),
        exemplars: Vec::new(),
    };
    let mut declared: Vec<FamilyId> = Vec::new();
    // Each series by the file offset of its first cell, where exemplar slots point.
    let mut series_at: HashMap<u64, usize> = HashMap::new();
    let mut at = HEADER_LEN;
    while at < reader.end {
        let torn = || ReadError::Damaged(format!("torn record at byte {at}"));
        if reader.end - at < 8 {
            return Err(torn());
        }
        let head = reader.bytes(at, 8)?;
        let len = le_u32(head, 0) as usize;
        let family = head[4];
        if len < 8 || !len.is_multiple_of(8) || len > reader.end - at || len > MAX_RECORD_LEN {
            return Err(torn());
        }
        if family == PADDING {
            at += len;
            continue;
        }
        if len < RECORD_HEADER_LEN {
            return Err(torn());
        }
        let record = reader.bytes(at, len)?;
        let (mut one, cells_at) = parse_record(record).ok_or_else(torn)?;
        match one.family {
            ABSORBED => contents.absorbed.extend(one.labels),
            DECLARATION => declared.push(resolve(&one.labels)?),
            EXEMPLAR => {
                let [target, bucket, slot @ ..] = &one.cells[..] else {
                    return Err(torn());
                };
                let series = *series_at.get(target).ok_or_else(torn)?;
                let bucket = usize::try_from(*bucket).map_err(|_| torn())?;
                let slot_at = at + cells_at + EXEMPLAR_TARGET_CELLS * 8;
                if let Some(exemplar) = read_exemplar(&reader.file, slot_at, slot)? {
                    contents.exemplars.push(FileExemplar {
                        series,
                        bucket,
                        exemplar,
                    });
                }
            }
            local => {
                one.family = *declared.get(usize::from(local)).ok_or_else(torn)?;
                series_at.insert((at + cells_at) as u64, contents.series.len());
                contents.series.push(one);
            }
        }
        at += len;
    }
    Ok(contents)
}

/// The family of `schema` that a declaration describes.
fn known_family<'s>(declared: &[String], schema: &'s Schema) -> Result<&'s FamilyDesc, ReadError> {
    let name = declared.first().map_or("", String::as_str);
    let family = schema.named(name).ok_or_else(|| {
        ReadError::OtherSchema(format!("written with an unknown family {name:?}"))
    })?;
    if family.declaration() != declared {
        return Err(ReadError::OtherSchema(format!(
            "written with another schema of {name} ({})",
            declared.join(" | ")
        )));
    }
    Ok(family)
}

/// The exemplar of the slot at byte `slot_at` of `file`, whose cells a first
/// copy found to be `copied`: taken from a second copy when the slot's
/// sequence number is even and the same in the copies before and after it (a
/// sequence lock; the owner may be writing the slot), None when the slot is
/// empty or stays busy. A slot that cannot be one makes the file damaged.
fn read_exemplar(
    file: &File,
    slot_at: usize,
    copied: &[u64],
) -> Result<Option<Exemplar>, ReadError> {
    if copied.len() < SHARED_HEAD_CELLS || copied.len() > SHARED_HEAD_CELLS + SHARED_MAX_LABEL_CELLS
    {
        return Err(ReadError::Damaged(format!(
            "an exemplar slot of {} cells",
            copied.len()
        )));
    }
    let mut bytes = vec![0_u8; copied.len() * 8];
    let copy = |cells: &mut [u64]| {
        let damaged = |error: io::Error| ReadError::Damaged(error.to_string());
        file.read_exact_at(&mut bytes, slot_at as u64)
            .map_err(damaged)?;
        let mut after = [0_u8; 8];
        file.read_exact_at(&mut after, slot_at as u64)
            .map_err(damaged)?;
        for (index, cell) in cells.iter_mut().enumerate() {
            *cell = le_u64(&bytes, index * 8);
        }
        Ok(u64::from_le_bytes(after))
    };
    read_slot(
        copied[0],
        copied.len(),
        SLOT_READ_ATTEMPTS,
        copy,
        ReadError::Damaged,
    )
}

/// One record's series and the offset of its cells in the record, or None
/// when its fields do not add up to its length.
fn parse_record(record: &[u8]) -> Option<(FileSeries, usize)> {
    let label_count = usize::from(record[5]);
    let cell_count = usize::from(u16::from_le_bytes([record[6], record[7]]));
    let created = f64::from_bits(le_u64(record, 8));
    let mut cursor = RECORD_HEADER_LEN;
    let mut labels = Vec::with_capacity(label_count);
    for _ in 0..label_count {
        let length = le_u32(record.get(cursor..cursor + 4)?, 0) as usize;
        let text = record.get(cursor + 4..cursor + 4 + length)?;
        labels.push(std::str::from_utf8(text).ok()?.to_owned());
        cursor += 4 + length;
    }
    let slots_at = align8(cursor);
    if slots_at + cell_count * 8 != record.len() {
        return None;
    }
    let cells = (0..cell_count)
        .map(|index| le_u64(record, slots_at + index * 8))
        .collect();
    let series = FileSeries {
        family: record[4],
        labels,
        created,
        cells,
    };
    Some((series, slots_at))
}

/// The entries of `directory` whose names `keep` accepts, sorted by name.
fn entries_named(directory: &Path, keep: impl Fn(&str) -> bool) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(directory)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(&keep)
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The published metrics files of `directory`, sorted by name.
pub fn list_files(directory: &Path) -> io::Result<Vec<PathBuf>> {
    entries_named(directory, |name| {
        !name.starts_with('.') && name.ends_with(&format!(".{EXTENSION}"))
    })
}

/// Files of `directory` still under their hidden name (being written, or left
/// by a writer that was killed), sorted by name.
pub fn list_temporary_files(directory: &Path) -> io::Result<Vec<PathBuf>> {
    entries_named(directory, is_temporary_name)
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
    fn declarations_rebuild_the_schema_that_wrote_them() {
        let extra = ["team".to_owned(), "app".to_owned()];
        for (bounds, extra) in [
            (&LATENCY_BOUNDS[..], &extra[..0]),
            (&[0.5, 2.0][..], &extra[..0]),
            (&LATENCY_BOUNDS[..], &extra[..]),
            (&[0.25, 1.0, 8.0][..], &extra[..1]),
        ] {
            let schema = Schema::with_extra_labels(bounds, extra).unwrap();
            let declarations: Vec<Vec<String>> = schema
                .families()
                .iter()
                .map(|family| family.declaration().to_vec())
                .collect();
            let rebuilt = schema_of(&declarations).unwrap();
            let redeclared: Vec<Vec<String>> = rebuilt
                .families()
                .iter()
                .map(|family| family.declaration().to_vec())
                .collect();
            assert_eq!(redeclared, declarations, "{bounds:?} {extra:?}");
        }
    }

    #[test]
    fn written_series_read_back_with_their_values() {
        let directory = temporary_directory("roundtrip");
        let mut file = SharedFile::create(&directory, &Schema::default()).unwrap();
        let labels = ["gpt-4o", "openai"];
        let series = SeriesDescription {
            family: 3,
            labels: &labels,
            created: 12.5,
        };
        let cell = file.append_series(&series, 2).unwrap();
        // SAFETY: two cells were allocated.
        unsafe {
            cell.as_ref().store(7, Ordering::Relaxed);
            cell.add(1).as_ref().store(9, Ordering::Relaxed);
        }
        let read = read_file(file.path(), &Schema::default()).unwrap();
        assert_eq!(read.pid, u64::from(std::process::id()));
        assert_eq!(
            read.series,
            vec![FileSeries {
                family: 3,
                labels: vec!["gpt-4o".into(), "openai".into()],
                created: 12.5,
                cells: vec![7, 9],
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
        let mut file = SharedFile::create(&directory, &Schema::default()).unwrap();
        let long = "x".repeat(10_000);
        let mut first = None;
        for index in 0..300_u64 {
            let labels = [long.as_str()];
            let series = SeriesDescription {
                family: 6,
                labels: &labels,
                created: 0.0,
            };
            let cell = file.append_series(&series, 1).unwrap();
            // SAFETY: one cell was allocated.
            unsafe { cell.as_ref().store(index, Ordering::Relaxed) };
            first.get_or_insert(cell);
        }
        // SAFETY: the first cell stays mapped while the file lives.
        unsafe { first.unwrap().as_ref().fetch_add(1000, Ordering::Relaxed) };
        let read = read_file(file.path(), &Schema::default()).unwrap().series;
        assert_eq!(read.len(), 300);
        assert_eq!(read[0].cells, vec![1000]);
        assert_eq!(read[299].cells, vec![299]);
        fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn a_truncated_file_is_reported_torn() {
        let directory = temporary_directory("torn");
        let mut file = SharedFile::create(&directory, &Schema::default()).unwrap();
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
        assert!(read_file(&copy, &Schema::default()).is_err());
        fs::write(
            &copy,
            b"not a metrics file at all, just some bytes padding it out to 64 b",
        )
        .unwrap();
        assert!(read_file(&copy, &Schema::default()).is_err());
        fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn a_file_shrunk_below_its_published_length_is_damaged_not_fatal() {
        let directory = temporary_directory("shrunk");
        let mut file = SharedFile::create(&directory, &Schema::default()).unwrap();
        let long = "y".repeat(5_000);
        for _ in 0..500 {
            let labels = [long.as_str()];
            let series = SeriesDescription {
                family: 6,
                labels: &labels,
                created: 0.0,
            };
            file.append_series(&series, 1).unwrap();
        }
        let copy = directory.join("gwm-1-shrunk.gwm");
        fs::copy(file.path(), &copy).unwrap();
        let handle = OpenOptions::new().write(true).open(&copy).unwrap();
        handle.set_len(1 << 20).unwrap();
        assert!(matches!(
            read_file(&copy, &Schema::default()),
            Err(ReadError::Damaged(_))
        ));
        fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn fifos_symlinks_and_directories_are_refused_without_blocking() {
        let directory = temporary_directory("special");
        let file = SharedFile::create(&directory, &Schema::default()).unwrap();
        let fifo = directory.join("gwm-1-fifo.gwm");
        let path = std::ffi::CString::new(fifo.clone().into_os_string().into_encoded_bytes());
        // SAFETY: a valid, NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.unwrap().as_ptr(), 0o600) }, 0);
        let link = directory.join("gwm-2-link.gwm");
        std::os::unix::fs::symlink(file.path(), &link).unwrap();
        let folder = directory.join("gwm-3-dir.gwm");
        fs::create_dir(&folder).unwrap();
        for refused in [&fifo, &link, &folder] {
            assert!(
                matches!(
                    read_file(refused, &Schema::default()),
                    Err(ReadError::NotRegular(_))
                ),
                "{}",
                refused.display()
            );
        }
        assert_eq!(
            read_file(&directory.join("gwm-4-gone.gwm"), &Schema::default()),
            Err(ReadError::Vanished)
        );
        fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn a_file_is_found_only_once_published_and_lists_what_it_absorbed() {
        let directory = temporary_directory("absorbed");
        let mut file = SharedFile::create_unpublished(&directory, &Schema::default()).unwrap();
        file.append_absorbed("gwm-1-0000000000000001.gwm").unwrap();
        assert!(list_files(&directory).unwrap().is_empty());
        assert_eq!(list_temporary_files(&directory).unwrap().len(), 1);
        file.publish().unwrap();
        let read = read_file(file.path(), &Schema::default()).unwrap();
        assert!(read.series.is_empty());
        assert_eq!(read.absorbed, vec!["gwm-1-0000000000000001.gwm".to_owned()]);
        assert!(list_temporary_files(&directory).unwrap().is_empty());
        fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn a_file_of_another_schema_is_refused_by_family_not_misread() {
        let directory = temporary_directory("schema");
        let mut file = SharedFile::create(&directory, &Schema::default()).unwrap();
        let labels = ["search"];
        let series = SeriesDescription {
            family: 6,
            labels: &labels,
            created: 0.0,
        };
        file.append_series(&series, 1).unwrap();
        let read = read_file(file.path(), &Schema::default()).unwrap();
        assert_eq!(read.series[0].family, crate::schema::family::TOOL_CALLS);
        // The same file, but its latency buckets end at 90 s instead of 60 s.
        let bytes = fs::read(file.path()).unwrap();
        let at = bytes.windows(4).position(|w| w == b"60.0").unwrap();
        let mut other = bytes.clone();
        other[at..at + 4].copy_from_slice(b"90.0");
        let copy = directory.join("gwm-1-other.gwm");
        fs::write(&copy, other).unwrap();
        match read_file(&copy, &Schema::default()) {
            Err(ReadError::OtherSchema(reason)) => {
                assert!(
                    reason.contains("ractogateway_request_duration_seconds"),
                    "{reason}"
                );
            }
            other => panic!("read as {other:?}"),
        }
        fs::remove_dir_all(directory).unwrap();
    }
}
