//! Generates the wire formats' message types from the pinned `.proto` files in
//! `proto/` (see proto/README.md): the Prometheus exposition format, remote write
//! 1.0 and OTLP's metrics export. protox compiles the files, so no `protoc` is
//! needed; prost-build writes one Rust file per protobuf package into `OUT_DIR`,
//! which `src/formats/wire.rs` includes.

use std::path::Path;

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{FieldOptions, FileDescriptorSet};

/// The files compiled, by their import names, and the folders imports are found
/// in (remote write's files import each other by bare name).
const FILES: &[&str] = &[
    "io/prometheus/client/metrics.proto",
    "remote.proto",
    "opentelemetry/proto/collector/metrics/v1/metrics_service.proto",
];
const INCLUDES: &[&str] = &["proto", "proto/prompb"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut descriptors = protox::compile(FILES, INCLUDES)?;
    pack_proto2_numbers(&mut descriptors);
    let mut config = prost_build::Config::new();
    // The files' comments would become doc comments, whose indented examples
    // rustdoc would try to run as tests.
    config.disable_comments(["."]);
    config.out_dir(Path::new(&std::env::var("OUT_DIR")?));
    config.compile_fds(descriptors)?;
    Ok(())
}

/// Marks the repeated numeric fields of proto2 files (the exposition format's
/// native-histogram deltas) packed, as proto3 fields are by default: protobuf
/// readers take both encodings of a repeated number, and the packed one is the
/// shorter, which this crate's exposition has always written.
fn pack_proto2_numbers(descriptors: &mut FileDescriptorSet) {
    for file in &mut descriptors.file {
        if matches!(file.syntax.as_deref(), Some("proto3" | "editions")) {
            continue;
        }
        for message in &mut file.message_type {
            for field in &mut message.field {
                let numeric = !matches!(
                    field.r#type(),
                    Type::String | Type::Bytes | Type::Message | Type::Group
                );
                if field.label() == Label::Repeated && numeric {
                    field
                        .options
                        .get_or_insert_with(FieldOptions::default)
                        .packed = Some(true);
                }
            }
        }
    }
}
