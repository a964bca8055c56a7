//! The lock of a multi-process directory: shared by scrapes and by processes
//! creating their file, exclusive for compaction and cleanup.
//!
//! The lock is an `flock` on a hidden file of the directory. Whoever waits for
//! it waits a bounded time: another process may hold it forever (stopped, or
//! hostile), and a scrape or a compaction must not hang because of that. The
//! lock file is opened without following symbolic links and without blocking,
//! so a FIFO or a link planted under its name is an error, not a hang.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::multiprocess::fork_guard::ParentOnlyFile;

/// Name of the lock file inside the directory.
pub const LOCK_FILE: &str = ".gateway_metrics.lock";

/// Whether the holder only reads the directory or changes which files it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Scrapes and file creation: many at once.
    Shared,
    /// Compaction and cleanup: alone.
    Exclusive,
}

/// A held directory lock, released when dropped (and never inherited by a forked child).
pub struct DirectoryLock {
    file: ParentOnlyFile,
}

impl DirectoryLock {
    /// Takes the lock of `directory`, waiting at most `wait` for other holders.
    ///
    /// Fails with [`io::ErrorKind::TimedOut`] when the wait runs out, and with
    /// another error when the lock file cannot be used (not a regular file).
    pub fn take(directory: &Path, access: Access, wait: Duration) -> io::Result<Self> {
        fs::create_dir_all(directory)?;
        Self::take_file(&directory.join(LOCK_FILE), access, wait)
    }

    /// Takes the lock of the file at `path` (created empty if missing), as
    /// [`DirectoryLock::take`] takes a directory's.
    pub fn take_file(path: &Path, access: Access, wait: Duration) -> io::Result<Self> {
        // Registered before it is locked: a child forked at any moment gives
        // the descriptor up, so the lock stays this process's alone.
        let file = ParentOnlyFile::open(|| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(path)
        })?;
        if !file.file().metadata()?.is_file() {
            return Err(io::Error::other(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        let operation = match access {
            Access::Shared => libc::LOCK_SH,
            Access::Exclusive => libc::LOCK_EX,
        } | libc::LOCK_NB;
        let started = Instant::now();
        let mut pause = Duration::from_micros(200);
        loop {
            // SAFETY: a valid descriptor; LOCK_NB makes the call return at once.
            if unsafe { libc::flock(file.file().as_raw_fd(), operation) } == 0 {
                return Ok(DirectoryLock { file });
            }
            let error = io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(error);
            }
            let waited = started.elapsed();
            if waited >= wait {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} was held by another process for more than {:.1} s",
                        path.display(),
                        wait.as_secs_f64()
                    ),
                ));
            }
            thread::sleep(pause.min(wait.checked_sub(waited).unwrap()));
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

impl Drop for DirectoryLock {
    fn drop(&mut self) {
        // Unlocks the open file description itself, before its descriptor is
        // closed: a copy of the descriptor anywhere (a child forked by code
        // that bypassed the fork handlers) then holds nothing.
        // SAFETY: the descriptor is open until `file` is dropped, after this.
        unsafe { libc::flock(self.file.file().as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Takes an exclusive `flock` on `file`; `Ok(false)` when another holder has it.
pub fn try_lock(file: &File) -> io::Result<bool> {
    // SAFETY: a valid descriptor for the duration of the call.
    let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if result == 0 {
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directory(name: &str) -> std::path::PathBuf {
        let directory =
            std::env::temp_dir().join(format!("gwm-lock-{name}-{}", std::process::id()));
        fs::create_dir_all(&directory).unwrap();
        directory
    }

    #[test]
    fn shared_holders_coexist_and_an_exclusive_one_waits_a_bounded_time() {
        let directory = directory("wait");
        let wait = Duration::from_millis(50);
        let first = DirectoryLock::take(&directory, Access::Shared, wait).unwrap();
        let second = DirectoryLock::take(&directory, Access::Shared, wait).unwrap();
        let started = Instant::now();
        let refused = DirectoryLock::take(&directory, Access::Exclusive, wait);
        assert_eq!(
            refused.err().map(|e| e.kind()),
            Some(io::ErrorKind::TimedOut)
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        drop((first, second));
        assert!(DirectoryLock::take(&directory, Access::Exclusive, wait).is_ok());
        fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn a_fifo_in_place_of_the_lock_file_is_an_error_not_a_hang() {
        let directory = directory("fifo");
        let fifo = std::ffi::CString::new(
            directory
                .join(LOCK_FILE)
                .into_os_string()
                .into_encoded_bytes(),
        )
        .unwrap();
        // SAFETY: a valid, NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let wait = Duration::from_millis(50);
        assert!(DirectoryLock::take(&directory, Access::Shared, wait).is_err());
        fs::remove_dir_all(directory).unwrap();
    }
}
