//! Releasing the GIL only while the interpreter is not exiting.
//!
//! Rendering, encoding and the multi-process tools run without the GIL. When
//! the interpreter finalizes, CPython (3.9 to 3.13) ends a daemon thread the
//! moment it asks for the GIL back, by unwinding its stack: through Rust
//! frames that cannot unwind, that aborts the whole process (SIGABRT, a core
//! dump). A batch job whose last scrape overlaps its exit would be reported
//! as failed.
//!
//! So every release goes through [`release_gil`], and an `atexit` handler
//! ([`finish_native_work`], registered when the module loads, so that it
//! runs after the handlers registered later: `RemoteWriter.close`, the
//! exporter's `stop`) closes the gate: from then on [`release_gil`] runs its work
//! with the GIL held, and the handler waits, without the GIL, until every
//! thread already detached has its GIL back. A thread holding the GIL in
//! Rust cannot be ended there, since finalization only ends threads that ask
//! for the GIL.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use pyo3::marker::Ungil;
use pyo3::prelude::*;

/// Set by [`finish_native_work`]: no thread releases the GIL any more.
static EXITING: AtomicBool = AtomicBool::new(false);
/// Threads of this process inside [`release_gil`] with the GIL released.
static DETACHED: AtomicUsize = AtomicUsize::new(0);
static INSTALL: Once = Once::new();

/// Seconds [`finish_native_work`] waits at exit for detached threads: far
/// above a render of a million series, and bounded, so that exit is too.
pub(super) const EXIT_WAIT_S: f64 = 5.0;

/// A forked child starts with none of its parent's threads detached.
extern "C" fn none_detached_in_child() {
    DETACHED.store(0, Ordering::Release);
}

/// Registers the fork handler once per process.
pub(super) fn install() {
    INSTALL.call_once(|| {
        // SAFETY: registers a handler that only stores to an atomic, which is
        // async-signal-safe, as a child of a multi-threaded process requires.
        unsafe { libc::pthread_atfork(None, None, Some(none_detached_in_child)) };
    });
}

/// Counts a thread out of [`DETACHED`] when dropped, after it has the GIL back.
struct Detached;

impl Drop for Detached {
    fn drop(&mut self) {
        DETACHED.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether the interpreter is exiting: [`finish_native_work`] has run.
pub(super) fn exiting() -> bool {
    EXITING.load(Ordering::Acquire)
}

/// Runs `work` without the GIL, or with it once the interpreter is exiting.
pub(super) fn release_gil<T, F>(py: Python<'_>, work: F) -> T
where
    F: Ungil + FnOnce() -> T,
    T: Ungil,
{
    // Both this check and the gate's closing happen under the GIL, so a
    // thread either is counted before the gate closes or sees it closed.
    if exiting() {
        return work();
    }
    DETACHED.fetch_add(1, Ordering::AcqRel);
    let _counted = Detached;
    py.detach(work)
}

/// Closes the gate and waits up to `timeout` seconds for the threads still
/// detached to take the GIL back; returns whether they all did. Registered
/// with `atexit` when the module loads.
#[pyfunction]
pub(super) fn finish_native_work(py: Python<'_>, timeout: f64) -> bool {
    EXITING.store(true, Ordering::Release);
    let deadline = Instant::now() + Duration::from_secs_f64(timeout.clamp(0.0, 3600.0));
    while DETACHED.load(Ordering::Acquire) != 0 {
        if Instant::now() >= deadline {
            return false;
        }
        // The GIL is released here so that the detached threads can take it back.
        py.detach(|| std::thread::sleep(Duration::from_millis(1)));
    }
    true
}
