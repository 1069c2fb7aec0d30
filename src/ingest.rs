//! The ingest loop: one thread that keeps the engine up to date with the watched folder.
//!
//! It wakes on folder events (notify), on `sync` requests, when a pending file may have
//! settled, and on a slow periodic rescan. Each pass compares the folder with the registry,
//! holds back files still being written and files that failed and have not changed since,
//! and hands the rest to [`Engine::update_from`]. What the loop knows about pending and
//! failed files is kept in [`Progress`] for `status` and `files`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::watch::{scan, FolderWatcher, Settle};

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
    pub size: u64,
    pub mtime_ns: i64,
    pub error: String,
}

/// What the loop knows beyond the registry.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Changed files not folded yet (still settling, or being folded), with their size.
    pub pending: BTreeMap<PathBuf, u64>,
    /// Files whose last fold failed; retried when they change.
    pub failed: BTreeMap<PathBuf, Failure>,
    /// When a pass last changed the published state.
    pub last_change: Option<SystemTime>,
    /// The last error of a whole pass (not of one file), cleared by a good pass.
    pub last_error: Option<String>,
}

enum Request {
    /// Reply with the generation once every change seen is folded and published.
    Sync(tokio::sync::oneshot::Sender<Result<u64, String>>),
    Stop,
}

/// A running ingest loop; a cheap-to-clone handle to it is [`IngestHandle`].
pub struct Ingest {
    handle: IngestHandle,
    watch: PathBuf,
    engine: Arc<Engine>,
    thread: Option<JoinHandle<()>>,
    _watcher: FolderWatcher,
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
        let recursive = engine.options().recursive;
        let watcher = FolderWatcher::start(&watch, recursive, move || {
            let _ = wake_tx.try_send(());
        })?;
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
        };
        let thread = std::thread::Builder::new()
            .name("ingest".into())
            .spawn(move || pass.run(wake_rx, requests_rx))
            .map_err(|e| Error::Internal(format!("starting the ingest thread: {e}")))?;
        Ok(Ingest {
            handle: IngestHandle { requests, progress },
            watch,
            engine,
            thread: Some(thread),
            _watcher: watcher,
        })
    }

    /// The watched folder, absolute.
    pub fn watch(&self) -> &Path {
        &self.watch
    }

    pub fn handle(&self) -> IngestHandle {
        self.handle.clone()
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

struct Loop {
    engine: Arc<Engine>,
    opts: IngestOptions,
    progress: Arc<Mutex<Progress>>,
    settle: Settle,
    /// Whether a pass has run an update yet: the first always does, to finish any repair
    /// the engine found on open.
    updated: bool,
}

/// How long to let a burst of events gather before scanning.
const DEBOUNCE: Duration = Duration::from_millis(20);

impl Loop {
    fn run(&mut self, wake: Receiver<()>, requests: Receiver<Request>) {
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
                    Ok(Request::Stop) | Err(_) => break,
                },
                default(timeout) => {}
            }
            // Syncs that arrived before this pass's scan are answered by it (or a later one).
            while let Ok(r) = requests.try_recv() {
                match r {
                    Request::Sync(tx) => syncs.push(tx),
                    Request::Stop => return,
                }
            }
            // Waits whose requester gave up (a sync that timed out) are dropped.
            syncs.retain(|tx| !tx.is_closed());
            if Instant::now() >= rescan_at {
                rescan_at = Instant::now() + self.opts.rescan;
            }
            match self.pass() {
                Ok(next) => {
                    due = next;
                    if next.is_none() {
                        let generation = self.engine.snapshot().generation();
                        for tx in syncs.drain(..) {
                            let _ = tx.send(Ok(generation));
                        }
                    }
                }
                Err(Error::Cancelled) => break,
                Err(e) => {
                    tracing::error!("ingest: {e}");
                    self.progress.lock().expect("progress lock").last_error = Some(e.to_string());
                    for tx in syncs.drain(..) {
                        let _ = tx.send(Err(e.to_string()));
                    }
                    // Try again later rather than spinning on a persistent failure.
                    due = Some(Instant::now() + self.opts.settle.max(Duration::from_secs(1)));
                }
            }
        }
        for tx in syncs {
            let _ = tx.send(Err("rollupd is shutting down".into()));
        }
    }

    /// One comparison of the folder with the registry, folding what has settled. Returns
    /// when the next pending file may settle, or `None` when nothing is pending.
    fn pass(&mut self) -> Result<Option<Instant>> {
        let now = Instant::now();
        let seen = scan(&self.opts.watch, self.engine.options().recursive)?;
        let present: HashSet<PathBuf> = seen.iter().map(|s| s.path.clone()).collect();
        let records: HashMap<PathBuf, (u64, i64, u64)> = self
            .engine
            .files()?
            .into_iter()
            .map(|r| (r.path, (r.size, r.mtime_ns, r.inode)))
            .collect();
        let failed = self.progress.lock().expect("progress lock").failed.clone();
        let mut hold = HashSet::new();
        let mut changed = Vec::new();
        for s in &seen {
            if records.get(&s.path) == Some(&(s.size, s.mtime_ns, s.inode)) {
                continue;
            }
            match failed.get(&s.path) {
                Some(f) if f.size == s.size && f.mtime_ns == s.mtime_ns => {
                    hold.insert(s.path.clone());
                }
                _ => changed.push(s),
            }
        }
        let (unsettled, next) = self.settle.unsettled(&changed, now);
        let gone = records.keys().any(|p| !present.contains(p));
        let ready = changed.iter().any(|s| !unsettled.contains(&s.path));
        {
            let mut progress = self.progress.lock().expect("progress lock");
            progress.pending = changed.iter().map(|s| (s.path.clone(), s.size)).collect();
            progress.failed.retain(|p, _| present.contains(p));
        }
        if ready || gone || !self.updated {
            self.updated = true;
            hold.extend(unsettled.iter().cloned());
            let report = self.engine.update_from(seen.clone(), &hold)?;
            let mut progress = self.progress.lock().expect("progress lock");
            for s in &changed {
                if !unsettled.contains(&s.path) {
                    progress.failed.remove(&s.path);
                }
            }
            for (path, error) in &report.failed {
                if let Some(s) = changed.iter().find(|s| &s.path == path) {
                    tracing::warn!("{}: not folded: {error}", path.display());
                    progress.failed.insert(
                        path.clone(),
                        Failure {
                            size: s.size,
                            mtime_ns: s.mtime_ns,
                            error: error.clone(),
                        },
                    );
                }
            }
            for (path, note) in &report.skipped {
                tracing::warn!("{}: {note}", path.display());
            }
            progress.pending.retain(|p, _| unsettled.contains(p));
            progress.last_error = None;
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
        } else {
            self.progress.lock().expect("progress lock").last_error = None;
        }
        Ok(next)
    }
}
