//! Reading a process's metrics file, never mapping it: the published bytes
//! are copied window by window with `pread`, every length and count checked
//! against them, and each family declaration matched to a family this reader
//! knows by its whole description.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use crate::cells::exemplar::{
    read_slot, Exemplar, SHARED_HEAD_CELLS, SHARED_MAX_LABEL_CELLS, SLOT_READ_ATTEMPTS,
};
use crate::multiprocess::files::{open_regular, FileSeries, ReadError};
use crate::multiprocess::own_file::{
    align8, ABSORBED, DECLARATION, EXEMPLAR, EXEMPLAR_TARGET_CELLS, HEADER_LEN, MAGIC,
    MAX_RECORD_LEN, PADDING, RECORD_HEADER_LEN, USED_OFFSET,
};
use crate::schema::family::{
    FamilyDesc, FamilyId, Schema, DEFAULT_NAMESPACE, DURATION, LATENCY_BOUNDS, REQUESTS,
};
use crate::schema::native::NativeConfig;

/// The namespace of the families `declarations` declare: the prefix of the
/// requests family's name (the counter whose labels include every request
/// label), else the default one.
fn declared_namespace(declarations: &[Vec<String>]) -> String {
    let requests = Schema::default();
    let requests = requests.family(REQUESTS);
    let suffix = requests
        .name
        .strip_prefix(DEFAULT_NAMESPACE)
        .unwrap_or_default();
    declarations
        .iter()
        .find_map(|declared| {
            let namespace = declared.first()?.strip_suffix(suffix)?;
            let labels: Vec<&str> = declared.get(3)?.split(',').collect();
            requests
                .label_names
                .iter()
                .all(|label| labels.contains(&label.as_str()))
                .then(|| namespace.to_owned())
        })
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
}

/// The schema a set of declarations describes, if it is one this reader can
/// build: the known families, with the latency buckets and the extra labels
/// they declare (the requests family's labels beyond the reference's four), so
/// that the declarations of the rebuilt schema are exactly the ones read.
pub(super) fn schema_of(declarations: &[Vec<String>]) -> Result<Schema, ReadError> {
    let reference = Schema::default()
        .with_namespace(&declared_namespace(declarations))
        .map_err(ReadError::OtherSchema)?;
    let declared_of = |family| {
        let name = &reference.family(family).name;
        declarations
            .iter()
            .find(|declared| declared.first().is_some_and(|first| first == name.as_ref()))
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
    let schema = Schema::with_options(&bounds, &extra, native)
        .and_then(|schema| schema.with_namespace(reference.namespace()))
        .map_err(ReadError::OtherSchema)?;
    for declared in declarations {
        known_family(declared, &schema)?;
    }
    Ok(schema)
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
    // The largest slot's bytes fit on the stack: no allocation per exemplar.
    let mut buffer = [0_u8; (SHARED_HEAD_CELLS + SHARED_MAX_LABEL_CELLS) * 8];
    let bytes = &mut buffer[..copied.len() * 8];
    let copy = |cells: &mut [u64]| {
        let damaged = |error: io::Error| ReadError::Damaged(error.to_string());
        file.read_exact_at(bytes, slot_at as u64).map_err(damaged)?;
        let mut after = [0_u8; 8];
        file.read_exact_at(&mut after, slot_at as u64)
            .map_err(damaged)?;
        for (index, cell) in cells.iter_mut().enumerate() {
            *cell = le_u64(bytes, index * 8);
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

/// Bytes copied per `pread` while reading a file.
const READ_WINDOW: usize = 256 << 10;

/// The first bytes of files of the previous version, still read.
const MAGIC_3: [u8; 8] = *b"GWMFILE3";
