//! Multi-process mode: where a store's files are, what a scrape sums, and the
//! `compact` and `cleanup` functions.

use std::ffi::CString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyRuntimeWarning, PyTimeoutError, PyValueError};
use pyo3::prelude::*;

use super::exit_gate::{self, release_gil};
use super::prices::python_price_resolver;
use super::recording::recording;
use crate::cells::arena::CellArena;
use crate::cells::counter::Coding;
use crate::multiprocess::admission::SharedAdmission;
use crate::multiprocess::fork_guard;
use crate::multiprocess::own_file::SharedFile;
use crate::multiprocess::prometheus_file::PrometheusFiles;
use crate::multiprocess::{self, Aggregate};
use crate::schema::family::Schema;
use crate::store::pricing::PriceTable;
use crate::store::Store;

/// Which files a multi-process store writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layout {
    /// Our own format (`multiprocess_dir`, `GATEWAY_METRICS_MULTIPROC_DIR`).
    Own,
    /// `prometheus_client`'s format (`PROMETHEUS_MULTIPROC_DIR`), which its
    /// `MultiProcessCollector` reads.
    PrometheusClient,
}

/// Where a multi-process store records and what a scrape sums.
pub(super) struct Multiprocess {
    directory: PathBuf,
    layout: Layout,
    prices: PriceTable,
    /// The families every store of this middleware records.
    schema: Arc<Schema>,
    /// The cap on label sets per family: for the directory in our layout,
    /// per process in `prometheus_client`'s.
    max_series: usize,
    /// Prices the models the table lacks (see `python_price_resolver`).
    price_resolver: Option<Py<PyAny>>,
    /// The directory's shared cap on series, as the store being recorded into uses it.
    admission: std::sync::Mutex<Option<Arc<SharedAdmission>>>,
    /// The fork epoch of the process that made the store being recorded into:
    /// when the current one differs, this is a forked child, and the next
    /// recording call moves to a file of its own.
    epoch: AtomicU64,
}

impl Multiprocess {
    /// A store's multi-process state, made in the process that records.
    pub(super) fn new(
        directory: PathBuf,
        layout: Layout,
        prices: PriceTable,
        schema: Arc<Schema>,
        max_series: usize,
        price_resolver: Option<Py<PyAny>>,
    ) -> Self {
        Multiprocess {
            directory,
            layout,
            prices,
            schema,
            max_series,
            price_resolver,
            admission: std::sync::Mutex::new(None),
            epoch: AtomicU64::new(fork_guard::epoch()),
        }
    }

    /// In a forked child whose store still records into the parent's files,
    /// the child's fork epoch.
    #[inline]
    pub(super) fn forked(&self) -> Option<u64> {
        let epoch = fork_guard::epoch();
        (self.epoch.load(Ordering::Relaxed) != epoch).then_some(epoch)
    }

    /// Records that the store now records into files of the process of `epoch`.
    pub(super) fn followed(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Relaxed);
    }

    /// Whether the files keep each series' creation time (`prometheus_client`'s
    /// do not, and its multi-process collector shows no `_created` samples).
    pub(super) fn keeps_created(&self) -> bool {
        self.layout == Layout::Own
    }

    /// A new store recording into new files of this process.
    pub(super) fn new_store(&self, py: Python<'_>) -> PyResult<Store> {
        let cannot = |error: std::io::Error| {
            PyOSError::new_err(format!(
                "cannot create a metrics file in {}: {error}",
                self.directory.display()
            ))
        };
        let (arena, coding) = match self.layout {
            Layout::Own => (
                CellArena::shared(Box::new(
                    SharedFile::create(&self.directory, &self.schema).map_err(cannot)?,
                )),
                Coding::Integer,
            ),
            Layout::PrometheusClient => (
                CellArena::shared(Box::new(
                    PrometheusFiles::create(&self.directory, Arc::clone(&self.schema))
                        .map_err(cannot)?,
                )),
                Coding::Float,
            ),
        };
        let mut store = Store::with_arena(
            self.prices.clone(),
            arena,
            recording(coding),
            Arc::clone(&self.schema),
        );
        store.set_max_series(self.max_series);
        if self.layout == Layout::Own && self.max_series != usize::MAX {
            // One cap for the directory; where its file cannot be had, each
            // process keeps the cap for itself.
            if let Ok(shared) = SharedAdmission::open(&self.directory) {
                let shared = Arc::new(shared);
                store.share_max_series(Box::new(Arc::clone(&shared)));
                if let Ok(mut admission) = self.admission.lock() {
                    *admission = Some(shared);
                }
            }
        }
        if let Some(resolver) = &self.price_resolver {
            store.set_price_resolver(python_price_resolver(resolver.clone_ref(py)));
            store.set_count_unpriced(true);
        }
        Ok(store)
    }

    /// The sum over the directory's files, warning about each file left out.
    ///
    /// Also warns when this process's own file could not grow, so that series
    /// created since then are missing from every process's scrape.
    pub(super) fn aggregate(&self, py: Python<'_>, store: &Store) -> PyResult<Aggregate> {
        let directory = self.directory.clone();
        let sum = release_gil(py, || match self.layout {
            Layout::Own => multiprocess::aggregate(&directory, &self.schema),
            Layout::PrometheusClient => {
                multiprocess::aggregate_prometheus(&directory, &self.schema)
            }
        })
        .map_err(|error| PyOSError::new_err(error.to_string()))?;
        let skipped = sum
            .skipped
            .iter()
            .map(|(path, reason)| format!("skipped metrics file {}: {reason}", path.display()));
        let own = store.file_error().map(|error| {
            format!("new series of this process are not shared (metrics file full): {error}")
        });
        // Warnings run Python code (filters, showwarning), which may let the
        // GIL go inside these Rust frames: not once the interpreter is exiting.
        let unshared = self
            .admission
            .lock()
            .ok()
            .and_then(|admission| admission.as_ref()?.broken())
            .map(|reason| {
                format!(
                    "max_series holds for this process alone: the directory's file of \
                     admitted label sets is not usable ({reason})"
                )
            });
        let messages = skipped.chain(own).chain(sum.caveat.clone()).chain(unshared);
        for message in messages.filter(|_| !exit_gate::exiting()) {
            PyErr::warn(
                py,
                &py.get_type::<PyRuntimeWarning>(),
                &CString::new(message)?,
                1,
            )?;
        }
        Ok(sum)
    }
}

/// An I/O error of the multi-process tools as a Python exception.
pub(super) fn io_error(error: std::io::Error) -> PyErr {
    if error.kind() == std::io::ErrorKind::TimedOut {
        PyTimeoutError::new_err(error.to_string())
    } else {
        PyOSError::new_err(error.to_string())
    }
}

pub(super) fn lock_wait(timeout: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(timeout).map_err(|_| {
        PyValueError::new_err(format!(
            "timeout must be a non-negative number of seconds, got {timeout}"
        ))
    })
}

/// What `compact` reports: files folded, damaged files discarded, the new
/// file, and the files that could not be removed with the reason.
pub(super) type CompactionReport = (usize, usize, Option<PathBuf>, Vec<(PathBuf, String)>);

/// Folds the files of processes that are gone into one; returns `(files folded,
/// damaged files discarded, path of the new file or None, [(path, why) of files
/// that could not be removed]`.
#[pyfunction]
#[pyo3(signature = (directory, *, timeout))]
pub(super) fn compact(
    py: Python<'_>,
    directory: PathBuf,
    timeout: f64,
) -> PyResult<CompactionReport> {
    let wait = lock_wait(timeout)?;
    let done = release_gil(py, || multiprocess::compact(&directory, wait)).map_err(io_error)?;
    Ok((done.folded, done.discarded, done.into, done.not_removed))
}

/// Removes the files of processes that are gone; returns how many. Unless
/// `force`, raises `RuntimeError` (removing nothing) while a live process holds a file.
#[pyfunction]
#[pyo3(signature = (directory, *, force, timeout))]
pub(super) fn cleanup(
    py: Python<'_>,
    directory: PathBuf,
    force: bool,
    timeout: f64,
) -> PyResult<usize> {
    let wait = lock_wait(timeout)?;
    let outcome =
        release_gil(py, || multiprocess::cleanup(&directory, force, wait)).map_err(io_error)?;
    match outcome {
        multiprocess::Cleanup::Removed(count) => Ok(count),
        multiprocess::Cleanup::Refused(live) => {
            let writer = live
                .pid
                .map_or_else(String::new, |pid| format!(" (written by process {pid})"));
            Err(PyRuntimeError::new_err(format!(
                "{}{writer} is held by a live process: cleanup() would make the totals it \
                 serves fall; stop the process first, or pass force=True",
                live.path.display(),
            )))
        }
    }
}
