//! What a store's values become outside it: the text and protobuf
//! expositions and their gzip, snapshots, remote-write requests, OTLP exports, and the
//! numeric and Arrow columns `record_batch` reads.

// Unsafe: Arrow's C data interface: foreign structs, buffers read in place.
#[allow(unsafe_code)]
pub mod arrow;
// Unsafe: SSE2 widening of UTF-8 to code units.
#[allow(unsafe_code)]
pub mod code_units;
pub mod collected;
pub mod columns;
// Unsafe: unaligned word reads in the match finder.
#[allow(unsafe_code)]
pub mod deflate;
pub mod gzip;
pub mod otlp;
pub mod protobuf;
pub mod remote_write;
pub mod snapshot;
pub mod text;
pub mod wire;
