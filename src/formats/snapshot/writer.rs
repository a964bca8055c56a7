//! Writing a snapshot: each series record as the store hands it over, and the
//! exemplars after the series.

use std::sync::Arc;

use smallvec::SmallVec;

use crate::cells::exemplar::Exemplar;
use crate::formats::snapshot::{EXEMPLAR_MAGIC, MAGIC, VERSION};
use crate::schema::family::FamilyDesc;
use crate::store::visit::{Reading, SeriesView, SeriesVisitor};
use crate::store::{ReadMode, Store};

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
                // A level is its process's own (calls in flight there): a
                // snapshot, which another store adds to its own, leaves it out.
                Reading::Level(_) => continue,
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
