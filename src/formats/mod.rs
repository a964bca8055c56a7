//! What a store's values become outside it: the text expositions, snapshots,
//! remote-write requests, and the numeric columns `record_batch` reads.

pub mod columns;
pub mod protobuf;
pub mod remote_write;
pub mod snapshot;
pub mod text;
