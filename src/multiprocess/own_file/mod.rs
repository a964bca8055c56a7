//! A process's metrics file for multi-process mode, and the reader of such files.
//!
//! Each process records into its own file, memory-mapped and shared: a series'
//! values are atomics inside the mapping, so recording makes no system call and
//! a process killed with SIGKILL loses nothing it had recorded (the page cache
//! keeps what it wrote). The file is named by the pid and a random identity
//! drawn at creation, so a reused pid can neither merge nor overwrite files.
//! The owner holds an exclusive `flock` on its file for as long as it lives:
//! a file nobody has locked belongs to a process that is gone.
//!
//! Layout, little-endian, every record 8-byte aligned:
//!
//! ```text
//! header (64 bytes): magic "GWMFILE4" | used: u64 (atomic) | pid: u64 | id: u64 | created: f64
//! record: len: u32 | family: u8 | label count: u8 | cell count: u16 | created: f64
//!         | per label: byte length u32, UTF-8 bytes | padding to 8 | cells: u64 each
//! exemplar record (family 0xfc, no labels): cells: the file offset of its
//!         histogram's first cell | bucket | an exemplar slot (see
//!         crate::cells::exemplar: sequence, value, timestamp, label bytes)
//! ```
//!
//! The magic names the format's version (version 3, the same without
//! exemplar records, is still read). The first records declare the
//! families the file's series belong to, by their whole description (name,
//! type, how values are kept, label names, bucket bounds); a series record's
//! family byte is the position of its declaration in this file. A reader
//! matches each declaration to a family it knows by that description, never by
//! number, and skips a file written with a schema it does not know.
//!
//! A writer appends a record, then publishes it by storing the new end in
//! `used` (release); readers load `used` and parse only up to it, so they never
//! see a half-written record. The file grows in separately mapped chunks, so
//! cells handed out earlier never move; a record never straddles two chunks
//! (the rest of a chunk is filled with a padding record). A file made by
//! compaction also lists, in `absorbed` records, the files whose values it
//! holds, so that readers skip those files should they outlive the compaction.
//!
//! Readers never map other processes' files: another process may shrink a file
//! at any moment, and a mapping read past the new end kills the reader with
//! SIGBUS. They copy the published bytes with `pread` instead (each 8-byte
//! value is aligned, so it is copied whole), and only open regular files,
//! without following symbolic links and without blocking.

mod reader;
// Unsafe: the file's shared mappings, and the cells written into them.
#[allow(unsafe_code)]
mod writer;

pub use reader::{declared_schema, read_file, FileContents, FileExemplar};
pub(crate) use writer::reserve_blocks;
pub use writer::SharedFile;

/// The first bytes of every metrics file.
pub const MAGIC: [u8; 8] = *b"GWMFILE4";
const HEADER_LEN: usize = 64;
const USED_OFFSET: usize = 8;
const RECORD_HEADER_LEN: usize = 16;
const CHUNK_LEN: usize = 1 << 20;
/// Family byte of a padding record.
const PADDING: u8 = 0xff;
/// Family byte of a record naming a file whose values this file holds.
const ABSORBED: u8 = 0xfe;
/// Family byte of a record declaring a family (see
/// [`crate::schema::family::FamilyDesc::declaration`]).
const DECLARATION: u8 = 0xfd;
/// Family byte of an exemplar slot's record.
const EXEMPLAR: u8 = 0xfc;
/// Cells of an exemplar record before its slot: the histogram's first cell's
/// offset, and the bucket.
const EXEMPLAR_TARGET_CELLS: usize = 2;
/// Longest record a reader accepts: far above any real label set, and a bound
/// on what a damaged length field can make a reader allocate.
const MAX_RECORD_LEN: usize = 64 << 20;

/// `length` rounded up to a multiple of 8: where the next record starts.
fn align8(length: usize) -> usize {
    (length + 7) & !7
}

#[cfg(test)]
// Unsafe: the tests write cells through the pointers a file hands out, and make a FIFO.
#[allow(unsafe_code)]
mod tests {
    use std::fs::{self, OpenOptions};
    use std::path::PathBuf;
    use std::sync::atomic::Ordering;

    use super::reader::schema_of;
    use super::*;
    use crate::cells::arena::SeriesDescription;
    use crate::multiprocess::files::{
        list_files, list_temporary_files, random_identity, FileSeries, ReadError,
    };
    use crate::schema::family::{Schema, LATENCY_BOUNDS};

    fn temporary_directory(name: &str) -> PathBuf {
        let directory = std::env::temp_dir().join(format!(
            "gwm-test-{name}-{}-{:x}",
            std::process::id(),
            random_identity()
        ));
        fs::create_dir_all(&directory).unwrap();
        directory
    }

    #[test]
    fn declarations_rebuild_the_schema_that_wrote_them() {
        let extra = ["team".to_owned(), "app".to_owned()];
        for (bounds, extra) in [
            (&LATENCY_BOUNDS[..], &extra[..0]),
            (&[0.5, 2.0][..], &extra[..0]),
            (&LATENCY_BOUNDS[..], &extra[..]),
            (&[0.25, 1.0, 8.0][..], &extra[..1]),
        ] {
            let schema = Schema::with_extra_labels(bounds, extra).unwrap();
            let declarations: Vec<Vec<String>> = schema
                .families()
                .iter()
                .map(|family| family.declaration().to_vec())
                .collect();
            let rebuilt = schema_of(&declarations).unwrap();
            let redeclared: Vec<Vec<String>> = rebuilt
                .families()
                .iter()
                .map(|family| family.declaration().to_vec())
                .collect();
            assert_eq!(redeclared, declarations, "{bounds:?} {extra:?}");
        }
    }

    #[test]
    fn written_series_read_back_with_their_values() {
        let directory = temporary_directory("roundtrip");
        let mut file = SharedFile::create(&directory, &Schema::default()).unwrap();
        let labels = ["gpt-4o", "openai"];
        let series = SeriesDescription {
            family: 3,
            labels: &labels,
            created: 12.5,
        };
        let cell = file.append_series(&series, 2).unwrap();
        // SAFETY: two cells were allocated.
        unsafe {
            cell.as_ref().store(7, Ordering::Relaxed);
            cell.add(1).as_ref().store(9, Ordering::Relaxed);
        }
        let read = read_file(file.path(), &Schema::default()).unwrap();
        assert_eq!(read.pid, u64::from(std::process::id()));
        assert_eq!(
            read.series,
            vec![FileSeries {
                family: 3,
                labels: vec!["gpt-4o".into(), "openai".into()],
                created: 12.5,
                cells: vec![7, 9],
            }]
        );
        assert_eq!(
            list_files(&directory).unwrap(),
            vec![file.path().to_path_buf()]
        );
        fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn growing_past_a_chunk_keeps_earlier_slots_in_place() {
        let directory = temporary_directory("grow");
        let mut file = SharedFile::create(&directory, &Schema::default()).unwrap();
        let long = "x".repeat(10_000);
        let mut first = None;
        for index in 0..300_u64 {
            let labels = [long.as_str()];
            let series = SeriesDescription {
                family: 6,
                labels: &labels,
                created: 0.0,
            };
            let cell = file.append_series(&series, 1).unwrap();
            // SAFETY: one cell was allocated.
            unsafe { cell.as_ref().store(index, Ordering::Relaxed) };
            first.get_or_insert(cell);
        }
        // SAFETY: the first cell stays mapped while the file lives.
        unsafe { first.unwrap().as_ref().fetch_add(1000, Ordering::Relaxed) };
        let read = read_file(file.path(), &Schema::default()).unwrap().series;
        assert_eq!(read.len(), 300);
        assert_eq!(read[0].cells, vec![1000]);
        assert_eq!(read[299].cells, vec![299]);
        fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn a_truncated_file_is_reported_torn() {
        let directory = temporary_directory("torn");
        let mut file = SharedFile::create(&directory, &Schema::default()).unwrap();
        let labels = ["a"];
        let series = SeriesDescription {
            family: 4,
            labels: &labels,
            created: 0.0,
        };
        file.append_series(&series, 1).unwrap();
        let copy = directory.join("copy.gwm");
        let bytes = fs::read(file.path()).unwrap();
        fs::write(&copy, &bytes[..HEADER_LEN + 8]).unwrap();
        assert!(read_file(&copy, &Schema::default()).is_err());
        fs::write(
            &copy,
            b"not a metrics file at all, just some bytes padding it out to 64 b",
        )
        .unwrap();
        assert!(read_file(&copy, &Schema::default()).is_err());
        fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn a_file_shrunk_below_its_published_length_is_damaged_not_fatal() {
        let directory = temporary_directory("shrunk");
        let mut file = SharedFile::create(&directory, &Schema::default()).unwrap();
        let long = "y".repeat(5_000);
        for _ in 0..500 {
            let labels = [long.as_str()];
            let series = SeriesDescription {
                family: 6,
                labels: &labels,
                created: 0.0,
            };
            file.append_series(&series, 1).unwrap();
        }
        let copy = directory.join("gwm-1-shrunk.gwm");
        fs::copy(file.path(), &copy).unwrap();
        let handle = OpenOptions::new().write(true).open(&copy).unwrap();
        handle.set_len(1 << 20).unwrap();
        assert!(matches!(
            read_file(&copy, &Schema::default()),
            Err(ReadError::Damaged(_))
        ));
        fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn fifos_symlinks_and_directories_are_refused_without_blocking() {
        let directory = temporary_directory("special");
        let file = SharedFile::create(&directory, &Schema::default()).unwrap();
        let fifo = directory.join("gwm-1-fifo.gwm");
        let path = std::ffi::CString::new(fifo.clone().into_os_string().into_encoded_bytes());
        // SAFETY: a valid, NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.unwrap().as_ptr(), 0o600) }, 0);
        let link = directory.join("gwm-2-link.gwm");
        std::os::unix::fs::symlink(file.path(), &link).unwrap();
        let folder = directory.join("gwm-3-dir.gwm");
        fs::create_dir(&folder).unwrap();
        for refused in [&fifo, &link, &folder] {
            assert!(
                matches!(
                    read_file(refused, &Schema::default()),
                    Err(ReadError::NotRegular(_))
                ),
                "{}",
                refused.display()
            );
        }
        assert_eq!(
            read_file(&directory.join("gwm-4-gone.gwm"), &Schema::default()),
            Err(ReadError::Vanished)
        );
        fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn a_file_is_found_only_once_published_and_lists_what_it_absorbed() {
        let directory = temporary_directory("absorbed");
        let mut file = SharedFile::create_unpublished(&directory, &Schema::default()).unwrap();
        file.append_absorbed("gwm-1-0000000000000001.gwm").unwrap();
        assert!(list_files(&directory).unwrap().is_empty());
        assert_eq!(list_temporary_files(&directory).unwrap().len(), 1);
        file.publish().unwrap();
        let read = read_file(file.path(), &Schema::default()).unwrap();
        assert!(read.series.is_empty());
        assert_eq!(read.absorbed, vec!["gwm-1-0000000000000001.gwm".to_owned()]);
        assert!(list_temporary_files(&directory).unwrap().is_empty());
        fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn a_file_of_another_schema_is_refused_by_family_not_misread() {
        let directory = temporary_directory("schema");
        let mut file = SharedFile::create(&directory, &Schema::default()).unwrap();
        let labels = ["search"];
        let series = SeriesDescription {
            family: 6,
            labels: &labels,
            created: 0.0,
        };
        file.append_series(&series, 1).unwrap();
        let read = read_file(file.path(), &Schema::default()).unwrap();
        assert_eq!(read.series[0].family, crate::schema::family::TOOL_CALLS);
        // The same file, but its latency buckets end at 90 s instead of 60 s.
        let bytes = fs::read(file.path()).unwrap();
        let at = bytes.windows(4).position(|w| w == b"60.0").unwrap();
        let mut other = bytes.clone();
        other[at..at + 4].copy_from_slice(b"90.0");
        let copy = directory.join("gwm-1-other.gwm");
        fs::write(&copy, other).unwrap();
        match read_file(&copy, &Schema::default()) {
            Err(ReadError::OtherSchema(reason)) => {
                assert!(
                    reason.contains("ractogateway_request_duration_seconds"),
                    "{reason}"
                );
            }
            other => panic!("read as {other:?}"),
        }
        fs::remove_dir_all(directory).unwrap();
    }
}
