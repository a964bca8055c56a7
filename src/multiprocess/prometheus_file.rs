//! `prometheus_client`'s own multi-process file format, written natively.
//!
//! When an application runs `prometheus_client` in multi-process mode
//! (`PROMETHEUS_MULTIPROC_DIR`), its `MultiProcessCollector` sums the `*.db`
//! files of that directory. A store in this layout writes its values into
//! such files of its own, `counter_gwm-<pid>-<id>.db` and
//! `histogram_gwm-<pid>-<id>.db`, and once it has a gauge's series (requests
//! in flight) `gauge_livesum_gwm-<pid>-<id>.db`: the collector takes the metric
//! type (and a gauge's mode, `livesum`: summed over the files there) from the
//! name's first words, and the `gwm-` part keeps them apart from the
//! `counter_<pid>.db` files `prometheus_client` writes for the application's
//! other metrics in the same process.
//!
//! The format (`prometheus_client/mmap_dict.py`): a 4-byte used length and 4
//! bytes of padding, then entries of a 4-byte key length, the key (a JSON list
//! `[family, sample name, {labels}, help]`) padded with spaces to 8-byte
//! alignment, an `f64` value and an `f64` timestamp. Values are floats, so
//! counts are kept as floats here too ([`Coding::Float`]), added exactly as
//! `prometheus_client` adds them. The file is memory-mapped: recording makes
//! no system call and a process killed with SIGKILL loses nothing.
//!
//! A histogram series has twelve entries (eleven buckets and the sum). Their
//! keys are padded with spaces (JSON allows trailing whitespace) to one length,
//! so that the twelve values lie a fixed stride apart, as a
//! [`crate::cells::histogram::Histogram`] needs.
//!
//! [`Coding::Float`]: crate::cells::counter::Coding::Float

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::cells::arena::{SeriesDescription, SharedCells};
use crate::multiprocess::files::{open_regular, random_identity, FileSeries, ReadError};
use crate::multiprocess::own_file::reserve_blocks;
use crate::schema::family::{FamilyDesc, FamilyKind, Schema, ValueKind};

/// What the names of this layout's files contain after the type word.
pub const NAME_MARKER: &str = "_gwm-";
/// The first words of a gauge file's name: the type and `prometheus_client`'s
/// mode, `livesum`, whose files a dead process's cleanup removes.
pub const GAUGE_KIND: &str = "gauge_livesum";
/// The used length and its padding.
const HEADER_LEN: usize = 8;
/// Initial file size: `prometheus_client` starts at 64 KiB and doubles.
const INITIAL_LEN: usize = 1 << 16;
/// Address space reserved for one file's mapping; the file grows inside it
/// without being mapped again, so values handed out never move.
const RESERVED_LEN: usize = 1 << 30;
/// Longest key a reader accepts.
const MAX_KEY_LEN: usize = 1 << 20;

/// Appends `text` as a JSON string the way Python's `json.dumps` writes it
/// (`ensure_ascii`: every character outside printable ASCII as `\u` and four
/// hex digits, a surrogate pair above the Basic Multilingual Plane).
fn write_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0_u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// The key of one sample, as `prometheus_client.mmap_dict.mmap_key` writes it:
/// `json.dumps([family, sample, labels, help], sort_keys=True)`.
fn sample_key(family: &FamilyDesc, suffix: &str, labels: &[(&str, &str)]) -> String {
    let mut sorted = labels.to_vec();
    sorted.sort_unstable_by_key(|(name, _)| *name);
    let mut key = String::with_capacity(128);
    key.push('[');
    write_json_string(&mut key, &family.name);
    key.push_str(", ");
    write_json_string(&mut key, &format!("{}{suffix}", family.name));
    key.push_str(", {");
    for (index, (name, value)) in sorted.iter().enumerate() {
        if index > 0 {
            key.push_str(", ");
        }
        write_json_string(&mut key, name);
        key.push_str(": ");
        write_json_string(&mut key, value);
    }
    key.push_str("}, ");
    write_json_string(&mut key, family.help);
    key.push(']');
    key
}

/// The keys of a series' cells, in cell order: a counter's `_total`, or a
/// histogram's buckets then its `_sum`.
fn series_keys(family: &FamilyDesc, labels: &[&str]) -> Vec<String> {
    let named: Vec<(&str, &str)> = family
        .label_names
        .iter()
        .map(String::as_str)
        .zip(labels.iter().copied())
        .collect();
    match family.kind {
        FamilyKind::Counter => vec![sample_key(family, "_total", &named)],
        FamilyKind::Gauge => vec![sample_key(family, "", &named)],
        FamilyKind::Histogram => {
            let les = family
                .buckets
                .as_ref()
                .map_or(&[][..], |buckets| buckets.labels());
            let mut keys: Vec<String> = les
                .iter()
                .map(|le| {
                    let mut with_le = named.clone();
                    with_le.push(("le", le.as_str()));
                    sample_key(family, "_bucket", &with_le)
                })
                .collect();
            keys.push(sample_key(family, "_sum", &named));
            keys
        }
    }
}

/// Bytes of an entry whose key is `key_len` bytes: length, key padded as
/// `prometheus_client` pads it (1 to 8 spaces, to 8-byte alignment), value, timestamp.
fn entry_len(key_len: usize) -> usize {
    4 + key_len + (8 - (key_len + 4) % 8) + 16
}

/// One file of `prometheus_client`'s format that this process writes.
struct DictFile {
    path: PathBuf,
    file: File,
    start: NonNull<u8>,
    /// Bytes the file has on disk.
    capacity: usize,
    /// Bytes published.
    used: usize,
}

impl DictFile {
    fn create(directory: &Path, kind: &str, identity: u64) -> io::Result<Self> {
        fs::create_dir_all(directory)?;
        let pid = std::process::id();
        let path = directory.join(format!("{kind}{NAME_MARKER}{pid}-{identity:016x}.db"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        // SAFETY: reserves address space backed by the open file; pages past its
        // end are never touched (see `reserve`); the result is checked.
        let start = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                RESERVED_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if start == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let start = NonNull::new(start.cast()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        let mut dict = DictFile {
            path,
            file,
            start,
            capacity: 0,
            used: HEADER_LEN,
        };
        dict.reserve(HEADER_LEN)?;
        dict.publish();
        Ok(dict)
    }

    /// Grows the file (doubling, as `prometheus_client` does) to hold `needed` bytes.
    fn reserve(&mut self, needed: usize) -> io::Result<()> {
        if needed <= self.capacity {
            return Ok(());
        }
        let mut capacity = self.capacity.max(INITIAL_LEN);
        while capacity < needed {
            capacity *= 2;
        }
        if capacity > RESERVED_LEN {
            return Err(io::Error::other("prometheus_client file full"));
        }
        reserve_blocks(&self.file, self.capacity, capacity - self.capacity)?;
        self.capacity = capacity;
        Ok(())
    }

    fn publish(&self) {
        // SAFETY: offset 0 is 4-aligned, inside the file and the mapping.
        let used = unsafe { &*self.start.as_ptr().cast::<AtomicU32>() };
        used.store(
            u32::try_from(self.used).unwrap_or(u32::MAX),
            Ordering::Release,
        );
    }

    /// Appends one entry per key, each of the same length, and returns the first
    /// value's cell and the stride between values.
    fn append(&mut self, keys: &[String]) -> io::Result<(NonNull<AtomicU64>, usize)> {
        let key_len = keys.iter().map(String::len).max().unwrap_or(0);
        let stride = entry_len(key_len);
        let end = self.used + stride * keys.len();
        // `prometheus_client` reads the used length as a signed 32-bit int.
        if end > i32::MAX as usize {
            return Err(io::Error::other("prometheus_client file full"));
        }
        self.reserve(end)?;
        let length = u32::try_from(key_len)
            .map_err(|_| io::Error::other("label values too long"))?
            .to_le_bytes();
        for (index, key) in keys.iter().enumerate() {
            let at = self.used + index * stride;
            // SAFETY: `at..at + stride` lies inside the file (reserved above) and
            // the mapping, and is not yet published, so nobody else reads it.
            unsafe {
                let base = self.start.as_ptr().add(at);
                std::ptr::copy_nonoverlapping(length.as_ptr(), base, 4);
                std::ptr::copy_nonoverlapping(key.as_ptr(), base.add(4), key.len());
                // Spaces to the common length, then `prometheus_client`'s padding.
                std::ptr::write_bytes(base.add(4 + key.len()), b' ', stride - 16 - 4 - key.len());
            }
        }
        let first = self.used + stride - 16;
        self.used = end;
        self.publish();
        // SAFETY: `first` is 8-aligned (entries are) and inside the file.
        let cell = unsafe { self.start.as_ptr().add(first).cast::<AtomicU64>() };
        Ok((
            NonNull::new(cell).ok_or_else(|| io::Error::other("null cell"))?,
            stride,
        ))
    }
}

impl Drop for DictFile {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the reservation `create` mapped.
        unsafe { libc::munmap(self.start.as_ptr().cast(), RESERVED_LEN) };
    }
}

/// The files a store in `prometheus_client`'s layout writes.
pub struct PrometheusFiles {
    counters: DictFile,
    histograms: DictFile,
    /// Made with the first gauge series.
    gauges: Option<DictFile>,
    directory: PathBuf,
    identity: u64,
    schema: Arc<Schema>,
}

// SAFETY: the mappings are plain shared memory; the files are only mutated
// through `&mut` (the arena's mutex), and the cells handed out are atomics.
unsafe impl Send for PrometheusFiles {}

impl SharedCells for PrometheusFiles {
    fn append_series(
        &mut self,
        series: &SeriesDescription<'_>,
        count: usize,
    ) -> io::Result<(NonNull<AtomicU64>, usize)> {
        // Every cell is a sample entry: a series of more cells than its
        // family's samples (a native histogram's) has no place here.
        let family = self.family(series)?;
        if count != family.classic_cells() || family.native.is_some() {
            return Err(io::Error::other(format!(
                "{} cells for a series of {}, whose prometheus_client layout has {}",
                count,
                family.name,
                family.classic_cells()
            )));
        }
        PrometheusFiles::append_series(self, series)
    }

    fn path(&self) -> PathBuf {
        self.counter_path().to_path_buf()
    }
}

impl PrometheusFiles {
    /// Creates this process's counter and histogram files in `directory`.
    pub fn create(directory: &Path, schema: Arc<Schema>) -> io::Result<Self> {
        if schema.native().is_some() {
            return Err(io::Error::other(
                "prometheus_client's multi-process files have no place for native histograms",
            ));
        }
        let identity = random_identity();
        Ok(PrometheusFiles {
            counters: DictFile::create(directory, "counter", identity)?,
            histograms: DictFile::create(directory, "histogram", identity)?,
            gauges: None,
            directory: directory.to_path_buf(),
            identity,
            schema,
        })
    }

    /// The family `series` belongs to.
    fn family(&self, series: &SeriesDescription<'_>) -> io::Result<&FamilyDesc> {
        self.schema
            .families()
            .get(usize::from(series.family))
            .ok_or_else(|| io::Error::other("unknown family"))
    }

    /// The counter file's path.
    pub fn counter_path(&self) -> &Path {
        &self.counters.path
    }

    /// Appends the entries of a new series; returns its first cell and the stride.
    pub fn append_series(
        &mut self,
        series: &SeriesDescription<'_>,
    ) -> io::Result<(NonNull<AtomicU64>, usize)> {
        let family = self.family(series)?;
        let keys = series_keys(family, series.labels);
        match family.kind {
            FamilyKind::Counter => self.counters.append(&keys),
            FamilyKind::Histogram => self.histograms.append(&keys),
            FamilyKind::Gauge => {
                if self.gauges.is_none() {
                    let file = DictFile::create(&self.directory, GAUGE_KIND, self.identity)?;
                    self.gauges = Some(file);
                }
                let gauges = self.gauges.as_mut().unwrap_or_else(|| unreachable!());
                gauges.append(&keys)
            }
        }
    }
}

/// The `prometheus_client` files of this layout in `directory`, sorted by name.
pub fn list_files(directory: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(directory)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| {
                    (name.starts_with("counter")
                        || name.starts_with("histogram")
                        || name.starts_with(GAUGE_KIND))
                        && name.contains(NAME_MARKER)
                        && Path::new(name).extension().is_some_and(|ext| ext == "db")
                })
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The sample a key names: its family, suffix and label values in family order.
fn parse_key<'s>(
    key: &str,
    schema: &'s Schema,
) -> Option<(&'s FamilyDesc, String, Vec<String>, Option<String>)> {
    let (family_name, sample, labels, _help): (
        String,
        String,
        std::collections::BTreeMap<String, String>,
        String,
    ) = serde_json::from_str(key).ok()?;
    let family = schema.named(&family_name)?;
    let suffix = sample.strip_prefix(family.name.as_ref())?.to_owned();
    let mut values = Vec::with_capacity(family.label_names.len());
    for name in &family.label_names {
        values.push(labels.get(name)?.clone());
    }
    let known = family.label_names.len() + usize::from(labels.contains_key("le"));
    if labels.len() != known {
        return None;
    }
    Some((family, suffix, values, labels.get("le").cloned()))
}

/// Reads the series of one file of this layout, in the shape of our own files'
/// series: a counter's value, or a histogram's bucket counts and sum.
pub fn read_file(path: &Path, schema: &Schema) -> Result<Vec<FileSeries>, ReadError> {
    let damaged = ReadError::Damaged;
    let file = open_regular(path)?;
    let size = file
        .metadata()
        .map_err(|error| damaged(error.to_string()))?
        .len();
    let mut header = [0_u8; HEADER_LEN];
    file.read_exact_at(&mut header, 0)
        .map_err(|_| damaged(format!("{size} bytes is shorter than a header")))?;
    let used = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if used < HEADER_LEN || used as u64 > size {
        return Err(damaged(format!(
            "used length {used} does not fit the file's {size} bytes"
        )));
    }
    let mut bytes = vec![0_u8; used - HEADER_LEN];
    file.read_exact_at(&mut bytes, HEADER_LEN as u64)
        .map_err(|_| damaged("the file ends before its used length (shrunk while read?)".into()))?;
    let mut series = SeriesByLabels::default();
    let mut at = 0;
    while at < bytes.len() {
        let torn = || damaged(format!("torn entry at byte {}", at + HEADER_LEN));
        let key_len = bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(torn)?;
        if key_len > MAX_KEY_LEN || at + entry_len(key_len) > bytes.len() {
            return Err(torn());
        }
        let key = std::str::from_utf8(&bytes[at + 4..at + 4 + key_len]).map_err(|_| torn())?;
        let value_at = at + entry_len(key_len) - 16;
        let mut value = [0_u8; 8];
        value.copy_from_slice(&bytes[value_at..value_at + 8]);
        let value = f64::from_le_bytes(value);
        let other = || {
            ReadError::OtherSchema(format!(
                "an entry of another schema at byte {}: {key}",
                at + HEADER_LEN
            ))
        };
        let (family, suffix, labels, le) = parse_key(key, schema).ok_or_else(other)?;
        series
            .add(family, &suffix, labels, le.as_deref(), value)
            .ok_or_else(other)?;
        at += entry_len(key_len);
    }
    Ok(series.series)
}

/// The series of one file in order of first appearance, and their index.
#[derive(Default)]
struct SeriesByLabels {
    series: Vec<FileSeries>,
    index: HashMap<(u8, Vec<String>), usize>,
}

impl SeriesByLabels {
    /// Adds one entry's value to the series it belongs to.
    fn add(
        &mut self,
        family: &FamilyDesc,
        suffix: &str,
        labels: Vec<String>,
        le: Option<&str>,
        value: f64,
    ) -> Option<()> {
        let cell_count = family.cells();
        let next = self.series.len();
        let position = *self
            .index
            .entry((family.id, labels.clone()))
            .or_insert(next);
        if position == next {
            self.series.push(FileSeries {
                family: family.id,
                labels,
                // `prometheus_client`'s files keep no creation time.
                created: f64::INFINITY,
                cells: vec![0; cell_count],
            });
        }
        let cells = &mut self.series[position].cells;
        // Floats stay floats (the cost, a histogram's sum); counts become integers.
        let count = |value: f64| value as u64;
        match (family.value, suffix, le) {
            (ValueKind::Sum, "_total", None) => cells[0] = value.to_bits(),
            (ValueKind::Count, "_total", None) => cells[0] = count(value),
            #[allow(clippy::cast_sign_loss)] // A level's cell holds an i64's bits.
            (ValueKind::Level, "", None) => cells[0] = (value as i64) as u64,
            (ValueKind::Buckets, "_bucket", Some(le)) => {
                let buckets = family.buckets.as_ref()?;
                let index = buckets.labels().iter().position(|bucket| bucket == le)?;
                cells[index] = count(value);
            }
            (ValueKind::Buckets, "_sum", None) => cells[cell_count - 1] = value.to_bits(),
            _ => return None,
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::family::DURATION;

    #[test]
    fn keys_are_what_json_dumps_writes() {
        let labels = [("provider", "openai"), ("model", "g\u{e9}\"n\n\u{1f600}")];
        assert_eq!(
            sample_key(
                Schema::default().family(crate::schema::family::REQUESTS),
                "_total",
                &labels
            ),
            "[\"ractogateway_requests\", \"ractogateway_requests_total\", \
             {\"model\": \"g\\u00e9\\\"n\\n\\ud83d\\ude00\", \"provider\": \"openai\"}, \
             \"Total LLM requests by provider / model / operation / status.\"]"
        );
    }

    /// A folder of its own for one test.
    fn scratch_directory() -> std::path::PathBuf {
        std::env::temp_dir().join(format!(
            "gwm-prom-{}-{:x}",
            std::process::id(),
            random_identity()
        ))
    }

    /// A duration series of gpt-4o.
    fn duration_series() -> SeriesDescription<'static> {
        SeriesDescription {
            family: DURATION,
            labels: &["gpt-4o", "chat", "openai"],
            created: 0.0,
        }
    }

    #[test]
    fn series_of_more_cells_than_samples_have_no_place_here() {
        use crate::schema::family::LATENCY_BOUNDS;
        use crate::schema::native::NativeConfig;
        let directory = scratch_directory();
        let native =
            Schema::with_options(&LATENCY_BOUNDS, &[], Some(NativeConfig::DEFAULT)).unwrap();
        let error = PrometheusFiles::create(&directory, Arc::new(native))
            .err()
            .unwrap();
        assert!(error.to_string().contains("native histograms"), "{error}");
        let schema = Arc::new(Schema::default());
        let mut files = PrometheusFiles::create(&directory, Arc::clone(&schema)).unwrap();
        let series = duration_series();
        let cells = schema.family(DURATION).cells();
        assert!(SharedCells::append_series(&mut files, &series, cells + 1).is_err());
        assert!(SharedCells::append_series(&mut files, &series, cells).is_ok());
        std::fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn a_histograms_cells_lie_one_stride_apart_and_read_back() {
        let directory = scratch_directory();
        let schema = Arc::new(Schema::default());
        let cells = schema.family(DURATION).cells();
        let mut files = PrometheusFiles::create(&directory, Arc::clone(&schema)).unwrap();
        let series = duration_series();
        let (first, stride) = files.append_series(&series).unwrap();
        assert_eq!(stride % 8, 0);
        // SAFETY: twelve cells, `stride` apart, in the mapped file.
        unsafe {
            first
                .byte_add(3 * stride)
                .as_ref()
                .store(2.0_f64.to_bits(), Ordering::Relaxed);
            first
                .byte_add((cells - 1) * stride)
                .as_ref()
                .store(0.75_f64.to_bits(), Ordering::Relaxed);
        }
        let histograms = directory.join(files.histograms.path.file_name().unwrap());
        let read = read_file(&histograms, &schema).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].labels, series.labels);
        let mut expected = vec![0; cells];
        expected[3] = 2;
        expected[cells - 1] = 0.75_f64.to_bits();
        assert_eq!(read[0].cells, expected);
        assert_eq!(list_files(&directory).unwrap().len(), 2);
        fs::remove_dir_all(directory).unwrap();
    }
}
