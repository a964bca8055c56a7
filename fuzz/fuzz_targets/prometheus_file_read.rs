//! Bytes as a `prometheus_client` multi-process file, read as our sum reads
//! them: refused or read, never a panic or an allocation out of proportion.
#![no_main]

use std::sync::OnceLock;

use gateway_metrics::multiprocess::prometheus_file::read_file;
use gateway_metrics_fuzz::{schemas, scratch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    static PATHS: OnceLock<[std::path::PathBuf; 2]> = OnceLock::new();
    let paths = PATHS.get_or_init(|| {
        let folder = scratch("prometheus-file");
        [folder.join("counter_1.db"), folder.join("histogram_1.db")]
    });
    for path in paths {
        std::fs::write(path, bytes).unwrap();
        for schema in schemas() {
            let _ = read_file(path, &schema);
        }
    }
});
