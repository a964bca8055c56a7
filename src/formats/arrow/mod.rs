//! Columns handed over through Arrow's C data interface (pyarrow, Polars,
//! pandas, nanoarrow, DuckDB), read in place: numbers and label texts per row,
//! nulls from the validity bitmap, dictionary-encoded labels once per entry.
//!
//! - [`interface`]: the interface's structs, and owners that release them once;
//! - [`data_type`]: the types read here, from their format strings;
//! - [`array`](mod@array): a checked view of an array's rows;
//! - [`labels`]: a label column's rows as codes of its distinct values;
//! - [`build`]: arrays made here and exported through the interface, which the
//!   tests and fuzz targets read back.

pub mod array;
pub mod build;
pub mod data_type;
pub mod interface;
pub mod labels;
#[cfg(test)]
mod tests;
