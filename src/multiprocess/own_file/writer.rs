//! Writing a process's metrics file: creating it under a hidden name and
//! publishing it, locked, growing it chunk by chunk, and appending the
//! declarations, series and exemplar records whose cells the store records into.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cells::arena::{SeriesDescription, SharedCells};
use crate::cells::exemplar::{shared_slot_cells, write_shared, Exemplar};
use crate::multiprocess::files::{random_identity, EXTENSION};
use crate::multiprocess::fork_guard::ParentOnlyFile;
use crate::multiprocess::lock::{try_lock, Access, DirectoryLock};
use crate::multiprocess::own_file::{
    align8, ABSORBED, CHUNK_LEN, DECLARATION, EXEMPLAR, EXEMPLAR_TARGET_CELLS, HEADER_LEN, MAGIC,
    MAX_RECORD_LEN, PADDING, RECORD_HEADER_LEN, USED_OFFSET,
};
use crate::schema::family::Schema;

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
        reserve_blocks(&self.file, self.capacity, len)?;
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

/// How long a process creating its file waits for a compaction to finish.
const CREATE_WAIT: Duration = Duration::from_secs(5);

/// Extends `file` to `offset + len` bytes with their blocks reserved on disk:
/// a full disk is then an error here instead of a `SIGBUS` when a mapped cell
/// is written later. Every metrics file grows through this.
pub(crate) fn reserve_blocks(file: &File, offset: usize, len: usize) -> io::Result<()> {
    let (start, length) = (
        libc::off_t::try_from(offset).map_err(io::Error::other)?,
        libc::off_t::try_from(len).map_err(io::Error::other)?,
    );
    #[cfg(not(target_vendor = "apple"))]
    {
        // SAFETY: a valid descriptor; the result is checked.
        let result = unsafe { libc::posix_fallocate(file.as_raw_fd(), start, length) };
        if result != 0 {
            return Err(io::Error::from_raw_os_error(result));
        }
        Ok(())
    }
    #[cfg(target_vendor = "apple")]
    {
        // macOS has no posix_fallocate: F_PREALLOCATE reserves blocks past the
        // physical end of the file, and the new size then covers them.
        let mut store = libc::fstore_t {
            fst_flags: libc::F_ALLOCATEALL,
            fst_posmode: libc::F_PEOFPOSMODE,
            fst_offset: 0,
            fst_length: length,
            fst_bytesalloc: 0,
        };
        // SAFETY: a valid descriptor and a `fstore_t` the call reads and fills
        // in, alive for the call; the result is checked.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_PREALLOCATE, &mut store) } == -1 {
            let error = io::Error::last_os_error();
            // A file system that cannot preallocate still gets its size.
            if error.raw_os_error() != Some(libc::ENOTSUP) {
                return Err(error);
            }
        }
        let end = u64::try_from(start + length).map_err(io::Error::other)?;
        if file.metadata()?.len() < end {
            file.set_len(end)?;
        }
        Ok(())
    }
}
