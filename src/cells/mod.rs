//! Where values live: runs of `AtomicU64` cells handed out by an arena, and the
//! counters and histograms laid over them.

// Unsafe: slabs of cells handed out by pointer.
#[allow(unsafe_code)]
pub mod arena;
// Unsafe: `CellValue` promises a layout of atomics.
#[allow(unsafe_code)]
pub mod counter;
// Unsafe: sequence-locked slots over cells.
#[allow(unsafe_code)]
pub mod exemplar;
// Unsafe: buckets over cells a stride apart.
#[allow(unsafe_code)]
pub mod histogram;
// Unsafe: windows of buckets over cells.
#[allow(unsafe_code)]
pub mod native_histogram;
