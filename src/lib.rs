//! gateway-metrics: Prometheus metrics for LLM gateways on a lock-free store.
//!
//! The core is plain Rust, in folders by layer, each depending only on the
//! layers above it in this list, so `cargo test` runs without Python:
//!
//! - [`schema`]: the metric families and the request fields, as data;
//! - [`cells`]: the atomics values live in, and the arena that hands them out;
//! - [`store`]: series by label set, the recording rules, batches, prices;
//! - [`formats`]: the text and protobuf expositions (the latter's messages
//!   generated from the vendored `.proto` files), gzip, snapshots, remote
//!   write, OTLP, and the numeric columns `record_batch` reads;
//! - [`multiprocess`]: our own shared files, `prometheus_client`'s files,
//!   directory locks, the fork guard, and the sum over a directory.
//!
//! The `python` feature adds the `PyO3` binding that the `gateway_metrics`
//! package loads as `gateway_metrics._core`; `tools/module_graph.py` (part of
//! `make lint`) checks that no module depends on itself through others.

pub mod cells;
pub mod formats;
pub mod multiprocess;
pub mod schema;
pub mod store;

#[cfg(feature = "python")]
mod python;
#[cfg(test)]
mod test_random;
