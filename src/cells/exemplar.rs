//! Exemplars: the labels of one observation (a trace id and span id, say),
//! its value and when it was made, kept per histogram bucket (the last one
//! that fell in each), so an operator can go from a slow bucket to the trace
//! of a request in it.
//!
//! A series keeps no exemplar storage until its first exemplar; then one slot
//! per bucket, each replaced whole under its own short lock. In our own
//! multi-process mode a slot also lives in the process's file, so that any
//! process's scrape finds it: a few cells written under a sequence lock (the
//! owner is the only writer; readers copy the cells and keep a copy only if the
//! sequence number was even and the same before and after).

use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The most characters (Unicode code points) an exemplar's label names and
/// values may have together, as `OpenMetrics` requires.
pub const MAX_LABEL_CHARS: usize = 128;

/// One exemplar.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    /// Its labels, in the order given.
    pub labels: Vec<(String, String)>,
    /// The observed value.
    pub value: f64,
    /// Unix time in seconds.
    pub timestamp: f64,
}

impl Exemplar {
    /// Checks labels an exemplar may carry: valid label names, at most
    /// [`MAX_LABEL_CHARS`] characters in all, or why not.
    pub fn check_labels(labels: &[(String, String)]) -> Result<(), String> {
        let mut chars = 0;
        for (name, value) in labels {
            let mut name_chars = name.chars();
            let valid = name_chars
                .next()
                .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
                && name_chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("{name:?} is not a label name"));
            }
            chars += name.chars().count() + value.chars().count();
        }
        if chars > MAX_LABEL_CHARS {
            return Err(format!(
                "its label names and values have {chars} characters, more than the \
                 {MAX_LABEL_CHARS} OpenMetrics allows"
            ));
        }
        Ok(())
    }
}

/// Cells of a shared slot before its label bytes: the sequence number (odd
/// while a write is under way, 0 before the first), the value's bits, the
/// timestamp's bits and the label bytes' length.
pub const SHARED_HEAD_CELLS: usize = 4;
/// The most cells a shared slot keeps label bytes in: 128 characters of
/// at most 4 bytes each, plus a 2-byte length before each name and value (a
/// label takes at least one character), fit in 1,024 bytes.
pub const SHARED_MAX_LABEL_CELLS: usize = 128;
/// The fewest, enough for a trace id and a span id.
const SHARED_MIN_LABEL_CELLS: usize = 16;

/// Labels as a shared slot keeps them: each name and value as a 2-byte
/// little-endian length and its UTF-8 bytes.
pub fn encode_labels(labels: &[(String, String)]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for text in labels.iter().flat_map(|(name, value)| [name, value]) {
        let length = u16::try_from(text.len()).unwrap_or(u16::MAX);
        bytes.extend_from_slice(&length.to_le_bytes());
        bytes.extend_from_slice(&text.as_bytes()[..usize::from(length)]);
    }
    bytes
}

/// The labels [`encode_labels`] wrote, or None when the bytes are not such labels.
pub fn decode_labels(mut bytes: &[u8]) -> Option<Vec<(String, String)>> {
    let mut texts = Vec::new();
    while let [low, high, rest @ ..] = bytes {
        let length = usize::from(u16::from_le_bytes([*low, *high]));
        let text = rest.get(..length)?;
        texts.push(std::str::from_utf8(text).ok()?.to_owned());
        bytes = &rest[length..];
    }
    if !bytes.is_empty() || texts.len() % 2 != 0 {
        return None;
    }
    let mut texts = texts.into_iter();
    let mut labels = Vec::new();
    while let (Some(name), Some(value)) = (texts.next(), texts.next()) {
        labels.push((name, value));
    }
    Some(labels)
}

/// How many cells of label bytes a new shared slot gets for labels that
/// encode in `length` bytes: a power of two, so that a slot outgrown by
/// longer labels is replaced a few times at most.
pub fn label_cells_for(length: usize) -> usize {
    length
        .div_ceil(8)
        .next_power_of_two()
        .clamp(SHARED_MIN_LABEL_CELLS, SHARED_MAX_LABEL_CELLS)
}

/// One bucket's exemplar slot in a shared file, which this process alone writes.
#[derive(Debug)]
pub struct SharedSlot {
    first: NonNull<AtomicU64>,
    label_cells: usize,
}

// SAFETY: the cells are atomics that outlive the slot (the contract of `new`),
// and the slot is only written under its bucket's mutex.
unsafe impl Send for SharedSlot {}

impl SharedSlot {
    /// The slot whose [`SHARED_HEAD_CELLS`] and `label_cells` cells start at `first`.
    ///
    /// # Safety
    /// The cells must be next to each other, zeroed or written by a
    /// `SharedSlot` only, and outlive the slot.
    pub unsafe fn new(first: NonNull<AtomicU64>, label_cells: usize) -> Self {
        SharedSlot { first, label_cells }
    }

    fn cell(&self, index: usize) -> &AtomicU64 {
        debug_assert!(index < SHARED_HEAD_CELLS + self.label_cells);
        // SAFETY: inside the slot's cells, which outlive it (see `new`).
        unsafe { self.first.add(index).as_ref() }
    }

    /// Writes `exemplar`, whose labels encode as `encoded`; false (writing
    /// nothing) when they do not fit.
    fn write(&self, exemplar: &Exemplar, encoded: &[u8]) -> bool {
        write_slot(self, self.label_cells, exemplar, encoded)
    }
}

/// The cells of one exemplar slot, as its sequence lock writes them: a shared
/// file's, or the model checker's in `make loom`.
pub trait SlotCells {
    /// Cell `index`'s value.
    fn load(&self, index: usize, order: Ordering) -> u64;
    /// Sets cell `index`.
    fn store(&self, index: usize, value: u64, order: Ordering);
    /// A fence of the atomics the cells are.
    fn fence(order: Ordering);
}

impl SlotCells for SharedSlot {
    fn load(&self, index: usize, order: Ordering) -> u64 {
        self.cell(index).load(order)
    }

    fn store(&self, index: usize, value: u64, order: Ordering) {
        self.cell(index).store(value, order);
    }

    fn fence(order: Ordering) {
        fence(order);
    }
}

/// Writes `exemplar` (labels encoded as `encoded`) into a slot of
/// `label_cells` label cells under its sequence lock: the sequence number
/// (cell 0) odd while the other cells change, then even and one higher.
/// False, writing nothing, when the labels do not fit. One writer at a time.
pub fn write_slot<C: SlotCells>(
    cells: &C,
    label_cells: usize,
    exemplar: &Exemplar,
    encoded: &[u8],
) -> bool {
    if encoded.len() > label_cells * 8 {
        return false;
    }
    let sequence = cells.load(0, Ordering::Relaxed);
    cells.store(0, sequence | 1, Ordering::Relaxed);
    // Readers that see a cell written below see the odd number too.
    C::fence(Ordering::Release);
    cells.store(1, exemplar.value.to_bits(), Ordering::Relaxed);
    cells.store(2, exemplar.timestamp.to_bits(), Ordering::Relaxed);
    cells.store(3, encoded.len() as u64, Ordering::Relaxed);
    for (index, chunk) in encoded.chunks(8).enumerate() {
        let mut word = [0; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        cells.store(
            SHARED_HEAD_CELLS + index,
            u64::from_le_bytes(word),
            Ordering::Relaxed,
        );
    }
    cells.store(0, (sequence | 1).wrapping_add(1), Ordering::Release);
    true
}

/// How many copies a reader makes of a slot the owner keeps rewriting before
/// it gives up on that slot's exemplar for this scrape.
pub const SLOT_READ_ATTEMPTS: usize = 3;

/// Reads a slot of `len` cells by its sequence lock, in at most `attempts`
/// copies ([`SLOT_READ_ATTEMPTS`] in a scrape): `copy` copies the cells
/// into the buffer it is given and returns the sequence number read after
/// that copy; a copy is whole when its sequence number, the one read before
/// it (`before`, first) and the one after are even and equal. None when the
/// slot is empty or every attempt met a write; `damaged` makes the error of
/// cells that cannot be a slot's.
///
/// The number read after a copy is the next attempt's number from before, so
/// `copy` must order its reads: the copy's before that number, and that
/// number before the next copy's (acquire reads; a scrape's `pread`s, one
/// after the other, on a processor that keeps loads in order). The model of
/// this protocol found a reader whose number after was a relaxed read taking
/// a torn copy as whole on its second attempt.
pub fn read_slot<E>(
    mut before: u64,
    len: usize,
    attempts: usize,
    mut copy: impl FnMut(&mut [u64]) -> Result<u64, E>,
    damaged: impl Fn(String) -> E,
) -> Result<Option<Exemplar>, E> {
    let mut cells = vec![0; len];
    for _ in 0..attempts {
        let after = copy(&mut cells)?;
        // Unchanged from before the copy to after it: the copy is whole.
        if cells[0] == before && before == after {
            match read_shared(&cells).map_err(&damaged)? {
                SharedReading::Empty => return Ok(None),
                SharedReading::Written(exemplar) => return Ok(Some(exemplar)),
                SharedReading::Busy => {}
            }
        }
        before = after;
    }
    Ok(None)
}

/// What a copy of a shared slot's cells holds.
#[derive(Debug, Clone, PartialEq)]
pub enum SharedReading {
    /// Nothing written yet.
    Empty,
    /// A write was under way when the cells were copied.
    Busy,
    /// The exemplar.
    Written(Exemplar),
}

/// Reads a copy of a shared slot's cells, which the caller made sure is whole
/// (its sequence number was the same before and after the copy); `Err` when
/// they cannot be a slot's (a damaged file).
pub fn read_shared(cells: &[u64]) -> Result<SharedReading, String> {
    let [sequence, value, timestamp, length, label_cells @ ..] = cells else {
        return Err("an exemplar slot too short".to_owned());
    };
    if *sequence == 0 {
        return Ok(SharedReading::Empty);
    }
    if sequence % 2 == 1 {
        return Ok(SharedReading::Busy);
    }
    let bytes: Vec<u8> = label_cells
        .iter()
        .flat_map(|cell| cell.to_le_bytes())
        .collect();
    let labels = usize::try_from(*length)
        .ok()
        .and_then(|length| bytes.get(..length))
        .and_then(decode_labels);
    let (value, timestamp) = (f64::from_bits(*value), f64::from_bits(*timestamp));
    match labels {
        Some(labels) if value.is_finite() && timestamp.is_finite() => {
            Exemplar::check_labels(&labels)?;
            Ok(SharedReading::Written(Exemplar {
                labels,
                value,
                timestamp,
            }))
        }
        _ => Err("an exemplar slot holds no exemplar".to_owned()),
    }
}

/// The cells of a new shared slot for `exemplar`.
pub fn shared_slot_cells(exemplar: &Exemplar) -> usize {
    SHARED_HEAD_CELLS + label_cells_for(encode_labels(&exemplar.labels).len())
}

/// Writes `exemplar` into a new shared slot at `first`, as compaction does.
///
/// # Safety
/// As [`SharedSlot::new`], for [`shared_slot_cells`] cells.
pub unsafe fn write_shared(first: NonNull<AtomicU64>, exemplar: &Exemplar) {
    let encoded = encode_labels(&exemplar.labels);
    // SAFETY: the caller's contract.
    let slot = unsafe { SharedSlot::new(first, label_cells_for(encoded.len())) };
    slot.write(exemplar, &encoded);
}

/// One bucket's exemplar: the last one given, and its shared slot if it has one.
#[derive(Debug, Default)]
struct Slot {
    exemplar: Option<Arc<Exemplar>>,
    shared: Option<SharedSlot>,
}

/// Makes a shared slot of the given number of label cells for a bucket, when
/// the series' cells are in a shared file that keeps exemplars.
pub type ShareSlot<'a> = &'a dyn Fn(usize) -> Option<SharedSlot>;

/// The last exemplar of each bucket of one histogram series.
#[derive(Debug, Default)]
pub struct ExemplarSlots {
    slots: OnceLock<Box<[Mutex<Slot>]>>,
}

impl ExemplarSlots {
    /// Keeps `exemplar` as the one of bucket `bucket` (of `buckets` buckets),
    /// in the series' shared file too when `share` makes it a slot there.
    pub fn record(
        &self,
        bucket: usize,
        buckets: usize,
        exemplar: Exemplar,
        share: Option<ShareSlot<'_>>,
    ) {
        let slots = self
            .slots
            .get_or_init(|| (0..buckets).map(|_| Mutex::default()).collect());
        let Some(slot) = slots.get(bucket) else {
            return;
        };
        let mut slot = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(share) = share {
            let encoded = encode_labels(&exemplar.labels);
            let written = slot
                .shared
                .as_ref()
                .is_some_and(|shared| shared.write(&exemplar, &encoded));
            if !written {
                // The first exemplar of the bucket, or longer labels than its
                // slot holds: a new slot, which readers prefer (it is newer).
                slot.shared = share(label_cells_for(encoded.len()));
                if let Some(shared) = &slot.shared {
                    shared.write(&exemplar, &encoded);
                }
            }
        }
        slot.exemplar = Some(Arc::new(exemplar));
    }

    /// Each bucket's exemplar; empty when the series has none.
    pub fn read(&self) -> Vec<Option<Arc<Exemplar>>> {
        self.each(|slot| slot.exemplar.clone())
    }

    /// Each bucket's exemplar, leaving none (a snapshot that resets; a
    /// shared slot keeps its copy, as a shared file keeps counts).
    pub fn take(&self) -> Vec<Option<Arc<Exemplar>>> {
        self.each(|slot| slot.exemplar.take())
    }

    fn each(
        &self,
        mut one: impl FnMut(&mut Slot) -> Option<Arc<Exemplar>>,
    ) -> Vec<Option<Arc<Exemplar>>> {
        self.slots.get().map_or_else(Vec::new, |slots| {
            slots
                .iter()
                .map(|slot| {
                    one(&mut slot
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner))
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn labels_are_limited_to_128_characters_and_valid_names() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert!(Exemplar::check_labels(&labels(&[("trace_id", trace)])).is_ok());
        let long = "x".repeat(121);
        let error = Exemplar::check_labels(&labels(&[("trace_id", &long)])).unwrap_err();
        assert!(error.contains("129 characters"), "{error}");
        assert!(Exemplar::check_labels(&labels(&[("0trace", "a")])).is_err());
        // Characters, not bytes: 60 two-byte characters are 60.
        let accented = "é".repeat(60);
        assert!(Exemplar::check_labels(&labels(&[("span", &accented)])).is_ok());
    }

    #[test]
    fn each_bucket_keeps_its_last_exemplar() {
        let slots = ExemplarSlots::default();
        assert!(slots.read().is_empty());
        let make = |value| Exemplar {
            labels: labels(&[("trace_id", "a")]),
            value,
            timestamp: 1.0,
        };
        slots.record(2, 4, make(0.3), None);
        slots.record(2, 4, make(0.4), None);
        slots.record(3, 4, make(9.0), None);
        let read: Vec<Option<f64>> = slots
            .read()
            .iter()
            .map(|e| e.as_ref().map(|e| e.value))
            .collect();
        assert_eq!(read, [None, None, Some(0.4), Some(9.0)]);
        assert_eq!(slots.take().iter().flatten().count(), 2);
        assert_eq!(slots.read().iter().flatten().count(), 0);
    }

    fn copy(cells: &[AtomicU64]) -> Vec<u64> {
        cells
            .iter()
            .map(|cell| cell.load(Ordering::Relaxed))
            .collect()
    }

    #[test]
    fn a_shared_slot_is_read_back_whole_and_replaced_when_outgrown() {
        let cells: Vec<AtomicU64> = (0..SHARED_HEAD_CELLS + SHARED_MAX_LABEL_CELLS + 64)
            .map(|_| AtomicU64::new(0))
            .collect();
        let first = NonNull::from(cells.as_slice()).cast::<AtomicU64>();
        let made = std::cell::Cell::new(0);
        let share = |label_cells: usize| {
            // Each new slot after the previous one's cells.
            let at = made.replace(made.get() + 1) * (SHARED_HEAD_CELLS + SHARED_MIN_LABEL_CELLS);
            assert!(at + SHARED_HEAD_CELLS + label_cells <= cells.len());
            // SAFETY: zeroed cells of `cells`, which outlive the slots.
            Some(unsafe { SharedSlot::new(first.add(at).cast(), label_cells) })
        };
        let slots = ExemplarSlots::default();
        assert_eq!(read_shared(&copy(&cells[..20])), Ok(SharedReading::Empty));
        let trace = labels(&[("trace_id", "4bf92f3577b34da6"), ("span_id", "00f067aa")]);
        let exemplar = |labels: &Vec<(String, String)>, value| Exemplar {
            labels: labels.clone(),
            value,
            timestamp: 1_700_000_000.5,
        };
        slots.record(1, 3, exemplar(&trace, 0.25), Some(&share));
        slots.record(1, 3, exemplar(&trace, 0.5), Some(&share));
        assert_eq!(made.get(), 1);
        let first_slot = copy(&cells[..SHARED_HEAD_CELLS + SHARED_MIN_LABEL_CELLS]);
        assert_eq!(first_slot[0], 4, "two writes, each odd then even");
        assert_eq!(
            read_shared(&first_slot),
            Ok(SharedReading::Written(exemplar(&trace, 0.5)))
        );
        // Labels longer than the slot holds go to a new, larger slot.
        let long = labels(&[("trace_id", &"é".repeat(60))]);
        slots.record(1, 3, exemplar(&long, 0.75), Some(&share));
        assert_eq!(made.get(), 2);
        let second = SHARED_HEAD_CELLS + SHARED_MIN_LABEL_CELLS;
        let second_slot = copy(&cells[second..second + SHARED_HEAD_CELLS + 32]);
        assert_eq!(
            read_shared(&second_slot),
            Ok(SharedReading::Written(exemplar(&long, 0.75)))
        );
        // A copy taken mid-write is busy; a damaged one is an error.
        let mut busy = first_slot.clone();
        busy[0] = 5;
        assert_eq!(read_shared(&busy), Ok(SharedReading::Busy));
        let mut damaged = first_slot;
        damaged[3] = 10_000;
        assert!(read_shared(&damaged).is_err());
    }

    #[test]
    fn encoded_labels_decode_to_themselves_and_junk_does_not_decode() {
        let trace = labels(&[("trace_id", "ab"), ("span_id", ""), ("x", "é")]);
        assert_eq!(decode_labels(&encode_labels(&trace)), Some(trace));
        assert_eq!(decode_labels(&[5, 0, b'a']), None);
        assert_eq!(decode_labels(&[1, 0, b'a']), None);
        assert_eq!(decode_labels(&[1, 0, 0xff, 0, 0]), None);
        assert_eq!(label_cells_for(71), 16);
        assert_eq!(label_cells_for(200), 32);
        assert_eq!(label_cells_for(1024), SHARED_MAX_LABEL_CELLS);
    }
}

/// A model of the exemplar slot's sequence lock (`make loom`): the owner
/// rewrites a slot while another process's scrape reads it. The writer is
/// [`write_slot`] itself; the reader is [`read_slot`] with a copy made of
/// relaxed loads and an acquire fence before the sequence number is read
/// again. (A scrape copies the cells with `pread`, whose reads the model
/// cannot see; on x86_64 loads are not reordered with loads, which is what
/// the fence stands for.) Loom runs it through every interleaving, up to a
/// bound of preemptions, and lets each relaxed load return any value the
/// memory model allows, so a torn copy taken as whole fails the model.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::sync::atomic::AtomicU64 as ModelCell;
    use loom::sync::Arc;
    use loom::thread;

    /// A slot's cells as the model checker's atomics.
    struct Cells(Vec<ModelCell>);

    impl SlotCells for Cells {
        fn load(&self, index: usize, order: Ordering) -> u64 {
            self.0[index].load(order)
        }

        fn store(&self, index: usize, value: u64, order: Ordering) {
            self.0[index].store(value, order);
        }

        fn fence(order: Ordering) {
            loom::sync::atomic::fence(order);
        }
    }

    /// Label cells in the model: room for the short labels below (6 bytes).
    const LABEL_CELLS: usize = 1;

    fn exemplar(trace: &str, value: f64) -> Exemplar {
        Exemplar {
            labels: vec![("t".to_owned(), trace.to_owned())],
            value,
            timestamp: value + 1.0,
        }
    }

    /// How many executions ended with the reader holding nothing (0), the
    /// first exemplar (1) or the second (2).
    static OUTCOMES: [std::sync::atomic::AtomicUsize; 3] = [
        std::sync::atomic::AtomicUsize::new(0),
        std::sync::atomic::AtomicUsize::new(0),
        std::sync::atomic::AtomicUsize::new(0),
    ];

    #[test]
    fn loom_a_reader_takes_a_whole_exemplar_or_none() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(2);
        builder.check(|| {
            let (first, second) = (exemplar("a", 1.5), exemplar("b", 2.5));
            let cells = Arc::new(Cells(
                std::iter::repeat_with(|| ModelCell::new(0))
                    .take(SHARED_HEAD_CELLS + LABEL_CELLS)
                    .collect(),
            ));
            let write = |exemplar: &Exemplar| {
                assert!(write_slot(
                    &*cells,
                    LABEL_CELLS,
                    exemplar,
                    &encode_labels(&exemplar.labels)
                ));
            };
            // The slot holds the first exemplar when the reader starts; the
            // owner replaces it meanwhile. The reader is spawned and the
            // writer is the main thread, which runs first in loom's first
            // execution (see the label map's models). Two attempts: the
            // second starts from the number the first read last.
            write(&first);
            let reader = {
                let cells = Arc::clone(&cells);
                thread::spawn(move || {
                    let before = cells.load(0, Ordering::Acquire);
                    let copy = |out: &mut [u64]| {
                        for (index, cell) in out.iter_mut().enumerate() {
                            *cell = cells.load(index, Ordering::Relaxed);
                        }
                        // The copy's loads before the number read after it,
                        // and that read before the next copy's (it is the
                        // next attempt's number from before).
                        Cells::fence(Ordering::Acquire);
                        Ok::<u64, String>(cells.load(0, Ordering::Acquire))
                    };
                    read_slot(before, SHARED_HEAD_CELLS + LABEL_CELLS, 2, copy, |error| {
                        error
                    })
                })
            };
            write(&second);
            let read = reader.join().unwrap().expect("a slot's cells");
            let outcome = match read {
                None => 0,
                Some(read) if read == first => 1,
                Some(read) => {
                    assert_eq!(read, second, "a torn copy was taken as whole");
                    2
                }
            };
            OUTCOMES[outcome].fetch_add(1, Ordering::Relaxed);
        });
        let outcomes: Vec<usize> = OUTCOMES
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect();
        assert!(outcomes.iter().all(|count| *count > 0), "{outcomes:?}");
    }
}
