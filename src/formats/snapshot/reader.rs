//! Reading a snapshot without trusting it: the header and declarations
//! parsed, the families matched to the store's by their whole declaration,
//! and every series and exemplar checked in place (lengths, UTF-8, counts,
//! sums, native cells) before `merge` adds any.

use smallvec::SmallVec;

use crate::cells::exemplar::Exemplar;
use crate::cells::native_histogram::{check_snapshot_cells, NativeSnapshot};
use crate::formats::snapshot::{
    SnapshotError, BOUNDS_FIELD, DECLARATION_FIELDS, DECLARATION_FIELD_NAMES, EXEMPLAR_MAGIC,
    MAGIC, OLDEST_VERSION, VERSION,
};
use crate::schema::buckets::Buckets;
use crate::schema::family::{FamilyDesc, Schema, OVERFLOW};
use crate::schema::native::NativeConfig;
use crate::store::Store;

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
    let matched = matching_families(schema, &header.declarations)?;
    let families: Vec<&FamilyDesc> = matched.iter().map(|(family, _)| *family).collect();
    let mut checked = SeriesReader::new(&header);
    // One buffer for every native histogram's cells, however many series there are.
    let mut scratch = Vec::new();
    while let Some(series) = checked.next_series()? {
        let (family, theirs) = &matched[series.declaration];
        check_series(schema, family, theirs.as_ref(), &series, &mut scratch)?;
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
        let (desc, theirs) = &matched[series.declaration];
        if let (Some(theirs), Some(ours)) = (theirs, &desc.native) {
            // Native buckets of another configuration, in this store's layout
            // at the coarser of the two schemas.
            let classic = desc.classic_cells();
            let native = NativeSnapshot::from_cells(&cells[classic..], theirs);
            let native = native.reduced_to(native.schema.min(ours.schema));
            let converted = native.to_cells(ours);
            cells.truncate(classic);
            cells.extend(converted);
        }
        let family = desc.id;
        store.add_series(family, &series.labels, &cells);
        while let Some((_, bucket, exemplar)) = pending.next_if(|(at, _, _)| *at == position) {
            store.add_exemplar(family, &series.labels, *bucket, exemplar.clone());
        }
        position += 1;
    }
    Ok(header.series_count)
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

/// The namespace `name` has if it is one of `schema`'s families under another
/// namespace: the longest family suffix it ends with tells which family.
fn other_namespace<'n>(schema: &Schema, name: &'n str) -> Option<&'n str> {
    schema
        .families()
        .iter()
        .filter_map(|family| family.name.strip_prefix(schema.namespace()))
        .filter(|suffix| name.len() > suffix.len() && name.ends_with(suffix))
        .max_by_key(|suffix| suffix.len())
        .map(|suffix| &name[..name.len() - suffix.len()])
        .filter(|namespace| *namespace != schema.namespace())
}

/// For each declaration of the snapshot, the store's family of that name,
/// if the snapshot declares exactly the store's families, each alike; and the
/// snapshot's own native histogram configuration where it differs from the
/// store's in a way a merge can take ([`native_difference`]).
fn matching_families<'s>(
    schema: &'s Schema,
    declarations: &[[&str; DECLARATION_FIELDS]],
) -> Result<Vec<(&'s FamilyDesc, Option<NativeConfig>)>, SnapshotError> {
    let mut families: Vec<(&FamilyDesc, Option<NativeConfig>)> =
        Vec::with_capacity(declarations.len());
    for declared in declarations {
        let family = schema.named(declared[0]).ok_or_else(|| {
            match other_namespace(schema, declared[0]) {
                Some(theirs) => SnapshotError::OtherSchema(format!(
                    "its families are named under the namespace {theirs:?} ({}), this \
                 middleware's under {:?}: merge snapshots of middlewares of one namespace",
                    declared[0],
                    schema.namespace()
                )),
                None => SnapshotError::OtherSchema(format!(
                    "this middleware has no family {}",
                    declared[0]
                )),
            }
        })?;
        let own = family.declaration();
        let mut theirs_native = None;
        for (field, (theirs, ours)) in declared.iter().zip(&own).enumerate() {
            if theirs == ours {
                continue;
            }
            if field == BOUNDS_FIELD {
                if let Some(config) = native_difference(family, theirs, ours)? {
                    theirs_native = Some(config);
                    continue;
                }
            }
            return Err(SnapshotError::OtherSchema(format!(
                "{}: its {} are {theirs:?}, this middleware's are {ours:?}",
                family.name, DECLARATION_FIELD_NAMES[field]
            )));
        }
        if families.iter().any(|(seen, _)| seen.id == family.id) {
            return Err(SnapshotError::Damaged(format!(
                "{} is declared twice",
                family.name
            )));
        }
        families.push((family, theirs_native));
    }
    if let Some(missing) = schema
        .families()
        .iter()
        .find(|family| !families.iter().any(|(seen, _)| seen.id == family.id))
    {
        return Err(SnapshotError::OtherSchema(format!(
            "it lacks the family {}",
            missing.name
        )));
    }
    Ok(families)
}

/// The snapshot's native histogram configuration, when its bucket bounds
/// (`theirs`) differ from the store's (`ours`) only there and a merge can add
/// its buckets: a schema or bucket limit of its own (buckets are added at the
/// coarser schema, as PromQL adds native histograms), and a zero bucket no
/// wider than the store's (its observations are then in the store's). None
/// when the difference is elsewhere (the classic buckets); an error that says
/// why for a zero bucket wider than the store's.
fn native_difference(
    family: &FamilyDesc,
    theirs: &str,
    ours: &str,
) -> Result<Option<NativeConfig>, SnapshotError> {
    let classic = |bounds: &str| {
        bounds
            .split(";native=")
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let (Some(own), true) = (&family.native, classic(theirs) == classic(ours)) else {
        return Ok(None);
    };
    let Ok(Some(config)) = NativeConfig::from_declaration(theirs) else {
        return Ok(None);
    };
    if config.zero_threshold > own.zero_threshold {
        return Err(SnapshotError::OtherSchema(format!(
            "{}: its native histograms' zero bucket reaches {:?}, wider than this \
             middleware's {:?}, whose buckets cannot hold what it counts there",
            family.name, config.zero_threshold, own.zero_threshold
        )));
    }
    Ok(Some(config))
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
    theirs: Option<&NativeConfig>,
    series: &ParsedSeries<'_>,
    scratch: &mut Vec<u64>,
) -> Result<(), SnapshotError> {
    if series.labels.len() != family.label_names.len() {
        return Err(SnapshotError::Damaged(format!(
            "a series of {} has {} label values, not {}",
            family.name,
            series.labels.len(),
            family.label_names.len()
        )));
    }
    // The snapshot's native configuration where it has its own.
    let native_config = theirs.or(family.native.as_ref());
    let cell_count = family.classic_cells() + native_config.map_or(0, NativeConfig::cells);
    if series.cell_bytes.len() != cell_count * 8 {
        return Err(SnapshotError::Damaged(format!(
            "a series of {} has {} values, not {cell_count}",
            family.name,
            series.cell_bytes.len() / 8,
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
    if let Some(config) = native_config {
        scratch.clear();
        scratch.extend(series.cells());
        let (classic, native) = scratch.split_at(family.classic_cells());
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
