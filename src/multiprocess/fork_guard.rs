//! What a forked child must not inherit: file locks, and the belief that it is its parent.
//!
//! `flock` locks belong to an open file description, which `fork()` shares with
//! the child: a child that keeps a copy of its parent's descriptor keeps the
//! parent's metrics file, or a scrape's directory lock, locked for as long as it
//! lives. A `pthread_atfork` handler, which runs for every `fork()` (Python's
//! `os.fork`, `multiprocessing` and C code alike), points each such descriptor of
//! the child at `/dev/null`, and bumps a fork epoch by which multi-process
//! stores notice that they now run in a new process. The handler only makes
//! async-signal-safe calls (`dup2`) and atomic operations, as a child of a
//! multi-threaded process requires.
//!
//! A descriptor is opened and registered under a gate that `fork()` also takes
//! (in the prepare handler, released in both processes after it): a fork never
//! falls between the two, when the child would keep a descriptor the registry
//! does not list yet, and with it a lock taken through it afterwards. It is
//! unregistered and closed under the same gate: a fork between the two would
//! give the child an open descriptor the registry no longer lists, holding the
//! lock after the parent let it go (a scrape's directory lock, which then
//! blocked compaction for as long as the child lived).

use std::cell::UnsafeCell;
use std::fs::File;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Once;

/// Descriptors that can be detached at once; one per live metrics file and held lock.
const CAPACITY: usize = 1024;
const FREE: i32 = -1;

#[allow(clippy::declare_interior_mutable_const)] // Only used to build the array below.
const FREE_ENTRY: AtomicI32 = AtomicI32::new(FREE);
static PARENT_ONLY: [AtomicI32; CAPACITY] = [FREE_ENTRY; CAPACITY];
static DEV_NULL: AtomicI32 = AtomicI32::new(FREE);
static EPOCH: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();

/// Held while a descriptor is opened and registered, and across `fork()`.
struct ForkGate(UnsafeCell<libc::pthread_mutex_t>);

// SAFETY: a pthread mutex is made to be shared between threads; it is only
// reached through `libc::pthread_mutex_*` calls on its address.
unsafe impl Sync for ForkGate {}

static FORK_GATE: ForkGate = ForkGate(UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER));

extern "C" fn close_gate() {
    // SAFETY: the static mutex is initialised; no thread holds it across a
    // fork of its own (the gated section only opens and registers a file).
    unsafe { libc::pthread_mutex_lock(FORK_GATE.0.get()) };
}

extern "C" fn open_gate() {
    // SAFETY: the forking thread took the mutex in `close_gate`; in the child
    // the same thread, the only one, releases it.
    unsafe { libc::pthread_mutex_unlock(FORK_GATE.0.get()) };
}

extern "C" fn detach_in_child() {
    EPOCH.fetch_add(1, Ordering::AcqRel);
    let dev_null = DEV_NULL.load(Ordering::Acquire);
    for entry in &PARENT_ONLY {
        let fd = entry.swap(FREE, Ordering::AcqRel);
        if fd != FREE && dev_null != FREE {
            // SAFETY: `dup2` is async-signal-safe; both descriptors are open in the
            // child (inherited). The owner's later `close` then closes `/dev/null`.
            unsafe { libc::dup2(dev_null, fd) };
        }
    }
    open_gate();
}

/// Registers the fork handler once per process (idempotent).
pub fn install() {
    INSTALL.call_once(|| {
        if let Ok(dev_null) = File::options().read(true).write(true).open("/dev/null") {
            // Kept open for the life of the process: the child handler may not open files.
            DEV_NULL.store(
                std::os::fd::IntoRawFd::into_raw_fd(dev_null),
                Ordering::Release,
            );
        }
        // SAFETY: registers handlers that take and release one mutex and make
        // only async-signal-safe calls in the child.
        unsafe { libc::pthread_atfork(Some(close_gate), Some(open_gate), Some(detach_in_child)) };
    });
}

/// How many forks this process's ancestry made since the module was loaded;
/// changes in a child right after `fork()`.
#[inline]
pub fn epoch() -> u64 {
    EPOCH.load(Ordering::Acquire)
}

/// A file whose descriptor a forked child gives up (pointed at `/dev/null`), so
/// that the locks held through it stay the parent's alone.
pub struct ParentOnlyFile {
    /// Closed in `drop`, under the fork gate.
    file: ManuallyDrop<File>,
    entry: Option<usize>,
}

impl ParentOnlyFile {
    /// The file `open` opens, registered before any fork can copy its
    /// descriptor; when the registry is full the child keeps the descriptor.
    pub fn open<E>(open: impl FnOnce() -> Result<File, E>) -> Result<Self, E> {
        install();
        close_gate();
        let opened = open();
        let registered = opened.map(|file| {
            let fd: RawFd = file.as_raw_fd();
            let entry = PARENT_ONLY.iter().position(|entry| {
                entry
                    .compare_exchange(FREE, fd, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            });
            ParentOnlyFile {
                file: ManuallyDrop::new(file),
                entry,
            }
        });
        open_gate();
        registered
    }

    /// The file.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl Drop for ParentOnlyFile {
    fn drop(&mut self) {
        close_gate();
        if let Some(entry) = self.entry {
            // Cleared already in a child that detached it.
            let fd = self.file.as_raw_fd();
            let _ =
                PARENT_ONLY[entry].compare_exchange(fd, FREE, Ordering::AcqRel, Ordering::Acquire);
        }
        // SAFETY: the file is dropped once, here, and not used after.
        unsafe { ManuallyDrop::drop(&mut self.file) };
        open_gate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_child_gives_up_the_lock_and_sees_a_new_epoch() {
        let path = std::env::temp_dir().join(format!("gwm-fork-guard-{}", std::process::id()));
        let guarded = ParentOnlyFile::open(|| File::create(&path)).unwrap();
        // SAFETY: `flock` on a descriptor this test owns; no memory is involved.
        let locked = unsafe { libc::flock(guarded.file().as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(locked, 0);
        let before = epoch();
        let mut ready = [0; 2];
        // SAFETY: `ready` has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe(ready.as_mut_ptr()) }, 0);
        // SAFETY: the child makes only async-signal-safe calls before `_exit`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: the forked child makes only async-signal-safe calls
            // (`write`, `sleep`, `_exit`) on descriptors it owns. The fork
            // handlers have run by now; a child that saw the new epoch says so
            // and waits to be killed.
            unsafe {
                if epoch() != before {
                    libc::write(ready[1], [1_u8].as_ptr().cast(), 1);
                    libc::sleep(30);
                }
                libc::_exit(1)
            };
        }
        let mut byte = [0_u8];
        // SAFETY: reads one byte into `byte` from the pipe made above.
        let told = unsafe { libc::read(ready[0], byte.as_mut_ptr().cast(), 1) };
        // SAFETY: closes the two descriptors made above, once.
        unsafe {
            libc::close(ready[0]);
            libc::close(ready[1]);
        }
        assert_eq!(told, 1, "the child saw its parent's epoch");
        assert_eq!(epoch(), before);
        drop(guarded);
        // The parent closed its descriptor: with the child's detached, nobody holds the lock.
        let again = File::open(&path).unwrap();
        // SAFETY: a valid descriptor.
        let locked = unsafe { libc::flock(again.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        let mut status = 0;
        // SAFETY: signals and reaps the child just forked.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, &raw mut status, 0);
        }
        assert_eq!(locked, 0, "the child kept the lock");
        std::fs::remove_file(path).unwrap();
    }
}
