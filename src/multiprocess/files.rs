//! The files of a multi-process directory as other processes may leave them:
//! found by name, opened read-only without following links or blocking, told
//! alive or dead by their lock, and what reading one can run into.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::multiprocess::fork_guard::ParentOnlyFile;
use crate::multiprocess::lock::try_lock;

/// One series as read from a metrics file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSeries {
    /// The family's identifier.
    pub family: u8,
    /// Label values in the family's label order.
    pub labels: Vec<String>,
    /// Unix time of creation in seconds.
    pub created: f64,
    /// The raw cell values.
    pub cells: Vec<u64>,
}

/// Why a file was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// It was removed before it could be opened.
    Vanished,
    /// Something other than a regular file carries the name: never ours.
    NotRegular(String),
    /// Torn, truncated, of another format, or unreadable.
    Damaged(String),
    /// Written with families this reader does not know, or knows otherwise.
    OtherSchema(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Vanished => f.write_str("removed while the directory was read"),
            ReadError::NotRegular(reason)
            | ReadError::Damaged(reason)
            | ReadError::OtherSchema(reason) => f.write_str(reason),
        }
    }
}

/// Opens `path` for reading if it is a regular file: never follows a symbolic
/// link, never blocks (on a FIFO, say).
pub fn open_regular(path: &Path) -> Result<File, ReadError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|error| match error.raw_os_error() {
            Some(libc::ENOENT) => ReadError::Vanished,
            Some(libc::ELOOP) => ReadError::NotRegular("a symbolic link".to_owned()),
            _ => ReadError::Damaged(error.to_string()),
        })?;
    let metadata = file
        .metadata()
        .map_err(|error| ReadError::Damaged(error.to_string()))?;
    if metadata.is_file() {
        Ok(file)
    } else {
        Err(ReadError::NotRegular(format!(
            "not a regular file ({})",
            file_kind(&metadata)
        )))
    }
}

fn file_kind(metadata: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let kind = metadata.file_type();
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "not a file"
    }
}

/// Whether the file at `path` belongs to a process that is gone: nobody holds
/// its lock. The lock is taken and released at once.
pub fn is_dead(path: &Path) -> Result<bool, ReadError> {
    let file = ParentOnlyFile::open(|| open_regular(path))?;
    try_lock(file.file()).map_err(|error| ReadError::Damaged(error.to_string()))
}

/// Whether this very process wrote `path` (its pid is `pid`) and holds it open:
/// the file of a middleware made in this process, as under gunicorn's
/// `--preload`, where the master imports the application (and creates its
/// middleware) before `on_starting` cleans the directory up.
///
/// Both are asked: the pid alone could be another pid namespace's process, and
/// a descriptor alone could be one inherited over `fork` from the writer.
pub fn held_by_this_process(path: &Path, pid: Option<u64>) -> bool {
    if pid != Some(u64::from(std::process::id())) {
        return false;
    }
    let Ok(wanted) = fs::symlink_metadata(path) else {
        return false;
    };
    let Ok(descriptors) = fs::read_dir("/proc/self/fd") else {
        return false;
    };
    descriptors.flatten().any(|entry| {
        fs::metadata(entry.path())
            .is_ok_and(|open| open.dev() == wanted.dev() && open.ino() == wanted.ino())
    })
}

/// A random 64-bit identity for a new file's name.
pub fn random_identity() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    hasher.write_u128(now);
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Whether `name` is the hidden name of a file still being written.
pub fn is_temporary_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(&format!(".{EXTENSION}.tmp"))
}

/// The entries of `directory` whose names `keep` accepts, sorted by name.
fn entries_named(directory: &Path, keep: impl Fn(&str) -> bool) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(directory)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(&keep)
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The published metrics files of `directory`, sorted by name.
pub fn list_files(directory: &Path) -> io::Result<Vec<PathBuf>> {
    entries_named(directory, |name| {
        !name.starts_with('.') && name.ends_with(&format!(".{EXTENSION}"))
    })
}

/// Files of `directory` still under their hidden name (being written, or left
/// by a writer that was killed), sorted by name.
pub fn list_temporary_files(directory: &Path) -> io::Result<Vec<PathBuf>> {
    entries_named(directory, is_temporary_name)
}

/// Extension of published metrics files.
pub const EXTENSION: &str = "gwm";

/// The file name of `path`, or `""` when it has none in UTF-8.
pub fn file_name(path: &Path) -> &str {
    path.file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("")
}
