//! Response lines of the socket protocol (CONTRACT §3), shared by the server and the CLI.

use serde::Serialize;

use crate::engine::Answer;
use crate::error::Error;
use crate::query::Value;

/// The requested result encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Csv,
    Arrow,
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

#[derive(Serialize)]
struct Ok<'a> {
    ok: bool,
    columns: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    rows: Option<&'a [Vec<Value>]>,
    source: &'a str,
    generation: u64,
    elapsed_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<usize>,
}

/// The response to a query: one JSON line, plus the payload bytes for csv and arrow.
pub fn query_response(answer: &Answer, format: Format) -> Result<(String, Vec<u8>), Error> {
    let payload = match format {
        Format::Json => Vec::new(),
        Format::Csv => answer.result.to_csv(),
        Format::Arrow => answer.result.to_arrow_ipc()?,
    };
    let line = serde_json::to_string(&Ok {
        ok: true,
        columns: &answer.result.columns,
        rows: (format == Format::Json).then_some(&answer.result.rows[..]),
        source: &answer.source,
        generation: answer.generation,
        elapsed_us: answer.elapsed.as_micros() as u64,
        bytes: (format != Format::Json).then_some(payload.len()),
    })
    .expect("response serializes");
    Ok((line, payload))
}

/// An error response line of the given kind.
pub fn error_response(kind: &str, message: &str) -> String {
    serde_json::json!({"ok": false, "error": {"kind": kind, "message": message}}).to_string()
}

/// The error response for a library error.
pub fn error_line(e: &Error) -> String {
    error_response(e.kind(), &e.to_string())
}
