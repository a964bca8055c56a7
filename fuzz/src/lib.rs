//! What the fuzz targets share: the schemas they read with, stores with
//! something recorded, and a scratch folder per process.

use std::path::PathBuf;
use std::sync::Arc;

use gateway_metrics::cells::arena::CellArena;
use gateway_metrics::cells::counter::Recording;
use gateway_metrics::formats::text::{Format, TextEncoder};
use gateway_metrics::schema::family::{Schema, LATENCY_BOUNDS};
use gateway_metrics::schema::native::NativeConfig;
use gateway_metrics::schema::request::{RequestValues, TIME_TO_FIRST_TOKEN};
use gateway_metrics::store::pricing::{Price, PriceTable};
use gateway_metrics::store::{CacheOutcome, RequestLabels, Store};

/// The schema without native histograms, and with them.
pub fn schemas() -> [Arc<Schema>; 2] {
    [
        Arc::new(Schema::default()),
        Arc::new(Schema::with_options(&LATENCY_BOUNDS, &[], Some(NativeConfig::DEFAULT)).unwrap()),
    ]
}

/// A store of `schema` on `arena`, with requests, tools, cache outcomes and an
/// exemplar recorded in it.
pub fn recorded_store(schema: Arc<Schema>, arena: CellArena, recording: Recording) -> Store {
    let store = Store::with_arena(
        PriceTable::new([("gpt-4o", Price::new(2.5, 10.0))]),
        arena,
        recording,
        schema,
    );
    for (index, model) in ["gpt-4o", "claude", "llama"].iter().enumerate() {
        let labels = RequestLabels {
            provider: "openai",
            model,
            operation: "chat",
            status: if index == 2 { "error" } else { "ok" },
            extra: &[],
        };
        let mut values = RequestValues::new(0.05 + index as f64 * 1.7, 100 + index as u64, 7);
        values.seconds[TIME_TO_FIRST_TOKEN] = Some(0.01 * (index + 1) as f64);
        if index == 2 {
            values.error = Some(1);
        }
        store.record_request(&labels, &values);
        store.add_in_flight(&labels, 1);
        let entry = store.request_entry(&labels);
        let trace = [("trace_id".to_owned(), format!("{index:032x}"))];
        store.attach_exemplar(entry, &values, &trace, 1_765_000_000.0);
    }
    store.record_tool_call("search");
    store.record_cache(CacheOutcome::Hit, "semantic");
    store
}

/// A folder of this process's own under the system's temporary folder.
pub fn scratch(name: &str) -> PathBuf {
    let folder = std::env::temp_dir().join(format!("gwm-fuzz-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&folder).unwrap();
    folder
}

/// Every family of `store` in `format`, as a scrape renders it.
pub fn rendered(store: &Store, format: Format, include_created: bool) -> String {
    let mut encoder = TextEncoder::new(format);
    store.visit(include_created, &mut encoder);
    encoder.into_text()
}
