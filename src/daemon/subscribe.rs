//! `subscribe`: one connection's live answer to a query, sent again each time a published
//! generation changes it.
//!
//! The engine publishes generation numbers on a `watch` channel, which holds only the
//! latest: a subscriber that is busy (running its query, or writing to a client that reads
//! slowly) sees just the newest generation when it looks again, so a slow subscriber gets
//! the latest answer only and never holds back ingest or other clients. Each answer runs
//! like a query (a query slot, the caps, the time limit, stopped if the client hangs up)
//! and is sent only when its hash differs from the last answer sent.

use serde_json::Value as Json;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::daemon::cmd::{run_limited, Gauge, Handle, Response};
use crate::daemon::connection::{Connection, Frame};
use crate::daemon::protocol::{
    error_response, ok_line, query_response, ErrorKind, Format, Request, Unsubscribed,
};

/// How a subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// By `unsubscribe`, or because its first answer was an error: the connection goes
    /// on taking requests.
    Unsubscribed,
    /// The client left or the daemon is shutting down: the connection is done.
    Closed,
}

/// Serves a subscription on `conn` until it ends.
pub async fn serve(
    conn: &mut Connection,
    handle: &Handle,
    query: Json,
    format: Format,
    stop: &mut broadcast::Receiver<()>,
) -> Ended {
    let _subscribed = Gauge::up(&handle.stats.subscriptions);
    let mut published = handle.engine.subscribe();
    let mut last: Option<u64> = None;
    loop {
        published.borrow_and_update();
        match answer(handle, &query, format, conn).await {
            Ok((hash, _)) if last == Some(hash) => {}
            Ok((hash, (line, payload))) => {
                if conn.respond(&line, &payload).await.is_err() {
                    return Ended::Closed;
                }
                last = Some(hash);
            }
            Err(line) => {
                if conn.respond(&line, &[]).await.is_err() {
                    return Ended::Closed;
                }
                if last.is_none() {
                    return Ended::Unsubscribed;
                }
            }
        }
        if let Some(ended) = wait(conn, &mut published, stop).await {
            return ended;
        }
    }
}

/// Runs the query once: its answer's hash and its reply, or an error line.
async fn answer(
    handle: &Handle,
    query: &Json,
    format: Format,
    conn: &Connection,
) -> Result<(u64, Response), String> {
    let now = Instant::now();
    let deadline = now.checked_add(handle.limits.query_timeout).unwrap_or(now);
    let query = query.clone();
    let job = move |engine: &crate::Engine, budget: &crate::daemon::limits::QueryBudget| {
        let answer = engine.query_within(&query, budget)?;
        budget.cancel.check()?;
        let rows = serde_json::to_vec(&(&answer.result.columns, &answer.result.rows))
            .map_err(|e| crate::Error::Internal(format!("hashing an answer: {e}")))?;
        let hash = xxhash_rust::xxh3::xxh3_64(&rows);
        Ok((hash, query_response(&answer, format, &budget.limits)?))
    };
    run_limited(handle, deadline, conn.hung_up(), job).await
}

/// Waits for a new generation (`None`: answer again), answering requests meanwhile:
/// `unsubscribe` ends the subscription, anything else gets an error line.
async fn wait(
    conn: &mut Connection,
    published: &mut tokio::sync::watch::Receiver<u64>,
    stop: &mut broadcast::Receiver<()>,
) -> Option<Ended> {
    loop {
        let frame = tokio::select! {
            changed = published.changed() => return changed.err().map(|_| Ended::Closed),
            _ = stop.recv() => return Some(Ended::Closed),
            frame = conn.read_request() => frame,
        };
        let line = match frame {
            Ok(Frame::Line(line)) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(Frame::Line(line)) => line,
            Ok(Frame::TooLong | Frame::Eof) | Err(_) => return Some(Ended::Closed),
        };
        let reply = match Request::parse(&line) {
            Ok(Request::Unsubscribe {}) => {
                let done = ok_line(&Unsubscribed { unsubscribed: true });
                return Some(match conn.respond(&done, &[]).await {
                    Ok(()) => Ended::Unsubscribed,
                    Err(_) => Ended::Closed,
                });
            }
            Ok(_) => error_response(
                ErrorKind::BadRequest,
                "this connection is subscribed: send {\"op\":\"unsubscribe\"} first",
            ),
            Err(msg) => error_response(ErrorKind::BadRequest, &msg),
        };
        if conn.respond(&reply, &[]).await.is_err() {
            return Some(Ended::Closed);
        }
    }
}
