//! The watched folder: which files in it are event CSVs, when they change (notify), and
//! when a change has settled enough to fold.
//!
//! Watched: `*.csv` directly in the folder (or below it, when recursive). Ignored:
//! dot-files and names ending in `.tmp`, `.part`, `.partial`, `.crdownload` or `~`.
//! Only regular files are data (see `regular`); other entries with a CSV name are listed
//! as skipped, with the reason.
//!
//! Events only wake the daemon: what changed is always found by comparing the folder with
//! the registry, so lost, duplicated or coalesced events cannot cause wrong state.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use notify::{EventKind, RecursiveMode, Watcher};

use crate::error::{Error, Result};
use crate::ingest::changes::Seen;
use crate::ingest::regular::{classify, Skip};

/// Whether a file name is one the folder's CSVs may have.
pub fn is_candidate(name: &str) -> bool {
    const IGNORED: [&str; 5] = [".tmp", ".part", ".partial", ".crdownload", "~"];
    !name.starts_with('.')
        && name.to_ascii_lowercase().ends_with(".csv")
        && !IGNORED.iter().any(|s| name.ends_with(s))
}

/// The entries of a folder with a CSV name: the regular files to fold (symlinks
/// followed), and the rest, never opened, with why.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Sorted by path.
    pub files: Vec<Seen>,
    /// Sorted by path.
    pub skipped: Vec<(PathBuf, Skip)>,
}

/// The folder's entries with a CSV name, stat'ed (entries vanishing meanwhile are left
/// out). Fails only when `dir` itself cannot be listed.
pub fn scan(dir: &Path, recursive: bool) -> Result<Listing> {
    let mut out = Listing::default();
    scan_into(dir, recursive, &mut out)?;
    out.files.sort_by(|a, b| a.path.cmp(&b.path));
    out.skipped.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The event CSV files in `dir` (regular files only), sorted by path.
pub fn scan_folder(dir: &Path, recursive: bool) -> Result<Vec<PathBuf>> {
    Ok(scan(dir, recursive)?
        .files
        .into_iter()
        .map(|s| s.path)
        .collect())
}

fn scan_into(dir: &Path, recursive: bool, out: &mut Listing) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Ok(ft) = entry.file_type() else { continue };
        let path = entry.path();
        if ft.is_dir() && recursive && !name.starts_with('.') {
            if let Err(e) = scan_into(&path, recursive, out) {
                out.skipped
                    .push((path.clone(), Skip::Unlistable(e.to_string())));
            }
        }
        if is_candidate(name) {
            match classify(&path) {
                Some(Ok(seen)) => out.files.push(seen),
                Some(Err(skip)) => out.skipped.push((path, skip)),
                None => {}
            }
        }
    }
    Ok(())
}

/// A notify watch that calls `wake` on changes (reads are ignored), with whether the
/// change was to the watched folder itself (removed, renamed, its attributes): then the
/// watch may be lost and must be checked. Dropping it stops watching.
pub struct FolderWatcher {
    _watcher: notify::RecommendedWatcher,
}

impl FolderWatcher {
    /// Watches everything under `dir`.
    pub fn start(
        dir: &Path,
        recursive: bool,
        wake: impl Fn(bool) + Send + 'static,
    ) -> Result<FolderWatcher> {
        let mode = if recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        FolderWatcher::watch(dir, mode, dir, false, wake)
    }

    /// Watches the parent of `dir` for `dir` itself being created, removed or renamed,
    /// which a watch on `dir` cannot see.
    pub fn start_parent(dir: &Path, wake: impl Fn(bool) + Send + 'static) -> Result<FolderWatcher> {
        let parent = dir.parent().unwrap_or(dir);
        FolderWatcher::watch(parent, RecursiveMode::NonRecursive, dir, true, wake)
    }

    /// Watches `path`; events about `dir` wake with `true`, others (unless `only_dir`)
    /// with `false`.
    fn watch(
        path: &Path,
        mode: RecursiveMode,
        dir: &Path,
        only_dir: bool,
        wake: impl Fn(bool) + Send + 'static,
    ) -> Result<FolderWatcher> {
        let dir = dir.to_path_buf();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                match event {
                    Ok(e) if matches!(e.kind, EventKind::Access(_)) => {}
                    Ok(e) if e.paths.contains(&dir) => wake(true),
                    Ok(_) if only_dir => {}
                    Ok(_) => wake(false),
                    // An error may mean lost events: wake, and let the scan find out.
                    Err(_) => wake(true),
                }
            })
            .map_err(|e| watch_error(path, e))?;
        watcher
            .watch(path, mode)
            .map_err(|e| watch_error(path, e))?;
        Ok(FolderWatcher { _watcher: watcher })
    }
}

fn watch_error(dir: &Path, e: notify::Error) -> Error {
    Error::io(dir, std::io::Error::other(format!("cannot watch: {e}")))
}

/// Until when an unterminated last line of a file last modified at `mtime_ns` is held
/// back: the writer may still finish it. Past that, the line is folded as it is.
pub fn line_held_until(mtime_ns: i64, hold: Duration) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(mtime_ns.max(0) as u64) + hold
}

/// Tells settled changes from files still being written.
///
/// A changed file is settled once its size and mtime have stayed the same for the settle
/// interval. A file first seen with an mtime already older than the interval (moved in,
/// or changed while the daemon was down) is settled at once.
#[derive(Debug)]
pub struct Settle {
    interval: Duration,
    observed: HashMap<PathBuf, Observation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Observation {
    size: u64,
    mtime_ns: i64,
    since: Instant,
}

impl Settle {
    pub fn new(interval: Duration) -> Settle {
        Settle {
            interval,
            observed: HashMap::new(),
        }
    }

    /// Of the `changed` files, those not settled at `now`, and when the first of them
    /// will be (if it stays as it is). Forgets files no longer changed.
    pub fn unsettled(
        &mut self,
        changed: &[&Seen],
        now: Instant,
    ) -> (HashSet<PathBuf>, Option<Instant>) {
        let wall_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let interval = self.interval;
        let mut keep = HashMap::with_capacity(changed.len());
        let mut unsettled = HashSet::new();
        let mut next: Option<Instant> = None;
        for s in changed {
            let old_enough = wall_ns.saturating_sub(s.mtime_ns) >= interval.as_nanos() as i64;
            let since = match self.observed.get(&s.path) {
                Some(o) if o.size == s.size && o.mtime_ns == s.mtime_ns => o.since,
                Some(_) => now,
                None if old_enough => now.checked_sub(interval).unwrap_or(now),
                None => now,
            };
            let ready = since + interval;
            if ready > now {
                unsettled.insert(s.path.clone());
                next = Some(next.map_or(ready, |n| n.min(ready)));
            }
            keep.insert(
                s.path.clone(),
                Observation {
                    size: s.size,
                    mtime_ns: s.mtime_ns,
                    since,
                },
            );
        }
        self.observed = keep;
        (unsettled, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(path: &str, size: u64, mtime_ns: i64) -> Seen {
        Seen {
            path: PathBuf::from(path),
            size,
            mtime_ns,
            inode: 1,
            ctime_ns: mtime_ns,
        }
    }

    fn now_ns() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64
    }

    #[test]
    fn a_change_settles_after_the_interval_unless_it_changes_again() {
        let mut settle = Settle::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let a = seen("a.csv", 10, now_ns());
        let (u, next) = settle.unsettled(&[&a], t0);
        assert!(u.contains(&a.path));
        assert_eq!(next, Some(t0 + Duration::from_secs(1)));
        // Grown half a second later: the clock starts again.
        let a2 = seen("a.csv", 20, a.mtime_ns + 1);
        let t1 = t0 + Duration::from_millis(500);
        let (u, next) = settle.unsettled(&[&a2], t1);
        assert!(u.contains(&a2.path));
        assert_eq!(next, Some(t1 + Duration::from_secs(1)));
        let (u, next) = settle.unsettled(&[&a2], t1 + Duration::from_secs(1));
        assert!(u.is_empty());
        assert_eq!(next, None);
    }

    #[test]
    fn a_file_moved_in_with_an_old_mtime_is_settled_at_once() {
        let mut settle = Settle::new(Duration::from_secs(1));
        let old = seen("b.csv", 10, now_ns() - 5_000_000_000);
        let (u, _) = settle.unsettled(&[&old], Instant::now());
        assert!(u.is_empty());
    }

    #[test]
    fn candidates() {
        assert!(is_candidate("events-001.csv"));
        assert!(is_candidate("A.CSV"));
        assert!(!is_candidate(".hidden.csv"));
        assert!(!is_candidate("x.csv.tmp"));
        assert!(!is_candidate("x.csv.part"));
        assert!(!is_candidate("x.csv~"));
        assert!(!is_candidate("x.txt"));
    }
}
