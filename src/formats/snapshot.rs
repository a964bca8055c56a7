//! Snapshots: a store's values as bytes that another store adds to its own.
//!
//! A batch job spread over processes or machines records in each worker at
//! full speed and ships snapshots to one driver, which merges them. Counts are
//! integers, so merging is exact and its order does not matter; float sums
//! (latency seconds, cost) are added with one IEEE-754 addition each, exact up
//! to rounding.
//!
//! A snapshot declares its families exactly as a metrics file does (name,
//! type, value layout, label names, buckets), so a store of another schema is
//! refused by family, never misread. Layout, all integers little-endian:
//!
//! ```text
//! "GWMSNAP\0"  u32 version
//! u32 families, each: 5 × (u32 length, UTF-8)      -- see shared_file::declaration
//! u64 series, each: u8 family (declaration index)
//!                   u16 labels, each: u32 length, UTF-8
//!                   u16 cells, each: u64             -- FamilyDesc::cells
//! only when some histogram bucket has an exemplar (version 2):
//! "EXEMPLAR"  u32 exemplars, each: u64 series (its position above)
//!                   u16 bucket
//!                   u16 labels, each: 2 × (u32 length, UTF-8)
//!                   f64 value, f64 timestamp
//! u32 CRC-32 of every byte before it
//! ```
//!
//! Version 1 is version 2 without exemplars: this build reads both.
//!
//! Reading validates the whole snapshot (checksum, families, lengths, UTF-8,
//! label and cell counts, sums, overflow series) before a single value is
//! added, in place: a snapshot costs memory only for the series it adds.

use std::fmt;

use std::sync::Arc;

use smallvec::SmallVec;

use crate::cells::exemplar::Exemplar;
use crate::cells::native_histogram::check_snapshot_cells;
use crate::schema::family::{Buckets, FamilyDesc, Schema, OVERFLOW};
use crate::store::visit::{Reading, SeriesView, SeriesVisitor};
use crate::store::{ReadMode, Store};

/// The first bytes of every snapshot.
const MAGIC: &[u8; 8] = b"GWMSNAP\0";
/// The layout version this build writes (and the newest it reads).
pub const VERSION: u32 = 2;
/// The oldest layout version this build reads.
const OLDEST_VERSION: u32 = 1;
/// The first bytes of the exemplar section.
const EXEMPLAR_MAGIC: &[u8; 8] = b"EXEMPLAR";
/// Fields of a family declaration.
const DECLARATION_FIELDS: usize = 5;
/// The names of the declaration fields, for saying which one differs.
const DECLARATION_FIELD_NAMES: [&str; DECLARATION_FIELDS] =
    ["name", "type", "value layout", "label names", "buckets"];

/// Why a snapshot was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    /// Not a snapshot, or damaged: the reason.
    Damaged(String),
    /// A snapshot of a layout version this build does not read.
    Version(u32),
    /// Its families differ from the store's: which, and how.
    OtherSchema(String),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Damaged(reason) => write!(f, "damaged snapshot: {reason}"),
            SnapshotError::Version(version) => write!(
                f,
                "snapshot of layout version {version}; this version reads versions \
                 {OLDEST_VERSION} to {VERSION}"
            ),
            SnapshotError::OtherSchema(reason) => {
                write!(f, "snapshot of other metric families: {reason}")
            }
        }
    }
}

/// The values of `store` as a snapshot. With [`ReadMode::Reset`] the values
/// are taken (each addition lands in exactly one snapshot) and series with
/// nothing new are left out.
pub fn take(store: &Store, mode: ReadMode) -> Vec<u8> {
    let schema = store.schema();
    let mut writer = SnapshotWriter {
        bytes: Vec::with_capacity(4096),
        series: 0,
        skip_empty: mode == ReadMode::Reset,
        exemplars: Vec::new(),
    };
    writer.bytes.extend_from_slice(MAGIC);
    writer.bytes.extend_from_slice(&VERSION.to_le_bytes());
    writer.put_u32(schema.families().len());
    for family in schema.families() {
        for field in family.declaration() {
            writer.put_str(&field);
        }
    }
    let count_at = writer.bytes.len();
    writer.bytes.extend_from_slice(&0_u64.to_le_bytes());
    store.visit_series(mode, &mut writer);
    let series = writer.series.to_le_bytes();
    writer.bytes[count_at..count_at + 8].copy_from_slice(&series);
    writer.write_exemplars();
    let checksum = crc32fast::hash(&writer.bytes);
    writer.bytes.extend_from_slice(&checksum.to_le_bytes());
    writer.bytes
}

/// Adds every series of `snapshot` to `store`, after checking all of it:
/// a refused snapshot adds nothing. Returns the number of series added.
///
/// The families are checked against the store's before any series is read,
/// and the series are read twice in place, once to check each and once to
/// add it, so a snapshot costs no memory beyond what its series add to the
/// store, however many it claims.
pub fn merge(store: &Store, snapshot: &[u8]) -> Result<usize, SnapshotError> {
    let header = parse_header(snapshot)?;
    let schema = store.schema();
    let families = matching_families(schema, &header.declarations)?;
    let mut checked = SeriesReader::new(&header);
    while let Some(series) = checked.next_series()? {
        check_series(schema, families[series.declaration], &series)?;
    }
    let exemplars = checked.finish(header.series_count)?;
    if !exemplars.is_empty() {
        // Each exemplar's series must be a histogram's with its bucket: one
        // more pass over the series, in place.
        let mut pending = exemplars.iter().peekable();
        let mut series_of = SeriesReader::new(&header);
        let mut position = 0_u64;
        while let Some(series) = series_of.next_series()? {
            let buckets = families[series.declaration]
                .buckets
                .as_ref()
                .map_or(0, Buckets::count);
            while let Some((_, bucket, _)) = pending.next_if(|(at, _, _)| *at == position) {
                if *bucket >= buckets {
                    return Err(SnapshotError::Damaged(format!(
                        "an exemplar of series {position}, bucket {bucket}, which has no such \
                         bucket"
                    )));
                }
            }
            position += 1;
        }
    }
    let mut cells: SmallVec<[u64; 32]> = SmallVec::new();
    let mut added = SeriesReader::new(&header);
    let mut pending = exemplars.iter().peekable();
    let mut position = 0_u64;
    while let Some(series) = added.next_series()? {
        cells.clear();
        cells.extend(series.cells());
        let family = families[series.declaration].id;
        store.add_series(family, &series.labels, &cells);
        while let Some((_, bucket, exemplar)) = pending.next_if(|(at, _, _)| *at == position) {
            store.add_exemplar(family, &series.labels, *bucket, exemplar.clone());
        }
        position += 1;
    }
    Ok(header.series_count)
}

/// Writes series records as the store hands them over.
struct SnapshotWriter {
    bytes: Vec<u8>,
    series: u64,
    skip_empty: bool,
    /// The buckets' exemplars: series position, bucket, exemplar.
    exemplars: Vec<(u64, usize, Arc<Exemplar>)>,
}

impl SnapshotWriter {
    fn put_u32(&mut self, value: usize) {
        // Lengths and counts are far below 4 GiB: a label value is a Python
        // string a caller passed, a family list is the schema's.
        self.bytes
            .extend_from_slice(&u32::try_from(value).unwrap_or(u32::MAX).to_le_bytes());
    }

    fn put_u16(&mut self, value: usize) {
        self.bytes
            .extend_from_slice(&u16::try_from(value).unwrap_or(u16::MAX).to_le_bytes());
    }

    fn put_str(&mut self, text: &str) {
        self.put_u32(text.len());
        self.bytes.extend_from_slice(text.as_bytes());
    }

    /// The exemplar section, when there are exemplars.
    fn write_exemplars(&mut self) {
        if self.exemplars.is_empty() {
            return;
        }
        let exemplars = std::mem::take(&mut self.exemplars);
        self.bytes.extend_from_slice(EXEMPLAR_MAGIC);
        self.put_u32(exemplars.len());
        for (series, bucket, exemplar) in exemplars {
            self.bytes.extend_from_slice(&series.to_le_bytes());
            self.put_u16(bucket);
            self.put_u16(exemplar.labels.len());
            for (name, value) in &exemplar.labels {
                self.put_str(name);
                self.put_str(value);
            }
            self.bytes
                .extend_from_slice(&exemplar.value.to_bits().to_le_bytes());
            self.bytes
                .extend_from_slice(&exemplar.timestamp.to_bits().to_le_bytes());
        }
    }
}

impl SeriesVisitor for SnapshotWriter {
    fn family_series<'a>(
        &mut self,
        desc: &FamilyDesc,
        series: impl Iterator<Item = SeriesView<'a>>,
    ) {
        let mut cells: SmallVec<[u64; 32]> = SmallVec::new();
        for view in series {
            cells.clear();
            match &view.reading {
                Reading::Count(count) => cells.push(*count),
                Reading::Sum(sum) => cells.push(sum.to_bits()),
                Reading::Histogram(histogram) => {
                    cells.extend(histogram.to_cells(desc.native.as_ref()));
                }
            }
            // The bits of a zero sum are zero too.
            if self.skip_empty && cells.iter().all(|cell| *cell == 0) {
                continue;
            }
            self.series += 1;
            self.bytes.push(desc.id);
            self.put_u16(view.labels.len());
            for label in &view.labels {
                self.put_str(label);
            }
            self.put_u16(cells.len());
            for cell in &cells {
                self.bytes.extend_from_slice(&cell.to_le_bytes());
            }
            if let Reading::Histogram(histogram) = &view.reading {
                for (bucket, exemplar) in histogram.exemplars.iter().enumerate() {
                    if let Some(exemplar) = exemplar {
                        self.exemplars
                            .push((self.series - 1, bucket, Arc::clone(exemplar)));
                    }
                }
            }
        }
    }
}

/// A snapshot's header read and its checksum verified; its series not yet read.
struct SnapshotHeader<'a> {
    declarations: Vec<[&'a str; DECLARATION_FIELDS]>,
    series_count: usize,
    /// The series records: the bytes after the series count, up to the checksum.
    series_bytes: &'a [u8],
}

/// One series of a snapshot, borrowed from its bytes.
struct ParsedSeries<'a> {
    /// Index into the snapshot's declarations.
    declaration: usize,
    labels: SmallVec<[&'a str; 8]>,
    /// The cells' little-endian bytes, 8 per cell.
    cell_bytes: &'a [u8],
}

impl ParsedSeries<'_> {
    fn cells(&self) -> impl Iterator<Item = u64> + '_ {
        self.cell_bytes.chunks_exact(8).map(|chunk| {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(chunk);
            u64::from_le_bytes(bytes)
        })
    }
}

/// Reads bounded fields off a byte slice.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], SnapshotError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| {
                SnapshotError::Damaged(format!("it ends inside {what} at byte {}", self.at))
            })?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], SnapshotError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N, what)?);
        Ok(array)
    }

    fn u8(&mut self, what: &str) -> Result<u8, SnapshotError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<usize, SnapshotError> {
        Ok(usize::from(u16::from_le_bytes(self.array(what)?)))
    }

    fn u32(&mut self, what: &str) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn str(&mut self, what: &str) -> Result<&'a str, SnapshotError> {
        let len = self.u32(what)? as usize;
        std::str::from_utf8(self.take(len, what)?)
            .map_err(|_| SnapshotError::Damaged(format!("{what} is not UTF-8")))
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }
}

/// Checks the magic, version and checksum and reads the family declarations
/// and the series count; the series stay unread bytes.
fn parse_header(snapshot: &[u8]) -> Result<SnapshotHeader<'_>, SnapshotError> {
    if snapshot.len() < MAGIC.len() + 4 + 4 || &snapshot[..MAGIC.len()] != MAGIC {
        return Err(SnapshotError::Damaged(
            "it does not start as a snapshot does".to_owned(),
        ));
    }
    let version = u32::from_le_bytes([snapshot[8], snapshot[9], snapshot[10], snapshot[11]]);
    if !(OLDEST_VERSION..=VERSION).contains(&version) {
        return Err(SnapshotError::Version(version));
    }
    let (body, checksum) = snapshot.split_at(snapshot.len() - 4);
    let expected = u32::from_le_bytes([checksum[0], checksum[1], checksum[2], checksum[3]]);
    if crc32fast::hash(body) != expected {
        return Err(SnapshotError::Damaged(
            "its checksum does not match its bytes".to_owned(),
        ));
    }
    let mut cursor = Cursor {
        bytes: body,
        at: MAGIC.len() + 4,
    };
    let family_count = cursor.u32("the family count")? as usize;
    // Only a store's own families can match, and a family id is a byte.
    if family_count > usize::from(u8::MAX) + 1 {
        return Err(SnapshotError::Damaged(format!(
            "it claims {family_count} families"
        )));
    }
    let mut declarations = Vec::with_capacity(family_count);
    for _ in 0..family_count {
        let mut fields = [""; DECLARATION_FIELDS];
        for field in &mut fields {
            *field = cursor.str("a family declaration")?;
        }
        declarations.push(fields);
    }
    let series_count = cursor.u64("the series count")?;
    // Each series takes at least its family byte and two count fields.
    if series_count > (cursor.remaining() / 5) as u64 {
        return Err(SnapshotError::Damaged(format!(
            "it claims {series_count} series"
        )));
    }
    Ok(SnapshotHeader {
        declarations,
        series_count: series_count as usize,
        series_bytes: &body[cursor.at..],
    })
}

/// Reads a snapshot's series one at a time, in place.
struct SeriesReader<'a> {
    cursor: Cursor<'a>,
    declarations: usize,
    left: usize,
}

impl<'a> SeriesReader<'a> {
    fn new(header: &SnapshotHeader<'a>) -> Self {
        SeriesReader {
            cursor: Cursor {
                bytes: header.series_bytes,
                at: 0,
            },
            declarations: header.declarations.len(),
            left: header.series_count,
        }
    }

    /// The next series, or None after the last one the snapshot claims.
    fn next_series(&mut self) -> Result<Option<ParsedSeries<'a>>, SnapshotError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let cursor = &mut self.cursor;
        let declaration = usize::from(cursor.u8("a series")?);
        if declaration >= self.declarations {
            return Err(SnapshotError::Damaged(format!(
                "a series of undeclared family {declaration}"
            )));
        }
        let label_count = cursor.u16("a series' labels")?;
        // Every label takes at least its length field.
        if label_count > cursor.remaining() / 4 {
            return Err(SnapshotError::Damaged(format!(
                "a series claims {label_count} labels"
            )));
        }
        let mut labels = SmallVec::with_capacity(label_count);
        for _ in 0..label_count {
            labels.push(cursor.str("a label value")?);
        }
        let cell_count = cursor.u16("a series' values")?;
        let cell_bytes = cursor.take(cell_count * 8, "a series' values")?;
        Ok(Some(ParsedSeries {
            declaration,
            labels,
            cell_bytes,
        }))
    }

    /// The exemplar section after the last series (each naming one of the
    /// `series_count` series), sorted by series; an error unless the snapshot
    /// ends there.
    fn finish(
        &mut self,
        series_count: usize,
    ) -> Result<Vec<(u64, usize, Exemplar)>, SnapshotError> {
        let cursor = &mut self.cursor;
        let mut exemplars = Vec::new();
        if cursor.remaining() >= EXEMPLAR_MAGIC.len()
            && &cursor.bytes[cursor.at..cursor.at + EXEMPLAR_MAGIC.len()] == EXEMPLAR_MAGIC
        {
            cursor.take(EXEMPLAR_MAGIC.len(), "the exemplars")?;
            let count = cursor.u32("the exemplar count")? as usize;
            // Every exemplar takes at least 28 bytes.
            if count > cursor.remaining() / 28 {
                return Err(SnapshotError::Damaged(format!(
                    "it claims {count} exemplars"
                )));
            }
            exemplars.reserve(count);
            for _ in 0..count {
                exemplars.push(next_exemplar(cursor, series_count)?);
            }
            exemplars.sort_by_key(|(series, _, _)| *series);
        }
        match cursor.remaining() {
            0 => Ok(exemplars),
            extra if exemplars.is_empty() => Err(SnapshotError::Damaged(format!(
                "{extra} bytes follow its last series"
            ))),
            extra => Err(SnapshotError::Damaged(format!(
                "{extra} bytes follow its exemplars"
            ))),
        }
    }
}

/// One exemplar of the exemplar section, checked: it names one of the
/// `series_count` series, its labels are an exemplar's, its value and time
/// finite (its bucket is checked against its series by the caller).
fn next_exemplar(
    cursor: &mut Cursor<'_>,
    series_count: usize,
) -> Result<(u64, usize, Exemplar), SnapshotError> {
    let series = cursor.u64("an exemplar")?;
    let bucket = cursor.u16("an exemplar's bucket")?;
    if usize::try_from(series).map_or(true, |at| at >= series_count) {
        return Err(SnapshotError::Damaged(format!(
            "an exemplar of series {series}, of {series_count}"
        )));
    }
    let label_count = cursor.u16("an exemplar's labels")?;
    if label_count > cursor.remaining() / 8 {
        return Err(SnapshotError::Damaged(format!(
            "an exemplar claims {label_count} labels"
        )));
    }
    let mut labels = Vec::with_capacity(label_count);
    for _ in 0..label_count {
        let name = cursor.str("an exemplar's label name")?;
        let value = cursor.str("an exemplar's label value")?;
        labels.push((name.to_owned(), value.to_owned()));
    }
    Exemplar::check_labels(&labels)
        .map_err(|reason| SnapshotError::Damaged(format!("an exemplar: {reason}")))?;
    let value = f64::from_bits(cursor.u64("an exemplar's value")?);
    let timestamp = f64::from_bits(cursor.u64("an exemplar's time")?);
    if !value.is_finite() || !timestamp.is_finite() {
        return Err(SnapshotError::Damaged(
            "an exemplar's value or time is not finite".to_owned(),
        ));
    }
    Ok((
        series,
        bucket,
        Exemplar {
            labels,
            value,
            timestamp,
        },
    ))
}

/// For each declaration of the snapshot, the store's family of that name,
/// if the snapshot declares exactly the store's families, each alike.
fn matching_families<'s>(
    schema: &'s Schema,
    declarations: &[[&str; DECLARATION_FIELDS]],
) -> Result<Vec<&'s FamilyDesc>, SnapshotError> {
    let mut families = Vec::with_capacity(declarations.len());
    for declared in declarations {
        let family = schema.named(declared[0]).ok_or_else(|| {
            SnapshotError::OtherSchema(format!("this middleware has no family {}", declared[0]))
        })?;
        let own = family.declaration();
        for (field, (theirs, ours)) in declared.iter().zip(&own).enumerate() {
            if theirs != ours {
                return Err(SnapshotError::OtherSchema(format!(
                    "{}: its {} are {theirs:?}, this middleware's are {ours:?}",
                    family.name, DECLARATION_FIELD_NAMES[field]
                )));
            }
        }
        if families
            .iter()
            .any(|seen: &&FamilyDesc| seen.id == family.id)
        {
            return Err(SnapshotError::Damaged(format!(
                "{} is declared twice",
                family.name
            )));
        }
        families.push(family);
    }
    if let Some(missing) = schema
        .families()
        .iter()
        .find(|family| !families.iter().any(|seen| seen.id == family.id))
    {
        return Err(SnapshotError::OtherSchema(format!(
            "it lacks the family {}",
            missing.name
        )));
    }
    Ok(families)
}

/// Whether the shape and values of `series` fit `family` of `schema`.
///
/// A sum may be +Inf: a float sum that outgrew f64 (two latencies of 1e308)
/// saturates there, and the snapshot carries it as a scrape shows it. NaN
/// and negative sums no recording makes are refused. An overflow series must
/// name one of the schema's families, so that the overflow family holds at
/// most one series per family, as a recording leaves it.
fn check_series(
    schema: &Schema,
    family: &FamilyDesc,
    series: &ParsedSeries<'_>,
) -> Result<(), SnapshotError> {
    if series.labels.len() != family.label_names.len() {
        return Err(SnapshotError::Damaged(format!(
            "a series of {} has {} label values, not {}",
            family.name,
            series.labels.len(),
            family.label_names.len()
        )));
    }
    if series.cell_bytes.len() != family.cells() * 8 {
        return Err(SnapshotError::Damaged(format!(
            "a series of {} has {} values, not {}",
            family.name,
            series.cell_bytes.len() / 8,
            family.cells()
        )));
    }
    for (index, cell) in series.cells().enumerate() {
        let sum = f64::from_bits(cell);
        if family.is_sum(index) && (sum.is_nan() || sum < 0.0) {
            return Err(SnapshotError::Damaged(format!(
                "a series of {} has the sum {sum}",
                family.name
            )));
        }
    }
    if let Some(config) = &family.native {
        let cells: Vec<u64> = series.cells().collect();
        let (classic, native) = cells.split_at(family.classic_cells());
        let native_count = check_snapshot_cells(native, config).map_err(|reason| {
            SnapshotError::Damaged(format!("a series of {}: {reason}", family.name))
        })?;
        let classic_count = classic[..classic.len() - 1]
            .iter()
            .try_fold(0_u64, |sum, count| sum.checked_add(*count));
        if classic_count != Some(native_count) {
            let classic_count = classic_count.map_or("over 2^64".to_owned(), |n| n.to_string());
            return Err(SnapshotError::Damaged(format!(
                "a series of {} counts {classic_count} observations in its buckets and \
                 {native_count} in its native buckets",
                family.name
            )));
        }
    }
    if family.id == OVERFLOW
        && !series.labels.iter().all(|named| {
            schema
                .named(named)
                .is_some_and(|folded| folded.id != OVERFLOW)
        })
    {
        return Err(SnapshotError::Damaged(format!(
            "a series of {} names no family of this middleware: {:?}",
            family.name, series.labels
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::text::{render, Format};
    use crate::schema::request::{RequestValues, TIME_TO_FIRST_TOKEN};
    use crate::store::pricing::{Price, PriceTable};
    use crate::store::{CacheOutcome, RequestLabels};

    fn store() -> Store {
        Store::new(PriceTable::new([("gpt-4o", Price::new(2.5, 10.0))]))
    }

    fn record(store: &Store, model: &str, latency_s: f64, input: u64) {
        let labels = RequestLabels {
            provider: "openai",
            model,
            operation: "chat",
            status: "ok",
            extra: &[],
        };
        let mut values = RequestValues::new(latency_s, input, 7);
        values.seconds[TIME_TO_FIRST_TOKEN] = Some(latency_s / 2.0);
        store.record_request(&labels, &values);
        store.record_tool_call("search");
        store.record_cache(CacheOutcome::Hit, "semantic");
    }

    fn text(store: &Store) -> String {
        render(store, Format::Text, false, String::new())
    }

    #[test]
    fn a_merged_snapshot_shows_what_was_recorded() {
        let worker = store();
        record(&worker, "gpt-4o", 0.25, 100);
        record(&worker, "other", 3.0, 5);
        let driver = store();
        assert_eq!(merge(&driver, &take(&worker, ReadMode::Keep)), Ok(15));
        assert_eq!(text(&driver), text(&worker));
    }

    #[test]
    fn reset_snapshots_add_up_to_the_whole_and_skip_quiet_series() {
        let worker = store();
        let whole = store();
        let driver = store();
        for round in 0..3 {
            record(&worker, "gpt-4o", 0.5, 10 + round);
            record(&whole, "gpt-4o", 0.5, 10 + round);
            assert!(merge(&driver, &take(&worker, ReadMode::Reset)).is_ok());
        }
        assert_eq!(text(&driver), text(&whole));
        let quiet = take(&worker, ReadMode::Reset);
        assert_eq!(merge(&driver, &quiet), Ok(0));
        assert_eq!(text(&driver), text(&whole));
    }

    #[test]
    fn every_damaged_byte_is_refused_and_adds_nothing() {
        let worker = store();
        record(&worker, "gpt-4o", 0.25, 100);
        let snapshot = take(&worker, ReadMode::Keep);
        let driver = store();
        let empty = text(&driver);
        for at in 0..snapshot.len() {
            let mut damaged = snapshot.clone();
            damaged[at] ^= 0x5a;
            assert!(merge(&driver, &damaged).is_err(), "byte {at}");
        }
        for len in 0..snapshot.len() {
            assert!(merge(&driver, &snapshot[..len]).is_err(), "length {len}");
        }
        assert_eq!(text(&driver), empty);
    }

    #[test]
    fn damage_behind_a_valid_checksum_is_refused_whole_or_read_whole() {
        let worker = store();
        record(&worker, "gpt-4o", 0.25, 100);
        let snapshot = take(&worker, ReadMode::Keep);
        let body = snapshot.len() - 4;
        let mut refused = 0;
        for at in 12..body {
            for pattern in [0x01, 0x80, 0xff] {
                let mut damaged = snapshot[..body].to_vec();
                damaged[at] ^= pattern;
                let checksum = crc32fast::hash(&damaged);
                damaged.extend_from_slice(&checksum.to_le_bytes());
                let driver = store();
                let before = text(&driver);
                match merge(&driver, &damaged) {
                    Err(_) => {
                        refused += 1;
                        assert_eq!(text(&driver), before, "byte {at} refused yet added");
                    }
                    // A changed label value or count is a different, valid snapshot.
                    Ok(series) => assert_eq!(series, 9),
                }
            }
        }
        assert!(refused > body, "{refused} refusals");
    }

    #[test]
    fn other_versions_and_schemas_are_refused_by_name() {
        let worker = store();
        let mut snapshot = take(&worker, ReadMode::Keep);
        snapshot[8] = 9;
        assert_eq!(merge(&store(), &snapshot), Err(SnapshotError::Version(9)));
        let other = Store::with_arena(
            PriceTable::new([]),
            crate::cells::arena::CellArena::heap(),
            crate::cells::counter::Recording::CONCURRENT,
            std::sync::Arc::new(Schema::new(&[1.0, 2.0]).unwrap()),
        );
        let error = merge(&other, &take(&worker, ReadMode::Keep)).unwrap_err();
        assert!(error.to_string().contains("buckets"), "{error}");
    }

    /// A snapshot of `store`'s schema holding `series` (family id, labels, cells).
    fn crafted(store: &Store, series: &[(u8, Vec<String>, Vec<u64>)]) -> Vec<u8> {
        let mut bytes = take(&store_like(store), ReadMode::Keep);
        bytes.truncate(bytes.len() - 4 - 8);
        bytes.extend_from_slice(&(series.len() as u64).to_le_bytes());
        for (family, labels, cells) in series {
            bytes.push(*family);
            bytes.extend_from_slice(&(labels.len() as u16).to_le_bytes());
            for label in labels {
                bytes.extend_from_slice(&(label.len() as u32).to_le_bytes());
                bytes.extend_from_slice(label.as_bytes());
            }
            bytes.extend_from_slice(&(cells.len() as u16).to_le_bytes());
            for cell in cells {
                bytes.extend_from_slice(&cell.to_le_bytes());
            }
        }
        let checksum = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&checksum.to_le_bytes());
        bytes
    }

    /// An empty store of the same schema, so that a snapshot of it has no series.
    fn store_like(store: &Store) -> Store {
        Store::with_arena(
            PriceTable::new([]),
            crate::cells::arena::CellArena::heap(),
            crate::cells::counter::Recording::CONCURRENT,
            std::sync::Arc::clone(store.schema()),
        )
    }

    #[test]
    fn overflow_series_must_name_a_family_so_that_family_stays_bounded() {
        let driver = store();
        let named = |name: &str| (OVERFLOW, vec![name.to_owned()], vec![3]);
        let fine = crafted(&driver, &[named("ractogateway_requests")]);
        assert_eq!(merge(&driver, &fine), Ok(1));
        for bad in ["model-0", "ractogateway_overflow_requests", ""] {
            let snapshot = crafted(&driver, &[named("ractogateway_requests"), named(bad)]);
            let error = merge(&driver, &snapshot).unwrap_err();
            assert!(error.to_string().contains("names no family"), "{error}");
        }
        let text = text(&driver);
        assert!(text.contains(
            "ractogateway_overflow_requests_total{family=\"ractogateway_requests\"} 3.0"
        ));
    }

    #[test]
    fn merged_label_sets_past_the_cap_fold_like_recordings() {
        let mut driver = store();
        driver.set_max_series(10);
        let series: Vec<_> = (0..1000)
            .map(|index| {
                (
                    crate::schema::family::TOOL_CALLS,
                    vec![format!("tool-{index}")],
                    vec![1],
                )
            })
            .collect();
        assert_eq!(merge(&driver, &crafted(&driver, &series)), Ok(1000));
        let text = text(&driver);
        let tool_series = text
            .lines()
            .filter(|line| line.starts_with("ractogateway_tool_calls_total{"))
            .count();
        assert_eq!(tool_series, 11);
        assert!(text.contains("ractogateway_tool_calls_total{tool_name=\"__overflow__\"} 990.0"));
    }

    #[test]
    fn families_are_checked_before_any_series_is_read() {
        let worker = store();
        let other = Store::with_arena(
            PriceTable::new([]),
            crate::cells::arena::CellArena::heap(),
            crate::cells::counter::Recording::CONCURRENT,
            std::sync::Arc::new(Schema::new(&[1.0, 2.0]).unwrap()),
        );
        // Series damaged from their first byte: a schema refusal says the
        // families were compared first.
        let mut snapshot = crafted(&worker, &[]);
        snapshot.truncate(snapshot.len() - 4 - 8);
        snapshot.extend_from_slice(&1000_u64.to_le_bytes());
        snapshot.extend_from_slice(&[0xff; 8000]);
        let checksum = crc32fast::hash(&snapshot);
        snapshot.extend_from_slice(&checksum.to_le_bytes());
        assert!(matches!(
            merge(&other, &snapshot),
            Err(SnapshotError::OtherSchema(_))
        ));
        assert!(matches!(
            merge(&worker, &snapshot),
            Err(SnapshotError::Damaged(_))
        ));
    }

    #[test]
    fn a_sum_grown_to_infinity_still_merges_with_the_rest() {
        let worker = store();
        record(&worker, "gpt-4o", 1e308, 10);
        record(&worker, "gpt-4o", 1e308, 10);
        record(&worker, "other", 0.5, 3);
        let driver = store();
        assert!(merge(&driver, &take(&worker, ReadMode::Reset)).is_ok());
        let text = text(&driver);
        assert!(text.contains(
            "ractogateway_request_duration_seconds_sum{model=\"gpt-4o\",operation=\"chat\",provider=\"openai\"} +Inf"
        ), "{text}");
        assert!(text.contains("model=\"other\""));
        let mut nan = crafted(
            &driver,
            &[(
                COST_ID,
                vec!["m".into(), "chat".into(), "p".into()],
                vec![f64::NAN.to_bits()],
            )],
        );
        assert!(merge(&driver, &nan).is_err());
        nan = crafted(
            &driver,
            &[(
                COST_ID,
                vec!["m".into(), "chat".into(), "p".into()],
                vec![(-1.0_f64).to_bits()],
            )],
        );
        assert!(merge(&driver, &nan).is_err());
    }

    const COST_ID: u8 = crate::schema::family::COST;

    /// A change to a series' classic and native cells.
    type Edit<'e> = &'e dyn Fn(&mut Vec<u64>, &mut Vec<u64>);

    #[test]
    fn native_cells_are_checked_against_their_buckets_before_any_is_added() {
        use crate::cells::native_histogram::NativeSnapshot;
        use crate::schema::family::{DURATION, LATENCY_BOUNDS};
        use crate::schema::native::NativeConfig;
        use crate::schema::native_buckets::bucket_index;
        let config = NativeConfig::DEFAULT;
        let schema = Schema::with_options(&LATENCY_BOUNDS, &[], Some(config)).unwrap();
        let driver = Store::with_arena(
            PriceTable::new([]),
            crate::cells::arena::CellArena::heap(),
            crate::cells::counter::Recording::CONCURRENT,
            Arc::new(schema),
        );
        // Three observations of 0.25 s: classic bucket 2 (le=0.25), one native bucket.
        let mut classic = vec![0_u64; LATENCY_BOUNDS.len() + 1];
        classic[2] = 3;
        classic.push(0.75_f64.to_bits());
        let native = NativeSnapshot {
            schema: config.schema,
            zero_threshold: config.zero_threshold,
            zero_count: 0,
            buckets: vec![(bucket_index(0.25, config.schema), 3)],
        }
        .to_cells(&config);
        let labels: Vec<String> = ["m", "chat", "p"].map(String::from).to_vec();
        let series = |edit: &dyn Fn(&mut Vec<u64>, &mut Vec<u64>)| {
            let (mut classic, mut native) = (classic.clone(), native.clone());
            edit(&mut classic, &mut native);
            classic.extend(native);
            crafted(&driver, &[(DURATION, labels.clone(), classic)])
        };
        let header = 2;
        let refused: [(&str, Edit); 7] = [
            ("in its native buckets", &|_, native| native[8] = 1_002),
            ("in its native buckets", &|_, native| native[1] = 1),
            ("schema reduction", &|_, native| native[header] = 7 + 1),
            ("beyond 2^63", &|classic, native| {
                classic[2] = 1 << 63;
                native[8] = 1 << 63;
            }),
            ("outside the active window", &|_, native| native[0] = 1),
            ("outside the active window", &|_, native| {
                native[8 + config.max_buckets] = 3;
                native[8] = 0;
            }),
            ("outside", &|_, native| {
                native[header + 1] = (i64::from(i32::MAX) - 3) as u64;
            }),
        ];
        for (reason, edit) in refused {
            let error = merge(&driver, &series(edit)).unwrap_err().to_string();
            assert!(error.contains(reason), "{reason}: {error}");
        }
        // A window marked empty, or starting below its first bucket, is no snapshot's either.
        let empty_marked = series(&|_, native| native[header + 2] = 0);
        assert!(merge(&driver, &empty_marked).is_err());
        let shifted = series(&|_, native| {
            native[header + 1] = native[header + 1].wrapping_sub(1);
            native.copy_within(8..9, 9);
            native[8] = 0;
        });
        assert!(merge(&driver, &shifted).is_err());
        assert_eq!(
            text(&driver),
            text(&store_like(&driver)),
            "nothing was added"
        );
        assert_eq!(merge(&driver, &series(&|_, _| {})), Ok(1));
        let text = text(&driver);
        assert!(text.contains("ractogateway_request_duration_seconds_count{model=\"m\",operation=\"chat\",provider=\"p\"} 3.0"), "{text}");
    }
}
