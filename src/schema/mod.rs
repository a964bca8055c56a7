//! What is measured, as data: the metric families and the fields of a request.
//!
//! Every other layer reads these tables: the store lays out series by the
//! families, the recording rules follow the request fields, the binding parses
//! arguments by them, and the stub and the docs are generated from them.

// Unsafe: the SSE2 bucket search.
#[allow(unsafe_code)]
pub mod buckets;
pub mod family;
// Unsafe: numbers composed as ASCII on the stack, not checked again.
#[allow(unsafe_code)]
pub mod float_text;
pub mod label_text;
pub mod native;
pub mod native_buckets;
pub mod parts;
pub mod request;
pub mod semconv;
