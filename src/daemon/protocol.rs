//! The socket protocol (docs/PROTOCOL.md): the request and reply types, shared by the
//! server (`cmd`, `connection`, `server`) and the client (`client`, the CLI).
//!
//! A request is one JSON object per line, tagged by `op`. A reply is one line: an
//! `{"ok":true,...}` object whose other fields are one of the reply types below, or
//! `{"ok":false,"error":{"kind":...,"message":...}}`; csv and arrow answers are followed
//! by the `bytes` of their payload.

use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::daemon::limits::{CappedWriter, QueryLimits};
use crate::engine::{Answer, LayoutChange, LayoutProgress};
use crate::error::{Error, Result};
use crate::query::output::ResultSet;

/// The requested result encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Json,
    Csv,
    Arrow,
}

impl Format {
    /// The format's name in requests.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Arrow => "arrow",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            "arrow" => Ok(Format::Arrow),
            _ => Err(format!("unknown format {s:?}: use json, csv or arrow")),
        }
    }
}

/// One request line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Answers a query of the query language.
    Query {
        query: Json,
        #[serde(default)]
        format: Format,
        /// Wait until this generation is published before answering.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_generation: Option<u64>,
        /// The most the request may take, waiting for `min_generation` included.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        /// Whether the answer cache may answer it and keep its answer (default: yes).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache: Option<bool>,
        /// Whether the rows come in chunks after the reply line, sent as they are
        /// encoded (default: no; see `StreamEnd`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream: Option<bool>,
    },
    /// The daemon's state.
    Status {},
    /// The files the daemon tracks.
    Files {},
    /// Rescans the folder and answers once every change seen is published.
    Sync {
        /// How long to wait for that (default: the daemon's `sync_timeout_secs`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// Answers `{"ok":true}`.
    Ping {},
    /// Where a query would be answered, and why not from each other rollup.
    Explain { query: Json },
    /// Answers a query now, then again each time a published generation changes the
    /// answer, until `unsubscribe` or the connection closes.
    Subscribe {
        query: Json,
        #[serde(default)]
        format: Format,
    },
    /// Ends the connection's subscription.
    Unsubscribe {},
    /// The most costly DuckDB-answered query shapes, each with the rollup that would
    /// answer it.
    Advise {
        /// How many shapes (default 10).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// Reads the config again and applies its time zone and rollup set, from the table
    /// (no CSV is read) while the old set keeps answering; answers once the new set is
    /// published.
    Reload {},
}

impl Request {
    /// A json query request with no wait.
    pub fn query(query: Json, format: Format) -> Request {
        Request::Query {
            query,
            format,
            min_generation: None,
            timeout_ms: None,
            cache: None,
            stream: None,
        }
    }

    /// This request with its rows streamed in chunks, if it is a query.
    pub fn streamed(mut self) -> Request {
        if let Request::Query { stream, .. } = &mut self {
            *stream = Some(true);
        }
        self
    }

    /// Parses a request line; the error message says what is wrong with it.
    pub fn parse(line: &[u8]) -> Result<Request, String> {
        let json: Json =
            serde_json::from_slice(line).map_err(|e| format!("the request is not JSON: {e}"))?;
        match json.get("op") {
            Some(Json::String(_)) => {}
            Some(_) => return Err("\"op\" must be a string".into()),
            None if json.is_object() => return Err("the request has no \"op\"".into()),
            None => return Err("the request must be a JSON object with an \"op\"".into()),
        }
        Request::deserialize(json).map_err(|e| format!("bad request: {e}"))
    }

    /// The request as one line, without its newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("requests serialize")
    }
}

/// The kind of an error reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The query does not follow the query language.
    InvalidQuery,
    /// The request line is not a valid request.
    BadRequest,
    /// The request or its answer is over a limit.
    TooLarge,
    /// The daemon has no room for the request now (connections, query slots).
    Busy,
    /// The request took longer than it may.
    Timeout,
    /// Anything else: a failure inside the daemon.
    Internal,
}

impl ErrorKind {
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::InvalidQuery => "invalid_query",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Busy => "busy",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The `error` of an error reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub kind: ErrorKind,
    pub message: String,
}

/// What every reply line has: whether it is ok, the error if not, and the payload's size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    /// Payload bytes that follow the line (csv and arrow answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Whether chunks and an end line follow (a streamed query reply).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
}

/// The line that ends a streamed query reply, after its last chunk, when every row was
/// sent (else an error line ends it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEnd {
    /// Rows sent.
    pub rows: u64,
    /// Bytes of the chunks.
    pub bytes: u64,
}

/// Rows of a JSON answer as a client reads them: JSON values (a sum of a 64-bit column
/// may exceed 64 bits).
pub type JsonRows = Vec<Vec<Json>>;

/// The reply to `query`; `R` is the rows' type (the server's values, or `JsonRows`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryReply<R = JsonRows> {
    pub columns: Vec<String>,
    /// The rows, for the json format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<R>,
    /// `rollup:<name>` or `duckdb`.
    pub source: String,
    pub generation: u64,
    /// Time spent in the daemon, from parsing the query to its encoded answer.
    pub elapsed_us: u64,
    /// Payload bytes that follow the line, for csv and arrow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Whether the answer came from the answer cache.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
    /// Whether the rows (json) or the payload (csv, arrow) follow in chunks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
}

/// The reply to `sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReply {
    /// The generation that holds every change seen.
    pub generation: u64,
}

/// The reply to `reload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReply {
    /// What changed (nothing, when the config names the layout in place).
    pub change: LayoutChange,
    /// The generation the new layout was published in.
    pub generation: u64,
    /// The time zone and rollups in place now.
    pub time_zone: String,
    pub rollups: Vec<String>,
    /// Files whose partials were computed from the table, and their rows.
    pub files: u64,
    pub rows: u64,
    pub elapsed_ms: u64,
}

/// The reply to `explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainReply {
    /// `rollup:<name>` or `duckdb`, as a query's answer would say.
    pub source: String,
    /// The rollup chosen, if one covers the query.
    pub rollup: Option<String>,
    /// Rows the answer reads: the chosen rollup's rows in the query's time range, or
    /// every row of the DuckDB table.
    pub rows_scanned: u64,
    /// The DuckDB statement, values bound as `?` (DuckDB route only).
    pub sql: Option<String>,
    pub generation: u64,
    /// Every rollup of the published set, in config order.
    pub rollups: Vec<RollupVerdict>,
}

/// One rollup's part in an explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollupVerdict {
    pub name: String,
    pub rows: u64,
    pub chosen: bool,
    /// Why it was not chosen (`None` for the chosen one).
    pub reason: Option<Reason>,
}

/// Why a rollup was not chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    pub kind: ReasonKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonKind {
    /// The query selects raw rows.
    RawRows,
    /// The query reads a column the rollup does not keep.
    MissingColumn,
    /// The query needs a time column finer than the rollup's grain.
    Grain,
    /// The rollup keeps nothing an aggregate of the query can be computed from.
    Aggregate,
    /// It takes a MIN or MAX whose values the rollup is restoring after a removal.
    ExtremesPending,
    /// It covers the query, but a smaller rollup does too.
    Larger,
}

/// The reply to `advise`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdviseReply {
    /// DuckDB-answered shapes of the query log, most costly (total time) first.
    pub shapes: Vec<ShapeAdvice>,
}

/// One query shape, its statistics, and the rollup that would answer it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapeAdvice {
    /// What the queries select, filter on and group by (not their values).
    pub shape: String,
    /// The latest query of this shape.
    pub query: Json,
    pub count: u64,
    /// Where the latest was answered.
    pub source: String,
    pub p50_us: u64,
    pub p99_us: u64,
    pub total_us: u64,
    /// The smallest rollup that answers the shape (a name for the `rollups` setting).
    pub rollup: Option<String>,
    /// That rollup's rows, counted from the data: its distinct keys.
    pub rollup_rows: Option<u64>,
    /// Why no rollup can answer the shape.
    pub reason: Option<String>,
}

/// The reply to `unsubscribe`: `{"ok":true,"unsubscribed":true}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsubscribed {
    pub unsubscribed: bool,
}

/// The reply to `ping`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {}

/// The reply to `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    pub generation: u64,
    pub watch: PathBuf,
    pub state: PathBuf,
    pub files: FileCounts,
    pub watch_state: WatchState,
    /// Rows of the folded files.
    pub rows: u64,
    /// CSV bytes parsed since the daemon started.
    pub bytes_parsed: u64,
    pub rollups: Vec<RollupStatus>,
    /// Bytes of the state folder.
    pub state_bytes: u64,
    /// When a change was last published (RFC 3339), if one was since the start.
    pub last_change: Option<String>,
    /// The last error of a whole ingest pass, cleared by a good one.
    pub last_error: Option<String>,
    /// A fault of the state folder that fails updates (a full disk, an I/O error), while
    /// it lasts.
    #[serde(default)]
    pub fault: Option<StateFault>,
    /// What was rebuilt on open and why, if anything was.
    pub rebuilt: Option<String>,
    /// How the embedded DuckDB was compiled (`release` or `debug`).
    pub duckdb_build: String,
    pub queries: QueryCounts,
    pub connections: ConnectionCounts,
    /// The answer cache.
    #[serde(default)]
    pub answer_cache: CacheCounts,
    /// The time zone of the derived time columns.
    #[serde(default)]
    pub time_zone: String,
    /// A change of time zone or rollup set in progress (`reload`), if one runs.
    #[serde(default)]
    pub layout_change: Option<LayoutProgress>,
}

/// The answer cache now, and its lookups since the daemon started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheCounts {
    /// Its bound (`answer_cache_bytes`; 0: the cache is off).
    pub max_bytes: u64,
    /// Bytes of the answers it holds.
    pub bytes: u64,
    /// Answers it holds (all of the published generation).
    pub answers: u64,
    /// Queries answered from it.
    pub hits: u64,
    /// Queries it was asked for and did not hold.
    pub misses: u64,
}

/// A fault of the state folder: updates fail, the published state stays as it was and
/// keeps answering, and updates are tried again, backing off, until one succeeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFault {
    pub error: String,
    /// Since when (RFC 3339).
    pub since: String,
    /// Updates failed in a row.
    pub attempts: u32,
    /// When the next one is tried (RFC 3339).
    pub next_retry: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCounts {
    pub tracked: u64,
    /// Changed files not folded yet, and files whose last line is held.
    pub pending: u64,
    pub failed: u64,
    /// Entries named like data that are not regular files (never read).
    pub skipped: u64,
}

/// Whether the watched folder is there and watched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchState {
    pub state: WatchStatus,
    /// Since when the folder has been missing (RFC 3339), while it is.
    pub missing_since: Option<String>,
    /// How often the watch was established again (the folder recreated or renamed back).
    pub re_established: u64,
    /// When it last was (RFC 3339).
    pub last_re_established: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchStatus {
    Watching,
    Missing,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollupStatus {
    pub name: String,
    pub rows: u64,
    pub bytes: u64,
}

/// Queries since the daemon started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryCounts {
    /// Running now.
    pub running: u64,
    /// Stopped because their client went away.
    pub cancelled: u64,
    /// Stopped at their time limit.
    pub timed_out: u64,
    /// Refused as over a cap.
    pub too_large: u64,
}

/// Connections since the daemon started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionCounts {
    /// Open now.
    pub open: u64,
    /// Refused (`busy`) because `max_connections` were open.
    pub refused: u64,
    /// Closed after `idle_timeout_secs` without a request.
    pub idle_closed: u64,
    /// Subscribed now (each is also an open connection).
    #[serde(default)]
    pub subscribed: u64,
}

/// The reply to `files`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesReply {
    pub files: Vec<FileEntry>,
}

/// One file of the watched folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: PathBuf,
    /// Bytes (none for skipped entries, which are not read).
    pub size: Option<u64>,
    /// Rows folded (none while pending, or when a failed file was never folded).
    pub rows: Option<u64>,
    pub state: FileState,
    /// Bad rows skipped (within `max_bad_rows`), for folded files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bad_rows: Option<u64>,
    /// Why the last fold failed (failed files), or why the entry is not read (skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Folds tried since the file last changed, for failed files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Why a pending file waits, when it is not just settling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    Folded,
    Pending,
    Failed,
    /// Not a regular file (or a symlink to one): never read.
    Skipped,
}

impl FileEntry {
    /// An entry with nothing but its path, state and size.
    pub fn new(path: PathBuf, state: FileState, size: Option<u64>) -> FileEntry {
        FileEntry {
            path,
            size,
            rows: None,
            state,
            bad_rows: None,
            error: None,
            attempts: None,
            note: None,
        }
    }
}

impl FileState {
    pub fn name(self) -> &'static str {
        match self {
            FileState::Folded => "folded",
            FileState::Pending => "pending",
            FileState::Failed => "failed",
            FileState::Skipped => "skipped",
        }
    }
}

#[derive(Serialize)]
struct OkLine<'a, T> {
    ok: bool,
    #[serde(flatten)]
    body: &'a T,
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    ok: bool,
    error: &'a ErrorBody,
}

/// The `{"ok":true,...}` line of a reply.
pub fn ok_line<T: Serialize>(body: &T) -> String {
    serde_json::to_string(&OkLine { ok: true, body }).expect("replies serialize")
}

/// An error reply line.
pub fn error_response(kind: ErrorKind, message: &str) -> String {
    let error = ErrorBody {
        kind,
        message: message.to_string(),
    };
    serde_json::to_string(&ErrorLine {
        ok: false,
        error: &error,
    })
    .expect("replies serialize")
}

/// The error reply line for a library error.
pub fn error_line(e: &Error) -> String {
    error_response(e.kind(), &e.to_string())
}

/// A query's answer encoded, apart from what each reply says anew (its time, whether it
/// was cached): what the answer cache keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedAnswer {
    /// The reply's `columns`, `source` and `generation` fields (JSON, without braces).
    pub head: String,
    /// The `rows` (JSON) of a json answer.
    pub rows: Option<String>,
    /// The payload of a csv or arrow answer.
    pub payload: Vec<u8>,
    /// Where it was answered (`rollup:<name>` or `duckdb`).
    pub source: String,
    pub generation: u64,
    /// Rows of the answer.
    pub count: u64,
}

/// The fields of a query reply that `EncodedAnswer::head` holds.
#[derive(Serialize)]
struct AnswerHead<'a> {
    columns: &'a [String],
    source: &'a str,
    generation: u64,
}

/// The fields of a query reply that say what answered it (`columns`, `source`,
/// `generation`), as JSON without braces.
pub fn answer_head(answer: &Answer) -> String {
    let head = serde_json::to_string(&AnswerHead {
        columns: &answer.result.columns,
        source: &answer.source,
        generation: answer.generation,
    })
    .expect("replies serialize");
    head[1..head.len() - 1].to_string()
}

/// Writes the answer's rows in `format` to `w`: the `rows` array of a json reply, or the
/// payload of a csv or arrow one. Fails with `w`'s first error (a byte cap).
pub fn write_payload(result: &ResultSet, format: Format, w: &mut impl Write) -> Result<()> {
    let failed = |e: std::io::Error| Error::Internal(format!("writing an answer: {e}"));
    match format {
        Format::Json => result.rows.write_json(w).map_err(failed),
        Format::Csv => result.write_csv(w).map_err(failed),
        Format::Arrow => result.write_arrow_ipc(w),
    }
}

/// Bytes an encoded cell is expected to take, to size an answer's buffer up front.
const BYTES_PER_CELL: usize = 12;

/// Room in a reply line for the fields around the head and the rows.
const REPLY_FIELDS: u64 = 96;

impl EncodedAnswer {
    /// Encodes `answer` in `format`; `too_large` when the encoded answer is over
    /// `limits.max_answer_bytes` (encoding stops at the cap).
    pub fn encode(answer: &Answer, format: Format, limits: &QueryLimits) -> Result<EncodedAnswer> {
        let head = answer_head(answer);
        let room = limits
            .max_answer_bytes
            .saturating_sub(head.len() as u64 + REPLY_FIELDS);
        let result = &answer.result;
        let expected = result.rows.len() * result.columns.len() * BYTES_PER_CELL + 4096;
        let mut out = CappedWriter::with_room(room, expected);
        write_payload(result, format, &mut out).map_err(|_| limits.too_many_bytes())?;
        Ok(EncodedAnswer::new(answer, head, format, out.buf))
    }

    /// The answer whose reply head is `head` and whose encoded rows (`write_payload` in
    /// `format`) are `encoded`.
    pub fn new(answer: &Answer, head: String, format: Format, encoded: Vec<u8>) -> EncodedAnswer {
        let (rows, payload) = match format {
            Format::Json => (
                Some(String::from_utf8(encoded).expect("serde_json writes UTF-8")),
                Vec::new(),
            ),
            Format::Csv | Format::Arrow => (None, encoded),
        };
        EncodedAnswer {
            head,
            rows,
            payload,
            source: answer.source.clone(),
            generation: answer.generation,
            count: answer.result.rows.len() as u64,
        }
    }

    /// What follows the reply line of a streamed reply: the rows (json) or the payload.
    pub fn streamed(&self) -> &[u8] {
        self.rows
            .as_ref()
            .map_or(&self.payload, |rows| rows.as_bytes())
    }

    /// Bytes it holds.
    pub fn size(&self) -> usize {
        self.head.len() + self.rows.as_ref().map_or(0, String::len) + self.payload.len()
    }

    /// The reply: its line (the answer took `elapsed_us` in the daemon; `cached` if it
    /// came from the cache) and its payload.
    pub fn into_reply(self, elapsed_us: u64, cached: bool) -> (String, Vec<u8>) {
        (self.line(elapsed_us, cached, false), self.payload)
    }

    /// The reply line; a streamed one (`stream`) says so instead of holding the rows or
    /// the payload's size.
    pub fn line(&self, elapsed_us: u64, cached: bool, stream: bool) -> String {
        use std::fmt::Write as _;
        let rows = self.rows.as_ref().map_or(0, String::len);
        let mut line = String::with_capacity(self.head.len() + rows + REPLY_FIELDS as usize);
        line.push_str("{\"ok\":true,");
        line.push_str(&self.head);
        let _ = write!(line, ",\"elapsed_us\":{elapsed_us}");
        match &self.rows {
            _ if stream => line.push_str(",\"stream\":true"),
            Some(rows) => {
                line.push_str(",\"rows\":");
                line.push_str(rows);
            }
            None => {
                let _ = write!(line, ",\"bytes\":{}", self.payload.len());
            }
        }
        if cached {
            line.push_str(",\"cached\":true");
        }
        line.push('}');
        line
    }
}

/// The reply to a query: one JSON line, plus the payload bytes for csv and arrow;
/// `too_large` when the encoded answer is over `limits.max_answer_bytes`.
pub fn query_response(
    answer: &Answer,
    format: Format,
    limits: &QueryLimits,
) -> Result<(String, Vec<u8>)> {
    let elapsed = answer.elapsed.as_micros() as u64;
    Ok(EncodedAnswer::encode(answer, format, limits)?.into_reply(elapsed, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_or_say_what_is_wrong() {
        assert_eq!(Request::parse(br#"{"op":"ping"}"#), Ok(Request::Ping {}));
        assert_eq!(
            Request::parse(br#"{"op":"query","query":{},"format":"csv","min_generation":3}"#),
            Ok(Request::Query {
                query: serde_json::json!({}),
                format: Format::Csv,
                min_generation: Some(3),
                timeout_ms: None,
                cache: None,
                stream: None,
            })
        );
        let err = |line: &[u8]| Request::parse(line).unwrap_err();
        assert!(err(b"nope").contains("not JSON"));
        assert!(err(b"[1]").contains("JSON object"));
        assert!(err(br#"{"op":"drop"}"#).contains("unknown variant `drop`"));
        assert!(err(br#"{"op":"query"}"#).contains("missing field `query`"));
        assert!(err(br#"{"op":"ping","x":1}"#).contains("unknown field `x`"));
        assert!(err(br#"{"op":"query","query":{},"format":"xml"}"#).contains("`xml`"));
        assert!(err(br#"{"op":"sync","timeout_ms":-1}"#).contains("-1"));
    }

    #[test]
    fn requests_and_replies_round_trip() {
        for r in [
            Request::query(serde_json::json!({"select": ["day"]}), Format::Arrow),
            Request::Sync {
                timeout_ms: Some(5),
            },
            Request::Status {},
        ] {
            assert_eq!(Request::parse(r.to_line().as_bytes()), Ok(r));
        }
        assert_eq!(Request::Files {}.to_line(), r#"{"op":"files"}"#);
        assert_eq!(ok_line(&Pong {}), r#"{"ok":true}"#);
        let line = error_response(ErrorKind::TooLarge, "over");
        let head: Head = serde_json::from_str(&line).unwrap();
        assert_eq!(
            head.error,
            Some(ErrorBody {
                kind: ErrorKind::TooLarge,
                message: "over".into()
            })
        );
        let sync: SyncReply = serde_json::from_str(&ok_line(&SyncReply { generation: 4 })).unwrap();
        assert_eq!(sync.generation, 4);
    }
}
