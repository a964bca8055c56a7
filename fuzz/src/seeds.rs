//! Writes the fuzz targets' starting inputs: valid snapshots, multi-process
//! files of both layouts and exposition text, each a target's corpus file.
//!
//!     seeds CORPUS_ROOT   # CORPUS_ROOT/<target>/<name>

use std::fs;
use std::path::Path;

use gateway_metrics::cells::arena::CellArena;
use gateway_metrics::cells::counter::{Coding, Recording, Writers};
use gateway_metrics::formats::snapshot;
use gateway_metrics::formats::text::Format;
use gateway_metrics::multiprocess::admission::{SharedAdmission, ADMISSION_FILE};
use gateway_metrics::multiprocess::own_file::SharedFile;
use gateway_metrics::multiprocess::prometheus_file::PrometheusFiles;
use gateway_metrics::store::admission::Admission;
use gateway_metrics::store::ReadMode;
use gateway_metrics_fuzz::{recorded_store, schemas, scratch};

fn write(root: &Path, target: &str, name: &str, bytes: &[u8]) {
    let folder = root.join(target);
    fs::create_dir_all(&folder).unwrap();
    fs::write(folder.join(name), bytes).unwrap();
}

fn main() {
    let root = std::env::args().nth(1).expect("usage: seeds CORPUS_ROOT");
    let root = Path::new(&root);
    let folder = scratch("seeds-admission");
    let admission = SharedAdmission::open(&folder).unwrap();
    for (family, key) in [
        (0, &["openai", "gpt-4o"][..]),
        (2, &["x", "é"][..]),
        (2, &[""][..]),
    ] {
        admission.admit(family, key, 10);
    }
    write(
        root,
        "admission_read",
        "three",
        &fs::read(folder.join(ADMISSION_FILE)).unwrap(),
    );
    fs::remove_dir_all(&folder).unwrap();
    // Each type of array the Arrow target builds, from bytes counting up.
    for pick in 0..16_u8 {
        let mut bytes = vec![pick, 20, 3, 1, 2, 7];
        bytes.extend((0..=255_u8).cycle().take(600));
        write(root, "arrow_read", &format!("type-{pick}"), &bytes);
    }
    for (index, schema) in schemas().into_iter().enumerate() {
        let store = recorded_store(schema.clone(), CellArena::heap(), Recording::CONCURRENT);
        // The snapshot target appends the checksum itself: its input is the body.
        let taken = snapshot::take(&store, ReadMode::Keep);
        write(
            root,
            "snapshot_merge",
            &format!("schema-{index}"),
            &taken[..taken.len() - 4],
        );
        let text = gateway_metrics_fuzz::rendered(&store, Format::Text, true);
        write(
            root,
            "gzip_round_trip",
            &format!("exposition-{index}"),
            text.as_bytes(),
        );

        let folder = scratch(&format!("seeds-{index}"));
        let file = SharedFile::create(&folder, &schema).unwrap();
        let path = file.path().to_path_buf();
        let store = recorded_store(
            schema.clone(),
            CellArena::shared(Box::new(file)),
            Recording::CONCURRENT,
        );
        drop(store);
        // Up to the published length (a u64 at byte 8): the rest is room to grow.
        let bytes = fs::read(&path).unwrap();
        let used = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
        write(
            root,
            "own_file_read",
            &format!("schema-{index}"),
            &bytes[..used],
        );

        if schema.native().is_some() {
            // prometheus_client's files refuse native histograms.
            fs::remove_dir_all(&folder).unwrap();
            continue;
        }
        let files = PrometheusFiles::create(&folder, schema.clone()).unwrap();
        let recording = Recording {
            writers: Writers::Concurrent,
            coding: Coding::Float,
        };
        let store = recorded_store(
            schema.clone(),
            CellArena::shared(Box::new(files)),
            recording,
        );
        drop(store);
        for entry in fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if ["counter_", "histogram_", "gauge_"]
                .iter()
                .any(|kind| name.starts_with(kind))
            {
                // Up to the used length (a u32 at byte 0).
                let bytes = fs::read(&path).unwrap();
                let used = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
                let kind = name.split('_').next().unwrap_or("file");
                write(
                    root,
                    "prometheus_file_read",
                    &format!("{index}-{kind}"),
                    &bytes[..used],
                );
            }
        }
        fs::remove_dir_all(&folder).unwrap();
    }
}
