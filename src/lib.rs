//! gateway-metrics: Prometheus metrics for LLM gateways on a lock-free store.
//!
//! The core is plain Rust, one module per concept, so `cargo test` runs without
//! Python; the `python` feature adds the `PyO3` binding that the
//! `gateway_metrics` package loads as `gateway_metrics._core`.

pub mod batch;
pub mod column_format;
pub mod counter;
pub mod directory_lock;
pub mod exposition;
pub mod family;
pub mod float_text;
pub mod fork_guard;
pub mod histogram;
pub mod label_map;
pub mod multiprocess;
pub mod pricing;
pub mod prometheus_file;
pub mod remote_write;
pub mod series;
pub mod shared_file;
pub mod slots;
pub mod snapshot;
pub mod store;
pub mod visit;

#[cfg(feature = "python")]
mod python;
