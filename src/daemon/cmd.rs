//! What each request of the socket protocol does, against the daemon's shared state.
//!
//! Queries run on tokio's blocking pool against the snapshot published when they start,
//! so ingest never blocks them beyond the snapshot swap, and a slow query never blocks the
//! server's reactor. At most `max_running_queries` run at once, each within the caps of
//! `limits` and its time limit, and each stops (DuckDB's interrupt) when its time is up or
//! its client hangs up.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value as Json;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::daemon::cache::{self, AnswerCache};
use crate::daemon::ingest::IngestHandle;
use crate::daemon::limits::{Cancel, QueryBudget, QueryLimits, Stop};
use crate::daemon::protocol::{
    error_line, error_response, ok_line, ConnectionCounts, EncodedAnswer, ErrorKind, FileCounts,
    FileEntry, FileState, FilesReply, Format, Pong, QueryCounts, ReloadReply, Request,
    RollupStatus, StateFault, StatusReply, SyncReply, WatchState, WatchStatus,
};
use crate::daemon::Reloader;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::query::querylog::QueryLog;

/// The daemon's shared state, cheap to clone into each connection.
#[derive(Clone)]
pub struct Handle {
    pub engine: Arc<Engine>,
    pub ingest: IngestHandle,
    /// The watched folder.
    pub watch: PathBuf,
    /// How long a query waits for its `min_generation` unless it says otherwise.
    pub wait_timeout: Duration,
    /// How long a `sync` waits unless it says otherwise.
    pub sync_timeout: Duration,
    /// Caps on each query.
    pub limits: QueryLimits,
    /// Queries running at once; more wait for a slot (`busy` when their time is up).
    pub query_slots: Arc<Semaphore>,
    pub stats: Arc<ServeStats>,
    /// Per-shape statistics of the queries answered.
    pub log: Arc<QueryLog>,
    /// Answers of the published generation.
    pub cache: Arc<AnswerCache>,
    /// Reads the layout from the config again, for `reload` (none: nothing to reload).
    pub reload: Option<Reloader>,
}

/// Counters of the server, reported by `status`.
#[derive(Debug, Default)]
pub struct ServeStats {
    pub queries_running: AtomicU64,
    pub queries_cancelled: AtomicU64,
    pub queries_timed_out: AtomicU64,
    pub queries_too_large: AtomicU64,
    pub connections_open: AtomicU64,
    pub connections_refused: AtomicU64,
    pub connections_idle_closed: AtomicU64,
    pub subscriptions: AtomicU64,
}

impl ServeStats {
    fn counts(&self) -> (QueryCounts, ConnectionCounts) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (
            QueryCounts {
                running: get(&self.queries_running),
                cancelled: get(&self.queries_cancelled),
                timed_out: get(&self.queries_timed_out),
                too_large: get(&self.queries_too_large),
            },
            ConnectionCounts {
                open: get(&self.connections_open),
                refused: get(&self.connections_refused),
                idle_closed: get(&self.connections_idle_closed),
                subscribed: get(&self.subscriptions),
            },
        )
    }
}

/// Adds one to a counter while alive.
pub struct Gauge<'a>(&'a AtomicU64);

impl<'a> Gauge<'a> {
    pub fn up(counter: &'a AtomicU64) -> Gauge<'a> {
        counter.fetch_add(1, Ordering::Relaxed);
        Gauge(counter)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Handle {
    /// The query caps, without a time limit: for the daemon's own statements.
    fn budget(&self) -> QueryBudget {
        QueryBudget {
            limits: self.limits.clone(),
            cancel: Cancel::default(),
        }
    }
}

/// A response: one JSON line and the payload bytes that follow it (csv, arrow).
pub type Response = (String, Vec<u8>);

/// Runs one request. `gone` completes if the client hangs up meanwhile; a query then
/// stops.
pub async fn execute(
    request: Request,
    handle: &Handle,
    gone: impl Future<Output = ()>,
) -> Response {
    let line = match request {
        Request::Ping {} => ok_line(&Pong {}),
        request @ Request::Query { .. } => {
            let (query, format, asked) = query_parts(request);
            return match prepare(handle, &query, format, asked).await {
                Ok(run) => run_query(handle, query, format, run, gone).await,
                Err(line) => (line, Vec::new()),
            };
        }
        Request::Sync { timeout_ms } => sync(handle, timeout_ms).await,
        Request::Reload {} => match reload(handle).await {
            Ok(reply) => ok_line(&reply),
            Err(e) => error_line(&e),
        },
        // The server serves subscriptions itself (they need the connection).
        Request::Subscribe { .. } | Request::Unsubscribe {} => error_response(
            ErrorKind::BadRequest,
            "no subscription on this connection: send {\"op\":\"subscribe\",...} first",
        ),
        Request::Status {} => {
            let h = handle.clone();
            blocking(move || status(&h)).await
        }
        Request::Files {} => {
            let h = handle.clone();
            blocking(move || files(&h)).await
        }
        Request::Explain { query } => {
            let h = handle.clone();
            blocking(move || {
                let reply = crate::query::explain::explain(&h.engine, &query, &h.budget());
                reply.map_or_else(|e| error_line(&e), |r| ok_line(&r))
            })
            .await
        }
        Request::Advise { limit } => {
            let h = handle.clone();
            blocking(move || {
                let limit = limit.unwrap_or(10);
                let reply = crate::query::advise::advise(&h.engine, &h.log, limit, &h.budget());
                reply.map_or_else(|e| error_line(&e), |r| ok_line(&r))
            })
            .await
        }
    };
    (line, Vec::new())
}

async fn blocking(f: impl FnOnce() -> String + Send + 'static) -> String {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        error_response(ErrorKind::Internal, &format!("the request failed: {e}"))
    })
}

/// The answer cache's key for a query, when the cache is on and the query is valid.
fn cache_key(handle: &Handle, query: &Json, format: Format) -> Option<String> {
    if !handle.cache.enabled() {
        return None;
    }
    handle.limits.check_request(query).ok()?;
    let query = crate::query::Query::parse(query).ok()?;
    Some(cache::cache_key(&query, format))
}

/// What a query request asks of its run besides the query and the format.
#[derive(Debug, Clone, Copy)]
pub struct QueryAsk {
    pub min_generation: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub cache: Option<bool>,
}

/// A query request's query, format and the rest of what it asks.
pub fn query_parts(request: Request) -> (Json, Format, QueryAsk) {
    let Request::Query {
        query,
        format,
        min_generation,
        timeout_ms,
        cache,
        stream: _,
    } = request
    else {
        unreachable!("a query request")
    };
    let ask = QueryAsk {
        min_generation,
        timeout_ms,
        cache,
    };
    (query, format, ask)
}

/// How a query runs once its generation is there.
pub struct QueryRun {
    /// When it must be answered.
    pub deadline: Instant,
    /// Its key in the answer cache, if the cache may answer it.
    pub key: Option<String>,
}

/// Waits for the request's `min_generation` (within its time), then works out the
/// query's deadline and cache key; an error line when the wait fails.
pub async fn prepare(
    handle: &Handle,
    query: &Json,
    format: Format,
    ask: QueryAsk,
) -> std::result::Result<QueryRun, String> {
    let start = Instant::now();
    let deadline = ask
        .timeout_ms
        .and_then(|ms| start.checked_add(Duration::from_millis(ms)));
    if let Some(n) = ask.min_generation {
        let wait = ask
            .timeout_ms
            .map_or(handle.wait_timeout, Duration::from_millis);
        wait_for_generation(&handle.engine, n, wait).await?;
    }
    let now = Instant::now();
    let run_deadline = now.checked_add(handle.limits.query_timeout).unwrap_or(now);
    let key = ask
        .cache
        .unwrap_or(true)
        .then(|| cache_key(handle, query, format));
    Ok(QueryRun {
        deadline: deadline.map_or(run_deadline, |d| d.min(run_deadline)),
        key: key.flatten(),
    })
}

/// The answer the cache holds for `run`'s key in the published generation, with the time
/// the lookup took (logged as the query's).
pub fn cached(handle: &Handle, run: &QueryRun, query: &Json) -> Option<(EncodedAnswer, u64)> {
    let start = Instant::now();
    let generation = handle.engine.snapshot().generation();
    let hit = handle.cache.get(run.key.as_ref()?, generation)?;
    let elapsed = start.elapsed();
    handle.log.record(query, &hit.source, elapsed);
    Some((hit, elapsed.as_micros() as u64))
}

/// Answers a query from the cache (under `run`'s key, if any) or runs it on the blocking
/// pool, in one of the query slots, until `run`'s deadline; stops it (DuckDB's interrupt)
/// at the deadline or when `gone` completes. A new answer is cached under the key.
async fn run_query(
    handle: &Handle,
    query: Json,
    format: Format,
    run: QueryRun,
    gone: impl Future<Output = ()>,
) -> Response {
    if let Some((hit, elapsed_us)) = cached(handle, &run, &query) {
        return hit.into_reply(elapsed_us, true);
    }
    let (log, cache, key) = (handle.log.clone(), handle.cache.clone(), run.key);
    let job = move |engine: &Engine, budget: &QueryBudget| {
        let answer = engine.query_within(&query, budget)?;
        budget.cancel.check()?;
        log.record(&query, &answer.source, answer.elapsed);
        let encoded = EncodedAnswer::encode(&answer, format, &budget.limits)?;
        if let Some(key) = key {
            cache.put(key, &encoded);
        }
        Ok(encoded.into_reply(answer.elapsed.as_micros() as u64, false))
    };
    match run_limited(handle, run.deadline, gone, job).await {
        Ok(response) => response,
        Err(line) => (line, Vec::new()),
    }
}

/// Runs `job` (a query's work) on the blocking pool in one of the query slots, within
/// the query caps and until `deadline`; stops it (DuckDB's interrupt) at the deadline or
/// when `gone` completes. An error comes back as its reply line.
pub async fn run_limited<T: Send + 'static>(
    handle: &Handle,
    deadline: Instant,
    gone: impl Future<Output = ()>,
    job: impl FnOnce(&Engine, &QueryBudget) -> Result<T> + Send + 'static,
) -> std::result::Result<T, String> {
    let stats = &handle.stats;
    let slot = tokio::time::timeout_at(deadline, handle.query_slots.clone().acquire_owned());
    let Ok(Ok(_slot)) = slot.await else {
        let msg = "every query slot stayed busy until the query's time was up \
                   (max_running_queries); try again later";
        return Err(error_response(ErrorKind::Busy, msg));
    };
    let _running = Gauge::up(&stats.queries_running);
    let cancel = Cancel::with_timeout(deadline.saturating_duration_since(Instant::now()));
    let budget = QueryBudget {
        limits: handle.limits.clone(),
        cancel: cancel.clone(),
    };
    let engine = handle.engine.clone();
    let mut task = tokio::task::spawn_blocking(move || job(&engine, &budget));
    let outcome = tokio::select! {
        r = &mut task => r,
        _ = tokio::time::sleep_until(deadline) => stop(task, &cancel, Stop::Timeout).await,
        _ = gone => stop(task, &cancel, Stop::Abandoned).await,
    };
    let counter = match (cancel.stopped(), &outcome) {
        (Some(Stop::Timeout), _) => Some(&stats.queries_timed_out),
        (Some(Stop::Abandoned), _) => Some(&stats.queries_cancelled),
        (None, Ok(Err(Error::TooLarge(_)))) => Some(&stats.queries_too_large),
        _ => None,
    };
    if let Some(c) = counter {
        c.fetch_add(1, Ordering::Relaxed);
    }
    match outcome {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(error_line(&e)),
        Err(e) => Err(error_response(
            ErrorKind::Internal,
            &format!("the query failed: {e}"),
        )),
    }
}

/// Cancels a running query and waits for it to end, interrupting it again while it runs
/// (an interrupt can come just before DuckDB starts a statement).
async fn stop<T>(
    mut task: JoinHandle<Result<T>>,
    cancel: &Cancel,
    why: Stop,
) -> std::result::Result<Result<T>, tokio::task::JoinError> {
    cancel.cancel(why);
    loop {
        tokio::select! {
            r = &mut task => return r,
            _ = tokio::time::sleep(Duration::from_millis(50)) => cancel.interrupt(),
        }
    }
}

/// Waits until every change seen is published, for `timeout_ms` or the daemon's sync
/// timeout; a wait that times out is dropped (ingest forgets it).
async fn sync(handle: &Handle, timeout_ms: Option<u64>) -> String {
    let wait = timeout_ms.map_or(handle.sync_timeout, Duration::from_millis);
    match tokio::time::timeout(wait, handle.ingest.sync()).await {
        Ok(Ok(Ok(generation))) => ok_line(&SyncReply { generation }),
        Ok(Ok(Err(msg))) => error_response(ErrorKind::Internal, &msg),
        Ok(Err(_)) => error_response(ErrorKind::Internal, "ingest has stopped"),
        Err(_) => {
            let pending = handle.ingest.progress().pending.len();
            let msg = format!(
                "changes were not all published within {} ms (sync_timeout_secs, or the \
                 request's timeout_ms): {pending} file(s) still pending; a file that keeps \
                 changing is folded only once it stays the same for the settle interval",
                wait.as_millis()
            );
            error_response(ErrorKind::Timeout, &msg)
        }
    }
}

/// Reads the config's layout again and has ingest move to it; answers once the new
/// layout is published (the change goes on if the client leaves before).
pub async fn reload(handle: &Handle) -> Result<ReloadReply> {
    let reloader = handle.reload.clone().ok_or_else(|| {
        Error::InvalidQuery("this daemon was started without a config to read again".into())
    })?;
    let layout = tokio::task::spawn_blocking(move || reloader.layout())
        .await
        .map_err(|e| Error::Internal(format!("reading the config: {e}")))??;
    let report = handle
        .ingest
        .relayout(layout)
        .await
        .map_err(|_| Error::Internal("ingest has stopped".into()))?
        .map_err(Error::Internal)?;
    let layout = handle.engine.layout();
    Ok(ReloadReply {
        change: report.change,
        generation: report.generation,
        time_zone: layout.zone.name(),
        rollups: layout.specs.iter().map(|s| s.name()).collect(),
        files: report.files as u64,
        rows: report.rows,
        elapsed_ms: report.elapsed.as_millis() as u64,
    })
}

/// Waits until generation `n` is published, or answers with a timeout error line.
async fn wait_for_generation(engine: &Engine, n: u64, wait: Duration) -> Result<(), String> {
    let mut published = engine.subscribe();
    let outcome = tokio::time::timeout(wait, published.wait_for(|g| *g >= n))
        .await
        .map(|r| r.is_ok());
    match outcome {
        Ok(true) => Ok(()),
        Ok(false) => Err(error_response(
            ErrorKind::Internal,
            "the engine has stopped",
        )),
        Err(_) => {
            let now = *engine.subscribe().borrow();
            let msg = format!(
                "generation {n} was not published within {} ms (published: {now})",
                wait.as_millis()
            );
            Err(error_response(ErrorKind::Timeout, &msg))
        }
    }
}

fn status(h: &Handle) -> String {
    let records = match h.engine.files() {
        Ok(r) => r,
        Err(e) => return error_line(&e),
    };
    let progress = h.ingest.progress();
    let (queries, connections) = h.stats.counts();
    let state = h.engine.state();
    let watch = &progress.watch;
    ok_line(&StatusReply {
        generation: h.engine.snapshot().generation(),
        watch: h.watch.clone(),
        state: state.canonicalize().unwrap_or_else(|_| state.to_path_buf()),
        files: FileCounts {
            tracked: records.len() as u64,
            pending: (progress.pending.len() + progress.held.len()) as u64,
            failed: progress.failed.len() as u64,
            skipped: progress.skipped.len() as u64,
        },
        watch_state: WatchState {
            state: match watch.missing_since {
                Some(_) => WatchStatus::Missing,
                None => WatchStatus::Watching,
            },
            missing_since: watch.missing_since.map(rfc3339),
            re_established: watch.re_established.into(),
            last_re_established: watch.last_re_established.map(rfc3339),
        },
        rows: records.iter().map(|r| r.rows).sum(),
        bytes_parsed: h.engine.stats().bytes_parsed.load(Ordering::Relaxed),
        rollups: h
            .engine
            .manifest()
            .rollups
            .iter()
            .map(|r| RollupStatus {
                name: r.spec.name(),
                rows: r.rows,
                bytes: r.bytes,
            })
            .collect(),
        state_bytes: dir_size(state),
        last_change: progress.last_change.map(rfc3339),
        last_error: progress.last_error,
        fault: progress.fault.map(|f| StateFault {
            error: f.error,
            since: rfc3339(f.since),
            attempts: f.attempts,
            next_retry: f.retry_at.map(rfc3339),
        }),
        rebuilt: h.engine.rebuilt(),
        duckdb_build: crate::storage::table::DUCKDB_BUILD.to_string(),
        queries,
        connections,
        answer_cache: h.cache.counts(),
        // The published snapshot's: a layout change shows once queries answer in it.
        time_zone: h.engine.snapshot().zone.name(),
        layout_change: h.engine.layout_progress(),
    })
}

fn files(h: &Handle) -> String {
    let records = match h.engine.files() {
        Ok(r) => r,
        Err(e) => return error_line(&e),
    };
    let progress = h.ingest.progress();
    let mut out: BTreeMap<PathBuf, FileEntry> = records
        .into_iter()
        .map(|r| {
            let entry = FileEntry {
                rows: Some(r.rows),
                bad_rows: Some(r.bad_rows),
                ..FileEntry::new(r.path.clone(), FileState::Folded, Some(r.size))
            };
            (r.path, entry)
        })
        .collect();
    let rows_of = |out: &BTreeMap<PathBuf, FileEntry>, path| out.get(path).and_then(|e| e.rows);
    for (path, size) in &progress.pending {
        let entry = FileEntry::new(path.clone(), FileState::Pending, Some(*size));
        out.insert(path.clone(), entry);
    }
    for (path, s) in &progress.held {
        let entry = FileEntry {
            rows: rows_of(&out, path),
            note: Some("last line not terminated: held until it is, or the file is quiet".into()),
            ..FileEntry::new(path.clone(), FileState::Pending, Some(s.size))
        };
        out.insert(path.clone(), entry);
    }
    for (path, f) in &progress.failed {
        let entry = FileEntry {
            rows: rows_of(&out, path),
            error: Some(f.error.clone()),
            attempts: Some(f.attempts),
            ..FileEntry::new(path.clone(), FileState::Failed, Some(f.seen.size))
        };
        out.insert(path.clone(), entry);
    }
    for (path, skip) in &progress.skipped {
        let entry = FileEntry {
            error: Some(skip.to_string()),
            ..FileEntry::new(path.clone(), FileState::Skipped, None)
        };
        out.insert(path.clone(), entry);
    }
    ok_line(&FilesReply {
        files: out.into_values().collect(),
    })
}

/// Total bytes of the files under `dir`.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
