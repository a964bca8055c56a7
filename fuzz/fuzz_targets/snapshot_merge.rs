//! A snapshot body (its CRC-32 appended here, so that mutations reach the
//! parser behind the checksum) merged into an empty store of either schema:
//! refused whole, or merged into a store that then renders.
#![no_main]

use std::sync::Arc;

use gateway_metrics::cells::arena::CellArena;
use gateway_metrics::cells::counter::Recording;
use gateway_metrics::formats::snapshot;
use gateway_metrics::formats::text::Format;
use gateway_metrics::store::pricing::PriceTable;
use gateway_metrics::store::{ReadMode, Store};
use gateway_metrics_fuzz::{rendered, schemas};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let mut bytes = body.to_vec();
    bytes.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    for schema in schemas() {
        let store = Store::with_arena(
            PriceTable::new([]),
            CellArena::heap(),
            Recording::CONCURRENT,
            Arc::clone(&schema),
        );
        let empty = rendered(&store, Format::Text, false);
        match snapshot::merge(&store, &bytes) {
            Err(_) => assert_eq!(rendered(&store, Format::Text, false), empty),
            Ok(_) => {
                rendered(&store, Format::OpenMetrics, true);
                // What was merged snapshots and merges again.
                let again = snapshot::take(&store, ReadMode::Keep);
                let copy = Store::with_arena(
                    PriceTable::new([]),
                    CellArena::heap(),
                    Recording::CONCURRENT,
                    schema,
                );
                snapshot::merge(&copy, &again).expect("a merged store's snapshot merges");
            }
        }
    }
});
