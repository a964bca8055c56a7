//! An insert-only map from a tuple of label values to a series, with lock-free reads.
//!
//! New label sets are rare next to updates of existing ones, so reads must not
//! take a lock and writers may. The map is an open-addressing table of pointers
//! to entries. Entries are allocated once and never move or die before the map,
//! which lets a reader hand out `&V` for as long as it borrows the map. A writer
//! (under the mutex) publishes a new entry with one release store into an empty
//! cell; when the table is half full it builds a bigger one and swaps the table
//! pointer. Readers still walking an old table finish safely because old tables
//! are kept until the map is dropped (together they are never larger than the
//! current one). Equal hashes are confirmed by comparing the label values.
//!
//! Entries are also listed in insertion order, in an append-only list that a
//! scrape copies without the lock either: a scrape runs without the GIL, and a
//! process forked while a scrape held a lock would find that lock held forever
//! in the child.

#[cfg(not(loom))]
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::ptr::{self, NonNull};
use std::sync::atomic::Ordering;

// The model checker's atomics and lock under `--cfg loom` (`make loom`), which
// runs this map's publication and growth through every interleaving.
#[cfg(loom)]
use loom::sync::{
    atomic::{AtomicPtr, AtomicUsize},
    Mutex,
};
#[cfg(not(loom))]
use std::sync::{
    atomic::{AtomicPtr, AtomicUsize},
    Mutex,
};

use foldhash::fast::FixedState;

use crate::schema::label_text::bytes_equal_to;

const INITIAL_CAPACITY: usize = 16;

/// Ends each label value in an entry's text: a byte that never occurs in UTF-8.
const TERMINATOR: u8 = 0xff;

/// The place of the first [`TERMINATOR`] in `bytes`, eight bytes at a time: a
/// scrape splits every label set it writes.
#[inline]
fn terminator_in(bytes: &[u8]) -> Option<usize> {
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in chunks.by_ref() {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let flags = bytes_equal_to(word, TERMINATOR);
        if flags != 0 {
            return Some(offset + flags.trailing_zeros() as usize / 8);
        }
        offset += 8;
    }
    let tail = chunks.remainder();
    tail.iter()
        .position(|byte| *byte == TERMINATOR)
        .map(|at| offset + at)
}

/// Asks the processor to fetch the cache line at `address` (a hint: it
/// neither faults nor changes anything).
#[inline]
pub fn prefetch<T>(address: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and cannot fault,
    // whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// One label set and its series.
///
/// The label values share one allocation (`text`, each value followed by
/// a terminating byte): a label set costs a single small buffer on top of the
/// entry itself, and the entry no list of where each value ends.
pub struct Entry<V> {
    hash: u64,
    text: Box<[u8]>,
    /// The series stored under these labels.
    pub value: V,
}

impl<V> Entry<V> {
    fn new(hash: u64, labels: &[&str], value: V) -> Self {
        let mut text = Vec::with_capacity(labels.iter().map(|label| label.len() + 1).sum());
        for label in labels {
            text.extend_from_slice(label.as_bytes());
            text.push(TERMINATOR);
        }
        Entry {
            hash,
            text: text.into_boxed_slice(),
            value,
        }
    }

    /// Label values in the order the map's key was declared.
    pub fn label_values(&self) -> impl Iterator<Item = &str> + '_ {
        let mut rest = &self.text[..];
        std::iter::from_fn(move || {
            let end = terminator_in(rest)?;
            let (label, tail) = rest.split_at(end);
            rest = &tail[1..];
            // SAFETY: `text` is whole UTF-8 strings each followed by the
            // terminator (see `Entry::new`), a byte UTF-8 never contains: the
            // bytes before a terminator are one of those strings.
            Some(unsafe { std::str::from_utf8_unchecked(label) })
        })
    }

    /// Asks the processor to fetch the entry's label text: a scrape walks
    /// label sets scattered over the heap, and waiting for each one's text
    /// was a sixth of its time.
    #[inline]
    pub fn prefetch_labels(&self) {
        prefetch(self.text.as_ptr());
    }

    /// The `index`-th label value.
    pub fn label(&self, index: usize) -> &str {
        self.label_values().nth(index).unwrap_or_default()
    }

    fn has_labels(&self, labels: &[&str]) -> bool {
        let mut rest = &self.text[..];
        for label in labels {
            let label = label.as_bytes();
            match rest.get(label.len()) {
                Some(&TERMINATOR) if rest.starts_with(label) => rest = &rest[label.len() + 1..],
                _ => return false,
            }
        }
        rest.is_empty()
    }
}

struct Table<V> {
    cells: Box<[AtomicPtr<Entry<V>>]>,
}

impl<V> Table<V> {
    fn with_capacity(capacity: usize) -> Self {
        let cells = (0..capacity)
            .map(|_| AtomicPtr::new(ptr::null_mut()))
            .collect();
        Table { cells }
    }

    fn mask(&self) -> usize {
        self.cells.len() - 1
    }

    /// Stores `entry` in the first empty cell of its probe sequence.
    fn place(&self, entry: NonNull<Entry<V>>) {
        // SAFETY: `entry` is a live entry of this map, freed only in `Drop`.
        let hash = unsafe { entry.as_ref() }.hash;
        let mut index = hash as usize & self.mask();
        while !self.cells[index].load(Ordering::Relaxed).is_null() {
            index = (index + 1) & self.mask();
        }
        self.cells[index].store(entry.as_ptr(), Ordering::Release);
    }
}

/// Entries in insertion order: the first `len` cells are published.
struct OrderList<V> {
    cells: Box<[AtomicPtr<Entry<V>>]>,
    len: AtomicUsize,
}

impl<V> OrderList<V> {
    fn with_capacity(capacity: usize) -> Self {
        OrderList {
            cells: (0..capacity)
                .map(|_| AtomicPtr::new(ptr::null_mut()))
                .collect(),
            len: AtomicUsize::new(0),
        }
    }

    /// The published entries' pointers.
    fn entries(&self) -> impl Iterator<Item = NonNull<Entry<V>>> + '_ {
        let len = self.len.load(Ordering::Acquire);
        self.cells[..len]
            .iter()
            .filter_map(|cell| NonNull::new(cell.load(Ordering::Acquire)))
    }
}

struct WriterState<V> {
    /// The current table and every table it replaced; the map owns them.
    tables: Vec<NonNull<Table<V>>>,
    /// The current order list and every list it replaced; the map owns them,
    /// and the entries the current one lists.
    order_lists: Vec<NonNull<OrderList<V>>>,
}

/// Insert-only label map with lock-free lookups and snapshots.
pub struct LabelMap<V> {
    /// The hash's seed, drawn per map from the operating system's randomness
    /// (through std's `RandomState`, as `HashMap` seeds itself): label values
    /// may come from clients, who must not be able to pick colliding ones.
    /// Nothing outside the map sees a hash, so files and snapshots do not
    /// depend on it.
    seed: u64,
    current: AtomicPtr<Table<V>>,
    order: AtomicPtr<OrderList<V>>,
    writer: Mutex<WriterState<V>>,
}

// SAFETY: entries and tables are only freed in `Drop`, which has exclusive access;
// until then they are shared immutably (cells are atomics), so sharing the map
// across threads is sound whenever the values themselves may be shared.
unsafe impl<V: Send + Sync> Send for LabelMap<V> {}
// SAFETY: shared access reads immutable entries and atomic cells only; entries
// and tables are freed in `Drop` alone, which has exclusive access.
unsafe impl<V: Send + Sync> Sync for LabelMap<V> {}

/// Hashes a label tuple under `seed`; the same function serves lookups and inserts.
#[inline]
fn hash_labels(seed: u64, labels: &[&str]) -> u64 {
    let mut hasher = FixedState::with_seed(seed).build_hasher();
    for label in labels {
        label.hash(&mut hasher);
    }
    hasher.finish()
}

/// A seed no client can know: std's `RandomState` is keyed from the operating
/// system's randomness, and hashing a constant with it draws a fresh `u64`.
#[cfg(not(loom))]
fn random_seed() -> u64 {
    RandomState::new().hash_one(0x9e37_79b9_7f4a_7c15_u64)
}

/// A fixed seed in the models: loom replays each execution, which must take
/// the same path every time.
#[cfg(loom)]
fn random_seed() -> u64 {
    0x9e37_79b9_7f4a_7c15
}

impl<V> Default for LabelMap<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> LabelMap<V> {
    /// An empty map.
    pub fn new() -> Self {
        let table = NonNull::from(Box::leak(Box::new(Table::with_capacity(INITIAL_CAPACITY))));
        let order = NonNull::from(Box::leak(Box::new(OrderList::with_capacity(
            INITIAL_CAPACITY,
        ))));
        LabelMap {
            seed: random_seed(),
            current: AtomicPtr::new(table.as_ptr()),
            order: AtomicPtr::new(order.as_ptr()),
            writer: Mutex::new(WriterState {
                tables: vec![table],
                order_lists: vec![order],
            }),
        }
    }

    /// The entry stored under `labels`, without taking a lock.
    #[inline]
    pub fn get(&self, labels: &[&str]) -> Option<&Entry<V>> {
        self.get_hashed(hash_labels(self.seed, labels), labels)
    }

    /// Like [`LabelMap::get`] when the caller already has the labels' hash.
    #[inline]
    fn get_hashed(&self, hash: u64, labels: &[&str]) -> Option<&Entry<V>> {
        // SAFETY: the table pointer always refers to a table owned by `self`.
        let table = unsafe { &*self.current.load(Ordering::Acquire) };
        let mask = table.mask();
        let mut index = hash as usize & mask;
        loop {
            let cell = table.cells[index].load(Ordering::Acquire);
            if cell.is_null() {
                return None;
            }
            // SAFETY: published entries live as long as `self`.
            let entry = unsafe { &*cell };
            if entry.hash == hash && entry.has_labels(labels) {
                return Some(entry);
            }
            index = (index + 1) & mask;
        }
    }

    /// The entry under `labels`, inserting `make()` first if the labels are new.
    ///
    /// Racing inserts of the same labels create one entry: the loser finds the
    /// winner's entry under the writer lock and `make` is not called.
    pub fn get_or_insert_with(&self, labels: &[&str], make: impl FnOnce() -> V) -> &Entry<V> {
        let hash = hash_labels(self.seed, labels);
        if let Some(value) = self.get_hashed(hash, labels) {
            return value;
        }
        let mut state = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(value) = self.get_hashed(hash, labels) {
            return value;
        }
        let entry = NonNull::from(Box::leak(Box::new(Entry::new(hash, labels, make()))));
        let count = self.append_in_order(&mut state, entry);
        // SAFETY: the current table is owned by `self` and only replaced under this lock.
        let table = unsafe { &*self.current.load(Ordering::Relaxed) };
        if count * 2 > table.cells.len() {
            let bigger = Table::with_capacity(table.cells.len() * 2);
            // SAFETY: the order list is owned by `self` and only replaced under this lock.
            for existing in unsafe { &*self.order.load(Ordering::Relaxed) }.entries() {
                bigger.place(existing);
            }
            let bigger = NonNull::from(Box::leak(Box::new(bigger)));
            state.tables.push(bigger);
            self.current.store(bigger.as_ptr(), Ordering::Release);
        } else {
            table.place(entry);
        }
        // SAFETY: the entry was just published and lives as long as `self`.
        unsafe { &*entry.as_ptr() }
    }

    /// Lists `entry` after the others (under the writer lock); returns the count.
    fn append_in_order(&self, state: &mut WriterState<V>, entry: NonNull<Entry<V>>) -> usize {
        // SAFETY: the order list is owned by `self` and only replaced under this lock.
        let mut list = unsafe { &*self.order.load(Ordering::Relaxed) };
        let len = list.len.load(Ordering::Relaxed);
        if len == list.cells.len() {
            let bigger = OrderList::with_capacity(len * 2);
            for (cell, existing) in bigger.cells.iter().zip(list.entries()) {
                cell.store(existing.as_ptr(), Ordering::Relaxed);
            }
            bigger.len.store(len, Ordering::Relaxed);
            let bigger = NonNull::from(Box::leak(Box::new(bigger)));
            state.order_lists.push(bigger);
            self.order.store(bigger.as_ptr(), Ordering::Release);
            // SAFETY: just published; owned by `self`.
            list = unsafe { bigger.as_ref() };
        }
        list.cells[len].store(entry.as_ptr(), Ordering::Release);
        list.len.store(len + 1, Ordering::Release);
        len + 1
    }

    /// The entries in insertion order, copied without taking a lock.
    pub fn snapshot(&self) -> Vec<&Entry<V>> {
        // SAFETY: order lists and the entries they list live as long as `self`.
        let list = unsafe { &*self.order.load(Ordering::Acquire) };
        list.entries()
            // SAFETY: every listed entry is live until the map is dropped.
            .map(|entry| unsafe { &*entry.as_ptr() })
            .collect()
    }

    /// Number of label sets.
    pub fn len(&self) -> usize {
        // SAFETY: order lists live as long as `self`.
        unsafe { &*self.order.load(Ordering::Acquire) }
            .len
            .load(Ordering::Acquire)
    }

    /// Whether no label set was inserted yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<V> Drop for LabelMap<V> {
    fn drop(&mut self) {
        // A lock nobody else can hold (`&mut self`); loom's mutex has no `get_mut`.
        let mut state = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // SAFETY: `&mut self` means no reader holds a reference; each pointer came
        // from `Box::leak` and is freed exactly once here: entries through the
        // current order list, which lists each of them once.
        unsafe {
            for entry in (*self.order.load(Ordering::Relaxed)).entries() {
                drop(Box::from_raw(entry.as_ptr()));
            }
            for list in state.order_lists.drain(..) {
                drop(Box::from_raw(list.as_ptr()));
            }
            for table in state.tables.drain(..) {
                drop(Box::from_raw(table.as_ptr()));
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::thread;

    /// The longest run of cells a lookup of one of the map's entries walks.
    fn longest_probe<V>(map: &LabelMap<V>) -> usize {
        // SAFETY: the current table is owned by the map, which outlives this borrow.
        let table = unsafe { &*map.current.load(Ordering::Acquire) };
        let mask = table.mask();
        (0..table.cells.len())
            .filter_map(|index| {
                let cell = table.cells[index].load(Ordering::Acquire);
                // SAFETY: published entries live as long as the map.
                let entry = unsafe { cell.as_ref() }?;
                let home = entry.hash as usize & mask;
                Some(index.wrapping_sub(home) & mask)
            })
            .max()
            .unwrap_or(0)
    }

    /// Names chosen to collide under one seed (the fixed seed every process
    /// once shared) spread out in a map, whose seed no caller knows.
    #[test]
    // A million hashes to find the names: no unsafe code to check, and hours under Miri.
    #[cfg_attr(miri, ignore)]
    fn names_colliding_under_a_known_seed_do_not_collide_in_a_map() {
        const KNOWN_SEED: u64 = 0x9e37_79b9_7f4a_7c15;
        let mask = (1 << 12) - 1;
        let colliding: Vec<String> = (0_u64..)
            .map(|index| format!("model-{index}"))
            .filter(|name| hash_labels(KNOWN_SEED, &[name.as_str()]) & mask == 0)
            .take(300)
            .collect();
        let map = LabelMap::new();
        for name in &colliding {
            map.get_or_insert_with(&[name.as_str()], || ());
        }
        // Under the known seed all 300 share a home cell of a 1,024-cell table
        // and the last walks 299 cells; under a random seed a few at most.
        assert!(longest_probe(&map) < 40, "{}", longest_probe(&map));
        assert_ne!(LabelMap::<()>::new().seed, LabelMap::<()>::new().seed);
    }

    #[test]
    fn lookups_confirm_values_and_keep_insertion_order() {
        let map = LabelMap::new();
        assert!(map.get(&["a", "b"]).is_none());
        assert_eq!(map.get_or_insert_with(&["a", "b"], || 1).value, 1);
        assert_eq!(map.get_or_insert_with(&["a", "b"], || 2).value, 1);
        assert_eq!(map.get_or_insert_with(&["ab", ""], || 3).value, 3);
        assert_eq!(map.get(&["a", "b"]).map(|e| e.value), Some(1));
        assert_eq!(map.get(&["ab", ""]).map(|e| e.value), Some(3));
        assert_eq!(map.get(&["ab", ""]).map(|e| e.label(1)), Some(""));
        assert!(map.get(&["a"]).is_none());
        let order: Vec<Vec<&str>> = map
            .snapshot()
            .iter()
            .map(|e| e.label_values().collect())
            .collect();
        assert_eq!(order, vec![vec!["a", "b"], vec!["ab", ""]]);
    }

    #[test]
    fn label_sets_that_join_to_the_same_text_stay_apart() {
        let map = LabelMap::new();
        let sets: [&[&str]; 7] = [
            &[],
            &[""],
            &["", ""],
            &["a", "bc"],
            &["ab", "c"],
            &["abc", ""],
            &["caf\u{e9}", "\u{1f600}\0"],
        ];
        for (index, labels) in sets.iter().enumerate() {
            map.get_or_insert_with(labels, || index);
        }
        for (index, labels) in sets.iter().enumerate() {
            let entry = map.get(labels).expect("inserted");
            assert_eq!(entry.value, index);
            assert_eq!(entry.label_values().collect::<Vec<_>>(), *labels);
        }
        assert!(map.get(&["a", "b", "c"]).is_none());
        assert!(map.get(&["abc"]).is_none());
    }

    #[test]
    fn the_first_terminator_is_found_wherever_it_is() {
        for len in 0..40 {
            for at in 0..=len {
                let mut bytes: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                // Bytes just below and above the terminator's value around it.
                if at < len {
                    bytes[at] = TERMINATOR;
                    if at + 1 < len {
                        bytes[at + 1] = TERMINATOR;
                    }
                    if at > 0 {
                        bytes[at - 1] = 0xfe;
                    }
                }
                let expected = bytes.iter().position(|byte| *byte == TERMINATOR);
                assert_eq!(terminator_in(&bytes), expected, "{bytes:?}");
            }
        }
    }

    #[test]
    fn growing_keeps_every_entry_reachable() {
        let map = LabelMap::new();
        // Under Miri, enough to grow the table five times (16 to 512 cells).
        let count = if cfg!(miri) { 300 } else { 5_000 };
        let names: Vec<String> = (0..count).map(|i| format!("model-{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            map.get_or_insert_with(&[name.as_str()], || i);
        }
        for (i, name) in names.iter().enumerate() {
            assert_eq!(map.get(&[name.as_str()]).map(|e| e.value), Some(i));
        }
        assert_eq!(map.len(), count);
    }

    #[test]
    fn racing_first_use_makes_one_entry() {
        // Under Miri, fewer rounds over fewer keys: still four threads racing.
        let (rounds, keys) = if cfg!(miri) { (100, 25) } else { (2_000, 500) };
        let map = Arc::new(LabelMap::new());
        let made = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let map = Arc::clone(&map);
                let made = Arc::clone(&made);
                thread::spawn(move || {
                    for i in 0..rounds {
                        let key = format!("k{}", i % keys);
                        map.get_or_insert_with(&[key.as_str(), "x"], || {
                            made.fetch_add(1, Ordering::Relaxed);
                            i % keys
                        });
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        assert_eq!(made.load(Ordering::Relaxed), keys);
        assert_eq!(map.len(), keys);
        for i in 0..keys {
            assert_eq!(
                map.get(&[format!("k{i}").as_str(), "x"]).map(|e| e.value),
                Some(i)
            );
        }
    }
}

/// Models of the map's lock-free publication and growth (`make loom`): loom
/// runs each through every interleaving of its threads (up to a bound of
/// preemptions) and lets every load see any value the memory model allows,
/// so a publication with too weak an ordering shows as a reader that finds a
/// half-made entry or loses one.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::thread;

    /// Runs `test` under loom, with at most three preemptions per execution
    /// (loom's advice: most concurrency bugs need fewer); returns how many
    /// executions it explored.
    fn model(test: impl Fn() + Sync + Send + 'static) -> usize {
        static EXECUTIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        EXECUTIONS.store(0, Ordering::Relaxed);
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(move || {
            EXECUTIONS.fetch_add(1, Ordering::Relaxed);
            test();
        });
        EXECUTIONS.load(Ordering::Relaxed)
    }

    /// A series' stand-in: a value written when the entry is made, in a cell
    /// loom watches, so a reader that reaches an entry without the writer's
    /// writes happening before its read fails the model.
    struct Value(UnsafeCell<u64>);

    // SAFETY: written once, when made, before the entry is published; read after.
    unsafe impl Sync for Value {}

    impl Value {
        fn of(name: &str) -> Self {
            Value(UnsafeCell::new(u64::from(name.as_bytes()[0])))
        }

        fn get(&self) -> u64 {
            // SAFETY: no `&mut` access exists after the entry is made.
            self.0.with(|value| unsafe { *value })
        }
    }

    /// A map holding `count` label sets ("0", "1", ...).
    fn map_of(count: usize) -> Arc<LabelMap<Value>> {
        let map = Arc::new(LabelMap::new());
        for index in 0..count {
            let name = char::from(b'0' + index as u8).to_string();
            map.get_or_insert_with(&[&name], || Value::of(&name));
        }
        map
    }

    fn check(entry: &Entry<Value>) {
        assert_eq!(entry.value.get(), u64::from(entry.label(0).as_bytes()[0]));
    }

    /// How many executions of a model had the reader find "a" and "b" (index
    /// 2), one of them (1), or neither (0): a model that never reached one of
    /// the outcomes would check nothing there.
    static FOUND: [std::sync::atomic::AtomicUsize; 3] = [
        std::sync::atomic::AtomicUsize::new(0),
        std::sync::atomic::AtomicUsize::new(0),
        std::sync::atomic::AtomicUsize::new(0),
    ];

    /// Two writers add "a" and "b" to a map of `before` label sets while a
    /// reader looks both up and copies the list: whatever it finds is whole.
    ///
    /// The spawned writer starts before the reader, and the main thread
    /// writes first: loom 0.7 misses interleavings where a thread loads a
    /// location it then stores after another thread loaded it (tokio-rs/loom
    /// issues 166 and 392), and in this order each of the reader's loads
    /// comes after the stores it races with in loom's first execution, from
    /// which it explores the reader earlier.
    fn writers_and_a_reader(before: usize) {
        let map = map_of(before);
        let writer = {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                let entry = map.get_or_insert_with(&["b"], || Value::of("b"));
                assert_eq!(entry.label(0), "b");
                check(entry);
            })
        };
        let reader = {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                let mut found = 0;
                for name in ["a", "b"] {
                    if let Some(entry) = map.get(&[name]) {
                        assert_eq!(entry.label(0), name);
                        check(entry);
                        found += 1;
                    }
                }
                let listed = map.snapshot();
                assert!(listed.len() >= before && listed.len() <= before + 2);
                listed.into_iter().for_each(check);
                FOUND[found].fetch_add(1, Ordering::Relaxed);
            })
        };
        let entry = map.get_or_insert_with(&["a"], || Value::of("a"));
        check(entry);
        writer.join().unwrap();
        reader.join().unwrap();
        assert_eq!(map.len(), before + 2);
        for name in ["a", "b"] {
            check(map.get(&[name]).unwrap());
        }
    }

    /// Runs [`writers_and_a_reader`] under loom; checks that the reader saw
    /// each outcome in some execution.
    fn explore_writers_and_a_reader(before: usize) {
        for found in &FOUND {
            found.store(0, Ordering::Relaxed);
        }
        let executions = model(move || writers_and_a_reader(before));
        let found: Vec<usize> = FOUND
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect();
        assert!(
            found.iter().all(|count| *count > 0),
            "{executions} executions: {found:?}"
        );
    }

    #[test]
    fn loom_an_insert_is_seen_whole_or_not_at_all() {
        explore_writers_and_a_reader(2);
    }

    #[test]
    fn loom_a_table_growing_under_a_reader_loses_no_entry() {
        // The ninth label set makes the 16-cell table grow to 32.
        explore_writers_and_a_reader(7);
    }

    #[test]
    fn loom_an_order_list_growing_under_a_reader_loses_no_entry() {
        // The seventeenth fills the 16-cell order list (and grows the table).
        explore_writers_and_a_reader(15);
    }

    #[test]
    fn loom_racing_inserts_of_one_label_set_make_one_entry() {
        model(|| {
            let map = map_of(1);
            let made = Arc::new(loom::sync::atomic::AtomicUsize::new(0));
            let racers: Vec<_> = (0..2)
                .map(|_| {
                    let (map, made) = (Arc::clone(&map), Arc::clone(&made));
                    thread::spawn(move || {
                        let entry = map.get_or_insert_with(&["same"], || {
                            made.fetch_add(1, Ordering::Relaxed);
                            Value::of("same")
                        });
                        check(entry);
                        std::ptr::from_ref(entry) as usize
                    })
                })
                .collect();
            let entries: Vec<usize> = racers
                .into_iter()
                .map(|racer| racer.join().unwrap())
                .collect();
            assert_eq!(entries[0], entries[1]);
            assert_eq!(made.load(Ordering::Relaxed), 1);
            assert_eq!(map.len(), 2);
        });
    }
}
