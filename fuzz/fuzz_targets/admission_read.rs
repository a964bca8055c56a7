//! Bytes as a multi-process directory's file of admitted label sets, which
//! every process reads without a lock and any may damage: read or set aside
//! (the process then keeps its own cap), never a panic or an allocation out
//! of proportion (libFuzzer's -malloc_limit_mb).
#![no_main]

use std::sync::OnceLock;

use gateway_metrics::multiprocess::admission::{SharedAdmission, ADMISSION_FILE};
use gateway_metrics::store::admission::Admission;
use gateway_metrics_fuzz::scratch;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    static FOLDER: OnceLock<std::path::PathBuf> = OnceLock::new();
    let folder = FOLDER.get_or_init(|| scratch("admission"));
    std::fs::write(folder.join(ADMISSION_FILE), bytes).unwrap();
    let admission = SharedAdmission::open(folder).unwrap();
    // A known label set, a new one under the cap, and one past it.
    let _ = admission.admit(0, &["openai", "gpt-4o"], 2);
    let _ = admission.admit(2, &["x"], 2);
    let _ = admission.admit(2, &["y"], 1);
});
