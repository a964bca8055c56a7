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
//! u32 families, each: 5 × (u32 length, UTF-8)      -- FamilyDesc::declaration
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

mod reader;
mod writer;

pub use reader::merge;
pub use writer::take;

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
/// The declaration field of the bucket bounds (and native configuration).
const BOUNDS_FIELD: usize = 4;

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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::formats::text::{render, Format};
    use crate::schema::family::{Schema, OVERFLOW};
    use crate::schema::request::{RequestValues, TIME_TO_FIRST_TOKEN};
    use crate::store::pricing::{Price, PriceTable};
    use crate::store::{CacheOutcome, RequestLabels};
    use crate::store::{ReadMode, Store};

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
        render(store, Format::Text, false)
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

    /// The native histograms a store shows, by family and labels.
    #[derive(Default)]
    struct Natives(Vec<(String, Vec<String>, NativeSnapshotOf)>);

    type NativeSnapshotOf = crate::cells::native_histogram::NativeSnapshot;

    impl crate::store::visit::SampleVisitor for Natives {
        fn family(&mut self, _desc: &crate::schema::family::FamilyDesc) {}
        fn sample(
            &mut self,
            _desc: &crate::schema::family::FamilyDesc,
            _suffix: &'static str,
            _le: Option<&str>,
            _series: usize,
            _labels: &[&str],
            _value: f64,
        ) {
        }
        fn end_family(&mut self, _desc: &crate::schema::family::FamilyDesc) {}
        fn native_histogram(
            &mut self,
            desc: &crate::schema::family::FamilyDesc,
            labels: &[&str],
            native: &NativeSnapshotOf,
            _sum: f64,
        ) {
            let labels = labels.iter().map(|label| (*label).to_owned()).collect();
            self.0.push((desc.name.to_string(), labels, native.clone()));
        }
        fn wants_native(&self) -> bool {
            true
        }
    }

    fn natives(store: &Store) -> Vec<(String, Vec<String>, NativeSnapshotOf)> {
        let mut natives = Natives::default();
        store.visit(false, &mut natives);
        natives.0
    }

    #[test]
    fn native_histograms_of_other_schemas_merge_at_the_coarser_one() {
        use crate::schema::family::LATENCY_BOUNDS;
        use crate::schema::native::NativeConfig;
        let native_store = |schema: i8, max_buckets: usize, zero_threshold: f64| {
            let config = NativeConfig::new(schema, zero_threshold, max_buckets).unwrap();
            Store::with_arena(
                PriceTable::new([]),
                crate::cells::arena::CellArena::heap(),
                crate::cells::counter::Recording::CONCURRENT,
                Arc::new(Schema::with_options(&LATENCY_BOUNDS, &[], Some(config)).unwrap()),
            )
        };
        let zero = NativeConfig::DEFAULT.zero_threshold;
        let (fine, coarse) = (native_store(3, 160, zero), native_store(0, 140, zero));
        // What one store of the coarse schema would show for every observation.
        let whole = native_store(0, 160, zero);
        let latencies = [0.001, 0.013, 0.25, 0.26, 1.7, 9.0, 42.0];
        for (round, latency) in latencies.iter().enumerate() {
            let worker = if round % 2 == 0 { &fine } else { &coarse };
            record(worker, "gpt-4o", *latency, 3);
            record(&whole, "gpt-4o", *latency, 3);
        }
        for driver in [native_store(3, 160, zero), native_store(0, 160, zero)] {
            merge(&driver, &take(&fine, ReadMode::Keep)).unwrap();
            merge(&driver, &take(&coarse, ReadMode::Keep)).unwrap();
            assert_eq!(natives(&driver), natives(&whole));
            assert_eq!(text(&driver), text(&whole), "the classic series");
        }
        // A wider zero bucket than the store's would lose what it counts.
        let wide = native_store(3, 160, 0.01);
        record(&wide, "gpt-4o", 0.005, 1);
        let error = merge(&native_store(3, 160, zero), &take(&wide, ReadMode::Keep));
        assert!(
            error
                .unwrap_err()
                .to_string()
                .contains("zero bucket reaches 0.01"),
            "refused"
        );
        // Classic buckets must still match.
        let other_classic = Store::with_arena(
            PriceTable::new([]),
            crate::cells::arena::CellArena::heap(),
            crate::cells::counter::Recording::CONCURRENT,
            Arc::new(Schema::with_options(&[0.5, 1.0], &[], Some(NativeConfig::DEFAULT)).unwrap()),
        );
        record(&other_classic, "gpt-4o", 0.2, 1);
        let error = merge(
            &native_store(0, 160, zero),
            &take(&other_classic, ReadMode::Keep),
        );
        assert!(error.unwrap_err().to_string().contains("its buckets are"));
    }
}
