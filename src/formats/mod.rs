//! What a store's values become outside it: the text and protobuf
//! expositions and their gzip, snapshots, remote-write requests, OTLP exports, and the
//! numeric columns `record_batch` reads.

pub mod code_units;
pub mod columns;
pub mod deflate;
pub mod gzip;
pub mod otlp;
pub mod protobuf;
pub mod remote_write;
pub mod snapshot;
pub mod text;
