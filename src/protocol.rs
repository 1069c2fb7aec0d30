//! The socket protocol (described in the README): request lines and response lines, shared by the
//! server and the CLI.

use serde::Serialize;
use serde_json::Value as Json;

use crate::engine::Answer;
use crate::error::Error;
use crate::query::Value;

/// The requested result encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Query {
        query: Json,
        format: Format,
        /// Wait until this generation is published before answering.
        min_generation: Option<u64>,
        /// How long to wait for `min_generation`.
        timeout_ms: Option<u64>,
    },
    Status,
    Files,
    Sync {
        timeout_ms: Option<u64>,
    },
    Ping,
}

impl Request {
    /// Parses a request line; the error message says what is wrong with it.
    pub fn parse(line: &[u8]) -> Result<Request, String> {
        let json: Json =
            serde_json::from_slice(line).map_err(|e| format!("the request is not JSON: {e}"))?;
        let Json::Object(obj) = json else {
            return Err("the request must be a JSON object with an \"op\"".into());
        };
        let op = match obj.get("op") {
            Some(Json::String(op)) => op.as_str(),
            Some(_) => return Err("\"op\" must be a string".into()),
            None => return Err("the request has no \"op\"".into()),
        };
        let number = |key: &str| -> Result<Option<u64>, String> {
            match obj.get(key) {
                None | Some(Json::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| format!("\"{key}\" must be a non-negative integer")),
            }
        };
        let known: &[&str] = match op {
            "query" => &["op", "query", "format", "min_generation", "timeout_ms"],
            "sync" => &["op", "timeout_ms"],
            "status" | "files" | "ping" => &["op"],
            other => {
                return Err(format!(
                    "unknown op {other:?}: use query, status, files, sync or ping"
                ))
            }
        };
        if let Some(extra) = obj.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(format!("unknown field {extra:?} in a {op} request"));
        }
        Ok(match op {
            "query" => Request::Query {
                query: obj
                    .get("query")
                    .cloned()
                    .ok_or("a query request needs \"query\"")?,
                format: match obj.get("format") {
                    None | Some(Json::Null) => Format::Json,
                    Some(Json::String(f)) => f.parse()?,
                    Some(_) => return Err("\"format\" must be json, csv or arrow".into()),
                },
                min_generation: number("min_generation")?,
                timeout_ms: number("timeout_ms")?,
            },
            "sync" => Request::Sync {
                timeout_ms: number("timeout_ms")?,
            },
            "status" => Request::Status,
            "files" => Request::Files,
            _ => Request::Ping,
        })
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

/// The `{"ok":true}` line with the fields of `body` (an object).
pub fn ok_response(body: Json) -> String {
    let mut out = serde_json::Map::new();
    out.insert("ok".into(), Json::Bool(true));
    if let Json::Object(fields) = body {
        out.extend(fields);
    }
    Json::Object(out).to_string()
}

/// An error response line of the given kind.
pub fn error_response(kind: &str, message: &str) -> String {
    serde_json::json!({"ok": false, "error": {"kind": kind, "message": message}}).to_string()
}

/// The error response for a library error.
pub fn error_line(e: &Error) -> String {
    error_response(e.kind(), &e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_or_say_what_is_wrong() {
        assert_eq!(Request::parse(br#"{"op":"ping"}"#), Ok(Request::Ping));
        assert_eq!(
            Request::parse(br#"{"op":"query","query":{},"format":"csv","min_generation":3}"#),
            Ok(Request::Query {
                query: serde_json::json!({}),
                format: Format::Csv,
                min_generation: Some(3),
                timeout_ms: None
            })
        );
        let err = |line: &[u8]| Request::parse(line).unwrap_err();
        assert!(err(b"nope").contains("not JSON"));
        assert!(err(b"[1]").contains("JSON object"));
        assert!(err(br#"{"op":"drop"}"#).contains("unknown op \"drop\""));
        assert!(err(br#"{"op":"query"}"#).contains("needs \"query\""));
        assert!(err(br#"{"op":"ping","x":1}"#).contains("unknown field \"x\""));
        assert!(err(br#"{"op":"query","query":{},"format":"xml"}"#).contains("unknown format"));
        assert!(err(br#"{"op":"sync","timeout_ms":-1}"#).contains("non-negative"));
    }
}
