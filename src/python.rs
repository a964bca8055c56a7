//! The `PyO3` binding: `gateway_metrics._core`, one module per thing it binds.
//!
//! Only argument validation and conversion live here; every recording and
//! rendering decision is made by the plain-Rust [`crate::store::Store`]. Each
//! recording call validates all of its arguments before it touches the store,
//! so a call that raises leaves the metrics exactly as they were.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::family::{Schema, LATENCY_BOUNDS};
use crate::fork_guard;
use metrics_store::PyMetricsStore;

mod arguments;
mod batch;
mod buffer_column;
mod exit_gate;
mod fast_call;
mod identity_cache;
mod metrics_store;
mod multiprocess;
mod samples;

/// The gateway-metrics native core.
///
/// It needs the GIL: the identity caches are guarded by it, and recording
/// relies on it to keep writers apart. Declared, so that a free-threaded
/// interpreter turns the GIL on when importing the module instead of running
/// it unguarded.
#[pymodule(gil_used = true)]
fn _core(module: &Bound<'_, PyModule>) -> PyResult<()> {
    fork_guard::install();
    exit_gate::install();
    module.add_class::<PyMetricsStore>()?;
    module.add_function(wrap_pyfunction!(multiprocess::compact, module)?)?;
    module.add_function(wrap_pyfunction!(multiprocess::cleanup, module)?)?;
    module.add_function(wrap_pyfunction!(check_extra_labels, module)?)?;
    let finish = wrap_pyfunction!(exit_gate::finish_native_work, module)?;
    module.add_function(finish.clone())?;
    module
        .py()
        .import("atexit")?
        .call_method1("register", (finish, exit_gate::EXIT_WAIT_S))?;
    fast_call::install_recording_methods(&module.py().get_type::<PyMetricsStore>())?;
    let schema = Schema::default();
    let families: Vec<(&str, &str, &str)> = schema
        .families()
        .iter()
        .map(|desc| (desc.name, desc.help, desc.kind.type_name()))
        .collect();
    module.add("FAMILIES", families)?;
    let fields: Vec<(&str, &str, Option<&str>)> = fast_call::REQUEST_FIELDS
        .iter()
        .map(|field| (field.name, field.kind.name(), field.default))
        .collect();
    module.add("REQUEST_FIELDS", fields)?;
    module.add("HISTOGRAM_BUCKETS", LATENCY_BOUNDS.to_vec())?;
    Ok(())
}

/// Raises `ValueError` unless a middleware accepts `names` as its extra
/// labels: the one rule, for what is generated for them (the ops kit).
#[pyfunction]
fn check_extra_labels(names: Vec<String>) -> PyResult<()> {
    Schema::with_extra_labels(&LATENCY_BOUNDS, &names)
        .map(|_| ())
        .map_err(PyValueError::new_err)
}
