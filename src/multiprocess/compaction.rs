//! Keeping a directory small: compaction folds the files of processes that
//! are gone into one file (written whole under a hidden name, published by one
//! rename, the absorbed files removed after), and cleanup removes them when no
//! process is left to read them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::multiprocess::admission::ADMISSION_FILE;
use crate::multiprocess::aggregate::{Aggregate, DirectoryReading};
use crate::multiprocess::files::{
    file_name, held_by_this_process, is_dead, list_files, list_temporary_files, ReadError,
};
use crate::multiprocess::lock::{Access, DirectoryLock};
use crate::multiprocess::own_file::declared_schema;
use crate::schema::family::Schema;

/// The schemas the directory's files were written with, each once (the
/// reference's when no file has one this reader can build).
fn directory_schemas(directory: &Path) -> io::Result<Vec<Schema>> {
    let mut schemas: Vec<Schema> = Vec::new();
    for path in list_files(directory)? {
        if let Ok(schema) = declared_schema(&path) {
            if !schemas.contains(&schema) {
                schemas.push(schema);
            }
        }
    }
    if schemas.is_empty() {
        schemas.push(Schema::default());
    }
    Ok(schemas)
}

/// What a compaction did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Compaction {
    /// Files of processes that were gone, now folded.
    pub folded: usize,
    /// Damaged files of processes that were gone, removed without being folded.
    pub discarded: usize,
    /// The file they were folded into, if any.
    pub into: Option<PathBuf>,
    /// Files that could not be removed, and why. Their values are still counted
    /// once: a published file lists them, and the next compaction retries.
    pub not_removed: Vec<(PathBuf, String)>,
}

/// Removes each of `paths`, noting the ones that stay.
fn remove_all<'p>(
    paths: impl IntoIterator<Item = &'p PathBuf>,
    remove: &mut impl FnMut(&Path) -> io::Result<()>,
    not_removed: &mut Vec<(PathBuf, String)>,
) -> usize {
    let mut removed = 0;
    for path in paths {
        match remove(path) {
            Ok(()) => removed += 1,
            Err(error) if error.kind() == io::ErrorKind::NotFound => removed += 1,
            Err(error) => not_removed.push((path.clone(), error.to_string())),
        }
    }
    removed
}

/// Removes hidden files left by writers that were killed before publishing.
fn remove_abandoned(
    directory: &Path,
    remove: &mut impl FnMut(&Path) -> io::Result<()>,
    not_removed: &mut Vec<(PathBuf, String)>,
) -> io::Result<()> {
    let abandoned: Vec<PathBuf> = list_temporary_files(directory)?
        .into_iter()
        .filter(|path| is_dead(path) == Ok(true))
        .collect();
    remove_all(&abandoned, remove, not_removed);
    Ok(())
}

/// Folds the files of processes that are gone into one new file.
///
/// Safe while workers write (their files are locked, so they are left alone),
/// while other processes scrape (they wait for the directory lock), and if it
/// is killed at any point (see the module documentation). Waits at most `wait`
/// for the directory lock.
pub fn compact(directory: &Path, wait: Duration) -> io::Result<Compaction> {
    compact_with(directory, wait, |path| fs::remove_file(path))
}

/// [`compact`] with the file removal given, so that its failures can be tested.
pub fn compact_with(
    directory: &Path,
    wait: Duration,
    mut remove: impl FnMut(&Path) -> io::Result<()>,
) -> io::Result<Compaction> {
    let _exclusive = DirectoryLock::take(directory, Access::Exclusive, wait)?;
    let mut done = Compaction::default();
    remove_abandoned(directory, &mut remove, &mut done.not_removed)?;
    // Files of one schema fold together; a directory normally holds one.
    for schema in directory_schemas(directory)? {
        compact_schema(directory, &Arc::new(schema), &mut remove, &mut done)?;
    }
    Ok(done)
}

/// Folds the dead files of `schema` (files of other schemas are left alone).
fn compact_schema(
    directory: &Path,
    schema: &Arc<Schema>,
    remove: &mut impl FnMut(&Path) -> io::Result<()>,
    done: &mut Compaction,
) -> io::Result<()> {
    let reading = DirectoryReading::read(directory, schema)?;
    let absorbed = reading.absorbed();
    let dead = |path: &Path| is_dead(path) == Ok(true);
    // Files a published file already holds: only their removal is left to do.
    let mut redundant = Vec::new();
    let mut foldable = Vec::new();
    for (path, contents) in &reading.files {
        if !dead(path) {
            continue;
        }
        if absorbed.contains(file_name(path)) {
            redundant.push(path.clone());
        } else {
            foldable.push((path, contents));
        }
    }
    let damaged: Vec<PathBuf> = reading
        .unreadable
        .iter()
        .filter(|(path, error)| matches!(error, ReadError::Damaged(_)) && dead(path))
        .map(|(path, _)| path.clone())
        .collect();
    if foldable.len() >= 2 {
        let mut sum = Aggregate::new(Arc::clone(schema));
        for (path, contents) in &foldable {
            sum.add_file(path, &contents.series, &contents.exemplars);
        }
        // Every name the folded files absorbed themselves, should one still be
        // there, passes to the new file: it alone will list them.
        let mut names: Vec<&str> = Vec::new();
        for (path, contents) in &foldable {
            names.push(file_name(path));
            let still_listed = contents.absorbed.iter().map(String::as_str);
            names.extend(still_listed.filter(|name| reading.listed.contains(*name)));
        }
        done.into = Some(sum.write_to(directory, names)?);
        done.folded += foldable.len();
        let folded: Vec<PathBuf> = foldable.iter().map(|(path, _)| (*path).clone()).collect();
        remove_all(&folded, remove, &mut done.not_removed);
    }
    remove_all(&redundant, remove, &mut done.not_removed);
    done.discarded += remove_all(&damaged, remove, &mut done.not_removed);
    Ok(())
}

/// A live process still holds a file of the directory.
#[derive(Debug)]
pub struct LiveFile {
    /// The process that wrote the file, when the file says.
    pub pid: Option<u64>,
    /// The file.
    pub path: PathBuf,
}

/// What [`cleanup`] found.
#[derive(Debug)]
pub enum Cleanup {
    /// The number of files removed.
    Removed(usize),
    /// Nothing was removed: a live process holds this file.
    Refused(LiveFile),
}

/// Removes the files of every process that is gone: the start of a new job.
///
/// Unless `force` is set, removes nothing when another live process still
/// holds a file of the directory: removing the files of dead workers under a
/// running server makes its totals fall. The calling process's own files are
/// kept, never in the way. Waits at most `wait` for the directory lock.
pub fn cleanup(directory: &Path, force: bool, wait: Duration) -> io::Result<Cleanup> {
    let _exclusive = DirectoryLock::take(directory, Access::Exclusive, wait)?;
    let mut not_removed = Vec::new();
    let mut remove = |path: &Path| fs::remove_file(path);
    // Which files absorbed which is read in the first schema; every dead file
    // goes, whatever its schema.
    let schemas = directory_schemas(directory)?;
    let reading = DirectoryReading::read(directory, &schemas[0])?;
    if !force {
        let readable = reading
            .files
            .iter()
            .map(|(path, contents)| (path, Some(contents.pid)));
        let unreadable = reading.unreadable.iter().filter_map(|(path, error)| {
            // The pid in the name of a file of another schema or a damaged one.
            let from_name = || {
                let name = file_name(path).strip_prefix("gwm-")?;
                name.split('-').next()?.parse().ok()
            };
            matches!(error, ReadError::Damaged(_) | ReadError::OtherSchema(_))
                .then(|| (path, from_name()))
        });
        // This process's own file is live but never in the way: cleanup keeps
        // it and removes the rest.
        let live = readable
            .chain(unreadable)
            .find(|(path, pid)| is_dead(path) == Ok(false) && !held_by_this_process(path, *pid));
        if let Some((path, pid)) = live {
            return Ok(Cleanup::Refused(LiveFile {
                pid,
                path: path.clone(),
            }));
        }
    }
    remove_abandoned(directory, &mut remove, &mut not_removed)?;
    let absorbed = reading.absorbed();
    let damaged = reading
        .unreadable
        .iter()
        .filter(|(_, error)| matches!(error, ReadError::Damaged(_) | ReadError::OtherSchema(_)))
        .map(|(path, _)| path);
    let dead: Vec<&PathBuf> = reading
        .files
        .iter()
        .map(|(path, _)| path)
        .chain(damaged)
        .filter(|path| is_dead(path) == Ok(true))
        .collect();
    // Absorbed files go first: should a removal fail or the process be killed
    // midway, the files left never count a value twice.
    let (first, then): (Vec<&PathBuf>, Vec<&PathBuf>) = dead
        .into_iter()
        .partition(|path| absorbed.contains(file_name(path)));
    let removed = remove_all(first.into_iter().chain(then), &mut remove, &mut not_removed);
    // A new run starts with no label set admitted, unless a live process of
    // the old one still records (only with `force`).
    let live_left = reading.files.iter().any(|(path, contents)| {
        is_dead(path) == Ok(false) && !held_by_this_process(path, Some(contents.pid))
    });
    if !live_left {
        if let Err(error) = fs::remove_file(directory.join(ADMISSION_FILE)) {
            if error.kind() != io::ErrorKind::NotFound {
                not_removed.push((directory.join(ADMISSION_FILE), error.to_string()));
            }
        }
    }
    match not_removed.first() {
        None => Ok(Cleanup::Removed(removed)),
        Some((path, error)) => Err(io::Error::other(format!(
            "removed {removed} files but not {}: {error}",
            path.display()
        ))),
    }
}
