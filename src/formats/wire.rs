//! The wire formats' message types, generated at build time from the pinned
//! `.proto` files in `proto/` (build.rs; sources and versions in
//! proto/README.md): the Prometheus exposition format
//! (`io.prometheus.client`), remote write 1.0 (`prometheus`) and OTLP's metrics
//! export (`opentelemetry.proto`). Each module mirrors its protobuf package, as
//! the generated code refers to its neighbours by relative paths.

/// Generated code: documented by its `.proto` file, not here.
macro_rules! generated {
    ($file:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $file));
    };
}

/// `io.prometheus.client`.
pub mod io {
    /// `io.prometheus.client`.
    pub mod prometheus {
        /// The Prometheus exposition format (client_model's metrics.proto).
        #[allow(missing_docs, clippy::all, clippy::pedantic)]
        pub mod client {
            generated!("io.prometheus.client.rs");
        }
    }
}

/// Remote write 1.0 (Prometheus's prompb types.proto and remote.proto).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod prometheus {
    generated!("prometheus.rs");
}

/// `opentelemetry.proto`: OTLP's metrics export.
pub mod opentelemetry {
    /// `opentelemetry.proto`.
    pub mod proto {
        /// `opentelemetry.proto.common`.
        pub mod common {
            /// Attributes and instrumentation scopes.
            #[allow(missing_docs, clippy::all, clippy::pedantic)]
            pub mod v1 {
                generated!("opentelemetry.proto.common.v1.rs");
            }
        }
        /// `opentelemetry.proto.resource`.
        pub mod resource {
            /// The resource a telemetry producer describes itself by.
            #[allow(missing_docs, clippy::all, clippy::pedantic)]
            pub mod v1 {
                generated!("opentelemetry.proto.resource.v1.rs");
            }
        }
        /// `opentelemetry.proto.metrics`.
        pub mod metrics {
            /// Metrics, their data points and exemplars.
            #[allow(missing_docs, clippy::all, clippy::pedantic)]
            pub mod v1 {
                generated!("opentelemetry.proto.metrics.v1.rs");
            }
        }
        /// `opentelemetry.proto.collector`.
        pub mod collector {
            /// `opentelemetry.proto.collector.metrics`.
            pub mod metrics {
                /// The metrics export request.
                #[allow(missing_docs, clippy::all, clippy::pedantic)]
                pub mod v1 {
                    generated!("opentelemetry.proto.collector.metrics.v1.rs");
                }
            }
        }
    }
}

/// A scalar field's value, left out at its default as proto3 leaves it out:
/// the exposition format's fields are proto2 `optional`, and its readers take
/// an absent field as its default, so the bodies stay as short as before.
pub fn present<T: Default + PartialEq>(value: T) -> Option<T> {
    (value != T::default()).then_some(value)
}
