//! Where values live: runs of `AtomicU64` cells handed out by an arena, and the
//! counters and histograms laid over them.

pub mod arena;
pub mod counter;
pub mod exemplar;
pub mod histogram;
pub mod native_histogram;
