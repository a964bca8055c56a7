//! Multi-process mode: a scrape sums the files of every process in a directory.
//!
//! Every process that records writes its own [`own_file::SharedFile`]; a scrape in any of
//! them reads all the files of the directory, live and dead processes alike,
//! and adds them up series by series. Compaction folds the files of processes
//! that are gone (nobody holds their lock) into one, so a scrape does not slow
//! down as workers come and go.
//!
//! Compaction is atomic however it ends. The folded file is written whole under
//! a hidden name, lists the files it absorbs, and is published by one rename;
//! only then are the absorbed files removed. A reader skips every file that a
//! published file lists, so whether a compaction is killed before, during or
//! after the removals (or a removal fails), each value is counted once. The
//! directory lock, shared by scrapes and held exclusively by compaction and
//! cleanup, keeps a scrape from listing the directory halfway through a
//! compaction; a scrape that cannot get it within a few seconds reads without it
//! and says so.

pub mod admission;
mod aggregate;
mod compaction;
pub mod files;
// Unsafe: `pthread_atfork` and the descriptors a child must not share.
#[allow(unsafe_code)]
pub mod fork_guard;
// Unsafe: `flock`.
#[allow(unsafe_code)]
pub mod lock;
pub mod own_file;
// Unsafe: memory-mapped `prometheus_client` files.
#[allow(unsafe_code)]
pub mod prometheus_file;

pub use aggregate::{aggregate, aggregate_prometheus, Aggregate};
pub use compaction::{cleanup, compact, compact_with, Cleanup, Compaction, LiveFile};

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::cells::arena::CellArena;
    use crate::cells::counter::Recording;
    use crate::formats::text::{Format, TextEncoder};
    use crate::multiprocess::files::{file_name, list_files, list_temporary_files};
    use crate::multiprocess::own_file::{read_file, SharedFile};
    use crate::schema::family::Schema;
    use crate::schema::request::RequestValues;
    use crate::store::pricing::{Price, PriceTable};
    use crate::store::{CacheOutcome, RequestLabels, Store};

    const WAIT: Duration = Duration::from_secs(10);

    /// The labels of the exemplar tests' requests.
    const GPT_4O: RequestLabels<'static> = RequestLabels {
        provider: "openai",
        model: "gpt-4o",
        operation: "chat",
        status: "ok",
        extra: &[],
    };

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::default())
    }

    fn prices() -> PriceTable {
        PriceTable::new([("gpt-4o", Price::new(2.5, 10.0))])
    }

    fn file_store(directory: &Path) -> Store {
        Store::with_arena(
            prices(),
            CellArena::shared(Box::new(SharedFile::create(directory, &schema()).unwrap())),
            Recording::CONCURRENT,
            schema(),
        )
    }

    fn record(store: &Store, model: &str, latency_s: f64) {
        let labels = RequestLabels {
            provider: "openai",
            model,
            operation: "chat",
            status: "ok",
            extra: &[],
        };
        let values = RequestValues::new(latency_s, 1000, 200);
        store.record_request(&labels, &values);
        store.record_cache(CacheOutcome::Hit, "exact");
    }

    /// The exposition's lines, sorted: files are summed in name order, which is random.
    fn lines(text: String) -> Vec<String> {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    }

    fn text(aggregate: &Aggregate) -> Vec<String> {
        let mut encoder = TextEncoder::new(Format::Text);
        aggregate.visit(false, &mut encoder);
        lines(encoder.into_text())
    }

    fn directory(name: &str) -> PathBuf {
        let directory = std::env::temp_dir().join(format!(
            "gwm-mp-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        fs::create_dir_all(&directory).unwrap();
        directory
    }

    #[test]
    fn a_scrape_sums_every_file_and_compaction_keeps_the_sum() {
        let directory = directory("sum");
        let single = Store::new(prices());
        for (index, model) in ["gpt-4o", "mystery", "gpt-4o"].iter().enumerate() {
            let store = file_store(&directory);
            record(&store, model, 0.25 * (index + 1) as f64);
            record(&single, model, 0.25 * (index + 1) as f64);
        }
        let live = file_store(&directory);
        record(&live, "gpt-4o", 3.0);
        record(&single, "gpt-4o", 3.0);
        let before = aggregate(&directory, &schema()).unwrap();
        assert_eq!((before.files, before.skipped.len()), (4, 0));
        let mut expected = TextEncoder::new(Format::Text);
        single.visit(false, &mut expected);
        assert_eq!(text(&before), lines(expected.into_text()));

        let compaction = compact(&directory, WAIT).unwrap();
        assert_eq!((compaction.folded, compaction.discarded), (3, 0));
        let after = aggregate(&directory, &schema()).unwrap();
        assert_eq!(after.files, 2);
        assert_eq!(text(&after), text(&before));
        // The live file is this process's own: cleanup keeps it, removes the
        // folded one and refuses nothing (another process's live file is
        // refused: tests/test_multiprocess.py).
        assert!(matches!(
            cleanup(&directory, false, WAIT).unwrap(),
            Cleanup::Removed(1)
        ));
        assert_eq!(aggregate(&directory, &schema()).unwrap().files, 1);
        assert!(matches!(
            cleanup(&directory, true, WAIT).unwrap(),
            Cleanup::Removed(0)
        ));
        assert_eq!(aggregate(&directory, &schema()).unwrap().files, 1);
        drop(live);
        fs::remove_dir_all(directory).unwrap();
    }

    /// The exemplar lines of an OpenMetrics exposition, sorted.
    /// The requests-in-flight line of `aggregate`'s exposition, if it has one.
    fn in_flight(aggregate: &Aggregate) -> Option<String> {
        text(aggregate)
            .into_iter()
            .find(|line| line.starts_with("ractogateway_requests_in_flight{"))
    }

    #[test]
    fn requests_in_flight_count_while_their_process_lives() {
        let directory = directory("in-flight");
        for level in [3, 2] {
            // Processes that died with calls in flight.
            let gone = file_store(&directory);
            gone.add_in_flight(&GPT_4O, level);
            record(&gone, "gpt-4o", 0.5);
        }
        let live = file_store(&directory);
        for delta in [1, 1, -1] {
            live.add_in_flight(&GPT_4O, delta);
        }
        // Levels of one label set in two files, one below zero for a moment.
        let other = file_store(&directory);
        other.add_in_flight(&GPT_4O, -1);
        other.add_in_flight(&GPT_4O, 2);
        let expected = r#"ractogateway_requests_in_flight{model="gpt-4o",operation="chat",provider="openai"} 2.0"#;
        let sum = aggregate(&directory, &schema()).unwrap();
        assert_eq!(in_flight(&sum).as_deref(), Some(expected));
        assert!(text(&sum).contains(&"# TYPE ractogateway_requests_in_flight gauge".to_owned()));
        assert!(!text(&sum)
            .iter()
            .any(|line| line.contains("in_flight_created")));
        let compaction = compact(&directory, WAIT).unwrap();
        assert_eq!(compaction.folded, 2);
        let after = aggregate(&directory, &schema()).unwrap();
        assert_eq!(in_flight(&after).as_deref(), Some(expected));
        assert!(requests(&directory) >= 2.0);
        drop(live);
        drop(other);
        let none = aggregate(&directory, &schema()).unwrap();
        assert_eq!(
            in_flight(&none).as_deref(),
            Some(
                r#"ractogateway_requests_in_flight{model="gpt-4o",operation="chat",provider="openai"} 0.0"#
            )
        );
    }

    fn exemplar_lines(aggregate: &Aggregate) -> Vec<String> {
        let mut encoder = TextEncoder::new(Format::OpenMetrics);
        aggregate.visit(false, &mut encoder);
        let text = encoder.into_text();
        lines(text)
            .into_iter()
            .filter(|line| line.contains(" # {"))
            .collect()
    }

    #[test]
    fn exemplars_in_files_reach_every_scrape_and_survive_compaction() {
        let directory = directory("exemplars");
        let labels = GPT_4O;
        let trace = |id: &str| vec![("trace_id".to_owned(), id.to_owned())];
        let exemplify = |store: &Store, latency_s: f64, id: &str, at: f64| {
            let values = RequestValues::new(latency_s, 10, 2);
            let entry = store.request_entry(&labels);
            store.record_request_on(entry, &values);
            store.attach_exemplar(entry, &values, &trace(id), at);
        };
        // Two processes: the newer exemplar of a bucket wins, whichever file it is in.
        let first = file_store(&directory);
        exemplify(&first, 0.3, "a1", 100.0);
        exemplify(&first, 2.0, "a2", 300.0);
        let second = file_store(&directory);
        exemplify(&second, 0.4, "b1", 200.0);
        exemplify(&second, 1.5, "b2", 150.0);
        // Longer labels move the bucket to a larger slot of the same file.
        let long = "f".repeat(120);
        exemplify(&second, 20.0, "short", 50.0);
        exemplify(&second, 20.0, &long, 60.0);
        let before = exemplar_lines(&aggregate(&directory, &schema()).unwrap());
        let expected = [
            r#"ractogateway_request_duration_seconds_bucket{le="0.5",model="gpt-4o",operation="chat",provider="openai"} 2.0 # {trace_id="b1"} 0.4 200.0"#.to_owned(),
            r#"ractogateway_request_duration_seconds_bucket{le="2.0",model="gpt-4o",operation="chat",provider="openai"} 4.0 # {trace_id="a2"} 2.0 300.0"#.to_owned(),
            format!(r#"ractogateway_request_duration_seconds_bucket{{le="30.0",model="gpt-4o",operation="chat",provider="openai"}} 6.0 # {{trace_id="{long}"}} 20.0 60.0"#),
        ];
        assert_eq!(before, expected);
        // Compaction folds dead files with their exemplars.
        drop((first, second));
        let compaction = compact(&directory, WAIT).unwrap();
        assert_eq!(compaction.folded, 2);
        let after = aggregate(&directory, &schema()).unwrap();
        assert_eq!((after.files, exemplar_lines(&after)), (1, before));
        fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn a_scrape_never_sees_an_exemplar_half_written() {
        let directory = directory("exemplar-race");
        let store = Arc::new(file_store(&directory));
        let labels = GPT_4O;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
            std::thread::spawn(move || {
                let entry = store.request_entry(&labels);
                let mut written = 0_u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && written < 5_000_000 {
                    written += 1;
                    // The trace id says the value; its length varies too.
                    let value = 0.001 * f64::from(written % 400);
                    let values = RequestValues::new(value, 1, 1);
                    let id = format!("{value}-{}", "x".repeat((written % 90) as usize));
                    let trace = [("trace_id".to_owned(), id)];
                    store.attach_exemplar(entry, &values, &trace, f64::from(written));
                }
            })
        };
        let started = std::time::Instant::now();
        let mut seen = 0;
        for _ in 0..300 {
            if started.elapsed() > Duration::from_secs(20) {
                break;
            }
            let sum = aggregate(&directory, &schema()).unwrap();
            assert!(sum.skipped.is_empty(), "{:?}", sum.skipped);
            for line in exemplar_lines(&sum) {
                let (_, exemplar) = line.split_once(" # {trace_id=\"").unwrap();
                let (id, rest) = exemplar.split_once('"').unwrap();
                let value = rest.split_whitespace().nth(1).unwrap();
                let named: f64 = id.split('-').next().unwrap().parse().unwrap();
                assert_eq!(named, value.parse::<f64>().unwrap(), "{line}");
                seen += 1;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
        assert!(seen > 0);
        drop(store);
        fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn an_exemplar_record_that_points_nowhere_makes_its_file_damaged() {
        let directory = directory("exemplar-damaged");
        let store = file_store(&directory);
        let labels = GPT_4O;
        let values = RequestValues::new(0.3, 1, 1);
        let entry = store.request_entry(&labels);
        store.record_request_on(entry, &values);
        store.attach_exemplar(
            entry,
            &values,
            &[("trace_id".to_owned(), "a".to_owned())],
            1.0,
        );
        let path = store.arena_file_path().unwrap();
        let mut bytes = fs::read(&path).unwrap();
        // Walk the records to the exemplar's (family byte 0xfc) and aim it elsewhere.
        let mut at = 64;
        while bytes[at + 4] != 0xfc {
            at += u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        }
        bytes[at + 16..at + 24].copy_from_slice(&8_u64.to_le_bytes());
        drop(store);
        fs::write(&path, bytes).unwrap();
        let sum = aggregate(&directory, &schema()).unwrap();
        assert_eq!(sum.files, 0);
        assert!(
            sum.skipped[0].1.starts_with("torn record"),
            "{:?}",
            sum.skipped
        );
        fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn a_torn_file_is_skipped_and_reported() {
        let directory = directory("torn");
        record(&file_store(&directory), "gpt-4o", 0.5);
        fs::write(
            directory.join("gwm-1-bad.gwm"),
            b"GWMFILE1 but nothing after",
        )
        .unwrap();
        let sum = aggregate(&directory, &schema()).unwrap();
        assert_eq!(sum.files, 1);
        assert_eq!(sum.skipped.len(), 1);
        let hits = "ractogateway_cache_hits_total{cache_type=\"exact\"} 1.0".to_owned();
        assert!(text(&sum).contains(&hits));
        fs::remove_dir_all(directory).unwrap();
    }

    fn requests(directory: &Path) -> f64 {
        let mut total = 0.0;
        for line in text(&aggregate(directory, &schema()).unwrap()) {
            if let Some(rest) = line.strip_prefix("ractogateway_requests_total{") {
                total += rest.rsplit(' ').next().unwrap().parse::<f64>().unwrap();
            }
        }
        total
    }

    fn dead_files(directory: &Path, count: usize) {
        for index in 0..count {
            record(&file_store(directory), "gpt-4o", 0.1 * index as f64);
        }
    }

    #[test]
    fn a_compaction_whose_removals_fail_still_counts_every_file_once() {
        let directory = directory("removal");
        dead_files(&directory, 4);
        assert_eq!(requests(&directory), 4.0);
        let failing = |_: &Path| Err(io::Error::other("refused"));
        let first = compact_with(&directory, WAIT, failing).unwrap();
        assert_eq!((first.folded, first.not_removed.len()), (4, 4));
        assert_eq!(requests(&directory), 4.0);
        // The next compaction (again refused) folds the folded file once more,
        // taking over the names it absorbed.
        dead_files(&directory, 2);
        let second = compact_with(&directory, WAIT, failing).unwrap();
        assert_eq!(second.folded, 3);
        assert_eq!(requests(&directory), 6.0);
        // Once removals work, what was absorbed goes and the sum stays.
        let third = compact(&directory, WAIT).unwrap();
        assert!(third.not_removed.is_empty());
        assert_eq!(requests(&directory), 6.0);
        assert_eq!(list_files(&directory).unwrap().len(), 1);
        fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn files_left_by_a_killed_compaction_are_counted_once_and_tidied() {
        let directory = directory("killed");
        dead_files(&directory, 3);
        let sources = list_files(&directory).unwrap();
        // A compaction killed after publishing: the folded file and its sources.
        let mut sum = Aggregate::new(schema());
        for path in &sources {
            let contents = read_file(path, &schema()).unwrap();
            sum.add_file(path, &contents.series, &contents.exemplars);
        }
        sum.write_to(&directory, sources.iter().map(|path| file_name(path)))
            .unwrap();
        // And one killed while writing: a hidden file nobody holds.
        let abandoned = SharedFile::create_unpublished(&directory, &schema()).unwrap();
        drop(abandoned);
        assert_eq!(requests(&directory), 3.0);
        let done = compact(&directory, WAIT).unwrap();
        assert_eq!(done.folded, 0);
        assert_eq!(requests(&directory), 3.0);
        assert_eq!(list_files(&directory).unwrap().len(), 1);
        assert!(list_temporary_files(&directory).unwrap().is_empty());
        fs::remove_dir_all(directory).unwrap();
    }
}
