//! Streamed query replies: the reply line once the query has run, then its rows encoded
//! (json rows, csv, Arrow IPC batches) in chunks sent as they are produced, then an end
//! line (the framing is in docs/PROTOCOL.md).
//!
//! The query's task encodes into chunks of `CHUNK_BYTES` and hands them over a bounded
//! channel to the connection's task, which writes them: encoding a chunk overlaps sending
//! the last, the memory an answer takes beyond its rows is a few chunks whatever its
//! size, and a client that reads slowly holds the encoder back. A client that stops
//! reading is dropped after the write timeout, one that hangs up at once; either stops
//! the query. The caps hold as for whole replies: `max_answer_rows` before any row is
//! encoded, `max_answer_bytes` as the chunks are written (an answer over it ends with a
//! `too_large` error line after the chunks sent so far).

use std::io;

use tokio::sync::mpsc;
use tokio::time::Duration;

use crate::daemon::cmd::{cached, prepare, query_parts, run_limited, Handle};
use crate::daemon::connection::{Connection, Out};
use crate::daemon::limits::{Cancel, QueryBudget, QueryLimits};
use crate::daemon::protocol::{
    answer_head, ok_line, write_payload, EncodedAnswer, Request, StreamEnd,
};
use crate::engine::Engine;
use crate::error::{Error, Result};

/// Bytes of a chunk (the last one of a reply may be shorter).
pub const CHUNK_BYTES: usize = 256 << 10;

/// Chunks waiting to be written, at most.
const CHUNKS_QUEUED: usize = 4;

/// How often a query waiting for room in the queue checks whether it was stopped.
const CANCEL_POLL: Duration = Duration::from_millis(100);

/// What the query's task hands to the connection's.
enum Piece {
    /// The reply line.
    Line(String),
    Chunk(Vec<u8>),
}

/// Answers a query request (with `"stream": true`) on `conn`: an error line alone if it
/// fails before its reply line, else the line, the chunks and the end line. An error
/// means the connection is done (the client left or stopped reading).
pub async fn serve(conn: &mut Connection, handle: &Handle, request: Request) -> io::Result<()> {
    let (query, format, ask) = query_parts(request);
    let run = match prepare(handle, &query, format, ask).await {
        Ok(run) => run,
        Err(line) => return conn.respond(&line, &[]).await,
    };
    let (gone, mut out) = conn.split();
    if let Some((hit, elapsed_us)) = cached(handle, &run, &query) {
        let line = hit.line(elapsed_us, true, true);
        let body = hit.streamed();
        out.send(&[line.as_bytes(), b"\n"]).await?;
        send_chunk(&mut out, body).await?;
        let done = stream_end(body.len(), hit.count as usize);
        return end(&mut out, true, &ok_line(&done)).await;
    }
    let (tx, rx) = mpsc::channel(CHUNKS_QUEUED);
    let (log, cache, key) = (handle.log.clone(), handle.cache.clone(), run.key);
    let keep = key.is_some().then(|| cache.max_entry_bytes());
    let rt = tokio::runtime::Handle::current();
    let job = move |engine: &Engine, budget: &QueryBudget| -> Result<StreamEnd> {
        let answer = engine.query_within(&query, budget)?;
        budget.cancel.check()?;
        log.record(&query, &answer.source, answer.elapsed);
        let head = answer_head(&answer);
        let mut w = ChunkWriter::new(tx, rt, budget, keep);
        let empty = EncodedAnswer::new(&answer, head.clone(), format, Vec::new());
        let elapsed_us = answer.elapsed.as_micros() as u64;
        w.send(Piece::Line(empty.line(elapsed_us, false, true)))?;
        let written = write_payload(&answer.result, format, &mut w);
        if let Some(e) = w.failure.take() {
            return Err(e);
        }
        written?;
        let (bytes, kept) = w.finish()?;
        if let (Some(key), Some(kept)) = (key, kept) {
            cache.put(key, &EncodedAnswer::new(&answer, head, format, kept));
        }
        Ok(stream_end(bytes as usize, answer.result.rows.len()))
    };
    let mut started = false;
    let (outcome, forwarded) = tokio::join!(
        run_limited(handle, run.deadline, gone, job),
        forward(rx, &mut out, &mut started)
    );
    forwarded?;
    let last = match outcome {
        Ok(done) => ok_line(&done),
        Err(line) => line,
    };
    end(&mut out, started, &last).await
}

/// The end line's fields: `bytes` of chunks holding `rows` rows.
fn stream_end(bytes: usize, rows: usize) -> StreamEnd {
    StreamEnd {
        rows: rows as u64,
        bytes: bytes as u64,
    }
}

/// Writes what the query's task sends until it is done; `started` tells whether the
/// reply line went out.
async fn forward(
    mut rx: mpsc::Receiver<Piece>,
    out: &mut Out<'_>,
    started: &mut bool,
) -> io::Result<()> {
    while let Some(piece) = rx.recv().await {
        match piece {
            Piece::Line(line) => {
                out.send(&[line.as_bytes(), b"\n"]).await?;
                *started = true;
            }
            Piece::Chunk(chunk) => send_chunk(out, &chunk).await?,
        }
    }
    Ok(())
}

/// One chunk: its length on a line, then its bytes (nothing for an empty one, which
/// would end the chunks).
async fn send_chunk(out: &mut Out<'_>, chunk: &[u8]) -> io::Result<()> {
    if chunk.is_empty() {
        return Ok(());
    }
    out.send(&[format!("{}\n", chunk.len()).as_bytes(), chunk])
        .await
}

/// Ends a reply with `line`: after the chunks' end when the reply line was sent, else as
/// the reply itself.
async fn end(out: &mut Out<'_>, started: bool, line: &str) -> io::Result<()> {
    let chunks_end: &[u8] = if started { b"0\n" } else { b"" };
    out.send(&[chunks_end, line.as_bytes(), b"\n"]).await
}

/// The query task's side: encoded bytes go out a chunk at a time, within the answer's
/// byte cap, and are kept for the answer cache while they fit its entry size.
struct ChunkWriter {
    tx: mpsc::Sender<Piece>,
    rt: tokio::runtime::Handle,
    cancel: Cancel,
    buf: Vec<u8>,
    /// Bytes sent in chunks so far.
    sent: u64,
    /// The caps (`max_answer_bytes`).
    limits: QueryLimits,
    /// A copy of the bytes for the cache, while they fit `keep_max`.
    kept: Option<Vec<u8>>,
    keep_max: u64,
    /// Why writing failed, if it did (the encoder sees an I/O error only).
    failure: Option<Error>,
}

impl ChunkWriter {
    fn new(
        tx: mpsc::Sender<Piece>,
        rt: tokio::runtime::Handle,
        budget: &QueryBudget,
        keep: Option<u64>,
    ) -> ChunkWriter {
        ChunkWriter {
            tx,
            rt,
            cancel: budget.cancel.clone(),
            buf: Vec::with_capacity(CHUNK_BYTES),
            sent: 0,
            limits: budget.limits.clone(),
            kept: keep.map(|_| Vec::new()),
            keep_max: keep.unwrap_or(0),
            failure: None,
        }
    }

    /// Hands `piece` to the connection's task, waiting for room in the queue (and
    /// checking meanwhile whether the query was stopped).
    fn send(&mut self, piece: Piece) -> Result<()> {
        loop {
            let reserve = tokio::time::timeout(CANCEL_POLL, self.tx.reserve());
            match self.rt.block_on(reserve) {
                Ok(Ok(permit)) => {
                    permit.send(piece);
                    return Ok(());
                }
                Ok(Err(_)) => return Err(Error::Abandoned),
                Err(_) => self.cancel.check()?,
            }
        }
    }

    /// Sends the buffered bytes as a chunk.
    fn flush_chunk(&mut self) -> Result<()> {
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES));
        self.sent += chunk.len() as u64;
        if let Some(kept) = &mut self.kept {
            match self.sent <= self.keep_max {
                true => kept.extend_from_slice(&chunk),
                false => self.kept = None,
            }
        }
        self.send(Piece::Chunk(chunk))
    }

    /// Sends what is left; the bytes sent in all, and the copy kept for the cache.
    fn finish(mut self) -> Result<(u64, Option<Vec<u8>>)> {
        if !self.buf.is_empty() {
            self.flush_chunk()?;
        }
        Ok((self.sent, self.kept))
    }

    fn fail(&mut self, e: Error) -> io::Error {
        let err = io::Error::other(e.to_string());
        self.failure = Some(e);
        err
    }
}

impl io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.sent + (self.buf.len() + data.len()) as u64 > self.limits.max_answer_bytes {
            let over = self.limits.too_many_bytes();
            return Err(self.fail(over));
        }
        let take = data.len().min(CHUNK_BYTES - self.buf.len());
        self.buf.extend_from_slice(&data[..take]);
        if self.buf.len() == CHUNK_BYTES {
            if let Err(e) = self.flush_chunk() {
                return Err(self.fail(e));
            }
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
