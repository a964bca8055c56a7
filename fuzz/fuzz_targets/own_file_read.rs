//! Bytes as one of our multi-process files, read by the reader every scrape
//! runs over a directory: refused or read, never a panic or an allocation out
//! of proportion (libFuzzer's -malloc_limit_mb).
#![no_main]

use std::sync::OnceLock;

use gateway_metrics::multiprocess::own_file::{declared_schema, read_file};
use gateway_metrics_fuzz::{schemas, scratch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    let path = PATH.get_or_init(|| scratch("own-file").join("gwm-fuzz.db"));
    std::fs::write(path, bytes).unwrap();
    for schema in schemas() {
        let _ = read_file(path, &schema);
    }
    let _ = declared_schema(path);
});
