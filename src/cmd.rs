//! What each request of the socket protocol does, against the daemon's shared state.
//!
//! Queries run on tokio's blocking pool against the snapshot published when they start,
//! so ingest never blocks them beyond the snapshot swap, and a slow query never blocks the
//! server's reactor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value as Json};

use crate::engine::Engine;
use crate::ingest::IngestHandle;
use crate::protocol::{error_line, error_response, ok_response, query_response, Request};

/// The daemon's shared state, cheap to clone into each connection.
#[derive(Clone)]
pub struct Handle {
    pub engine: Arc<Engine>,
    pub ingest: IngestHandle,
    /// The watched folder.
    pub watch: PathBuf,
    /// How long a query waits for its `min_generation` unless it says otherwise.
    pub wait_timeout: Duration,
}

/// A response: one JSON line and the payload bytes that follow it (csv, arrow).
pub type Response = (String, Vec<u8>);

/// Runs one request.
pub async fn execute(request: Request, handle: &Handle) -> Response {
    let line = match request {
        Request::Ping => ok_response(json!({})),
        Request::Query {
            query,
            format,
            min_generation,
            timeout_ms,
        } => {
            if let Some(n) = min_generation {
                let wait = timeout_ms.map_or(handle.wait_timeout, Duration::from_millis);
                if let Err(line) = wait_for_generation(&handle.engine, n, wait).await {
                    return (line, Vec::new());
                }
            }
            let engine = handle.engine.clone();
            return blocking(move || {
                engine
                    .query(&query)
                    .and_then(|answer| query_response(&answer, format))
                    .unwrap_or_else(|e| (error_line(&e), Vec::new()))
            })
            .await;
        }
        Request::Sync { timeout_ms } => {
            let reply = handle.ingest.sync();
            let outcome = match timeout_ms {
                Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), reply).await {
                    Ok(r) => r,
                    Err(_) => {
                        let msg = format!("changes not all published within {ms} ms");
                        return (error_response("timeout", &msg), Vec::new());
                    }
                },
                None => reply.await,
            };
            match outcome {
                Ok(Ok(generation)) => ok_response(json!({ "generation": generation })),
                Ok(Err(msg)) => error_response("internal", &msg),
                Err(_) => error_response("internal", "ingest has stopped"),
            }
        }
        Request::Status => {
            let h = handle.clone();
            blocking(move || (status(&h), Vec::new())).await.0
        }
        Request::Files => {
            let h = handle.clone();
            blocking(move || (files(&h), Vec::new())).await.0
        }
    };
    (line, Vec::new())
}

async fn blocking(f: impl FnOnce() -> Response + Send + 'static) -> Response {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        let msg = format!("the request failed: {e}");
        (error_response("internal", &msg), Vec::new())
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
        Ok(false) => Err(error_response("internal", "the engine has stopped")),
        Err(_) => {
            let now = *engine.subscribe().borrow();
            let msg = format!(
                "generation {n} was not published within {} ms (published: {now})",
                wait.as_millis()
            );
            Err(error_response("timeout", &msg))
        }
    }
}

fn status(h: &Handle) -> String {
    let records = match h.engine.files() {
        Ok(r) => r,
        Err(e) => return error_line(&e),
    };
    let progress = h.ingest.progress();
    let snap = h.engine.snapshot();
    let rollups: Vec<Json> = h
        .engine
        .manifest()
        .rollups
        .iter()
        .map(|r| json!({"name": r.spec.name(), "rows": r.rows, "bytes": r.bytes}))
        .collect();
    ok_response(json!({
        "generation": snap.generation(),
        "watch": h.watch,
        "state": h.engine.state().canonicalize().unwrap_or_else(|_| h.engine.state().to_path_buf()),
        "files": {
            "tracked": records.len(),
            "pending": progress.pending.len() + progress.held.len(),
            "failed": progress.failed.len(),
            "skipped": progress.skipped.len(),
        },
        "watch_state": {
            "state": if progress.watch.missing_since.is_some() { "missing" } else { "watching" },
            "missing_since": progress.watch.missing_since.map(rfc3339),
            "re_established": progress.watch.re_established,
            "last_re_established": progress.watch.last_re_established.map(rfc3339),
        },
        "rows": records.iter().map(|r| r.rows).sum::<u64>(),
        "bytes_parsed": h.engine.stats().bytes_parsed.load(std::sync::atomic::Ordering::Relaxed),
        "rollups": rollups,
        "state_bytes": dir_size(h.engine.state()),
        "last_change": progress.last_change.map(rfc3339),
        "last_error": progress.last_error,
        "rebuilt": h.engine.rebuilt(),
        "duckdb_build": crate::table::DUCKDB_BUILD,
    }))
}

fn files(h: &Handle) -> String {
    let records = match h.engine.files() {
        Ok(r) => r,
        Err(e) => return error_line(&e),
    };
    let progress = h.ingest.progress();
    let mut out: BTreeMap<PathBuf, Json> = records
        .into_iter()
        .map(|r| {
            let entry = json!({"path": r.path, "size": r.size, "rows": r.rows, "state": "folded",
                               "bad_rows": r.bad_rows});
            (r.path, entry)
        })
        .collect();
    for (path, size) in &progress.pending {
        out.insert(
            path.clone(),
            json!({"path": path, "size": size, "rows": Json::Null, "state": "pending"}),
        );
    }
    for (path, s) in &progress.held {
        let rows = out.get(path).map_or(Json::Null, |e| e["rows"].clone());
        let note = "last line not terminated: held until it is, or the file is quiet";
        out.insert(
            path.clone(),
            json!({"path": path, "size": s.size, "rows": rows, "state": "pending", "note": note}),
        );
    }
    for (path, f) in &progress.failed {
        let rows = out.get(path).map_or(Json::Null, |e| e["rows"].clone());
        out.insert(
            path.clone(),
            json!({"path": path, "size": f.seen.size, "rows": rows, "state": "failed", "error": f.error,
                   "attempts": f.attempts}),
        );
    }
    for (path, skip) in &progress.skipped {
        out.insert(
            path.clone(),
            json!({"path": path, "size": Json::Null, "rows": Json::Null, "state": "skipped",
                   "error": skip.to_string()}),
        );
    }
    ok_response(json!({ "files": out.into_values().collect::<Vec<_>>() }))
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
