//! `encode_collected`: the protobuf exposition of a registry's other
//! collectors, read from the `Metric` objects prometheus_client collects.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::formats::collected::{encode_collected as encode, CollectedFamily, CollectedSample};
use crate::python::ffi::bytes::bytes_released;

/// One prometheus_client `Metric` as the core's family.
fn family(metric: &Bound<'_, PyAny>) -> PyResult<CollectedFamily> {
    let samples = metric
        .getattr("samples")?
        .try_iter()?
        .map(|sample| {
            let sample = sample?;
            let labels = sample.getattr("labels")?;
            let labels = labels.cast::<PyDict>()?;
            Ok(CollectedSample {
                name: sample.getattr("name")?.extract()?,
                labels: labels
                    .iter()
                    .map(|(name, value)| Ok((name.extract()?, value.extract()?)))
                    .collect::<PyResult<_>>()?,
                value: sample.getattr("value")?.extract()?,
            })
        })
        .collect::<PyResult<_>>()?;
    Ok(CollectedFamily {
        name: metric.getattr("name")?.extract()?,
        help: metric.getattr("documentation")?.extract()?,
        kind: metric.getattr("type")?.extract()?,
        samples,
    })
}

/// The delimited `MetricFamily` messages of `families` (prometheus_client
/// `Metric` objects); names as they are when `utf8`, else underscore-escaped.
#[pyfunction]
pub fn encode_collected<'py>(
    py: Python<'py>,
    families: &Bound<'py, PyAny>,
    utf8: bool,
) -> PyResult<Bound<'py, PyBytes>> {
    let families: Vec<CollectedFamily> = families
        .try_iter()?
        .map(|metric| family(&metric?))
        .collect::<PyResult<_>>()?;
    bytes_released(py, &encode(&families, utf8))
}
