//! How native histograms are configured: resolution, zero bucket, bucket limit.

use super::native_buckets::{MAX_SCHEMA, MIN_SCHEMA};

/// How a family's native histograms are kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NativeConfig {
    /// The starting resolution, from -4 (a factor of 2^16 between bucket
    /// bounds) to 8 (2^(1/256)).
    pub schema: i8,
    /// Observations at most this go to the zero bucket.
    pub zero_threshold: f64,
    /// The most buckets a series keeps before halving its resolution.
    pub max_buckets: usize,
}

impl NativeConfig {
    /// Schema 3 (bucket bounds a factor 2^(1/8) = 1.0905 apart, so a quantile
    /// estimated within the bucket that holds it is off by less than 9.05 %),
    /// `client_golang`'s zero threshold (2^-128), and 160 buckets (1 ms to
    /// 100 s at schema 3 takes 133).
    pub const DEFAULT: NativeConfig = NativeConfig {
        schema: 3,
        zero_threshold: 2.938_735_877_055_719e-39,
        max_buckets: 160,
    };

    /// A configuration, or why it is not one.
    pub fn new(schema: i8, zero_threshold: f64, max_buckets: usize) -> Result<Self, String> {
        if !(MIN_SCHEMA..=MAX_SCHEMA).contains(&schema) {
            return Err(format!("schema must be from -4 to 8, got {schema}"));
        }
        if !zero_threshold.is_finite() || zero_threshold < 0.0 {
            return Err(format!(
                "zero_threshold must be finite and not negative, got {zero_threshold}"
            ));
        }
        if !(MIN_BUCKETS..=MAX_BUCKETS).contains(&max_buckets) {
            return Err(format!(
                "max_buckets must be from {MIN_BUCKETS} to {MAX_BUCKETS}, got {max_buckets}"
            ));
        }
        Ok(NativeConfig {
            schema,
            zero_threshold,
            max_buckets,
        })
    }

    /// How a family's declaration names this configuration (after its bounds):
    /// `;native=<schema>,<zero threshold>,<max buckets>`.
    pub fn declaration(&self) -> String {
        format!(
            ";native={},{:?},{}",
            self.schema, self.zero_threshold, self.max_buckets
        )
    }

    /// The configuration a declaration's bounds name, if any; an error if
    /// they name one that is not valid.
    pub fn from_declaration(bounds: &str) -> Result<Option<NativeConfig>, String> {
        let Some((_, native)) = bounds.split_once(";native=") else {
            return Ok(None);
        };
        let mut parts = native.split(',');
        let (Some(schema), Some(zero), Some(max), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("a bad native histogram declaration: {native:?}"));
        };
        let bad = || format!("a bad native histogram declaration: {native:?}");
        NativeConfig::new(
            schema.parse().map_err(|_| bad())?,
            zero.parse().map_err(|_| bad())?,
            max.parse().map_err(|_| bad())?,
        )
        .map(Some)
    }

    /// The cells a native histogram of this configuration takes: a header of
    /// 8, then two windows of `max_buckets` (see
    /// [`crate::cells::native_histogram`]).
    pub fn cells(&self) -> usize {
        8 + 2 * self.max_buckets
    }
}

/// The fewest buckets a series may be configured to keep: every positive
/// `f64` fits in 132 buckets at the coarsest schema (indexes -67 to 64), so
/// halving the resolution always ends with every observation kept.
pub const MIN_BUCKETS: usize = 132;
/// The most buckets a series may be configured to keep.
pub const MAX_BUCKETS: usize = 4096;
