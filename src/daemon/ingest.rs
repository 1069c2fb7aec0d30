//! The ingest loop: one thread that keeps the engine up to date with the watched folder.
//!
//! It wakes on folder events (notify), on `sync` requests, when a pending file may have
//! settled, and on a slow periodic rescan. Each pass compares the folder with the registry,
//! holds back files still being written, files whose unterminated last line waits for its
//! writer, and files that failed and have not changed since (a file that failed on an I/O
//! error is also tried again after a back-off), and hands the rest to
//! [`Engine::update_from`]. What the loop knows about them is kept in [`Progress`] for
//! `status` and `files`.
//!
//! The watched folder itself is checked at every pass: removed, it is reported missing and
//! the state kept as it was; recreated or renamed back, it is watched again (a watch on
//! its parent notices at once). A panic in the loop, or the state folder removed under
//! it, ends it and is reported to the daemon (see [`Ingest::died`]), which exits so that
//! the service manager restarts it.
//!
//! An update that fails on the state folder (a full disk, an I/O error) is kept as the
//! [`Fault`] for `status` until one succeeds; the loop tries again, backing off, and
//! while the fault lasts each try runs an update even with nothing new to fold.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender};

use crate::engine::{Engine, Layout, LayoutReport, UpdateReport};
use crate::error::{Error, Result};
use crate::ingest::changes::Seen;
use crate::ingest::regular::Skip;
use crate::ingest::watch::{line_held_until, scan, FolderWatcher, Settle};

/// How the loop watches.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// The watched folder.
    pub watch: PathBuf,
    /// How long a changed file's size and mtime must stay the same before it is folded.
    pub settle: Duration,
    /// The safety-net rescan interval, for events the watcher missed.
    pub rescan: Duration,
}

/// A file that could not be folded, as it was when it failed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Tried again once any of its size, mtime, ctime (chmod, chown) or inode changes.
    pub seen: Seen,
    pub error: String,
    /// Failures in a row.
    pub attempts: u32,
    /// When it is tried again unchanged (I/O errors only; back-off doubling per attempt).
    pub retry_at: Option<Instant>,
}

/// The watched folder's state.
#[derive(Debug, Clone, Default)]
pub struct WatchState {
    /// Since when the folder is missing (or not a folder), if it is.
    pub missing_since: Option<SystemTime>,
    /// How often the watch was established again (folder recreated or renamed back).
    pub re_established: u32,
    /// When it last was.
    pub last_re_established: Option<SystemTime>,
}

/// A fault of the state folder (a full disk, an I/O error in DuckDB, the store, a
/// partition or the manifest) that failed the last update; cleared by one that succeeds.
#[derive(Debug, Clone)]
pub struct Fault {
    pub error: String,
    pub since: SystemTime,
    /// Passes failed in a row.
    pub attempts: u32,
    /// When the next pass tries again.
    pub retry_at: Option<SystemTime>,
}

/// What the loop knows beyond the registry.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Changed files not folded yet (still settling, or being folded), with their size.
    pub pending: BTreeMap<PathBuf, u64>,
    /// Files whose unterminated last line is held back, as seen then; folded once the
    /// line ends or the file is quiet for the engine's `line_hold`.
    pub held: BTreeMap<PathBuf, Seen>,
    /// Files whose last fold failed; retried when they change.
    pub failed: BTreeMap<PathBuf, Failure>,
    /// Entries with a CSV name that are not regular files, never read.
    pub skipped: BTreeMap<PathBuf, Skip>,
    pub watch: WatchState,
    /// When a pass last changed the published state.
    pub last_change: Option<SystemTime>,
    /// The last error of a whole pass (not of one file), cleared by a good pass.
    pub last_error: Option<String>,
    /// The state folder's fault, while updates fail on it.
    pub fault: Option<Fault>,
}

enum Request {
    /// Reply with the generation once every change seen is folded and published.
    Sync(tokio::sync::oneshot::Sender<Result<u64, String>>),
    /// Move to this layout (between passes), and reply with what that did.
    Relayout(
        Layout,
        tokio::sync::oneshot::Sender<Result<LayoutReport, String>>,
    ),
    Stop,
}

/// A running ingest loop; a cheap-to-clone handle to it is [`IngestHandle`].
pub struct Ingest {
    handle: IngestHandle,
    watch: PathBuf,
    engine: Arc<Engine>,
    thread: Option<JoinHandle<()>>,
    died: Option<tokio::sync::oneshot::Receiver<String>>,
}

/// Requests to the ingest loop and its progress, shared with the server.
#[derive(Clone)]
pub struct IngestHandle {
    requests: Sender<Request>,
    progress: Arc<Mutex<Progress>>,
}

impl IngestHandle {
    /// Asks for a rescan; the answer comes once every change it sees is published.
    pub fn sync(&self) -> tokio::sync::oneshot::Receiver<Result<u64, String>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Err(e) = self.requests.send(Request::Sync(tx)) {
            if let Request::Sync(tx) = e.into_inner() {
                let _ = tx.send(Err("ingest has stopped".into()));
            }
        }
        rx
    }

    /// Asks for a layout change, made between two passes (updates wait for it); the
    /// answer comes once the new layout is published, or with why it was not.
    pub fn relayout(
        &self,
        layout: Layout,
    ) -> tokio::sync::oneshot::Receiver<Result<LayoutReport, String>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Err(e) = self.requests.send(Request::Relayout(layout, tx)) {
            if let Request::Relayout(_, tx) = e.into_inner() {
                let _ = tx.send(Err("ingest has stopped".into()));
            }
        }
        rx
    }

    pub fn progress(&self) -> Progress {
        self.progress.lock().expect("progress lock").clone()
    }
}

impl Ingest {
    /// Starts watching `opts.watch` (created if missing) and the loop's thread. The first
    /// pass runs at once: it catches whatever changed while no daemon ran.
    pub fn start(engine: Arc<Engine>, opts: IngestOptions) -> Result<Ingest> {
        std::fs::create_dir_all(&opts.watch).map_err(|e| Error::io(&opts.watch, e))?;
        let watch = opts
            .watch
            .canonicalize()
            .map_err(|e| Error::io(&opts.watch, e))?;
        let (wake_tx, wake_rx) = bounded::<()>(1);
        let recheck = Arc::new(AtomicBool::new(false));
        let waker = Waker {
            wake: wake_tx,
            recheck: recheck.clone(),
        };
        // Best effort: without it, a recreated folder is found by the periodic rescan.
        let parent = FolderWatcher::start_parent(&watch, waker.callback())
            .map_err(|e| tracing::warn!("not watching the folder's parent: {e}"))
            .ok();
        let state = engine.state().to_path_buf();
        let state_id = std::fs::metadata(&state)
            .map(|m| (m.dev(), m.ino()))
            .map_err(|e| Error::io(&state, e))?;
        let (requests, requests_rx) = unbounded();
        let progress = Arc::new(Mutex::new(Progress::default()));
        let mut pass = Loop {
            engine: engine.clone(),
            opts: IngestOptions {
                watch: watch.clone(),
                ..opts
            },
            progress: progress.clone(),
            settle: Settle::new(opts.settle),
            updated: false,
            failures: 0,
            waker,
            recheck,
            watcher: None,
            watched: None,
            state: (state, state_id),
            _parent: parent,
        };
        pass.ensure_watch()?;
        let (died_tx, died) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("ingest".into())
            .spawn(move || {
                let run = std::panic::AssertUnwindSafe(|| pass.run(wake_rx, requests_rx));
                match std::panic::catch_unwind(run) {
                    Err(panic) => {
                        let _ = died_tx.send(panic_message(panic.as_ref()));
                    }
                    Ok(Err(fatal)) => {
                        let _ = died_tx.send(fatal.to_string());
                    }
                    Ok(Ok(())) => {}
                }
            })
            .map_err(|e| Error::Internal(format!("starting the ingest thread: {e}")))?;
        Ok(Ingest {
            handle: IngestHandle { requests, progress },
            watch,
            engine,
            thread: Some(thread),
            died: Some(died),
        })
    }

    /// The watched folder, absolute.
    pub fn watch(&self) -> &Path {
        &self.watch
    }

    pub fn handle(&self) -> IngestHandle {
        self.handle.clone()
    }

    /// Resolves with the panic's message if the loop panics, or with the error that ended
    /// it (the state folder removed under it) (taken once). The loop is gone then, and
    /// what it held may be inconsistent: the process should end.
    pub fn died(&mut self) -> Option<tokio::sync::oneshot::Receiver<String>> {
        self.died.take()
    }

    /// Stops the loop: the running update stops before its next file (what it committed
    /// is published), and the thread is joined.
    pub fn stop(mut self) {
        self.engine.cancel();
        let _ = self.handle.requests.send(Request::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned());
    format!(
        "the ingest loop panicked: {}",
        text.as_deref().unwrap_or("(no message)")
    )
}

/// Wakes the loop from watcher callbacks; an event about the watched folder itself also
/// asks the next pass to check the watch.
#[derive(Clone)]
struct Waker {
    wake: Sender<()>,
    recheck: Arc<AtomicBool>,
}

impl Waker {
    fn callback(&self) -> impl Fn(bool) + Send + 'static {
        let waker = self.clone();
        move |about_folder| {
            if about_folder {
                waker.recheck.store(true, Ordering::SeqCst);
            }
            let _ = waker.wake.try_send(());
        }
    }
}

struct Loop {
    engine: Arc<Engine>,
    opts: IngestOptions,
    progress: Arc<Mutex<Progress>>,
    settle: Settle,
    /// Whether a pass has run an update yet: the first always does, to finish any repair
    /// the engine found on open.
    updated: bool,
    /// Passes failed in a row, for the back-off.
    failures: u32,
    waker: Waker,
    /// Set by an event about the watched folder itself: check the watch.
    recheck: Arc<AtomicBool>,
    watcher: Option<FolderWatcher>,
    /// The (device, inode) of the folder `watcher` watches.
    watched: Option<(u64, u64)>,
    /// The state folder and its (device, inode) when the loop started.
    state: (PathBuf, (u64, u64)),
    _parent: Option<FolderWatcher>,
}

/// How long to let a burst of events gather before scanning.
const DEBOUNCE: Duration = Duration::from_millis(20);

/// Longest wait before a failed pass is tried again.
const PASS_RETRY_CAP: Duration = Duration::from_secs(30);

/// Longest wait before a file that failed on an I/O error is tried again unchanged.
const FILE_RETRY_CAP: Duration = Duration::from_secs(300);

/// `base` doubled for each attempt after the first, at most `cap`.
fn backoff(attempts: u32, base: Duration, cap: Duration) -> Duration {
    base.saturating_mul(1 << attempts.saturating_sub(1).min(20))
        .min(cap)
}

/// When a pass wants to run again.
struct Next {
    /// When the first file still settling may have settled; `None` when none is.
    settle: Option<Instant>,
    /// When a held line's or a failed file's wait ends; a `sync` does not wait for these.
    later: Option<Instant>,
}

impl Loop {
    /// Runs passes until asked to stop; returns the error that ends the daemon (the
    /// state folder gone), if one does.
    fn run(&mut self, wake: Receiver<()>, requests: Receiver<Request>) -> Result<()> {
        let mut syncs = Vec::new();
        let mut due = Some(Instant::now());
        let mut rescan_at = Instant::now() + self.opts.rescan;
        loop {
            let at = due.map_or(rescan_at, |d| d.min(rescan_at));
            let timeout = at.saturating_duration_since(Instant::now());
            select! {
                recv(wake) -> _ => {
                    std::thread::sleep(DEBOUNCE);
                    while wake.try_recv().is_ok() {}
                }
                recv(requests) -> r => match r {
                    Ok(Request::Sync(tx)) => syncs.push(tx),
                    Ok(Request::Relayout(layout, tx)) => self.relayout(layout, tx),
                    Ok(Request::Stop) | Err(_) => break,
                },
                default(timeout) => {}
            }
            // Syncs that arrived before this pass's scan are answered by it (or a later one).
            while let Ok(r) = requests.try_recv() {
                match r {
                    Request::Sync(tx) => syncs.push(tx),
                    Request::Relayout(layout, tx) => self.relayout(layout, tx),
                    Request::Stop => return Ok(()),
                }
            }
            // Waits whose requester gave up (a sync that timed out) are dropped.
            syncs.retain(|tx| !tx.is_closed());
            if Instant::now() >= rescan_at {
                rescan_at = Instant::now() + self.opts.rescan;
            }
            match self.pass() {
                Ok(next) => {
                    self.failures = 0;
                    due = [next.settle, next.later].into_iter().flatten().min();
                    if next.settle.is_none() {
                        let generation = self.engine.snapshot().generation();
                        for tx in syncs.drain(..) {
                            let _ = tx.send(Ok(generation));
                        }
                    }
                }
                Err(Error::Cancelled) => break,
                Err(e @ Error::StateGone(_)) => {
                    tracing::error!("ingest: {e}");
                    for tx in syncs.drain(..) {
                        let _ = tx.send(Err(e.to_string()));
                    }
                    return Err(e);
                }
                Err(e) => {
                    tracing::error!("ingest: {e}");
                    for tx in syncs.drain(..) {
                        let _ = tx.send(Err(e.to_string()));
                    }
                    // Try again later, backing off, rather than spinning on a lasting failure.
                    self.failures += 1;
                    let base = self.opts.settle.max(Duration::from_secs(1));
                    let wait = backoff(self.failures, base, PASS_RETRY_CAP);
                    due = Some(Instant::now() + wait);
                    let mut progress = self.progress.lock().expect("progress lock");
                    progress.last_error = Some(e.to_string());
                    if let Some(f) = progress.fault.as_mut() {
                        f.attempts = self.failures;
                        f.retry_at = Some(SystemTime::now() + wait);
                    }
                }
            }
        }
        for tx in syncs {
            let _ = tx.send(Err("rollupd is shutting down".into()));
        }
        Ok(())
    }

    /// Makes a layout change and replies with its outcome.
    fn relayout(
        &self,
        layout: Layout,
        reply: tokio::sync::oneshot::Sender<Result<LayoutReport, String>>,
    ) {
        let outcome = self.engine.relayout(layout).map_err(|e| {
            tracing::error!("changing the layout: {e}");
            e.to_string()
        });
        crate::daemon::memory::after_update();
        let _ = reply.send(outcome);
    }

    /// Fails with `StateGone` when the state folder is no longer the one the daemon
    /// opened (removed, or replaced by another folder).
    fn check_state(&self) -> Result<()> {
        let (dir, id) = &self.state;
        match std::fs::metadata(dir) {
            Ok(m) if (m.dev(), m.ino()) == *id => Ok(()),
            _ => Err(Error::StateGone(dir.clone())),
        }
    }

    /// Records a failed update as a fault of the state folder (kept with its first
    /// time until an update succeeds).
    fn note_fault(&self, e: &Error) {
        if matches!(e, Error::Cancelled) {
            return;
        }
        let mut progress = self.progress.lock().expect("progress lock");
        let fault = progress.fault.get_or_insert_with(|| Fault {
            error: String::new(),
            since: SystemTime::now(),
            attempts: 0,
            retry_at: None,
        });
        fault.error = e.to_string();
    }

    /// Watches the folder if it is not watched yet, or is another folder than the one
    /// watched (recreated, renamed), or an event said the folder itself changed. Fails,
    /// keeping the state as it is, while the folder is missing.
    fn ensure_watch(&mut self) -> Result<()> {
        let dir = &self.opts.watch;
        let recheck = self.recheck.swap(false, Ordering::SeqCst);
        let id = match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => (m.dev(), m.ino()),
            found => {
                self.watcher = None;
                let mut progress = self.progress.lock().expect("progress lock");
                progress
                    .watch
                    .missing_since
                    .get_or_insert_with(SystemTime::now);
                let e = found
                    .err()
                    .unwrap_or_else(|| std::io::Error::other("not a folder"));
                return Err(Error::State {
                    path: dir.clone(),
                    reason: format!(
                        "the watched folder is missing ({e}); the state is kept as it was \
                         until the folder is back"
                    ),
                });
            }
        };
        if self.watcher.is_some() && self.watched == Some(id) && !recheck {
            return Ok(());
        }
        self.watcher = None;
        let recursive = self.engine.options().recursive;
        self.watcher = Some(FolderWatcher::start(dir, recursive, self.waker.callback())?);
        let again = self.watched.replace(id).is_some();
        let mut progress = self.progress.lock().expect("progress lock");
        if again {
            progress.watch.re_established += 1;
            progress.watch.last_re_established = Some(SystemTime::now());
            tracing::warn!("{}: watching the folder again", dir.display());
        }
        progress.watch.missing_since = None;
        Ok(())
    }

    /// One comparison of the folder with the registry, folding what has settled.
    fn pass(&mut self) -> Result<Next> {
        self.engine.options().failpoints.hit("ingest.pass")?;
        self.check_state()?;
        self.ensure_watch()?;
        let now = Instant::now();
        let wall = SystemTime::now();
        let listing = scan(&self.opts.watch, self.engine.options().recursive)?;
        let seen = listing.files;
        let present: HashSet<PathBuf> = seen.iter().map(|s| s.path.clone()).collect();
        let records: HashMap<PathBuf, (u64, i64, u64)> = self
            .engine
            .files()?
            .into_iter()
            .map(|r| (r.path, (r.size, r.mtime_ns, r.inode)))
            .collect();
        let mut hold = HashSet::new();
        let mut changed = Vec::new();
        {
            let progress = self.progress.lock().expect("progress lock");
            for s in &seen {
                if records.get(&s.path) == Some(&(s.size, s.mtime_ns, s.inode)) {
                    continue;
                }
                if self.waits(&progress, s, now, wall) {
                    hold.insert(s.path.clone());
                } else {
                    changed.push(s);
                }
            }
        }
        let (unsettled, settle) = self.settle.unsettled(&changed, now);
        let gone = records.keys().any(|p| !present.contains(p));
        let ready = changed.iter().any(|s| !unsettled.contains(&s.path));
        let faulted = {
            let mut progress = self.progress.lock().expect("progress lock");
            progress.pending = changed.iter().map(|s| (s.path.clone(), s.size)).collect();
            progress.failed.retain(|p, _| present.contains(p));
            progress.held.retain(|p, _| present.contains(p));
            progress.skipped = listing.skipped.into_iter().collect();
            progress.fault.is_some()
        };
        // After a fault, an update with nothing to fold still publishes what the last
        // one committed but could not write out.
        if ready || gone || faulted || !self.updated {
            self.updated = true;
            hold.extend(unsettled.iter().cloned());
            let report = match self.engine.update_from(seen.clone(), &hold) {
                Ok(report) => report,
                Err(e) => {
                    self.note_fault(&e);
                    return Err(e);
                }
            };
            crate::daemon::memory::after_update();
            self.progress.lock().expect("progress lock").fault = None;
            let handed: Vec<&Seen> = changed
                .iter()
                .copied()
                .filter(|s| !unsettled.contains(&s.path))
                .collect();
            self.note(&handed, &seen, &report, now);
        }
        let mut progress = self.progress.lock().expect("progress lock");
        progress.pending.retain(|p, _| unsettled.contains(p));
        progress.last_error = None;
        let line_hold = self.engine.options().line_hold;
        let held = progress
            .held
            .values()
            .map(|s| at(line_held_until(s.mtime_ns, line_hold), now, wall));
        let retries = progress.failed.values().filter_map(|f| f.retry_at);
        let later = held.chain(retries).min();
        Ok(Next { settle, later })
    }

    /// Whether the changed file `s` waits: its unterminated last line is held and the
    /// file has not changed since, or it failed and has not changed since (nor is its
    /// back-off over).
    fn waits(&self, progress: &Progress, s: &Seen, now: Instant, wall: SystemTime) -> bool {
        if let Some(f) = progress.failed.get(&s.path) {
            if f.seen == *s && f.retry_at.is_none_or(|t| now < t) {
                return true;
            }
        }
        let line_hold = self.engine.options().line_hold;
        progress.held.get(&s.path) == Some(s) && wall < line_held_until(s.mtime_ns, line_hold)
    }

    /// Records what an update did with the files `handed` to it (of the folder's `seen`).
    fn note(&self, handed: &[&Seen], seen: &[Seen], report: &UpdateReport, now: Instant) {
        let mut progress = self.progress.lock().expect("progress lock");
        let mut attempts = HashMap::new();
        for s in handed {
            if let Some(f) = progress.failed.remove(&s.path) {
                attempts.insert(s.path.clone(), f.attempts);
            }
            progress.held.remove(&s.path);
        }
        let base = self.opts.settle.max(Duration::from_secs(1));
        for f in &report.failed {
            let Some(s) = seen.iter().find(|s| s.path == f.path) else {
                continue;
            };
            tracing::warn!("{}: not folded: {}", f.path.display(), f.reason);
            let attempts = attempts.get(&f.path).copied().unwrap_or(0) + 1;
            let retry_at = f
                .transient
                .then(|| now + backoff(attempts, base, FILE_RETRY_CAP));
            let failure = Failure {
                seen: s.clone(),
                error: f.reason.clone(),
                attempts,
                retry_at,
            };
            progress.failed.insert(f.path.clone(), failure);
        }
        for path in &report.held {
            if let Some(s) = seen.iter().find(|s| &s.path == path) {
                progress.held.insert(path.clone(), s.clone());
            }
        }
        for (path, note) in &report.skipped {
            tracing::warn!("{}: {note}", path.display());
        }
        if report.changed() > 0 {
            progress.last_change = Some(SystemTime::now());
            tracing::info!(
                generation = report.generation,
                added = report.added,
                rewritten = report.replaced,
                appended = report.appended,
                moved = report.moved,
                removed = report.removed,
                rows = report.rows,
                bytes_parsed = report.bytes_parsed,
                ms = report.elapsed.as_millis() as u64,
                "published"
            );
        }
    }
}

/// The instant of wall-clock time `t`, given that `now` is `wall`.
fn at(t: SystemTime, now: Instant, wall: SystemTime) -> Instant {
    now + t.duration_since(wall).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_doubling_up_to_the_cap() {
        let s = Duration::from_secs(1);
        let cap = Duration::from_secs(5);
        let waits: Vec<u64> = (1..6).map(|n| backoff(n, s, cap).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 5, 5]);
        assert_eq!(backoff(u32::MAX, s, FILE_RETRY_CAP), FILE_RETRY_CAP);
    }
}
